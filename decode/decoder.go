package decode

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/criseq/criseq/capture"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Errors a ConnError may wrap.
var (
	// ErrBytesLost: the capture missed bytes of the connection, so the
	// HTTP/2 framing and HPACK state after them cannot be known.
	ErrBytesLost = errors.New("decode: bytes lost")
	// ErrPreface: the client→server stream does not start with the HTTP/2
	// client preface.
	ErrPreface = errors.New("decode: no HTTP/2 client preface")
	// ErrTruncated: the connection or the capture ended inside a frame.
	ErrTruncated = errors.New("decode: stream ends inside a frame")
	// ErrFrame: a frame could not be read (bad length, bad padding, HPACK
	// failure, frames out of order, ...).
	ErrFrame = errors.New("decode: bad frame")
)

// Options configure a Decoder. The zero value is usable and redacts.
type Options struct {
	// OnCall receives each call once, when it ends: trailers seen, stream
	// reset, GOAWAY above its stream, connection closed, or at Close. The
	// Call then belongs to the callee; the Decoder keeps no reference.
	OnCall func(*Call)
	// OnConnError, if set, receives each connection-level error when it
	// happens (Errors returns them all too).
	OnConnError func(*ConnError)
	// NoRedact keeps secrets in the output: registry credentials, container
	// environment values, the verbose info maps of status responses,
	// authorization headers, and the raw bytes of every message.
	NoRedact bool
	// SkipBodies, if set, is asked once per CRI method (service and method
	// name, e.g. "runtime.v1.RuntimeService", "ListContainers"); when it
	// says true, that method's messages are not unmarshalled (Message.Proto
	// stays nil, Size is set). Unmarshalling is most of the decoding cost,
	// and kubelet's polling is most of the bytes.
	SkipBodies func(service, method string) bool
	// OnStreamMessage, if set, receives each response message of a
	// server-streaming CRI call (GetContainerEvents) as it is decoded,
	// with the call so far; such messages are then not kept in the Call
	// (Call.Streamed counts them), so a stream open for the life of a
	// connection costs no memory. The Message is the callee's; the Call
	// is still the Decoder's and is handed to OnCall when it ends.
	OnStreamMessage func(c *Call, m Message)
}

// clientPreface starts every HTTP/2 connection, client to server.
const clientPreface = http2.ClientPreface

const (
	// maxHeaderList bounds a decoded header list, like grpc-go's default.
	maxHeaderList = 16 << 20
	// maxHeaderBlock bounds the encoded HEADERS+CONTINUATION bytes buffered
	// before handing them to the Framer (which reads them in one go).
	maxHeaderBlock = 2 * maxHeaderList
	// minTableSize is the HPACK table size accepted from any encoder before
	// (or without) the peer's SETTINGS: the spec default is 4096, but the
	// two directions of a capture may be slightly reordered.
	minTableSize = 64 << 10
	// maxTableSize caps what a peer's SETTINGS can raise the table to, so
	// memory stays bounded whatever the capture holds.
	maxTableSize = 16 << 20
	// maxMessage bounds a decompressed message (kubelet allows 16 MiB).
	maxMessage = 64 << 20
)

// A Decoder turns the chunks of many connections into Calls.
// It is push-style: Feed it chunks as they come, in order per connection
// and direction (connections may interleave); Calls are handed to
// Options.OnCall as they end. A Decoder is not safe for concurrent use.
type Decoder struct {
	opts        Options
	conns       map[uint64]*conn
	errs        []*ConnError
	seq         uint64 // call creation order, for Close
	methods     map[string]*method
	red         redactor
	gz          gunzipper
	free        [][]byte  // message buffers for reuse
	freeStreams []*stream // ended streams for reuse
	valid       validCache
	noProto     bool // benchmarks only: stop below protobuf decoding
	noFast      bool // tests only: every frame through the Framer
}

// New returns a Decoder.
func New(opts Options) *Decoder {
	return &Decoder{
		opts:    opts,
		conns:   make(map[uint64]*conn),
		methods: make(map[string]*method),
	}
}

