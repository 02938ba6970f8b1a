// Package sanitize rewrites a capture so that it can be shared: every
// secret that criseq's decoded output redacts (registry credentials of
// PullImage, container environment values, the runtime's verbose info
// maps, authorization headers and fields sent never-indexed) is replaced
// by "<redacted>" in the traffic itself, and the protobuf messages, gRPC
// framing and HPACK header blocks are encoded again around it, so the
// result decodes in criseq and in Wireshark with the same calls, streams,
// timings and pod flows.
//
// In: capture.Chunks (from capture.OpenFile). Out: capture.Chunks for a
// capture.Sink (a capture.PcapngWriter), each at the time of the input
// bytes it stands for, in the input's order.
//
// Between capture and decode in the pipeline; it knows HTTP/2 (the
// x/net/http2 Framer, hpack) and gRPC framing, and takes the redaction
// rules from decode (decode.Redaction).
//
// What cannot be rewritten is dropped, never passed on: a connection that
// is not HTTP/2, a direction whose bytes were lost (after the gap its
// framing and HPACK state are unknown), frames the Framer or HPACK refuse,
// frame types gRPC does not use, padding. The messages of a method that is
// not CRI, or that are compressed with an unknown encoding, or that do not
// parse, are sent empty: nothing in them can be shown to hold no secret.
// Every CRI message is parsed and encoded again (unknown fields dropped);
// one that comes out identical keeps its original bytes. Each such event is
// logged. A large message whose type holds no secret (a list's answer) is
// parsed one element at a time, and kept as it came when every element
// parses with no unknown field; the whole message is never built.
package sanitize

import (
	"bytes"
	"compress/gzip"
	"container/heap"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/criseq/criseq/capture"
	"github.com/criseq/criseq/decode"
)

// largeMessage is the payload size over which a message is checked one
// element at a time and framed only as it is written; a variable so that
// tests can lower it.
var largeMessage = 1 << 20

const (
	// frameSize is the size of the frames written: the smallest maximum a
	// peer may set (SETTINGS_MAX_FRAME_SIZE), so valid whatever it set.
	frameSize = 16384
	// minTableSize is the HPACK table size accepted from an encoder
	// before the peer's SETTINGS, as decode accepts it.
	minTableSize = 64 << 10
	maxTableSize = 16 << 20
	// maxMessage bounds a gRPC message, compressed or not.
	maxMessage = 64 << 20
	// maxBlock bounds a header block (HEADERS and CONTINUATION frames).
	maxBlock = 32 << 20
)

// maxQueued bounds the bytes held back to keep the output in input order
// while a long frame or message completes; past it they go out. A
// variable so that tests can lower it.
var maxQueued = 64 << 20

// Options tune Rewrite.
type Options struct {
	// Log receives a line for each connection or message dropped or
	// blanked, and why; nil discards them.
	Log func(format string, args ...any)
}

// Stats counts what Rewrite did.
type Stats struct {
	Conns          int // connections seen
	DroppedConns   int // connections or directions cut short
	Messages       int // gRPC messages
	Rewritten      int // messages encoded again with secrets replaced
	Blanked        int // messages sent empty
	HeaderFields   int // header fields redacted
	DroppedFrames  int // frames of unknown types dropped
	DroppedPartial int // frames or messages cut by the end of a direction
}

// Rewrite reads every chunk of src and writes the rewritten chunks to dst,
// which it does not close. It returns src's error, if any, after writing
// what was read before it (wrapped in "sanitize: reading capture"), or
// dst's first error.
func Rewrite(src capture.Source, dst capture.Sink, opts Options) (Stats, error) {
	rw := newRewriter(dst, opts)
	var err error
	for {
		var c capture.Chunk
		c, err = src.Next()
		if err != nil {
			break
		}
		rw.feed(c)
		if rw.werr != nil {
			return rw.stats, rw.werr
		}
	}
	rw.finish()
	if rw.werr != nil {
		return rw.stats, rw.werr
	}
	if errors.Is(err, io.EOF) {
		return rw.stats, nil
	}
	return rw.stats, &readError{err}
}

// errReading marks Rewrite's errors that come from the source.
var errReading = errors.New("sanitize: reading capture")

// readError is an error of Rewrite's source.
type readError struct{ err error }

func (e *readError) Error() string   { return errReading.Error() + ": " + e.err.Error() }
func (e *readError) Unwrap() []error { return []error{errReading, e.err} }

// key places output: the input chunk that held the first byte of what an
// output chunk stands for. Output goes in input order, and at its time.
type key struct {
	seq uint64
	t   time.Time
}

type rewriter struct {
	dst   capture.Sink
	logf  func(format string, args ...any)
	red   decode.Redaction
	conns map[uint64]*conn
	gone  map[uint64]bool // connections over: later chunks of them are left out
	seq   uint64          // input chunks so far
	cur   key             // the input chunk being read
	q     outQueue
	order uint64 // items queued so far, to keep order within a key
	werr  error
	stats Stats
	gz    *gzip.Writer
	zr    *gzip.Reader
	// blanked says which notes were logged already.
	blanked map[string]bool

	run   []*item // the pieces release joins, reused
	early int     // bytes releaseDone wrote, still in q.bytes
	seg   []byte  // the chunks writeLarge writes, reused
	// spare is the buffer of a large message written, for the next;
	// dropped if none comes within spareChunks input chunks of spareAt.
	spare   []byte
	spareAt uint64
	// elements are the messages plainElements parses into, by field.
	elements map[protoreflect.FullName]proto.Message
}

