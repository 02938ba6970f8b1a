package sanitize

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/proto"

	"github.com/criseq/criseq/capture"
	"github.com/criseq/criseq/decode"
	"github.com/criseq/criseq/flow"
	"github.com/criseq/criseq/internal/testpeer"
)

// testdataCaptures are the repository's real captures.
func testdataCaptures(t *testing.T) []string {
	t.Helper()
	caps, _ := filepath.Glob(filepath.Join("..", "testdata", "*", "capture.pcapng"))
	caps = append(caps, filepath.Join("..", "cmd", "criseq", "demo.pcapng"))
	if len(caps) < 7 {
		t.Fatalf("found %d testdata captures", len(caps))
	}
	return caps
}

// sanitized writes in's sanitized copy into a temporary directory.
func sanitized(t *testing.T, in string) (string, Stats, []string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out.pcapng")
	var notes []string
	st, err := File(in, out, Options{Log: func(format string, args ...any) { notes = append(notes, fmt.Sprintf(format, args...)) }})
	if err != nil {
		t.Fatalf("sanitize %s: %v", in, err)
	}
	fi, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", out, fi.Mode().Perm())
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(out), ".*tmp")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
	return out, st, notes
}

// decodeFile decodes a capture as criseq does, redacted or not, with
// each connection's client address.
func decodeFile(t *testing.T, path string, noRedact bool) ([]*decode.Call, []*decode.ConnError, map[uint64]string) {
	t.Helper()
	src, err := capture.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	clients := map[uint64]string{}
	var chunks []capture.Chunk
	for {
		c, err := src.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if c.Kind == capture.Open {
			clients[c.Conn] = src.Conn(c.Conn).Client
		}
		c.Data = bytes.Clone(c.Data)
		chunks = append(chunks, c)
	}
	calls, errs, err := decode.DecodeAll(&sliceSource{chunks: chunks}, decode.Options{NoRedact: noRedact})
	if err != nil {
		t.Fatal(err)
	}
	return calls, errs, clients
}

type sliceSource struct{ chunks []capture.Chunk }

func (s *sliceSource) Next() (capture.Chunk, error) {
	if len(s.chunks) == 0 {
		return capture.Chunk{}, io.EOF
	}
	c := s.chunks[0]
	s.chunks = s.chunks[1:]
	return c, nil
}
func (s *sliceSource) Conn(id uint64) capture.ConnInfo { return capture.ConnInfo{ID: id} }
func (s *sliceSource) Close() error                    { return nil }

// compareCalls fails on any difference between the redacted decodings of
// a capture and its sanitized copy but the sizes of the messages that held
// secrets: calls, streams, methods, times, statuses, flags, headers,
// messages.
func compareCalls(t *testing.T, a, b []*decode.Call) {
	t.Helper()
	if len(a) != len(b) {
		t.Fatalf("%d calls, sanitized %d", len(a), len(b))
	}
	for i := range a {
		x, y := a[i], b[i]
		where := fmt.Sprintf("call %d (connection %d stream %d %s)", i, x.Conn, x.Stream, x.Method)
		if x.Conn != y.Conn || x.Stream != y.Stream || x.Method != y.Method || x.Known != y.Known {
			t.Fatalf("%s: sanitized is connection %d stream %d %s", where, y.Conn, y.Stream, y.Method)
		}
		if !x.Start.Equal(y.Start) || !x.End.Equal(y.End) {
			t.Errorf("%s: %v–%v, sanitized %v–%v", where, x.Start, x.End, y.Start, y.End)
		}
		if x.Status != y.Status || x.Message != y.Message || x.Flags != y.Flags || !slices.Equal(x.Errors, y.Errors) {
			t.Errorf("%s: status %d %q flags %v errors %q; sanitized %d %q %v %q", where, x.Status, x.Message, x.Flags, x.Errors, y.Status, y.Message, y.Flags, y.Errors)
		}
		for _, h := range [][2][]hpack.HeaderField{{x.RequestHeaders, y.RequestHeaders}, {x.ResponseHeaders, y.ResponseHeaders}, {x.Trailers, y.Trailers}} {
			if !slices.EqualFunc(h[0], h[1], func(p, q hpack.HeaderField) bool { return p.Name == q.Name && p.Value == q.Value }) {
				t.Errorf("%s: headers %v, sanitized %v", where, h[0], h[1])
			}
		}
		for _, m := range [][2][]decode.Message{{x.Requests, y.Requests}, {x.Responses, y.Responses}} {
			if len(m[0]) != len(m[1]) {
				t.Errorf("%s: %d messages, sanitized %d", where, len(m[0]), len(m[1]))
				continue
			}
			for j := range m[0] {
				p, q := m[0][j], m[1][j]
				if !p.Time.Equal(q.Time) || p.Compressed != q.Compressed || p.Err != q.Err || !proto.Equal(p.Proto, q.Proto) {
					t.Errorf("%s: message %d at %v %v %q, sanitized at %v %v %q", where, j, p.Time, p.Proto, p.Err, q.Time, q.Proto, q.Err)
				}
			}
		}
	}
}

