package decode

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/criseq/criseq/capture"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/proto"
)

// h2 writes both directions of one HTTP/2 connection with the real
// http2.Framer and hpack.Encoder, and records them as chunks, one per
// write, 1 ms apart.
type h2 struct {
	t       testing.TB
	conn    uint64
	now     *time.Time // shared by the connections of a test, for ordering
	out     [2]bytes.Buffer
	fr      [2]*http2.Framer
	hbuf    [2]bytes.Buffer
	enc     [2]*hpack.Encoder
	off     [2]int64
	chunks  *[]capture.Chunk
	maxFrag int   // header block fragment size; > 0 makes CONTINUATION frames
	pad     uint8 // padding of HEADERS and DATA frames
}

var t0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

// newH2 starts a connection: client preface and SETTINGS both ways.
func newH2(t testing.TB, conn uint64, now *time.Time, chunks *[]capture.Chunk) *h2 {
	w := &h2{t: t, conn: conn, now: now, chunks: chunks}
	for dir := range w.fr {
		w.fr[dir] = http2.NewFramer(&w.out[dir], nil)
		w.enc[dir] = hpack.NewEncoder(&w.hbuf[dir])
	}
	w.add(capture.Chunk{Kind: capture.Open, Dir: c2s})
	w.out[c2s].WriteString(http2.ClientPreface)
	w.check(w.fr[c2s].WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20}))
	w.flush(c2s)
	w.check(w.fr[s2c].WriteSettings(http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 14}))
	w.check(w.fr[s2c].WriteSettingsAck())
	w.flush(s2c)
	w.check(w.fr[c2s].WriteSettingsAck())
	w.flush(c2s)
	return w
}

func (w *h2) check(err error) {
	w.t.Helper()
	if err != nil {
		w.t.Fatal(err)
	}
}

func (w *h2) tick() time.Time {
	*w.now = w.now.Add(time.Millisecond)
	return *w.now
}

func (w *h2) add(c capture.Chunk) {
	c.Conn = w.conn
	if c.Time.IsZero() {
		c.Time = w.tick()
	}
	*w.chunks = append(*w.chunks, c)
}

// flush turns the bytes written in one direction into a chunk.
func (w *h2) flush(dir capture.Dir) {
	if w.out[dir].Len() == 0 {
		return
	}
	b := bytes.Clone(w.out[dir].Bytes())
	w.out[dir].Reset()
	w.add(capture.Chunk{Dir: dir, Data: b, Offset: w.off[dir]})
	w.off[dir] += int64(len(b))
}

func (w *h2) close(dir capture.Dir) {
	w.add(capture.Chunk{Dir: dir, Kind: capture.Close, Offset: w.off[dir]})
}

// block HPACK-encodes name/value pairs.
func (w *h2) block(dir capture.Dir, kv ...string) []byte {
	w.hbuf[dir].Reset()
	for i := 0; i+1 < len(kv); i += 2 {
		w.check(w.enc[dir].WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]}))
	}
	return bytes.Clone(w.hbuf[dir].Bytes())
}

// headers writes a header block, split into CONTINUATION frames when
// maxFrag is set.
func (w *h2) headers(dir capture.Dir, sid uint32, end bool, kv ...string) {
	w.writeBlock(dir, sid, end, w.block(dir, kv...))
	w.flush(dir)
}

func (w *h2) writeBlock(dir capture.Dir, sid uint32, end bool, blk []byte) {
	first := blk
	if w.maxFrag > 0 && len(blk) > w.maxFrag {
		first = blk[:w.maxFrag]
	}
	w.check(w.fr[dir].WriteHeaders(http2.HeadersFrameParam{
		StreamID: sid, BlockFragment: first, EndStream: end,
		EndHeaders: len(first) == len(blk), PadLength: w.pad,
	}))
	for rest := blk[len(first):]; len(rest) > 0; {
		n := min(len(rest), w.maxFrag)
		w.check(w.fr[dir].WriteContinuation(sid, n == len(rest), rest[:n]))
		rest = rest[n:]
	}
}

func (w *h2) data(dir capture.Dir, sid uint32, end bool, b []byte) {
	if w.pad > 0 {
		w.check(w.fr[dir].WriteDataPadded(sid, end, b, make([]byte, w.pad)))
	} else {
		w.check(w.fr[dir].WriteData(sid, end, b))
	}
	w.flush(dir)
}

// reqHeaders are the header fields grpc-go sends with a request.
func reqHeaders(path string, extra ...string) []string {
	return append([]string{":method", "POST", ":scheme", "http", ":path", path, ":authority", "localhost",
		"content-type", "application/grpc", "user-agent", "grpc-go/1.85.0", "te", "trailers",
		"grpc-timeout", "120000m"}, extra...)
}