func newRewriter(dst capture.Sink, opts Options) *rewriter {
	rw := &rewriter{dst: dst, logf: opts.Log, conns: map[uint64]*conn{}, gone: map[uint64]bool{}, blanked: map[string]bool{}}
	if rw.logf == nil {
		rw.logf = func(string, ...any) {}
	}
	return rw
}

// conn is the rewriting state of one connection.
type conn struct {
	id      uint64
	half    [2]*half
	streams map[uint32]*stream
}

// stream is what a connection's stream needs: its method, and each
// direction's message encoding and message being assembled.
type stream struct {
	path string
	enc  [2]string
	asm  [2]assembler
}

// streamEnded forgets a stream once the server ended it (trailers): a
// client frame for it after that finds no method, and its messages are
// sent empty.
func (cn *conn) streamEnded(sid uint32, dir capture.Dir) {
	if dir == capture.ServerToClient {
		delete(cn.streams, sid)
	}
}

// assembler collects one gRPC message (5-byte prefix, payload) of one
// direction of a stream from DATA frames.
type assembler struct {
	active bool
	k      key // the frame that held the prefix's first byte
	hdr    [5]byte
	nhdr   int
	want   uint32
	buf    []byte
}

// mark is where an input chunk begins in a direction's buffer.
type mark struct {
	pos int
	k   key
}

// half is one direction of a connection.
type half struct {
	dir     capture.Dir
	dead    bool // nothing more of it is written
	preface int  // client preface bytes still expected
	settled bool // the first frame (SETTINGS) was seen
	next    int64
	buf     []byte
	marks   []mark // chunk starts within buf, in order

	rd   bytes.Reader
	fr   *http2.Framer // reads the frames of this direction, one at a time from rd
	hdec *hpack.Decoder
	// fields of the header block being decoded
	fields []hpack.HeaderField
	// a header block waiting for its CONTINUATION frames
	block      []byte
	blockOpen  bool
	blockK     key
	blockSID   uint32
	blockEnd   bool // END_STREAM
	blockPrio  http2.PriorityParam
	blockPrioK bool

	// Writing: the encoder of this direction's header blocks (a fresh one,
	// bounded by what the peer's SETTINGS allow) and a framer into wbuf.
	enc    *hpack.Encoder
	limits []limit // table size bounds from the peer's SETTINGS, not yet applied
	encBuf bytes.Buffer
	wbuf   bytes.Buffer
	wfr    *http2.Framer
}

// limit is a peer's SETTINGS_HEADER_TABLE_SIZE, complete in input chunk
// after: it bounds the header blocks that begin in later chunks.
type limit struct {
	after uint64
	size  uint32
}

func (rw *rewriter) conn(id uint64) *conn {
	cn := rw.conns[id]
	if cn == nil {
		cn = &conn{id: id, streams: map[uint32]*stream{}}
		for d := range cn.half {
			h := &half{dir: capture.Dir(d)}
			if h.dir == capture.ClientToServer {
				h.preface = len(http2.ClientPreface)
			}
			h.fr = http2.NewFramer(nil, &h.rd)
			h.hdec = hpack.NewDecoder(4096, func(f hpack.HeaderField) { h.fields = append(h.fields, f) })
			h.hdec.SetAllowedMaxDynamicTableSize(minTableSize)
			h.hdec.SetMaxStringLength(maxBlock)
			h.enc = hpack.NewEncoder(&h.encBuf)
			h.wfr = http2.NewFramer(&h.wbuf, nil)
			cn.half[d] = h
		}
		rw.conns[id] = cn
		rw.stats.Conns++
	}
	return cn
}

func (rw *rewriter) feed(c capture.Chunk) {
	rw.seq++
	k := key{seq: rw.seq, t: c.Time}
	rw.cur = k
	if c.Dir > capture.ServerToClient || rw.gone[c.Conn] {
		return
	}
	cn := rw.conn(c.Conn)
	h := cn.half[c.Dir]
	switch c.Kind {
	case capture.Open:
		rw.push(k, cn.id, capture.ClientToServer, capture.Open, nil)
		if c.Midway {
			rw.kill(cn, nil, "was open before the capture began: its HTTP/2 and HPACK state are unknown")
		}
	case capture.Close:
		if h.dead {
			break
		}
		if len(h.buf) > 0 || h.blockOpen {
			rw.stats.DroppedPartial++
			rw.logf("connection %d %s: ends inside a frame; its %d bytes are left out", cn.id, h.dir, len(h.buf)+len(h.block))
		}
		rw.endHalf(cn, h)
		rw.push(k, cn.id, h.dir, capture.Close, nil)
		rw.maybeGone(cn)
	case capture.Data:
		if h.dead {
			break
		}
		if c.Gap != 0 || c.Offset > h.next {
			rw.kill(cn, h, fmt.Sprintf("bytes lost at offset %d: what follows cannot be read", h.next))
			break
		}
		h.next += int64(len(c.Data))
		rw.data(cn, h, c.Data, k)
	}
	if rw.seq%64 == 0 || rw.q.bytes > maxQueued {
		rw.release(false)
		if rw.seq-rw.spareAt > spareChunks {
			rw.spare = nil
		}
	}
}

