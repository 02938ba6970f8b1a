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
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Errors a ConnError may wrap.
var (
	// ErrBytesLost: the capture missed bytes of the connection; decoding
	// resumes at the next frame boundary found, with the HPACK table
	// unknown.
	ErrBytesLost = errors.New("decode: bytes lost")
	// ErrPreface: the client→server stream does not start with the HTTP/2
	// client preface.
	ErrPreface = errors.New("decode: no HTTP/2 client preface")
	// ErrTruncated: the connection or the capture ended inside a frame.
	ErrTruncated = errors.New("decode: stream ends inside a frame")
	// ErrFrame: a frame could not be read (bad length, bad padding, HPACK
	// failure, frames out of order, ...).
	ErrFrame = errors.New("decode: bad frame")
	// ErrForgotten: the connection was idle long enough that its decoding
	// state was dropped (see Options.IdleConn), and then carried bytes
	// again; decoding resumes at the next frame boundary found, with the
	// HPACK table unknown.
	ErrForgotten = errors.New("decode: connection forgotten while idle")
)

// Options configure a Decoder. The zero value is usable and redacts.
type Options struct {
	// OnCall receives each call once, when it ends: trailers seen, stream
	// reset, GOAWAY above its stream, connection closed, or at Close. The
	// Call then belongs to the callee; the Decoder keeps no reference.
	OnCall func(*Call)
	// OnConnError, if set, receives each connection-level error once it is
	// known where decoding resumed (or that it did not, at the end); the
	// Decoder still updates its counts of calls. Errors returns them all
	// too.
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
	// EncodeOnly, if set with Encode, is asked once per CRI method; when
	// it says true, that method's messages are encoded (or kept, KeepWire)
	// but not unmarshalled: Message.Proto stays nil unless Encode cannot
	// write one. For an output that prints every message but reads none
	// of that method's.
	EncodeOnly func(service, method string) bool
	// SkipResponseMaps unmarshals responses without their map fields
	// (labels, annotations, the info maps): for outputs that show none of
	// them. Building Go maps is most of the cost of a status response.
	SkipResponseMaps bool
	// OnStreamMessage, if set, receives each response message of a
	// server-streaming CRI call (GetContainerEvents) as it is decoded,
	// with the call so far; such messages are then not kept in the Call
	// (Call.Streamed counts them), so a stream open for the life of a
	// connection costs no memory. The Message is the callee's; the Call
	// is still the Decoder's and is handed to OnCall when it ends.
	OnStreamMessage func(c *Call, m Message)
	// Unwaited, if set, tells the open calls Oldest leaves out: those a
	// caller never waits for, e.g. a server stream open for the life of
	// its connection. It is asked of open calls whose method is known
	// (Call.Name).
	Unwaited func(*Call) bool
	// ListsUnary says the clients never call KEP-5825's Stream* list
	// methods (kubelet's CRIListStreaming gate is off: its default through
	// v1.37). A call caught midway whose :path is unknown and whose
	// messages read as both StreamContainers and ListContainers (any
	// non-empty list) is then named ListContainers; without it, such a
	// call stays unknown. record --attach finds it out from kubelet's
	// flags, configuration and version and notes it in the capture.
	ListsUnary bool
	// NameWait is how long (in capture time) a call caught midway that its
	// messages cannot name waits for a later call to name its :path entry
	// before it is handed out unnamed; 0 means 30 s. A live view keeps it
	// short.
	NameWait time.Duration
	// IdleConn is how long (in capture time) a connection with no call
	// open may carry nothing before its decoding state (HPACK tables,
	// buffers: a few KB) is dropped, so that memory follows the
	// connections in use, not every connection the capture ever opened
	// without closing; 0 means 10 minutes (looked for once a minute of
	// capture time). Past maxConns connections, the longest idle without
	// a call open go first. A forgotten connection that carries bytes
	// again is decoded from the next frame boundary, as one caught midway
	// (ErrForgotten).
	IdleConn time.Duration
	// Fields, if set, lists for some message types, requests and
	// responses alike (by full name, e.g. "runtime.v1.CreateContainerRequest"),
	// the only fields decoded, as paths of field names ("config.metadata";
	// a field named is decoded whole; scalars beside them are kept): e.g.
	// flow.ReadsFields, for outputs that show no message. The others are
	// dropped from the wire bytes first: a container's or a sandbox's
	// whole config, or a status's mounts, image and network, is most of
	// what decoding the message costs. A response type not listed is
	// decoded as SkipResponseMaps says.
	Fields map[protoreflect.FullName][]string
	// FieldsAbove, if set, limits Fields to the messages larger than it
	// (uncompressed bytes), decoded then without their maps too; smaller
	// ones are decoded whole. The HTML viewer shows the messages up to
	// this size and only the size of larger ones: a 16 MiB list is not
	// built whole, maps and all.
	FieldsAbove int
	// ListsAbove, if set, keeps a ListContainers or ListPodSandbox answer
	// larger than it as it came (Message.Wire, Proto nil), once checked
	// item by item, instead of decoding it: WireMessage.Items reads it one
	// item at a time. An answer of 80,000 containers is 17 MB on the wire
	// and 37 MB more decoded, even to flow.ReadsFields.
	ListsAbove int
	// Encode, if set, is handed each message of a CRI type with its wire
	// bytes (uncompressed) first. When it says ok, Message.Encoded holds
	// what it returned and the message is decoded to Fields alone (for
	// what grouping and labels read; a response not listed, without its
	// maps); when not, it is decoded as if Encode were unset. calls
	// --json writes messages as JSON from their wire bytes this way,
	// without building them whole.
	Encode func(md protoreflect.MessageDescriptor, wire []byte) (out []byte, ok bool)
	// KeepWire, if set with Encode, is asked first: when it says true,
	// the message is not handed to Encode but kept as it came
	// (Message.Wire, not copied where the decoder held it whole), and is
	// decoded as when Encode says ok. calls --json keeps a message over
	// 1 MiB so and writes its JSON as it prints it: the JSON of a 16 MiB
	// answer is never held whole.
	KeepWire func(md protoreflect.MessageDescriptor, wire []byte) bool
	// RequestHeader, if set, says which request header fields a Call
	// keeps, by name (e.g. flow.ReadsHeader); the others are not kept.
	// An output that shows no headers keeps only what it reads: the
	// copies were a tenth of what render allocated and kept.
	RequestHeader func(name string) bool

	noPark    bool // tests only: hand unnamed calls out at once
	noElim    bool // tests only: parked calls are not named by elimination
	noEffects bool // tests only: do not name calls by their effect
	noForget  bool // tests only: keep every connection
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
//
// A connection caught midway (capture.Chunk.Midway), or whose bytes were
// lost or could not be decoded, is resynchronised: decoding resumes at
// the next frame boundary found, with an HPACK table whose older entries
// are unknown; calls whose :path is one of those are named by inference
// (Call.Flags Inferred) or left unnamed.
type Decoder struct {
	opts        Options
	conns       map[uint64]*conn
	errs        []*ConnError
	errsDropped int
	seq         uint64 // call creation order, for Close
	methods     map[string]*method
	red         redactor
	gz          gunzipper
	maps        mapFiller                               // maps from the wire; its pruner: Options.SkipResponseMaps
	fields      fieldPruner                             // Options.Fields
	items       map[protoreflect.FullName]proto.Message // keepByItems' reused items
	free        [][]byte                                // message buffers for reuse
	spare       []byte                                  // a large message's buffer handed back (Recycle)
	freeStreams []*stream                               // ended streams for reuse
	valid       validCache
	noProto     bool          // benchmarks only: stop below protobuf decoding
	noFast      bool          // tests only: every frame through the Framer
	parked      []*parkedCall // ended calls waiting for their :path (park.go)
	feeds       int
	// Idle connections (idle.go).
	idleSwept time.Time
	connCap   int
	forgotten forgottenSet
	// tracking: a connection was caught midway; ids is what calls showed
	// of the runtime's IDs, to name calls by their effect (effects.go).
	tracking bool
	nPassed  int // messages let pass unheld (tests)
	ids      map[string]*idHistory
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
// happened: the first maxErrors of them (ErrorsDropped counts the rest).
func (d *Decoder) Errors() []*ConnError {
	return slices.Clone(d.errs)
}

// ErrorsDropped counts the connection-level errors past the first
// maxErrors, which Errors does not keep (OnConnError still sees them).
func (d *Decoder) ErrorsDropped() int { return d.errsDropped }

// maxErrors bounds the connection-level errors kept, so that a capture of
// many broken connections does not grow memory without end.
const maxErrors = 10000

func (d *Decoder) addErr(ce *ConnError) {
	if len(d.errs) < maxErrors {
		d.errs = append(d.errs, ce)
	} else {
		d.errsDropped++
	}
}

// conn is the decoding state of one connection.
type conn struct {
	id      uint64
	half    [2]half // by capture.Dir
	streams map[uint32]*stream
	// maxStream is the highest stream the client opened: frames for lower,
	// unknown streams belong to calls already ended. 0 until a request is
	// seen (after a resync of the client's side too): the streams seen
	// before began before decoding did.
	maxStream uint32
	last      time.Time // when the connection last carried a chunk
	// oldest is the start of the oldest open call Oldest counts, if
	// oldestOK; it stays valid until a stream opens or ends (oldestSet
	// false): connections cut with calls open hold most open streams, and
	// are scanned once, not at every Oldest.
	oldest              time.Time
	oldestOK, oldestSet bool
}

// half is one direction of a connection.
type half struct {
	dir    capture.Dir
	fs     frameStream
	closed bool // a Close chunk was seen
	// begun: a frame was decoded; until then a resync is no error.
	begun bool
	// slow: the Framer returned a stream error and goes on: from then on
	// it reads every frame of this direction, so that its state (frame
	// order) stays its own.
	slow bool
	rd   sliceReader
	fr   *http2.Framer
	hb   headerBlocks
	kept [2][]hpack.HeaderField // last response headers and trailers kept
	// pending is the error whose resumption is not known yet; lastErr the
	// latest error, which counts the calls left unknown after it.
	pending, lastErr *ConnError
	// held: the server's frames wait while the client's side looks for
	// a boundary in bytes it holds, so that no response is read before
	// its request.
	held bool
}

// maxHeld bounds the server→client bytes held for the client's resync.
const maxHeld = 4 << 20

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
		for dir := range cn.half {
			cn.half[dir] = half{dir: capture.Dir(dir), fs: frameStream{maxFrame: defaultMaxFrame}}
			cn.half[dir].hb.limit = defaultTableSize
		}
		cn.half[c2s].fs.preface = len(clientPreface)
		d.conns[id] = cn
	}
	return cn
}

