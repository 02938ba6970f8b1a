package decode

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/criseq/criseq/capture"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The call layer: each HTTP/2 stream of a connection is a gRPC call,
// opened by the client's header block, carrying messages both ways, ended
// by the server's trailers (or a reset).

const (
	c2s = capture.ClientToServer
	s2c = capture.ServerToClient
)

// stream is an open gRPC call on one HTTP/2 stream.
type stream struct {
	call       *Call
	seq        uint64 // creation order, to break ties at Close
	m          *method
	asm        [2]assembler // messages being reassembled, by direction
	enc        [2]string    // grpc-encoding, by direction
	clientDone bool         // the client ended its side (END_STREAM)
	lost       [2]bool      // bytes of a direction were lost: its DATA is not read
	first      [2][]Message // room for the first message, by direction
	// rs is what a call decoded with a partial table needs; nil otherwise.
	rs *resyncState
	// Naming by effect (effects.go), once a connection was caught midway:
	// the ID the request acts on, and whether a list request is filtered.
	actID    string
	filtered bool
}

// resyncState is the state of a call whose headers were decoded with a
// partial table.
type resyncState struct {
	// deferred: the :path was not read (an HPACK entry older than the
	// table known) or came from a slot filled by inference: messages are
	// kept raw until the call ends, then the method is inferred (or the
	// slot's checked) and they are unmarshalled.
	deferred bool
	tab      *partialTable // the client's table, holding the slots
	slots    []int32       // unknown slots that may be the :path
	via      *method       // the method of the filled slot, if so
	notPaths methodSet     // methods whose :path was a known entry then
	raw      [2][][]byte   // deferred: message bytes (nil if not readable)
	// statusUnknown: the trailers held fields not known; trailerKey
	// names those fields in stab, the server's table.
	statusUnknown bool
	trailerKey    string
	stab          *partialTable
	// viaErr is the error counting calls left unnamed.
	viaErr *ConnError
}

// resync returns s.rs, made if needed.
func (s *stream) resync() *resyncState {
	if s.rs == nil {
		s.rs = &resyncState{}
	}
	return s.rs
}

// deferred reports whether the call's method is told when it ends.
func (s *stream) deferred() bool { return s.rs != nil && s.rs.deferred }

// maxDeferred bounds the messages kept raw for inference, per direction.
const maxDeferred = 16

// sorted returns the open streams of cn by stream ID.
func (cn *conn) sorted() []*stream {
	ss := make([]*stream, 0, len(cn.streams))
	for _, s := range cn.streams {
		ss = append(ss, s)
	}
	slices.SortFunc(ss, func(a, b *stream) int { return cmp.Compare(a.call.Stream, b.call.Stream) })
	return ss
}

// callAlloc is a Call with room for its first request and response:
// most calls have one of each, and this makes them one allocation.
type callAlloc struct {
	call Call
	msgs [2]Message
}

func (d *Decoder) newStream(cn *conn, sid uint32, t time.Time) *stream {
	d.seq++
	a := &callAlloc{call: Call{Conn: cn.id, Stream: sid, Start: t, Status: -1}}
	var s *stream
	if k := len(d.freeStreams); k > 0 {
		s = d.freeStreams[k-1]
		d.freeStreams = d.freeStreams[:k-1]
	} else {
		s = new(stream)
	}
	*s = stream{call: &a.call, seq: d.seq, m: &noMethod}
	s.first[c2s], s.first[s2c] = a.msgs[0:0:1], a.msgs[1:1:2]
	cn.streams[sid] = s
	cn.oldestSet = false
	return s
}

// requestFields are the request header fields a Call keeps
// (Options.RequestHeader), nil when none.
func (d *Decoder) requestFields(fields []hpack.HeaderField, scratch bool) []hpack.HeaderField {
	keep := d.opts.RequestHeader
	if keep == nil {
		return ownFields(fields, scratch)
	}
	var out []hpack.HeaderField
	for _, f := range fields {
		if keep(f.Name) {
			out = append(out, f)
		}
	}
	return out
}

// maxFreeStreams bounds the streams kept for reuse.
const maxFreeStreams = 256