// data takes the bytes of one chunk of a direction.
func (rw *rewriter) data(cn *conn, h *half, data []byte, k key) {
	if h.preface > 0 {
		at := len(http2.ClientPreface) - h.preface
		n := min(h.preface, len(data))
		if !bytes.Equal(data[:n], []byte(http2.ClientPreface[at:at+n])) {
			rw.kill(cn, nil, "does not start with the HTTP/2 client preface (not gRPC)")
			return
		}
		rw.push(k, cn.id, h.dir, capture.Data, data[:n])
		h.preface -= n
		data = data[n:]
	}
	if len(data) == 0 {
		return
	}
	h.marks = append(h.marks, mark{pos: len(h.buf), k: k})
	h.buf = append(h.buf, data...)
	p := 0
	for len(h.buf)-p >= 9 && !h.dead {
		length := int(h.buf[p])<<16 | int(h.buf[p+1])<<8 | int(h.buf[p+2])
		if p+9+length > len(h.buf) {
			break
		}
		rw.frame(cn, h, h.buf[p:p+9+length], h.keyAt(p))
		p += 9 + length
	}
	if h.dead {
		return
	}
	// Keep the rest, and the marks it still needs.
	rest := copy(h.buf, h.buf[p:])
	h.buf = h.buf[:rest]
	i := 0
	for i+1 < len(h.marks) && h.marks[i+1].pos <= p {
		i++
	}
	h.marks = append(h.marks[:0], h.marks[i:]...)
	for j := range h.marks {
		h.marks[j].pos = max(h.marks[j].pos-p, 0)
	}
	if rest == 0 {
		h.marks = h.marks[:0]
		if cap(h.buf) > 1<<20 {
			h.buf = nil
		}
	}
}

// keyAt is the key of the chunk that held buf[pos].
func (h *half) keyAt(pos int) key {
	k := h.marks[0].k
	for _, m := range h.marks {
		if m.pos > pos {
			break
		}
		k = m.k
	}
	return k
}

// frame rewrites one whole frame (header and payload) first seen in k.
func (rw *rewriter) frame(cn *conn, h *half, b []byte, k key) {
	typ := http2.FrameType(b[3])
	if !h.settled {
		if typ != http2.FrameSettings || b[4]&byte(http2.FlagSettingsAck) != 0 {
			rw.kill(cn, nil, fmt.Sprintf("%s: first frame is %v, not SETTINGS (not gRPC)", h.dir, typ))
			return
		}
		h.settled = true
	}
	h.rd.Reset(b)
	f, err := h.fr.ReadFrame()
	if err != nil {
		rw.kill(cn, h, fmt.Sprintf("frame at offset %d: %v", h.next-int64(len(h.buf)), frameErr(h.fr, err)))
		return
	}
	switch f := f.(type) {
	case *http2.SettingsFrame:
		// Written where it was complete, not where it began: a header
		// block of the other direction begun before that was encoded
		// without it, and one begun after is encoded with it (limits).
		if !f.IsAck() {
			if v, ok := f.Value(http2.SettingHeaderTableSize); ok {
				// The peer of this direction encodes under this bound.
				o := cn.half[1-h.dir]
				o.limits = append(o.limits, limit{after: rw.cur.seq, size: v})
				o.hdec.SetAllowedMaxDynamicTableSize(min(max(v, minTableSize), maxTableSize))
			}
		}
		rw.push(rw.cur, cn.id, h.dir, capture.Data, b)
	case *http2.PingFrame, *http2.WindowUpdateFrame, *http2.PriorityFrame:
		rw.push(k, cn.id, h.dir, capture.Data, b)
	case *http2.RSTStreamFrame:
		// A reset stream's unfinished messages are forgotten with it.
		delete(cn.streams, f.StreamID)
		rw.push(k, cn.id, h.dir, capture.Data, b)
	case *http2.GoAwayFrame:
		// The debug data is free text: left out.
		h.wbuf.Reset()
		h.wfr.WriteGoAway(f.LastStreamID, f.ErrCode, nil)
		rw.push(k, cn.id, h.dir, capture.Data, h.wbuf.Bytes())
	case *http2.DataFrame:
		rw.dataFrame(cn, h, f, k)
	case *http2.HeadersFrame:
		h.block = append(h.block[:0], f.HeaderBlockFragment()...)
		h.blockOpen, h.blockK, h.blockSID, h.blockEnd = true, k, f.StreamID, f.StreamEnded()
		h.blockPrio, h.blockPrioK = f.Priority, f.HasPriority()
		if f.HeadersEnded() {
			rw.headerBlock(cn, h)
		}
	case *http2.ContinuationFrame:
		if len(h.block)+len(f.HeaderBlockFragment()) > maxBlock {
			rw.kill(cn, h, fmt.Sprintf("header block of stream %d larger than %d bytes", f.StreamID, maxBlock))
			return
		}
		h.block = append(h.block, f.HeaderBlockFragment()...)
		if f.HeadersEnded() {
			rw.headerBlock(cn, h)
		}
	case *http2.PushPromiseFrame:
		// Its header block would change the HPACK state; gRPC never sends one.
		rw.kill(cn, nil, "sent PUSH_PROMISE, which gRPC does not use")
	default:
		rw.stats.DroppedFrames++
		rw.logf("connection %d %s: frame of unknown type %v left out", cn.id, h.dir, typ)
	}
}

