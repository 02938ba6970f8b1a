package decode

import (
	"bytes"
	"cmp"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/criseq/criseq/capture"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/proto"
)

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
	first      [2][]Message // room for the first message, by direction
}

// assembler rebuilds gRPC messages (1-byte flag, 4-byte length, payload)
// from the DATA frames of one direction of a stream.
type assembler struct {
	hdr  [5]byte
	nhdr int
	want uint32 // payload length, once nhdr == 5
	buf  []byte // payload so far
	t    time.Time
}

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
	return s
}

// maxFreeStreams bounds the streams kept for reuse.
const maxFreeStreams = 256

// onHeaders handles a header block. The client's opens a call. The
// server's first holds the response headers, or, with END_STREAM, the whole
// answer (trailers-only); its second holds the trailers and ends the call.
//
// fields are the block's fields, truncated if the block was larger than
// the limit; scratch says they are a reused slice, to copy if kept.
func (d *Decoder) onHeaders(cn *conn, h *half, sid uint32, ended, truncated bool, fields []hpack.HeaderField, scratch bool, t time.Time) {
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
		c.RequestHeaders = ownFields(fields, scratch)
		path := pseudoValue(fields, "path")
		if path == "" {
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
		if sid <= cn.maxStream || cn.half[c2s].dead {
			return
		}
		s = d.newStream(cn, sid, t)
		s.call.Errors = append(s.call.Errors, "response to a request that was not seen")
	}
	c := s.call
	if truncated {
		c.Errors = append(c.Errors, "response header block truncated")
	}
	first := c.ResponseHeaders == nil && c.Trailers == nil
	if first {
		if st := pseudoValue(fields, "status"); st != "200" {
			c.Errors = append(c.Errors, fmt.Sprintf("http status %q", st))
		}
		if !ended {
			c.ResponseHeaders = h.keep(0, fields, scratch)
			s.enc[s2c] = headerValue(fields, "grpc-encoding")
			return
		}
		c.Flags |= TrailersOnly
	}
	c.Trailers = h.keep(1, fields, scratch)
	if v, ok := headerLookup(fields, "grpc-status"); !ok {
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

// clientDone notes the end of the request side; with the responses lost
// the call cannot progress further, so it ends here.
func (d *Decoder) clientDone(cn *conn, s *stream) {
	s.clientDone = true
	if h := &cn.half[s2c]; h.dead {
		s.call.Flags |= Incomplete
		if h.gap {
			s.call.Flags |= Gap
		}
		s.call.Errors = append(s.call.Errors, "responses not decoded: server→client decoding stopped")
		d.finish(cn, s, time.Time{})
	}
}

// onData adds a DATA frame's payload to its call's messages.
func (d *Decoder) onData(cn *conn, h *half, sid uint32, data []byte, ended bool, t time.Time) {
	s := cn.streams[sid]
	if s == nil {
		return
	}
	if len(data) > 0 {
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
	if s == nil {
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
		if s.call.Stream <= last || s.call.Stream&1 == 0 {
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
	}
	for dir := range s.asm {
		a := &s.asm[dir]
		if a.nhdr > 0 {
			if c.Flags&(Incomplete|Reset|Gap) == 0 {
				c.Flags |= Malformed
			}
			c.Errors = append(c.Errors, fmt.Sprintf("%s message truncated: %d of %d bytes", dirNoun[dir], len(a.buf), a.want))
		}
		d.release(a)
	}
	delete(cn.streams, c.Stream)
	// The stream is reused: callers touch neither it nor its call after
	// finish.
	*s = stream{}
	if len(d.freeStreams) < maxFreeStreams {
		d.freeStreams = append(d.freeStreams, s)
	}
	if d.opts.OnCall != nil {
		d.opts.OnCall(c)
	}
}

var dirNoun = [2]string{"request", "response"}

// assemble adds a DATA frame's payload to a direction of a stream.
func (d *Decoder) assemble(s *stream, dir capture.Dir, data []byte, t time.Time) {
	a := &s.asm[dir]
	for len(data) > 0 {
		if a.nhdr == 0 && len(data) >= 5 {
			// Fast path: a whole message in the frame is decoded in place.
			n := binary.BigEndian.Uint32(data[1:5])
			if uint64(len(data)-5) >= uint64(n) {
				d.message(s, dir, data[0], data[5:5+n], t)
				data = data[5+n:]
				continue
			}
		}
		if a.nhdr < 5 {
			if a.nhdr == 0 {
				a.t = t
			}
			k := copy(a.hdr[a.nhdr:], data)
			a.nhdr += k
			data = data[k:]
			if a.nhdr < 5 {
				return
			}
			a.want = binary.BigEndian.Uint32(a.hdr[1:5])
			if a.buf == nil {
				a.buf = d.buffer(a.want)
			}
		}
		k := min(uint64(a.want)-uint64(len(a.buf)), uint64(len(data)))
		a.buf = append(a.buf, data[:k]...)
		data = data[k:]
		if uint64(len(a.buf)) == uint64(a.want) {
			d.message(s, dir, a.hdr[0], a.buf, a.t)
			d.release(a)
		}
	}
}

// buffer returns an empty buffer for a message of n bytes; the capacity
// is bounded since n comes from the wire.
func (d *Decoder) buffer(n uint32) []byte {
	if k := len(d.free); k > 0 {
		b := d.free[k-1]
		d.free = d.free[:k-1]
		return b
	}
	return make([]byte, 0, min(n, 1<<20))
}

func (d *Decoder) release(a *assembler) {
	// Keep a few small buffers: large ones would pin memory for nothing.
	if a.buf != nil && cap(a.buf) <= 64<<10 && len(d.free) < 64 {
		d.free = append(d.free, a.buf[:0])
	}
	a.buf = nil
	a.nhdr = 0
	a.want = 0
}

// message decodes one gRPC message. payload is only valid during the call.
func (d *Decoder) message(s *stream, dir capture.Dir, flag byte, payload []byte, t time.Time) {
	c := s.call
	list := &c.Requests
	typ := s.m.in
	if dir == s2c {
		list, typ = &c.Responses, s.m.out
	}
	m := Message{Time: t}
	raw := payload
	var err error
	switch flag {
	case 0:
	case 1:
		m.Compressed = true
		c.Flags |= Compressed
		raw, err = d.decompress(s.enc[dir], payload)
	default:
		err = fmt.Errorf("invalid compressed flag %d", flag)
	}
	if err == nil {
		m.Size = len(raw)
		if typ != nil && !d.noProto && !s.m.skip {
			msg := typ.New().Interface()
			if err = proto.Unmarshal(raw, msg); err != nil {
				err = fmt.Errorf("unmarshal %s: %w", typ.Descriptor().FullName(), err)
			} else {
				if !d.opts.NoRedact {
					d.red.redact(msg.ProtoReflect())
				}
				m.Proto = msg
			}
		}
		if d.opts.NoRedact {
			m.Raw = bytes.Clone(raw)
		}
	}
	if err != nil {
		m.Err = err.Error()
		c.Flags |= Malformed
		c.Errors = append(c.Errors, fmt.Sprintf("%s %d: %v", dirNoun[dir], len(*list)+1, err))
	}
	if dir == s2c && s.m.serverStream && d.opts.OnStreamMessage != nil {
		c.Streamed++
		d.opts.OnStreamMessage(c, m)
		return
	}
	if *list == nil {
		*list = s.first[dir]
	}
	*list = append(*list, m)
}

func (d *Decoder) decompress(enc string, p []byte) ([]byte, error) {
	switch enc {
	case "gzip":
		return d.gz.gunzip(p)
	case "", "identity":
		return nil, errors.New("compressed message without grpc-encoding")
	}
	return nil, fmt.Errorf("unsupported grpc-encoding %q", enc)
}

// gunzipper reuses its reader and output buffer across messages.
type gunzipper struct {
	zr  *gzip.Reader
	br  bytes.Reader
	out bytes.Buffer
}

// gunzip returns the decompressed p, valid until the next call.
func (g *gunzipper) gunzip(p []byte) ([]byte, error) {
	g.br.Reset(p)
	var err error
	if g.zr == nil {
		g.zr, err = gzip.NewReader(&g.br)
	} else {
		err = g.zr.Reset(&g.br)
	}
	if err != nil {
		g.zr = nil
		return nil, fmt.Errorf("gzip: %w", err)
	}
	if g.out.Cap() > 16<<20 {
		g.out = bytes.Buffer{}
	}
	g.out.Reset()
	n, err := g.out.ReadFrom(io.LimitReader(g.zr, maxMessage+1))
	if err != nil {
		return nil, fmt.Errorf("gzip: %w", err)
	}
	if n > maxMessage {
		return nil, fmt.Errorf("gzip: message larger than %d bytes", maxMessage)
	}
	return g.out.Bytes(), nil
}

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