// onHeaders handles a header block. The client's opens a call. The
// server's first holds the response headers, or, with END_STREAM, the whole
// answer (trailers-only); its second holds the trailers and ends the call.
//
// fields are the block's fields, truncated if the block was larger than
// the limit; scratch says they are a reused slice, to copy if kept. bf,
// for a block decoded with a partial table, tells what was not known.
func (d *Decoder) onHeaders(cn *conn, h *half, sid uint32, ended, truncated bool, fields []hpack.HeaderField, scratch bool, bf *blockFields, t time.Time) {
	if !d.opts.NoRedact {
		redactHeaders(fields)
	}
	s := cn.streams[sid]
	if h.dir == c2s {
		if s != nil {
			s.call.Errors = append(s.call.Errors, "unexpected second header block from the client")
			if ended {
				d.clientDone(cn, s)
			}
			return
		}
		s = d.newStream(cn, sid, t)
		cn.maxStream = max(cn.maxStream, sid)
		c := s.call
		c.RequestHeaders = d.requestFields(fields, scratch)
		path := pseudoValue(fields, "path")
		if bf != nil && len(bf.unknown) > 0 || bf != nil && bf.filled {
			path = d.pathSlots(cn, h, s, path, fields, bf)
		}
		if path == "" && !s.deferred() {
			c.Errors = append(c.Errors, "request headers without :path")
		}
		s.m = d.method(path)
		c.Method, c.Service, c.Name, c.Known = path, s.m.service, s.m.name, s.m.known
		s.enc[c2s] = headerValue(fields, "grpc-encoding")
		if truncated {
			c.Errors = append(c.Errors, "request headers truncated")
		}
		if ended {
			d.clientDone(cn, s)
		}
		return
	}
	if s == nil {
		// Frames for streams already ended are expected; a response to a
		// request never seen is worth showing, unless requests are lost.
		// (Until the client's side shows a request, the streams seen began
		// before decoding did.)
		if sid <= cn.maxStream || cn.maxStream == 0 && cn.half[c2s].hb.part != nil {
			return
		}
		s = d.newStream(cn, sid, t)
		s.call.Errors = append(s.call.Errors, "response to a request that was not seen")
	}
	c := s.call
	if truncated {
		c.Errors = append(c.Errors, "response header block truncated")
	}
	unknown := bf != nil && len(bf.unknown) > 0
	first := c.ResponseHeaders == nil && c.Trailers == nil
	if first {
		if st := pseudoValue(fields, "status"); st != "200" && (st != "" || !unknown) {
			c.Errors = append(c.Errors, fmt.Sprintf("http status %q", st))
		}
		if !ended {
			c.ResponseHeaders = h.keep(0, fields, scratch)
			s.enc[s2c] = headerValue(fields, "grpc-encoding")
			if unknown && c.ResponseHeaders == nil {
				c.ResponseHeaders = []hpack.HeaderField{} // seen, though not known
			}
			return
		}
		c.Flags |= TrailersOnly
	}
	c.Trailers = h.keep(1, fields, scratch)
	if v, ok := headerLookup(fields, "grpc-status"); !ok && unknown {
		rs := s.resync()
		rs.statusUnknown = true // inferStatus may tell
		rs.stab, rs.trailerKey = h.hb.part, unknownKey(bf)
	} else if !ok {
		c.Errors = append(c.Errors, "trailers without grpc-status")
	} else if n, err := strconv.ParseUint(v, 10, 31); err != nil {
		c.Errors = append(c.Errors, fmt.Sprintf("invalid grpc-status %q", v))
	} else {
		c.Status = int(n)
	}
	if v, ok := headerLookup(fields, "grpc-message"); ok {
		c.Message = decodeGRPCMessage(v)
	}
	if !ended {
		c.Errors = append(c.Errors, "trailers without END_STREAM")
	}
	d.finish(cn, s, t)
}

// clientDone notes the end of the request side.
func (d *Decoder) clientDone(_ *conn, s *stream) {
	s.clientDone = true
}

// onData adds a DATA frame's payload to its call's messages.
func (d *Decoder) onData(cn *conn, h *half, sid uint32, data []byte, ended bool, t time.Time) {
	s := cn.streams[sid]
	if s == nil {
		return
	}
	if len(data) > 0 && !s.lost[h.dir] {
		d.assemble(s, h.dir, data, t)
	}
	if !ended {
		return
	}
	if h.dir == c2s {
		d.clientDone(cn, s)
		return
	}
	s.call.Errors = append(s.call.Errors, "server ended the stream without trailers")
	d.finish(cn, s, t)
}

// onReset ends a call reset by either side.
func (d *Decoder) onReset(cn *conn, h *half, sid uint32, code http2.ErrCode, t time.Time) {
	s := cn.streams[sid]
	if s == nil || s.call.Start.After(t) {
		return
	}
	who := "server"
	if h.dir == c2s {
		who = "client"
	}
	s.call.Flags |= Reset
	s.call.Errors = append(s.call.Errors, fmt.Sprintf("stream reset by the %s: %v", who, code))
	d.finish(cn, s, t)
}