// compareFlows fails on any difference in the pod flows.
func compareFlows(t *testing.T, a, b []*decode.Call) int {
	t.Helper()
	fa, fb := flow.Group(a, flow.Options{}), flow.Group(b, flow.Options{})
	if len(fa) != len(fb) {
		t.Fatalf("%d flows, sanitized %d", len(fa), len(fb))
	}
	for i := range fa {
		x, y := fa[i], fb[i]
		if x.Pod != y.Pod || x.Kind != y.Kind || x.Complete != y.Complete || !x.Done.Equal(y.Done) || x.Duration() != y.Duration() || len(x.Steps) != len(y.Steps) {
			t.Errorf("flow %d: %s %s %v %d steps, sanitized %s %s %v %d steps", i, x.Pod, x.Kind, x.Duration(), len(x.Steps), y.Pod, y.Kind, y.Duration(), len(y.Steps))
			continue
		}
		for j := range x.Steps {
			p, q := x.Steps[j], y.Steps[j]
			if p.Method != q.Method || p.Arg != q.Arg || p.Full != q.Full || p.Phase != q.Phase || !p.Start.Equal(q.Start) || p.Duration != q.Duration || p.Err != q.Err {
				t.Errorf("flow %d step %d: %+v, sanitized %+v", i, j, p, q)
			}
		}
	}
	return len(fa)
}

// tsharkByConn is tshark's request list per criseq connection number.
func tsharkByConn(t *testing.T, file string, clients map[uint64]string) map[uint64][]testpeer.Request {
	t.Helper()
	byClient := testpeer.TsharkRequests(t, file, capture.ServerPort)
	out := map[uint64][]testpeer.Request{}
	for id, cl := range clients {
		if r := byClient[cl]; len(r) > 0 {
			out[id] = r
		}
		delete(byClient, cl)
	}
	for cl := range byClient {
		t.Errorf("%s: tshark finds requests on %s, a connection criseq does not", file, cl)
	}
	return out
}

// secretForms are the ways a secret could still be in the bytes: as it
// is, HPACK's Huffman code, base64 at each alignment (std and URL).
func secretForms(secret string) map[string][]byte {
	forms := map[string][]byte{"raw": []byte(secret), "huffman": hpack.AppendHuffmanString(nil, secret)}
	for off := range 3 {
		s := strings.Repeat("x", off) + secret
		for name, enc := range map[string]*base64.Encoding{"base64": base64.StdEncoding, "base64url": base64.URLEncoding} {
			e := enc.EncodeToString([]byte(s))
			// Only the characters that depend on the secret alone.
			lo, hi := (off*4+2)/3+1, len(e)-4
			if hi-lo >= 8 {
				forms[fmt.Sprintf("%s+%d", name, off)] = []byte(e[lo:hi])
			}
		}
	}
	return forms
}