// request writes request headers and one message, ending the client side.
func (w *h2) request(sid uint32, path string, req proto.Message, extra ...string) {
	w.headers(c2s, sid, false, reqHeaders(path, extra...)...)
	w.data(c2s, sid, true, grpcMsg(w.t, req))
}

// response writes response headers, one message and status 0.
func (w *h2) response(sid uint32, resp proto.Message) {
	w.headers(s2c, sid, false, ":status", "200", "content-type", "application/grpc")
	w.data(s2c, sid, false, grpcMsg(w.t, resp))
	w.trailers(sid, "0", "")
}

func (w *h2) trailers(sid uint32, status, message string) {
	kv := []string{"grpc-status", status}
	if message != "" {
		kv = append(kv, "grpc-message", message)
	}
	w.headers(s2c, sid, true, kv...)
}

func (w *h2) unary(sid uint32, path string, req, resp proto.Message) {
	w.request(sid, path, req)
	w.response(sid, resp)
}

// grpcMsg frames a message as gRPC does: flag 0, length, bytes.
func grpcMsg(t testing.TB, m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return frameMsg(0, b)
}

func frameMsg(flag byte, b []byte) []byte {
	out := make([]byte, 5, 5+len(b))
	out[0] = flag
	binary.BigEndian.PutUint32(out[1:], uint32(len(b)))
	return append(out, b...)
}

// gzipMsg frames a gzip-compressed message.
func gzipMsg(t testing.TB, m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write(b)
	zw.Close()
	return frameMsg(1, z.Bytes())
}

// decodeChunks runs a Decoder over chunks and returns the calls sorted.
func decodeChunks(opts Options, chunks []capture.Chunk) ([]*Call, []*ConnError) {
	var calls []*Call
	opts.OnCall = func(c *Call) { calls = append(calls, c) }
	d := New(opts)
	for _, c := range chunks {
		d.Feed(c)
	}
	d.Close()
	SortCalls(calls)
	return calls, d.Errors()
}

// rechunk cuts every data chunk into pieces of n bytes.
func rechunk(chunks []capture.Chunk, n int) []capture.Chunk {
	var out []capture.Chunk
	for _, c := range chunks {
		if c.Kind != capture.Data || len(c.Data) <= n {
			out = append(out, c)
			continue
		}
		for i := 0; i < len(c.Data); i += n {
			p := c
			p.Data = c.Data[i:min(i+n, len(c.Data))]
			p.Offset = c.Offset + int64(i)
			out = append(out, p)
		}
	}
	return out
}

// summary describes a call without its times, for comparing decodes.
func summary(c *Call) string {
	var b strings.Builder
	fmt.Fprintf(&b, "conn=%d stream=%d %s known=%v status=%d msg=%q flags=%s\n", c.Conn, c.Stream, c.Method, c.Known, c.Status, c.Message, c.Flags)
	for _, h := range [][]hpack.HeaderField{c.RequestHeaders, c.ResponseHeaders, c.Trailers} {
		fmt.Fprintf(&b, "  headers %v\n", h)
	}
	for i, list := range [][]Message{c.Requests, c.Responses} {
		for _, m := range list {
			var pb []byte
			if m.Proto != nil {
				pb, _ = proto.MarshalOptions{Deterministic: true}.Marshal(m.Proto)
			}
			fmt.Fprintf(&b, "  %s size=%d compressed=%v raw=%x proto=%x err=%q\n", dirNoun[i], m.Size, m.Compressed, m.Raw, pb, m.Err)
		}
	}
	for _, e := range c.Errors {
		fmt.Fprintf(&b, "  error %s\n", e)
	}
	return b.String()
}

func summaries(calls []*Call, errs []*ConnError) string {
	var b strings.Builder
	for _, c := range calls {
		b.WriteString(summary(c))
	}
	for _, e := range errs {
		fmt.Fprintf(&b, "connerror %v\n", e)
	}
	return b.String()
}

// sliceSource is a capture.Source over chunks.
type sliceSource struct {
	chunks []capture.Chunk
	err    error
}

func (s *sliceSource) Next() (capture.Chunk, error) {
	if len(s.chunks) == 0 {
		if s.err != nil {
			return capture.Chunk{}, s.err
		}
		return capture.Chunk{}, io.EOF
	}
	c := s.chunks[0]
	s.chunks = s.chunks[1:]
	return c, nil
}

func (s *sliceSource) Conn(id uint64) capture.ConnInfo { return capture.ConnInfo{ID: id} }
func (s *sliceSource) Close() error                    { return nil }

// byName counts calls per method name.
func byName(calls []*Call) map[string]int {
	m := map[string]int{}
	for _, c := range calls {
		m[c.Name]++
	}
	return m
}

func hasError(errs []string, sub string) bool {
	return slices.ContainsFunc(errs, func(e string) bool { return strings.Contains(e, sub) })
}