// onGoAway ends the client's streams above the server's last processed
// one: the server never saw them. (gRPC servers open no streams, so a
// client's GOAWAY ends nothing.)
func (d *Decoder) onGoAway(cn *conn, h *half, last uint32, code http2.ErrCode, t time.Time) {
	if h.dir != s2c {
		return
	}
	for _, s := range cn.sorted() {
		// (A call begun after the GOAWAY was seen is read before it only
		// when the server's bytes were held during a resync.)
		if s.call.Stream <= last || s.call.Stream&1 == 0 || s.call.Start.After(t) {
			continue
		}
		s.call.Flags |= Reset
		s.call.Errors = append(s.call.Errors, fmt.Sprintf("not processed: GOAWAY from the server (last stream %d, %v)", last, code))
		d.finish(cn, s, t)
	}
}

// streamFrameError records a frame the Framer rejected for one stream only.
func (d *Decoder) streamFrameError(cn *conn, h *half, sid uint32, typ http2.FrameType, flags http2.Flags, se http2.StreamError, t time.Time) {
	msg := fmt.Sprintf("bad %v frame: %v", typ, se)
	if se.Cause != nil {
		msg = fmt.Sprintf("bad %v frame: %v", typ, se.Cause)
	}
	s := cn.streams[sid]
	if typ != http2.FrameHeaders {
		if s != nil {
			s.call.Errors = append(s.call.Errors, msg)
		}
		return
	}
	ended := flags.Has(http2.FlagHeadersEndStream)
	if h.dir == c2s {
		if s == nil {
			s = d.newStream(cn, sid, t)
			cn.maxStream = max(cn.maxStream, sid)
		}
		s.call.Flags |= Malformed
		s.call.Errors = append(s.call.Errors, "request headers: "+msg)
		if ended {
			d.clientDone(cn, s)
		}
		return
	}
	if s == nil {
		return
	}
	s.call.Flags |= Malformed
	s.call.Errors = append(s.call.Errors, "response headers: "+msg)
	if ended {
		d.finish(cn, s, t)
	}
}

// finish hands a call to OnCall. A zero t leaves End unset (incomplete).
func (d *Decoder) finish(cn *conn, s *stream, t time.Time) {
	c := s.call
	if !t.IsZero() {
		c.End = t
		if t.Before(c.Start) {
			c.End = c.Start // frames held during a resync, read late
		}
	}
	var park []*slotState
	var filled *slotState
	if rs := s.rs; rs != nil {
		if rs.deferred {
			park, filled = d.resolve(s)
		}
		if rs.statusUnknown && c.Status < 0 && park == nil {
			d.inferStatus(s)
		}
	}
	if d.tracking && park == nil {
		d.endedNamed(s)
	}
	for dir := range s.asm {
		a := &s.asm[dir]
		if a.nhdr > 0 {
			if c.Flags&(Incomplete|Reset|Gap) == 0 {
				c.Flags |= Malformed
			}
			c.Errors = append(c.Errors, fmt.Sprintf("%s message truncated: %d of %d bytes", dirNoun[dir], a.seen(), a.want))
		}
		d.release(a)
	}
	delete(cn.streams, c.Stream)
	cn.oldestSet = false
	// The stream is reused: callers touch neither it nor its call after
	// finish.
	if park != nil {
		d.park(cn, s, park)
	}
	*s = stream{}
	if len(d.freeStreams) < maxFreeStreams {
		d.freeStreams = append(d.freeStreams, s)
	}
	if filled != nil {
		d.unpark(func(p *parkedCall) bool { return slices.Contains(p.slots, filled) })
	}
	if park == nil {
		d.emit(c)
	}
}

// emit hands a call to OnCall.
func (d *Decoder) emit(c *Call) {
	if d.opts.OnCall != nil {
		d.opts.OnCall(c)
	}
}

var dirNoun = [2]string{"request", "response"}

func headerLookup(fields []hpack.HeaderField, name string) (string, bool) {
	for _, f := range fields {
		if f.Name == name {
			return f.Value, true
		}
	}
	return "", false
}

func headerValue(fields []hpack.HeaderField, name string) string {
	v, _ := headerLookup(fields, name)
	return v
}

// decodeGRPCMessage undoes the percent-encoding of grpc-message; bad
// escapes are kept as they are, like grpc-go does.
func decodeGRPCMessage(s string) string {
	if strings.IndexByte(s, '%') < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
				b.WriteByte(byte(v))
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