// Feed decodes one chunk. Data is decoded as far as whole frames go (the
// rest waits for the next chunk); Close ends a direction, and the open
// calls of the connection once the server side is closed. An Open chunk
// marked Midway, a Gap, or an Offset beyond the bytes seen make decoding
// of that direction resume at the next frame boundary found.
// c.Data is not retained.
func (d *Decoder) Feed(c capture.Chunk) {
	if c.Dir > capture.ServerToClient {
		return
	}
	if len(d.parked) > 0 {
		// Now and then, and as soon as the first parked call has waited.
		if d.feeds++; d.feeds%64 == 0 || c.Time.Sub(d.parked[0].s.call.End) > d.nameWait() {
			d.sweep(c.Time)
		}
	}
	cn := d.conns[c.Conn]
	if cn == nil {
		cn = d.conn(c.Conn)
		if t, ok := d.forgotten.take(c.Conn); ok {
			d.resume(cn, c, t)
		}
	}
	cn.last = c.Time
	if !d.opts.noForget && (c.Time.Sub(d.idleSwept) >= idleSweepEvery || len(d.conns) > max(d.connCap, maxConns)) {
		d.forgetIdle(c.Time, cn)
	}
	h := &cn.half[c.Dir]
	switch c.Kind {
	case capture.Open:
		if c.Midway {
			for dir := range cn.half {
				if hh := &cn.half[dir]; !hh.begun && hh.fs.next == 0 {
					d.resync(cn, hh)
				}
			}
		}
		return
	case capture.Close:
		d.closeHalf(cn, h, c.Time)
		return
	case capture.Data:
	default:
		return
	}
	fs := &h.fs
	// A source reports lost bytes with Gap, or by an offset beyond the
	// bytes seen (e.g. a capture that began inside the connection).
	if c.Gap != 0 || c.Offset > fs.next {
		d.bytesLost(cn, h, c)
	}
	data := c.Data
	fs.next += int64(len(data))
	if fs.preface > 0 {
		n := min(fs.preface, len(data))
		at := len(clientPreface) - fs.preface
		for i := range n {
			if data[i] != clientPreface[at+i] {
				err := fmt.Errorf("%w (got %q)", ErrPreface, data[i])
				if at+i == 0 {
					err = fmt.Errorf("%w (got %q): the connection was caught midway, or is not HTTP/2", ErrPreface, data[i])
					// The server's side then began before the capture too.
					if o := &cn.half[s2c]; !o.begun && o.pending == nil {
						o.fs.buf, o.fs.marks = o.fs.buf[:0], o.fs.marks[:0]
						d.resync(cn, o)
					}
				}
				d.lose(cn, h, int64(at+i), err, false, c.Time)
				n = i
				break
			}
		}
		fs.preface = max(fs.preface-n, 0)
		if fs.hunting {
			fs.preface = 0
		} else if fs.preface == 0 {
			h.begun = true // the connection's first bytes: not caught midway
		}
		data = data[n:]
	}
	if len(data) == 0 {
		return
	}
	if len(fs.buf) == 0 {
		// Common case: frames straight from the chunk, only the tail is kept.
		if n := d.frames(cn, h, data, false, c.Time); n < len(data) {
			fs.buf = append(fs.buf[:0], data[n:]...)
			fs.marks = append(fs.marks[:0], mark{fs.next - int64(len(data)-n), c.Time})
		}
	} else {
		if !fs.hunting || len(fs.marks) < maxHuntMarks {
			fs.marks = append(fs.marks, mark{fs.next - int64(len(data)), c.Time})
		}
		fs.buf = append(fs.buf, data...)
		d.drain(cn, h, c.Time)
	}
	if other := &cn.half[s2c]; h.dir == c2s && other.held {
		d.drain(cn, other, c.Time)
	}
}