// Errors returns the connection-level errors so far, in the order they
// happened.
func (d *Decoder) Errors() []*ConnError {
	return slices.Clone(d.errs)
}

// conn is the decoding state of one connection.
type conn struct {
	id      uint64
	half    [2]half // by capture.Dir
	streams map[uint32]*stream
	// maxStream is the highest stream the client opened: frames for lower,
	// unknown streams belong to calls already ended.
	maxStream uint32
}

// half is one direction of a connection.
type half struct {
	dir     capture.Dir
	next    int64     // offset of the next byte expected
	buf     []byte    // bytes of a frame (or header block) not yet complete
	bufTime time.Time // when buf[0] was seen
	preface int       // client preface bytes still expected
	settled bool      // the first frame (SETTINGS) was seen
	dead    bool      // decoding stopped (ConnError)
	gap     bool      // ... because bytes were lost
	closed  bool      // a Close chunk was seen
	// slow: the Framer returned a stream error and goes on: from then on
	// it reads every frame of this direction, so that its state (frame
	// order) stays its own.
	slow bool
	rd   sliceReader
	fr   *http2.Framer
	hdec *hpack.Decoder
	hs   headerSink              // the fast path's header block state
	emit func(hpack.HeaderField) // hs.emit, made once
	kept [2][]hpack.HeaderField  // last response headers and trailers kept
}

// sliceReader hands the Framer exactly the bytes of one frame.
type sliceReader struct{ b []byte }