func frameErr(fr *http2.Framer, err error) error {
	if d := fr.ErrorDetail(); d != nil {
		return fmt.Errorf("%w: %v", err, d)
	}
	return err
}

// headerBlock decodes a complete header block, redacts it and writes it
// again with this direction's encoder.
func (rw *rewriter) headerBlock(cn *conn, h *half) {
	k, sid := h.blockK, h.blockSID
	h.blockOpen = false
	clear(h.fields)
	h.fields = h.fields[:0]
	_, err := h.hdec.Write(h.block)
	if err == nil {
		err = h.hdec.Close()
	}
	if err != nil {
		rw.kill(cn, h, fmt.Sprintf("header block of stream %d: %v", sid, err))
		return
	}
	s := cn.streams[sid]
	if s == nil {
		s = &stream{}
		cn.streams[sid] = s
	}
	for _, f := range h.fields {
		switch f.Name {
		case ":path":
			if h.dir == capture.ClientToServer && s.path == "" {
				s.path = f.Value
			}
		case "grpc-encoding":
			s.enc[h.dir] = f.Value
		}
	}
	n := 0
	for i := range h.fields {
		v := h.fields[i].Value
		if rw.red.Headers(h.fields[i : i+1]) {
			n++
			rw.logf("connection %d stream %d: %s header %q redacted (%d bytes)", cn.id, sid, h.dir, h.fields[i].Name, len(v))
		}
	}
	rw.stats.HeaderFields += n

	for len(h.limits) > 0 && h.limits[0].after < k.seq {
		h.enc.SetMaxDynamicTableSizeLimit(h.limits[0].size)
		h.limits = h.limits[1:]
	}
	h.encBuf.Reset()
	for _, f := range h.fields {
		if err := h.enc.WriteField(f); err != nil {
			rw.kill(cn, h, fmt.Sprintf("encoding the header block of stream %d: %v", sid, err))
			return
		}
	}
	block := h.encBuf.Bytes()
	h.wbuf.Reset()
	first := true
	for first || len(block) > 0 {
		n := min(len(block), frameSize)
		frag := block[:n]
		block = block[n:]
		end := len(block) == 0
		var err error
		if first {
			err = h.wfr.WriteHeaders(http2.HeadersFrameParam{StreamID: sid, BlockFragment: frag,
				EndStream: h.blockEnd, EndHeaders: end, Priority: h.blockPrio})
			first = false
		} else {
			err = h.wfr.WriteContinuation(sid, end, frag)
		}
		if err != nil {
			rw.kill(cn, h, fmt.Sprintf("writing the header block of stream %d: %v", sid, err))
			return
		}
	}
	rw.push(k, cn.id, h.dir, capture.Data, h.wbuf.Bytes())
	if h.blockEnd {
		cn.streamEnded(sid, h.dir)
	}
}

// dataFrame adds a DATA frame's payload to its stream's message and writes
// the messages it completes.
func (rw *rewriter) dataFrame(cn *conn, h *half, f *http2.DataFrame, k key) {
	sid := f.StreamID
	s := cn.streams[sid]
	if s == nil {
		// Headers not seen (the call ended, or was reset): no method
		// to read its messages by.
		s = &stream{}
		cn.streams[sid] = s
	}
	a := &s.asm[h.dir]
	data := f.Data()
	wrote := false
	for len(data) > 0 {
		if !a.active {
			a.active, a.k, a.nhdr, a.buf = true, k, 0, a.buf[:0]
		}
		if a.nhdr < 5 {
			n := copy(a.hdr[a.nhdr:], data)
			a.nhdr += n
			data = data[n:]
			if a.nhdr < 5 {
				break
			}
			a.want = binary.BigEndian.Uint32(a.hdr[1:5])
			if a.want > maxMessage {
				rw.kill(cn, h, fmt.Sprintf("stream %d: message of %d bytes, larger than %d", sid, a.want, maxMessage))
				return
			}
		}
		n := min(int(a.want)-len(a.buf), len(data))
		if need := len(a.buf) + n; need > cap(a.buf) {
			// Doubled as its bytes come (a length from the wire alone
			// proves nothing), and made the message's size once that is
			// at most 8 times what came: append's smaller steps leave
			// copies of a large message behind.
			size := max(2*cap(a.buf), need)
			if int(a.want) <= 8*need {
				size = int(a.want)
			}
			size = min(size, int(a.want))
			var b []byte
			if size > largeMessage && cap(rw.spare) >= size {
				b, rw.spare = rw.spare[:len(a.buf)], nil
			} else {
				b = make([]byte, len(a.buf), size)
			}
			copy(b, a.buf)
			a.buf = b
		}
		a.buf = append(a.buf, data[:n]...)
		data = data[n:]
		if len(a.buf) == int(a.want) {
			end := f.StreamEnded() && len(data) == 0
			a.active = false
			if rw.message(cn, h, s, sid, a, end) {
				rw.releaseDone()
			}
			wrote = wrote || end
		}
	}
	if f.StreamEnded() && !wrote {
		if a.active {
			rw.stats.DroppedPartial++
			rw.logf("connection %d stream %d: %s ends inside a message; its %d bytes are left out", cn.id, sid, h.dir, a.nhdr+len(a.buf))
			a.active = false
		}
		h.wbuf.Reset()
		h.wfr.WriteData(sid, true, nil)
		rw.push(k, cn.id, h.dir, capture.Data, h.wbuf.Bytes())
	}
	if f.StreamEnded() {
		cn.streamEnded(sid, h.dir)
	}
}