// drain decodes the units of a direction's buffered bytes.
func (d *Decoder) drain(cn *conn, h *half, t time.Time) {
	fs := &h.fs
	h.held = false
	n := d.frames(cn, h, fs.buf, true, t)
	fs.buf = fs.buf[:copy(fs.buf, fs.buf[n:])]
	fs.consumed(fs.next - int64(len(fs.buf)))
	if len(fs.buf) == 0 && cap(fs.buf) > 1<<20 {
		fs.buf = nil // don't pin the memory of one huge frame
	}
}

// bytesLost handles a chunk that comes after a hole in the stream.
func (d *Decoder) bytesLost(cn *conn, h *half, c capture.Chunk) {
	fs := &h.fs
	off := fs.next
	fs.next = max(fs.next, c.Offset)
	if !h.begun && (fs.hunting || off == 0) {
		// Nothing decoded yet: the connection was caught midway, which is
		// no error.
		fs.buf, fs.marks = fs.buf[:0], fs.marks[:0]
		d.resync(cn, h)
		return
	}
	var err error
	if c.Gap > 0 {
		err = fmt.Errorf("%w: %d bytes at offset %d", ErrBytesLost, c.Gap, off)
	} else {
		err = fmt.Errorf("%w at offset %d", ErrBytesLost, off)
	}
	// The bytes kept are of a unit that will never be whole.
	fs.buf, fs.marks = fs.buf[:0], fs.marks[:0]
	d.lose(cn, h, off, err, true, c.Time)
}