func (r *sliceReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

func (d *Decoder) conn(id uint64) *conn {
	cn := d.conns[id]
	if cn == nil {
		cn = &conn{id: id, streams: make(map[uint32]*stream)}
		cn.half[capture.ClientToServer] = half{dir: capture.ClientToServer, preface: len(clientPreface)}
		cn.half[capture.ServerToClient] = half{dir: capture.ServerToClient}
		d.conns[id] = cn
	}
	return cn
}

// Feed decodes one chunk. Data is decoded as far as whole frames go (the
// rest waits for the next chunk); Close ends a direction, and the open
// calls of the connection once the server side is closed; a Gap, or an
// Offset beyond the bytes seen, stops decoding of that direction.
// c.Data is not retained.
func (d *Decoder) Feed(c capture.Chunk) {
	if c.Dir > capture.ServerToClient {
		return
	}
	cn := d.conn(c.Conn)
	h := &cn.half[c.Dir]
	switch c.Kind {
	case capture.Open:
		return
	case capture.Close:
		d.closeHalf(cn, h, c.Time)
		return
	case capture.Data:
	default:
		return
	}
	if h.dead {
		return
	}
	// A source reports lost bytes with Gap, or by an offset beyond the
	// bytes seen (e.g. a capture that began inside the connection).
	if c.Gap != 0 || c.Offset > h.next {
		off := h.next
		var err error
		if c.Gap > 0 {
			err = fmt.Errorf("%w: %d bytes at offset %d; decoding of this connection stops", ErrBytesLost, c.Gap, off)
		} else {
			err = fmt.Errorf("%w at offset %d; decoding of this connection stops", ErrBytesLost, off)
		}
		d.fail(cn, h, off, err, true, c.Time)
		return
	}
	data := c.Data
	h.next += int64(len(data))
	if h.preface > 0 {
		n := min(h.preface, len(data))
		at := len(clientPreface) - h.preface
		for i := range n {
			if data[i] != clientPreface[at+i] {
				d.fail(cn, h, int64(at+i), fmt.Errorf("%w (got %q)", ErrPreface, data[i]), false, c.Time)
				return
			}
		}
		h.preface -= n
		data = data[n:]
	}
	if len(data) == 0 {
		return
	}
	if len(h.buf) == 0 {
		// Common case: frames straight from the chunk, only the tail is kept.
		n := d.frames(cn, h, data, c.Time, c.Time)
		if !h.dead && n < len(data) {
			h.buf = append(h.buf[:0], data[n:]...)
			h.bufTime = c.Time
		}
		return
	}
	h.buf = append(h.buf, data...)
	n := d.frames(cn, h, h.buf, h.bufTime, c.Time)
	if h.dead {
		return
	}
	rest := copy(h.buf, h.buf[n:])
	h.buf = h.buf[:rest]
	if n > 0 {
		h.bufTime = c.Time
	}
	if rest == 0 && cap(h.buf) > 1<<20 {
		h.buf = nil // don't pin the memory of one huge frame
	}
}

// frameAt reads a frame header at b[0:9].
func frameAt(b []byte) (length int, typ http2.FrameType, flags http2.Flags, stream uint32) {
	length = int(b[0])<<16 | int(b[1])<<8 | int(b[2])
	typ = http2.FrameType(b[3])
	flags = http2.Flags(b[4])
	stream = (uint32(b[5])<<24 | uint32(b[6])<<16 | uint32(b[7])<<8 | uint32(b[8])) & (1<<31 - 1)
	return
}

// frames decodes the whole frames at the start of in (a header block with
// its CONTINUATION frames counts as one) and returns the bytes consumed.
// t0 is when in[0] was seen, t when the last byte was.
func (d *Decoder) frames(cn *conn, h *half, in []byte, t0, t time.Time) int {
	base := h.next - int64(len(in)) // offset of in[0]
	p := 0
	for len(in)-p >= 9 {
		length, typ, flags, sid := frameAt(in[p:])
		if !h.settled {
			// Each side's first frame is SETTINGS: this catches garbage
			// before waiting for megabytes of a nonsense length.
			if typ != http2.FrameSettings || sid != 0 || flags.Has(http2.FlagSettingsAck) {
				d.fail(cn, h, base+int64(p), fmt.Errorf("%w: first frame is %v on stream %d, not SETTINGS", ErrFrame, typ, sid), false, t)
				return p
			}
			h.settled = true
		}
		end := p + 9 + length
		if typ == http2.FrameHeaders && !flags.Has(http2.FlagHeadersEndHeaders) {
			// The Framer reads the CONTINUATION frames itself: hand it the
			// whole block at once.
			q := end
			for {
				if q-p > maxHeaderBlock {
					d.fail(cn, h, base+int64(p), fmt.Errorf("%w: header block of stream %d larger than %d bytes", ErrFrame, sid, maxHeaderBlock), false, t)
					return p
				}
				if len(in)-q < 9 {
					return p
				}
				l, ct, cf, _ := frameAt(in[q:])
				if ct != http2.FrameContinuation {
					end = q + 9 // the Framer reports the protocol error
					break
				}
				q += 9 + l
				if cf.Has(http2.FlagContinuationEndHeaders) {
					end = q
					break
				}
			}
		}
		if end > len(in) {
			return p
		}
		ft := t
		if p == 0 {
			ft = t0
		}
		if !d.frame(cn, h, in[p:end], typ, flags, sid, base+int64(p), ft) {
			return p
		}
		p = end
	}
	return p
}

// frame decodes one frame (or header block); false if decoding stopped.
func (d *Decoder) frame(cn *conn, h *half, b []byte, typ http2.FrameType, flags http2.Flags, sid uint32, off int64, t time.Time) bool {
	if h.fr == nil {
		d.frameSetup(h)
	}
	if !h.slow && !d.noFast {
		// Fast path: the frames kubelet and containerd send all the time,
		// when they are plainly valid, are read here without the Framer
		// (which allocates a frame each time). Anything else, valid or
		// not, goes to the Framer, whose checks and errors stay the
		// reference.
		switch typ {
		case http2.FrameData:
			if sid != 0 && !flags.Has(http2.FlagDataPadded) {
				d.onData(cn, h, sid, b[9:], flags.Has(http2.FlagDataEndStream), t)
				return true
			}
		case http2.FrameHeaders:
			if sid != 0 && flags&(http2.FlagHeadersEndHeaders|http2.FlagHeadersPadded|http2.FlagHeadersPriority) == http2.FlagHeadersEndHeaders {
				return d.fastHeaders(cn, h, b[9:], flags, sid, off, t)
			}
		case http2.FramePing:
			if len(b) == 9+8 && sid == 0 {
				return true
			}
		case http2.FrameWindowUpdate:
			if len(b) == 9+4 && (uint32(b[9])<<24|uint32(b[10])<<16|uint32(b[11])<<8|uint32(b[12]))&(1<<31-1) != 0 {
				return true
			}
		}
	}
	h.rd.b = b
	f, err := h.fr.ReadFrame()
	if err != nil {
		var se http2.StreamError
		// A StreamError with a cause comes after the header block went
		// through HPACK: only that stream is hurt. Without one (bad
		// padding, ...) the block was skipped and the HPACK state is lost.
		if errors.As(err, &se) && (typ != http2.FrameHeaders || se.Cause != nil) {
			h.slow = true
			d.streamFrameError(cn, h, sid, typ, flags, se, t)
			return true
		}
		if detail := h.fr.ErrorDetail(); detail != nil {
			err = fmt.Errorf("%w (%v)", err, detail)
		}
		d.fail(cn, h, off, fmt.Errorf("%w: %v frame on stream %d: %w", ErrFrame, typ, sid, err), false, t)
		return false
	}
	switch f := f.(type) {
	case *http2.DataFrame:
		d.onData(cn, h, f.StreamID, f.Data(), f.StreamEnded(), t)
	case *http2.MetaHeadersFrame:
		d.onHeaders(cn, h, f.StreamID, f.StreamEnded(), f.Truncated, f.Fields, false, t)
	case *http2.RSTStreamFrame:
		d.onReset(cn, h, f.StreamID, f.ErrCode, t)
	case *http2.GoAwayFrame:
		d.onGoAway(cn, h, f.LastStreamID, f.ErrCode, t)
	case *http2.SettingsFrame:
		if v, ok := f.Value(http2.SettingHeaderTableSize); ok && !f.IsAck() {
			// The peer's table size bounds what the other direction's
			// encoder may use. Never lower: updates may still be in flight.
			if other := &cn.half[1-h.dir]; !other.dead {
				if other.fr == nil {
					d.frameSetup(other)
				}
				other.hdec.SetAllowedMaxDynamicTableSize(min(max(v, minTableSize), maxTableSize))
			}
		}
	case *http2.PushPromiseFrame:
		// gRPC clients disable push; its header block would desynchronise HPACK.
		d.fail(cn, h, off, fmt.Errorf("%w: unexpected PUSH_PROMISE on stream %d", ErrFrame, sid), false, t)
		return false
	default:
		// PING, PRIORITY, WINDOW_UPDATE, unknown types: nothing for calls.
	}
	return true
}

// frameSetup creates a half's Framer before its first frame.
func (d *Decoder) frameSetup(h *half) {
	h.fr = http2.NewFramer(nil, &h.rd)
	h.hdec = hpack.NewDecoder(4096, nil)
	h.hdec.SetAllowedMaxDynamicTableSize(minTableSize)
	h.fr.ReadMetaHeaders = h.hdec
	h.fr.MaxHeaderListSize = maxHeaderList
	h.fr.SetMaxReadFrameSize(16 << 20)
	h.fr.SetReuseFrames()
	h.hs.hdec = h.hdec
	h.hs.valid = &d.valid
	h.emit = h.hs.emit
}

// fail stops decoding one direction of a connection.
func (d *Decoder) fail(cn *conn, h *half, off int64, err error, gap bool, t time.Time) {
	h.dead = true
	h.buf = nil
	h.fr, h.hdec = nil, nil
	h.hs, h.emit, h.kept = headerSink{}, nil, [2][]hpack.HeaderField{}
	h.gap = gap
	ce := &ConnError{Conn: cn.id, Dir: h.dir.String(), Offset: off, Time: t, Err: err}
	d.errs = append(d.errs, ce)
	if d.opts.OnConnError != nil {
		d.opts.OnConnError(ce)
	}
	note := fmt.Sprintf("%s decoding stopped at offset %d: %v", h.dir, off, err)
	for _, s := range cn.sorted() {
		c := s.call
		if gap {
			c.Flags |= Gap
		}
		c.Errors = append(c.Errors, note)
		if h.dir == capture.ServerToClient {
			// No response can be seen any more.
			c.Flags |= Incomplete
			d.finish(cn, s, time.Time{})
		}
	}
}

// closeHalf handles the end of one direction of a connection.
func (d *Decoder) closeHalf(cn *conn, h *half, t time.Time) {
	if h.closed {
		return
	}
	h.closed = true
	if !h.dead && (len(h.buf) > 0 || (h.preface > 0 && h.preface < len(clientPreface))) {
		d.fail(cn, h, h.next-int64(len(h.buf)), fmt.Errorf("%w: connection closed with %d bytes of a frame", ErrTruncated, len(h.buf)), false, t)
	}
	both := cn.half[0].closed && cn.half[1].closed
	if h.dir == capture.ServerToClient || both {
		for _, s := range cn.sorted() {
			s.call.Flags |= Incomplete
			s.call.Errors = append(s.call.Errors, "connection closed before the call ended")
			d.finish(cn, s, time.Time{})
		}
	}
	if both {
		delete(d.conns, cn.id)
	}
}

// Close ends decoding: it reports connections that end inside a frame,
// hands every open call to OnCall flagged Incomplete, in order of start,
// and forgets all connections (Errors still returns what happened).
func (d *Decoder) Close() {
	ids := make([]uint64, 0, len(d.conns))
	for id := range d.conns {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var open []*stream
	for _, id := range ids {
		cn := d.conns[id]
		for dir := range cn.half {
			h := &cn.half[dir]
			if !h.dead && len(h.buf) > 0 {
				d.fail(cn, h, h.next-int64(len(h.buf)), fmt.Errorf("%w: capture ended with %d bytes of a frame", ErrTruncated, len(h.buf)), false, time.Time{})
			}
		}
		open = append(open, cn.sorted()...)
	}
	slices.SortFunc(open, func(a, b *stream) int {
		return cmp.Or(a.call.Start.Compare(b.call.Start), cmp.Compare(a.seq, b.seq))
	})
	for _, s := range open {
		s.call.Flags |= Incomplete
		s.call.Errors = append(s.call.Errors, "capture ended before the call ended")
		d.finish(d.conns[s.call.Conn], s, time.Time{})
	}
	clear(d.conns)
}

// DecodeAll decodes a whole capture. It returns the calls sorted by start
// time (then connection and stream), the connection-level errors, and an
// error if src failed. It does not close src.
func DecodeAll(src capture.Source, opts Options) ([]*Call, []*ConnError, error) {
	var calls []*Call
	user := opts.OnCall
	opts.OnCall = func(c *Call) {
		calls = append(calls, c)
		if user != nil {
			user(c)
		}
	}
	d := New(opts)
	var err error
	for {
		var c capture.Chunk
		c, err = src.Next()
		if err != nil {
			break
		}
		d.Feed(c)
	}
	d.Close()
	if errors.Is(err, io.EOF) {
		err = nil
	} else {
		err = fmt.Errorf("decode: reading capture: %w", err)
	}
	SortCalls(calls)
	return calls, d.Errors(), err
}

// SortCalls sorts calls by start time, then connection, then stream.
func SortCalls(calls []*Call) {
	slices.SortStableFunc(calls, func(a, b *Call) int {
		return cmp.Or(a.Start.Compare(b.Start), cmp.Compare(a.Conn, b.Conn), cmp.Compare(a.Stream, b.Stream))
	})
}

// Oldest is the earliest start a call not yet handed to OnCall can have:
// the start of the oldest open call, or of a request header block still
// being buffered. ok is false when nothing is open, so every call that
// starts later comes after what was fed. It lets a caller print calls in
// start order while holding only those that may still be overtaken.
func (d *Decoder) Oldest() (t time.Time, ok bool) {
	for _, cn := range d.conns {
		for _, s := range cn.streams {
			if s.call != nil && (!ok || s.call.Start.Before(t)) {
				t, ok = s.call.Start, true
			}
		}
		if h := &cn.half[capture.ClientToServer]; len(h.buf) > 0 && (!ok || h.bufTime.Before(t)) {
			t, ok = h.bufTime, true
		}
	}
	return t, ok
}