// message writes one complete message, rewritten, as DATA frames at the
// key of its first byte. A large one is framed only as it is written
// (framing), and its buffer goes with it; it reports whether it was.
func (rw *rewriter) message(cn *conn, h *half, s *stream, sid uint32, a *assembler, end bool) (large bool) {
	rw.stats.Messages++
	flag, payload := rw.rewriteMessage(cn, h, s, sid, a.hdr[0], a.buf)
	fm := &framing{sid: sid, end: end, flag: flag, payload: payload}
	fm.size = framedSize(len(payload))
	if len(a.buf) > largeMessage || len(payload) > largeMessage {
		a.buf = nil
		rw.pushItem(&item{k: a.k, conn: cn.id, dir: h.dir, kind: capture.Data, msg: fm})
		return true
	}
	b := make([]byte, fm.size)
	fm.read(b)
	rw.pushItem(&item{k: a.k, conn: cn.id, dir: h.dir, kind: capture.Data, data: b})
	return false
}

// framing is a message's DATA frames, as http2.Framer writes them (no
// padding, frameSize bytes of prefix and payload a frame), produced as
// they are read: a large payload is never copied whole again.
type framing struct {
	sid     uint32
	end     bool // END_STREAM on the last frame
	flag    byte
	payload []byte
	size    int // framedSize(len(payload))
	pos     int // bytes read so far
}

// framedSize is the size of the DATA frames of an n-byte payload.
func framedSize(n int) int {
	c := 5 + n
	return c + 9*((c+frameSize-1)/frameSize)
}

// read fills p with the next len(p) bytes of the frames.
func (fm *framing) read(p []byte) {
	c := 5 + len(fm.payload) // bytes of content: prefix and payload
	for len(p) > 0 {
		i, o := fm.pos/(9+frameSize), fm.pos%(9+frameSize)
		start := i * frameSize // content offset of frame i
		n := min(frameSize, c-start)
		var k int
		if o < 9 {
			var hdr [9]byte
			hdr[0], hdr[1], hdr[2] = byte(n>>16), byte(n>>8), byte(n)
			hdr[3] = byte(http2.FrameData)
			if fm.end && start+n == c {
				hdr[4] = byte(http2.FlagDataEndStream)
			}
			binary.BigEndian.PutUint32(hdr[5:], fm.sid)
			k = copy(p, hdr[o:])
		} else {
			at := start + o - 9
			k = min(len(p), n-(o-9))
			for j := 0; j < k && at+j < 5; j++ {
				p[j] = fm.prefix(at + j)
			}
			if skip := max(5-at, 0); skip < k {
				copy(p[skip:k], fm.payload[at+skip-5:])
			}
		}
		p = p[k:]
		fm.pos += k
	}
}

// prefix is byte i of the message's 5-byte gRPC prefix.
func (fm *framing) prefix(i int) byte {
	if i == 0 {
		return fm.flag
	}
	return byte(uint32(len(fm.payload)) >> (8 * (4 - i)))
}