// frames decodes the units (frames, header blocks) at the start of in and
// returns the bytes consumed: the rest is an incomplete unit, or bytes a
// resync has yet to judge. in is the chunk just seen, at t, or buffered
// bytes, whose times are in the marks.
func (d *Decoder) frames(cn *conn, h *half, in []byte, buffered bool, t time.Time) int {
	fs := &h.fs
	base := fs.next - int64(len(in)) // offset of in[0]
	if h.dir == s2c {
		if c := &cn.half[c2s].fs; c.hunting && len(c.buf) > 0 && len(in) < maxHeld {
			h.held = true
			return 0
		}
	}
	p := 0
	for {
		if fs.hunting {
			at, ok := findSync(in[p:], fs.maxFrame, false, fs.chunkStarts(in, p, base, buffered))
			d.searched(h, int64(at))
			if !ok {
				return p + at
			}
			p += at
			d.resumed(h, base+int64(p))
		}
		if len(in)-p < frameHeaderLen {
			return p
		}
		fh := readFrameHeader(in[p:])
		if !fs.settled {
			// Each side's first frame is SETTINGS: this catches garbage
			// before waiting for megabytes of a nonsense length.
			if fh.Type != http2.FrameSettings || fh.StreamID != 0 || fh.Flags.Has(http2.FlagSettingsAck) {
				// (The frame may be sound, of a connection caught midway: the
				// resync may take it.)
				d.lose(cn, h, base+int64(p), fmt.Errorf("%w: first frame is %v on stream %d, not SETTINGS", ErrFrame, fh.Type, fh.StreamID), false, t)
				continue
			}
			fs.settled = true
		}
		end := p + frameHeaderLen + int(fh.Length)
		if fh.Type == http2.FrameHeaders && !fh.Flags.Has(http2.FlagHeadersEndHeaders) {
			var ok, tooBig bool
			end, ok, tooBig = unitEnd(in, p, fh)
			if tooBig {
				d.lose(cn, h, base+int64(p), fmt.Errorf("%w: header block of stream %d larger than %d bytes", ErrFrame, fh.StreamID, maxHeaderBlock), false, t)
				p++
				continue
			}
			if !ok {
				return p
			}
		} else if end > len(in) {
			return p
		}
		ft := t
		if buffered {
			ft = fs.timeAt(base + int64(p))
		}
		if !d.frame(cn, h, in[p:end], fh, base+int64(p), ft) {
			// Decoding resumes at a boundary found after the bad frame's
			// first byte.
			p++
			continue
		}
		h.begun = true
		p = end
	}
}