// gzipStreams inflates every gzip stream found in b.
func gzipStreams(b []byte) [][]byte {
	var out [][]byte
	for i := 0; i+3 < len(b); i++ {
		if b[i] != 0x1f || b[i+1] != 0x8b || b[i+2] != 8 {
			continue
		}
		zr, err := gzip.NewReader(bytes.NewReader(b[i:]))
		if err != nil {
			continue
		}
		zr.Multistream(false)
		d, _ := io.ReadAll(io.LimitReader(zr, 64<<20))
		if len(d) > 0 {
			out = append(out, d)
		}
	}
	return out
}

// grepSecrets fails if file holds a secret in any form: in its bytes, in
// the gzip streams in them, or anywhere criseq decodes with --no-redact
// (headers and raw messages, after HPACK and gzip).
func grepSecrets(t *testing.T, file string, secrets []string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	hay := [][]byte{b}
	hay = append(hay, gzipStreams(b)...)
	calls, _, _ := decodeFile(t, file, true)
	var dec bytes.Buffer
	for _, c := range calls {
		for _, hs := range [][]hpack.HeaderField{c.RequestHeaders, c.ResponseHeaders, c.Trailers} {
			for _, h := range hs {
				dec.WriteString(h.Name + ": " + h.Value + "\n")
			}
		}
		dec.WriteString(c.Message + "\n")
		for _, m := range slices.Concat(c.Requests, c.Responses) {
			dec.Write(m.Raw)
			dec.WriteByte('\n')
		}
	}
	hay = append(hay, dec.Bytes())
	for _, s := range secrets {
		for form, pat := range secretForms(s) {
			for i, h := range hay {
				if bytes.Contains(h, pat) {
					what := "the file's bytes"
					switch {
					case i == len(hay)-1:
						what = "what criseq decodes with --no-redact"
					case i > 0:
						what = fmt.Sprintf("gzip stream %d", i)
					}
					t.Errorf("%s: secret %q found (%s) in %s", file, s, form, what)
				}
			}
		}
	}
}

// checkSanitized runs every check of a capture against its sanitized
// copy: the same calls and flows decoded, the same requests per
// connection and stream for tshark, and none of the secrets.
func checkSanitized(t *testing.T, in, out string, secrets []string) (calls, flows int) {
	t.Helper()
	a, ea, ca := decodeFile(t, in, false)
	b, eb, cb := decodeFile(t, out, false)
	compareCalls(t, a, b)
	if len(ea) != len(eb) {
		t.Errorf("connection errors %v, sanitized %v", ea, eb)
	}
	flows = compareFlows(t, a, b)
	if _, err := exec.LookPath("tshark"); err != nil && !testpeer.InCI() {
		t.Log("tshark not installed (apt-get install tshark): its reading of the sanitized capture not checked")
	} else {
		ta, tb := tsharkByConn(t, in, ca), tsharkByConn(t, out, cb)
		n := 0
		for id, r := range ta {
			n += len(r)
			if !slices.Equal(r, tb[id]) {
				t.Errorf("connection %d: tshark decodes requests %v, sanitized %v", id, r, tb[id])
			}
		}
		if n == 0 || len(ta) != len(tb) {
			t.Errorf("tshark: %d requests on %d connections, sanitized on %d", n, len(ta), len(tb))
		}
	}
	grepSecrets(t, out, secrets)
	return len(a), flows
}

// The lab's pods carry this environment value.
const labSecret = "s3cret-env-value"