// rewriteMessage returns a message's flag and payload with its secrets
// replaced, its original bytes when nothing changed, or an empty message
// when it cannot be read.
func (rw *rewriter) rewriteMessage(cn *conn, h *half, s *stream, sid uint32, flag byte, payload []byte) (byte, []byte) {
	blank := func(why string) (byte, []byte) {
		rw.stats.Blanked++
		rw.note(s.path+"\x00"+why, "connection %d stream %d: %s message of %q sent empty: %s (noted once per method)", cn.id, sid, h.dir, s.path, why)
		return 0, nil
	}
	if s.path == "" {
		return blank("its call's headers were not seen")
	}
	mt, ok := rw.red.MessageType(s.path, h.dir == capture.ServerToClient)
	if !ok {
		return blank("not a CRI method, so its secrets are unknown")
	}
	raw := payload
	switch flag {
	case 0:
	case 1:
		if s.enc[h.dir] != "gzip" {
			return blank(fmt.Sprintf("compressed with %q, which criseq cannot read", s.enc[h.dir]))
		}
		var err error
		if raw, err = rw.gunzip(payload); err != nil {
			return blank(err.Error())
		}
	default:
		return blank(fmt.Sprintf("bad compressed flag %d", flag))
	}
	if len(raw) > largeMessage && !rw.red.Needs(mt.Descriptor()) && rw.plainElements(mt, raw) {
		return flag, payload
	}
	m := mt.New().Interface()
	if err := proto.Unmarshal(raw, m); err != nil {
		return blank(fmt.Sprintf("does not parse as %s: %v", mt.Descriptor().FullName(), err))
	}
	changed := false
	if hasUnknown(m.ProtoReflect()) {
		// Fields this version of the CRI API does not know could hold
		// anything: left out.
		m = mt.New().Interface()
		if err := (proto.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(raw, m); err != nil {
			return blank(err.Error())
		}
		changed = true
		rw.note(s.path+"\x00unknown", "connection %d stream %d: %s message of %q has fields unknown to criseq's CRI API: left out (noted once per method)", cn.id, sid, h.dir, s.path)
	}
	if rw.red.Needs(m.ProtoReflect().Descriptor()) {
		before := proto.Clone(m)
		rw.red.Message(m)
		changed = changed || !proto.Equal(before, m)
	}
	if !changed {
		return flag, payload // no secret in it: the bytes as they were
	}
	out, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return blank(err.Error())
	}
	rw.stats.Rewritten++
	if flag == 1 {
		return 1, rw.gzip(out)
	}
	return 0, out
}

// elementOptions parse an element as proto.Unmarshal does inside its
// message, one level down.
var elementOptions = proto.UnmarshalOptions{RecursionLimit: protowire.DefaultRecursionLimit - 1}

// checkedByElements, when set, is called for each message plainElements
// passes (tests).
var checkedByElements func()

// plainElements reports whether raw, a message of type mt that can hold no
// secret, parses with no field unknown, so that its bytes are kept. It
// parses one element of its top-level fields at a time, never the whole
// list of a large answer, so it takes only fields of message type sent
// length-delimited (a list's elements or a message); false for anything
// else, and for an element that does not parse or holds an unknown field,
// leaves the message to the whole-message path, which says why.
func (rw *rewriter) plainElements(mt protoreflect.MessageType, raw []byte) bool {
	md := mt.Descriptor()
	fields := md.Fields()
	var m proto.Message
	defer func() {
		if m != nil {
			proto.Reset(m) // its strings are the message's size
		}
	}()
	for len(raw) > 0 {
		num, typ, n := protowire.ConsumeTag(raw)
		if n < 0 || typ != protowire.BytesType {
			return false
		}
		raw = raw[n:]
		fd := fields.ByNumber(num)
		if fd == nil || fd.Kind() != protoreflect.MessageKind || fd.IsMap() {
			return false
		}
		v, n := protowire.ConsumeBytes(raw)
		if n < 0 {
			return false
		}
		raw = raw[n:]
		if m == nil || m.ProtoReflect().Descriptor() != fd.Message() {
			m = rw.element(mt, fd)
		}
		if err := elementOptions.Unmarshal(v, m); err != nil || hasUnknown(m.ProtoReflect()) {
			return false
		}
	}
	if checkedByElements != nil {
		checkedByElements()
	}
	return true
}

// element returns an empty message of the type of fd, a field of mt of
// message type, kept for the next message of that type.
func (rw *rewriter) element(mt protoreflect.MessageType, fd protoreflect.FieldDescriptor) proto.Message {
	if m, ok := rw.elements[fd.FullName()]; ok {
		return m
	}
	v := mt.New().NewField(fd)
	var m proto.Message
	if fd.IsList() {
		m = v.List().NewElement().Message().Interface()
	} else {
		m = v.Message().Interface()
	}
	if rw.elements == nil {
		rw.elements = map[protoreflect.FullName]proto.Message{}
	}
	rw.elements[fd.FullName()] = m
	return m
}

// note logs once per key.
func (rw *rewriter) note(key, format string, args ...any) {
	if !rw.blanked[key] {
		rw.blanked[key] = true
		rw.logf(format, args...)
	}
}

// hasUnknown reports whether m or a message in it holds unknown fields.
func hasUnknown(m protoreflect.Message) bool {
	if len(m.GetUnknown()) > 0 {
		return true
	}
	found := false
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				v.Map().Range(func(_ protoreflect.MapKey, e protoreflect.Value) bool {
					found = hasUnknown(e.Message())
					return !found
				})
			}
		case fd.IsList():
			if fd.Message() != nil {
				for i := range v.List().Len() {
					if found = hasUnknown(v.List().Get(i).Message()); found {
						break
					}
				}
			}
		case fd.Message() != nil:
			found = hasUnknown(v.Message())
		}
		return !found
	})
	return found
}