// frame decodes one unit (frame or header block); false if it could not
// be decoded and the direction is resynchronising.
func (d *Decoder) frame(cn *conn, h *half, b []byte, fh http2.FrameHeader, off int64, t time.Time) bool {
	if h.fr == nil {
		d.frameSetup(h)
	}
	typ, flags, sid := fh.Type, fh.Flags, fh.StreamID
	if h.hb.part != nil {
		// The table is partly unknown: header blocks are read here.
		switch typ {
		case http2.FrameHeaders:
			return d.partialHeaders(cn, h, b, fh, off, t)
		case http2.FrameContinuation:
			return true // the end of a block begun before the resync
		}
	} else if !h.slow && !d.noFast {
		// Fast path: the frames kubelet and containerd send all the time,
		// when they are plainly valid, are read here without the Framer
		// (which allocates a frame each time). Anything else, valid or
		// not, goes to the Framer, whose checks and errors stay the
		// reference.
		switch typ {
		case http2.FrameData:
			if sid != 0 && !flags.Has(http2.FlagDataPadded) {
				d.onData(cn, h, sid, b[frameHeaderLen:], flags.Has(http2.FlagDataEndStream), t)
				return true
			}
		case http2.FrameHeaders:
			if sid != 0 && flags&(http2.FlagHeadersEndHeaders|http2.FlagHeadersPadded|http2.FlagHeadersPriority) == http2.FlagHeadersEndHeaders {
				return d.fastHeaders(cn, h, b[frameHeaderLen:], flags, sid, off, t)
			}
		case http2.FramePing:
			if len(b) == frameHeaderLen+8 && sid == 0 {
				return true
			}
		case http2.FrameWindowUpdate:
			if len(b) == frameHeaderLen+4 && (uint32(b[9])<<24|uint32(b[10])<<16|uint32(b[11])<<8|uint32(b[12]))&(1<<31-1) != 0 {
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
		d.lose(cn, h, off, fmt.Errorf("%w: %v frame on stream %d: %w", ErrFrame, typ, sid, err), false, t)
		return false
	}
	switch f := f.(type) {
	case *http2.DataFrame:
		d.onData(cn, h, f.StreamID, f.Data(), f.StreamEnded(), t)
	case *http2.MetaHeadersFrame:
		d.onHeaders(cn, h, f.StreamID, f.StreamEnded(), f.Truncated, f.Fields, false, nil, t)
	case *http2.RSTStreamFrame:
		d.onReset(cn, h, f.StreamID, f.ErrCode, t)
	case *http2.GoAwayFrame:
		d.onGoAway(cn, h, f.LastStreamID, f.ErrCode, t)
	case *http2.SettingsFrame:
		if f.IsAck() {
			break
		}
		other := &cn.half[1-h.dir]
		if v, ok := f.Value(http2.SettingHeaderTableSize); ok {
			// The peer's table size bounds what the other direction's
			// encoder may use. Never lower: updates may still be in flight.
			other.hb.announce(min(v, maxTableSize))
		}
		if v, ok := f.Value(http2.SettingMaxFrameSize); ok {
			// The largest frame the other side may send, for its resync.
			other.fs.maxFrame = max(other.fs.maxFrame, min(v, 1<<24-1))
		}
	case *http2.PushPromiseFrame:
		// gRPC clients disable push; its header block would desynchronise HPACK.
		d.lose(cn, h, off, fmt.Errorf("%w: unexpected PUSH_PROMISE on stream %d", ErrFrame, sid), false, t)
		return false
	default:
		// PING, PRIORITY, WINDOW_UPDATE, unknown types: nothing for calls.
	}
	return true
}

// frameSetup creates a half's Framer before its first frame.
func (d *Decoder) frameSetup(h *half) {
	h.fr = http2.NewFramer(nil, &h.rd)
	h.fr.MaxHeaderListSize = maxHeaderList
	h.fr.SetMaxReadFrameSize(16 << 20)
	h.fr.SetReuseFrames()
	h.hb.setup(h.fr, &d.valid)
}

// resync makes a direction look for the next frame boundary, with the
// HPACK table unknown from the next header block on.
func (d *Decoder) resync(cn *conn, h *half) {
	d.tracking = !d.opts.noEffects
	fs := &h.fs
	fs.hunting, fs.settled, fs.preface = true, true, 0
	h.fr, h.slow = nil, false
	h.kept = [2][]hpack.HeaderField{}
	h.hb.unknown()
	if h.dir == c2s {
		// The streams opened from now on are known by their requests.
		cn.maxStream = 0
	}
}

// lose records a connection-level error in one direction: what was
// being decoded there is lost, and decoding resumes at the next frame
// boundary found after off (Feed and frames look for it).
func (d *Decoder) lose(cn *conn, h *half, off int64, err error, gap bool, t time.Time) {
	if h.pending != nil {
		d.reportErr(h.pending)
	}
	ce := &ConnError{Conn: cn.id, Dir: h.dir.String(), Offset: off, Time: t, Err: err, Resumed: -1}
	d.addErr(ce)
	h.pending, h.lastErr = ce, ce
	maxStream := cn.maxStream
	d.resync(cn, h)
	// The requests that follow may be for streams below the last one
	// seen; keep it so that their responses are not taken for orphans.
	cn.maxStream = maxStream
	note := fmt.Sprintf("%s decoding error at offset %d: %v", h.dir, off, err)
	if gap {
		note = fmt.Sprintf("%s: %v", h.dir, err)
	}
	for _, s := range cn.sorted() {
		c := s.call
		ce.Lost++
		c.Flags |= Gap
		c.Errors = append(c.Errors, note)
		// The messages of this direction are lost from here: where the
		// next one begins cannot be known.
		if a := &s.asm[h.dir]; a.nhdr > 0 {
			c.Errors = append(c.Errors, fmt.Sprintf("%s message lost: %d of %d bytes seen", dirNoun[h.dir], a.seen(), a.want))
			d.release(a)
		}
		s.lost[h.dir] = true
	}
}

// searched counts bytes skipped while looking for a frame boundary.
func (d *Decoder) searched(h *half, n int64) {
	if h.pending != nil {
		h.pending.searched += n
	}
}

// resumed notes that decoding of a direction resumed at off.
func (d *Decoder) resumed(h *half, off int64) {
	h.fs.hunting = false
	if ce := h.pending; ce != nil {
		ce.Resumed = off
		h.pending = nil
		d.reportErr(ce)
	}
}

func (d *Decoder) reportErr(ce *ConnError) {
	if d.opts.OnConnError != nil {
		d.opts.OnConnError(ce)
	}
}

// endHalf is the end of a direction's bytes: a resync in progress gets
// its last chance, and bytes of an unfinished frame are reported.
func (d *Decoder) endHalf(cn *conn, h *half, t time.Time, what string) {
	fs := &h.fs
	for fs.hunting && len(fs.buf) > 0 {
		base := fs.next - int64(len(fs.buf))
		at, ok := findSync(fs.buf, fs.maxFrame, true, fs.chunkStarts(fs.buf, 0, base, true))
		d.searched(h, int64(at))
		if !ok {
			fs.buf = nil
			break
		}
		d.resumed(h, fs.next-int64(len(fs.buf)-at))
		n := d.frames(cn, h, fs.buf[at:], true, t)
		fs.buf = fs.buf[at+n:]
	}
	if !h.begun && fs.next > 0 && h.pending == nil && h.lastErr == nil {
		// Caught midway, and no frame was ever found: not HTTP/2, or too
		// few bytes to tell.
		ce := &ConnError{Conn: cn.id, Dir: h.dir.String(), Offset: 0, Time: t, Resumed: -1,
			Err: fmt.Errorf("%w: no HTTP/2 frame found in the %d bytes seen of a connection caught midway", ErrFrame, fs.next)}
		d.addErr(ce)
		d.reportErr(ce)
		fs.buf = nil
	}
	if !fs.hunting && len(fs.buf) > 0 {
		if h.pending != nil {
			d.reportErr(h.pending)
		}
		ce := &ConnError{Conn: cn.id, Dir: h.dir.String(), Offset: fs.next - int64(len(fs.buf)), Time: t, Resumed: -1,
			Err: fmt.Errorf("%w: %s with %d bytes of a frame", ErrTruncated, what, len(fs.buf)), Lost: len(cn.streams)}
		d.addErr(ce)
		h.pending = ce
	}
	fs.buf, fs.marks = nil, nil
	fs.hunting = false
	if h.pending != nil {
		d.reportErr(h.pending)
		h.pending = nil
	}
}

// closeHalf handles the end of one direction of a connection.
func (d *Decoder) closeHalf(cn *conn, h *half, t time.Time) {
	if h.closed {
		return
	}
	h.closed = true
	if fs := &h.fs; fs.preface > 0 && fs.preface < len(clientPreface) {
		ce := &ConnError{Conn: cn.id, Dir: h.dir.String(), Offset: fs.next, Time: t, Resumed: -1,
			Err: fmt.Errorf("%w: connection closed with %d bytes of a frame", ErrTruncated, 0)}
		d.addErr(ce)
		d.reportErr(ce)
		fs.preface = 0
	}
	d.endHalf(cn, h, t, "connection closed")
	if other := &cn.half[s2c]; h.dir == c2s && other.held {
		d.drain(cn, other, t)
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
		if len(d.parked) > 0 {
			d.unpark(func(p *parkedCall) bool { return p.conn == cn && !d.hope(p) })
		}
	}
}

// Close ends decoding: it reports connections that end inside a frame,
// hands every open call to OnCall flagged Incomplete, in order of start,
// and forgets all connections (Errors still returns what happened).
func (d *Decoder) Close() {
	d.unpark(func(*parkedCall) bool { return true })
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
			if h.held {
				d.drain(cn, h, time.Time{})
			}
			if !h.closed {
				d.endHalf(cn, h, time.Time{}, "capture ended")
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
// the start of the oldest open call (but those Options.Unwaited leaves
// out), or of a request header block still being buffered. ok is false
// when nothing is open, so every call that starts later comes after what
// was fed. It lets a caller print calls in start order while holding only
// those that may still be overtaken.
func (d *Decoder) Oldest() (t time.Time, ok bool) {
	for _, p := range d.parked {
		if !ok || p.s.call.Start.Before(t) {
			t, ok = p.s.call.Start, true
		}
	}
	for _, cn := range d.conns {
		if !cn.oldestSet {
			cn.oldest, cn.oldestOK = d.oldestOpen(cn)
			cn.oldestSet = true
		}
		if cn.oldestOK && (!ok || cn.oldest.Before(t)) {
			t, ok = cn.oldest, true
		}
		if fs := &cn.half[capture.ClientToServer].fs; len(fs.buf) > 0 && (!ok || fs.marks[0].t.Before(t)) {
			t, ok = fs.marks[0].t, true
		}
	}
	return t, ok
}

// oldestOpen is the start of cn's oldest open call that Oldest counts.
func (d *Decoder) oldestOpen(cn *conn) (t time.Time, ok bool) {
	skip := d.opts.Unwaited
	for _, s := range cn.streams {
		if s.call != nil && (!ok || s.call.Start.Before(t)) && (skip == nil || !s.call.Known || !skip(s.call)) {
			t, ok = s.call.Start, true
		}
	}
	return t, ok
}