// TestSanitizeTestdata: every real capture of the repository, sanitized,
// decodes to the same calls and flows in criseq and the same requests in
// tshark, and holds no secret.
func TestSanitizeTestdata(t *testing.T) {
	for _, in := range testdataCaptures(t) {
		name := filepath.Base(filepath.Dir(in))
		if name == "criseq" {
			name = "demo"
		}
		t.Run(name, func(t *testing.T) {
			// The lab's pulled and crictl pods carry the secret: the
			// search below finds it in the original.
			orig, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			if has := bytes.Contains(orig, []byte(labSecret)); has != (name != "kubelet-init" && name != "kubelet-missing") {
				t.Errorf("the original holds %q: %v", labSecret, has)
			}
			out, st, notes := sanitized(t, in)
			calls, flows := checkSanitized(t, in, out, []string{labSecret})
			t.Logf("%d calls, %d flows equal; %d messages, %d rewritten, %d sent empty; %d notes", calls, flows, st.Messages, st.Rewritten, st.Blanked, len(notes))
			if st.Blanked > 0 || st.DroppedConns > 0 {
				t.Errorf("real CRI traffic had %d messages sent empty and %d connections cut:\n%s", st.Blanked, st.DroppedConns, strings.Join(notes, "\n"))
			}
		})
	}
}

// memSink keeps the chunks written to it.
type memSink struct{ chunks []capture.Chunk }

func (m *memSink) Write(c capture.Chunk) error {
	c.Data = bytes.Clone(c.Data)
	m.chunks = append(m.chunks, c)
	return nil
}
func (m *memSink) Close() error { return nil }

// rechunk cuts every data chunk of a capture into pieces of 1 to max
// bytes, each a microsecond after the one before, so frames, header
// blocks and messages begin in one chunk and end in another.
func rechunk(t *testing.T, path string, max int, seed uint64) []capture.Chunk {
	t.Helper()
	src, err := capture.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	r := seed
	next := func() int { r = r*6364136223846793005 + 1442695040888963407; return int(r>>33)%max + 1 }
	var out []capture.Chunk
	var shift time.Duration
	for {
		c, err := src.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		c.Time = c.Time.Add(shift)
		if c.Kind != capture.Data {
			out = append(out, c)
			continue
		}
		data, off := c.Data, c.Offset
		for len(data) > 0 {
			n := min(next(), len(data))
			p := c
			p.Data, p.Offset, p.Time = bytes.Clone(data[:n]), off, c.Time.Add(shift)
			out = append(out, p)
			data, off = data[n:], off+int64(n)
			shift += time.Microsecond
		}
	}
}

// TestSanitizeKeepsTimesAcrossChunks: when frames, header blocks and
// messages are cut across chunks with times of their own, each call and
// message keeps its time (criseq times a frame by the chunk of its first
// byte), written to a file and read back too.
func TestSanitizeKeepsTimesAcrossChunks(t *testing.T) {
	secrets := recordSecrets(t) // messages of many frames
	for _, name := range []string{"kubelet-pull", "crictl-lifecycle", "secrets"} {
		in := filepath.Join("..", "testdata", name, "capture.pcapng")
		if name == "secrets" {
			in = secrets
		}
		for _, max := range []int{7, 700, 20000} {
			chunks := rechunk(t, in, max, uint64(max))
			want, _, err := decode.DecodeAll(&sliceSource{chunks: slices.Clone(chunks)}, decode.Options{})
			if err != nil {
				t.Fatal(err)
			}
			var out memSink
			if _, err := Rewrite(&sliceSource{chunks: chunks}, &out, Options{}); err != nil {
				t.Fatal(err)
			}
			got, _, err := decode.DecodeAll(&sliceSource{chunks: out.chunks}, decode.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Run(fmt.Sprintf("%s/%d", name, max), func(t *testing.T) { compareCalls(t, want, got) })

			file := filepath.Join(t.TempDir(), "x.pcapng")
			f, err := capture.CreateFile(file)
			if err != nil {
				t.Fatal(err)
			}
			w := capture.NewPcapngWriter(f)
			for _, c := range out.chunks {
				if err := w.Write(c); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			back, _, _ := decodeFile(t, file, false)
			t.Run(fmt.Sprintf("%s/%d/file", name, max), func(t *testing.T) { compareCalls(t, want, back) })
		}
	}
}