func (rw *rewriter) gunzip(p []byte) ([]byte, error) {
	var err error
	if rw.zr == nil {
		rw.zr, err = gzip.NewReader(bytes.NewReader(p))
	} else {
		err = rw.zr.Reset(bytes.NewReader(p))
	}
	if err != nil {
		rw.zr = nil
		return nil, fmt.Errorf("gzip: %w", err)
	}
	out, err := io.ReadAll(io.LimitReader(rw.zr, maxMessage+1))
	if err != nil {
		return nil, fmt.Errorf("gzip: %w", err)
	}
	if len(out) > maxMessage {
		return nil, fmt.Errorf("gzip: message larger than %d bytes", maxMessage)
	}
	return out, nil
}

func (rw *rewriter) gzip(p []byte) []byte {
	var b bytes.Buffer
	if rw.gz == nil {
		rw.gz = gzip.NewWriter(&b)
	} else {
		rw.gz.Reset(&b)
	}
	rw.gz.Write(p)
	rw.gz.Close()
	return b.Bytes()
}

// endHalf forgets what a direction had not finished.
func (rw *rewriter) endHalf(cn *conn, h *half) {
	h.dead = true
	h.buf, h.marks, h.block, h.blockOpen = nil, nil, nil, false
	for sid, s := range cn.streams {
		a := &s.asm[h.dir]
		if a.active {
			rw.stats.DroppedPartial++
			rw.logf("connection %d stream %d: %s ended inside a message; its %d bytes are left out", cn.id, sid, h.dir, a.nhdr+len(a.buf))
			a.active = false
		}
	}
}

// kill stops writing a direction (h), or the whole connection (h nil): it
// ends there in the output, with what was rewritten before, at the input
// chunk being read (after everything queued for it).
func (rw *rewriter) kill(cn *conn, h *half, why string) {
	k := rw.cur
	halves := cn.half[:]
	what := "connection"
	if h != nil {
		halves = []*half{h}
		what = h.dir.String()
	}
	n := 0
	for _, x := range halves {
		if x.dead {
			continue
		}
		rw.endHalf(cn, x)
		rw.push(k, cn.id, x.dir, capture.Close, nil)
		n++
	}
	if n == 0 {
		return
	}
	rw.maybeGone(cn)
	rw.stats.DroppedConns++
	rw.logf("connection %d: %s; the rest of its %s is left out", cn.id, why, what)
}

// maybeGone forgets a connection both of whose directions are over.
func (rw *rewriter) maybeGone(cn *conn) {
	if cn.half[0].dead && cn.half[1].dead {
		delete(rw.conns, cn.id)
		rw.gone[cn.id] = true
	}
}

// finish ends every direction at the end of the capture.
func (rw *rewriter) finish() {
	for _, cn := range rw.conns {
		for _, h := range cn.half {
			if h.dead {
				continue
			}
			if len(h.buf) > 0 || h.blockOpen {
				rw.stats.DroppedPartial++
				rw.logf("connection %d %s: the capture ends inside a frame; its %d bytes are left out", cn.id, h.dir, len(h.buf)+len(h.block))
			}
			for sid, s := range cn.streams {
				if a := &s.asm[h.dir]; a.active {
					rw.stats.DroppedPartial++
					rw.logf("connection %d stream %d: the capture ends inside a %s message; its %d bytes are left out", cn.id, sid, h.dir, a.nhdr+len(a.buf))
					a.active = false
				}
			}
			h.buf, h.marks, h.block, h.blockOpen = nil, nil, nil, false
		}
	}
	rw.release(true)
}

// Output order: each piece waits until nothing still unfinished in the
// input (a frame, a header block, a message) began before it.

type item struct {
	k     key
	order uint64
	conn  uint64
	dir   capture.Dir
	kind  capture.Kind
	data  []byte
	msg   *framing // a large message, in place of data
}

// size is the number of bytes it writes.
func (it *item) size() int {
	if it.msg != nil {
		return it.msg.size
	}
	return len(it.data)
}

type outQueue struct {
	items []*item
	bytes int
}

func (q outQueue) Len() int { return len(q.items) }
func (q outQueue) Less(i, j int) bool {
	a, b := q.items[i], q.items[j]
	if a.k.seq != b.k.seq {
		return a.k.seq < b.k.seq
	}
	return a.order < b.order
}
func (q outQueue) Swap(i, j int) { q.items[i], q.items[j] = q.items[j], q.items[i] }
func (q *outQueue) Push(x any)   { q.items = append(q.items, x.(*item)) }
func (q *outQueue) Pop() any {
	old := q.items
	it := old[len(old)-1]
	old[len(old)-1] = nil
	q.items = old[:len(old)-1]
	return it
}

// push queues an output piece; data is copied.
func (rw *rewriter) push(k key, conn uint64, dir capture.Dir, kind capture.Kind, data []byte) {
	it := &item{k: k, conn: conn, dir: dir, kind: kind}
	if len(data) > 0 {
		it.data = bytes.Clone(data)
	}
	rw.pushItem(it)
}

// pushItem queues it, whose data it owns, after what was queued before.
func (rw *rewriter) pushItem(it *item) {
	rw.order++
	it.order = rw.order
	rw.q.bytes += it.size()
	heap.Push(&rw.q, it)
}

// pending is the earliest input chunk holding the start of something not
// yet complete; ok is false when nothing is.
func (rw *rewriter) pending() (seq uint64, ok bool) {
	low := func(s uint64) {
		if !ok || s < seq {
			seq, ok = s, true
		}
	}
	for _, cn := range rw.conns {
		for _, h := range cn.half {
			if h.dead {
				continue
			}
			if len(h.buf) > 0 {
				low(h.marks[0].k.seq)
			}
			if h.blockOpen {
				low(h.blockK.seq)
			}
		}
		for _, s := range cn.streams {
			for d := range s.asm {
				if s.asm[d].active {
					low(s.asm[d].k.seq)
				}
			}
		}
	}
	return seq, ok
}

// release writes the queued pieces nothing pending can precede (all of
// them at the end, or when too many bytes wait), merging consecutive
// pieces of one direction from one input chunk into one chunk.
func (rw *rewriter) release(all bool) {
	rw.q.bytes -= rw.early
	rw.early = 0
	limit, held := rw.pending()
	for rw.q.Len() > 0 && rw.werr == nil {
		it := rw.q.items[0]
		if !all && held && it.k.seq > limit && rw.q.bytes <= maxQueued {
			break
		}
		rw.q.bytes -= rw.writeHead()
	}
}

// releaseDone writes, after a large message, the queued pieces of input
// chunks before any still pending: nothing can join or precede them any
// more, and the next release would write them first, in the same chunks.
// Their bytes stay counted until then, so that it comes when it would
// have: the output is the same, but a large message is not held.
func (rw *rewriter) releaseDone() {
	limit, held := rw.pending()
	if !held {
		limit = rw.cur.seq
	}
	for rw.q.Len() > 0 && rw.werr == nil && rw.q.items[0].k.seq < limit {
		rw.early += rw.writeHead()
	}
}

// writeHead writes the first piece queued, joined with the pieces after
// it of the same direction and input chunk, and returns their size.
func (rw *rewriter) writeHead() int {
	it := heap.Pop(&rw.q).(*item)
	size := it.size()
	run := append(rw.run[:0], it)
	if it.kind == capture.Data {
		for rw.q.Len() > 0 {
			nx := rw.q.items[0]
			if nx.kind != capture.Data || nx.conn != it.conn || nx.dir != it.dir || nx.k.seq != it.k.seq {
				break
			}
			heap.Pop(&rw.q)
			size += nx.size()
			run = append(run, nx)
		}
	}
	large := false
	for _, x := range run {
		large = large || x.msg != nil
	}
	switch {
	case large:
		rw.writeLarge(run)
	case len(run) > 1:
		b := make([]byte, 0, size)
		for _, x := range run {
			b = append(b, x.data...)
		}
		it.data = b
		fallthrough
	default:
		rw.write(it)
	}
	clear(run)
	rw.run = run[:0]
	return size
}

// segment is the largest TCP segment capture.PcapngWriter writes: it cuts
// a chunk every segment bytes, so chunks of whole segments make the same
// packets as the one chunk they would join into
// (TestLargeRunSamePackets).
const segment = capture.MaxSegment

// spareChunks is how long a large message's buffer waits for the next.
const spareChunks = 1024

// writeLarge writes a run of pieces that holds a large message as one
// chunk would be written, in chunks of whole segments made as they are
// written: the message's frames are never held whole.
func (rw *rewriter) writeLarge(run []*item) {
	n := 0
	for _, x := range run {
		n += x.size()
	}
	first := run[0]
	i, off := 0, 0 // the piece being read, and bytes read of it
	if rw.seg == nil {
		rw.seg = make([]byte, 4*segment) // a Sink keeps no chunk's Data
	}
	for n > 0 && rw.werr == nil {
		b := rw.seg[:min(n, len(rw.seg))]
		for at := 0; at < len(b); {
			x := run[i]
			k := min(len(b)-at, x.size()-off)
			if x.msg != nil {
				x.msg.read(b[at : at+k])
			} else {
				copy(b[at:], x.data[off:off+k])
			}
			at += k
			if off += k; off == x.size() {
				i, off = i+1, 0
			}
		}
		n -= len(b)
		rw.write(&item{k: first.k, conn: first.conn, dir: first.dir, kind: capture.Data, data: b})
	}
	// A large message's buffer is kept for the next one, a while.
	for _, x := range run {
		if x.msg != nil && cap(x.msg.payload) > max(largeMessage, cap(rw.spare)) {
			rw.spare, rw.spareAt = x.msg.payload[:0], rw.seq
		}
	}
}

func (rw *rewriter) write(it *item) {
	c := capture.Chunk{Conn: it.conn, Dir: it.dir, Kind: it.kind, Time: it.k.t, Data: it.data}
	if err := rw.dst.Write(c); err != nil && rw.werr == nil {
		rw.werr = fmt.Errorf("sanitize: writing: %w", err)
	}
}
