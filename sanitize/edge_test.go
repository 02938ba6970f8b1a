package sanitize

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/criseq/criseq/capture"
	"github.com/criseq/criseq/decode"
)

// The frames below are written with x/net's Framer because grpc-go never
// sends them: padding, priorities, a header block split into CONTINUATION
// frames at odd places, a peer's SETTINGS_HEADER_TABLE_SIZE of 0, frame
// types gRPC does not use, GOAWAY debug text. The real-traffic tests cover
// the rest.

const (
	edgePassword = "edge-s3cret-password-5b1d"
	edgeBearer   = "edge-s3cret-bearer-77c2"
	edgeGoAway   = "edge-s3cret-goaway-debug"
	edgeHTTP1    = "edge-s3cret-http1-auth"
	edgeLost     = "edge-s3cret-after-gap"
	edgeMidway   = "edge-s3cret-midway"
)

// grpcMessage frames a protobuf message (5-byte prefix).
func grpcMessage(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, 5, 5+len(b))
	binary.BigEndian.PutUint32(out[1:], uint32(len(b)))
	return append(out, b...)
}

func block(t testing.TB, enc *hpack.Encoder, buf *bytes.Buffer, fields ...hpack.HeaderField) []byte {
	t.Helper()
	buf.Reset()
	for _, f := range fields {
		if err := enc.WriteField(f); err != nil {
			t.Fatal(err)
		}
	}
	return bytes.Clone(buf.Bytes())
}

// edgeCapture builds four connections' chunks: an HTTP/2 PullImage with
// every unusual framing, an HTTP/1 request, a connection with bytes lost
// on the server side, and one caught midway.
func edgeCapture(t testing.TB) []capture.Chunk {
	t.Helper()
	var cs, sc bytes.Buffer
	cfr, sfr := http2.NewFramer(&cs, nil), http2.NewFramer(&sc, nil)
	var cbuf, sbuf bytes.Buffer
	cenc, senc := hpack.NewEncoder(&cbuf), hpack.NewEncoder(&sbuf)

	cs.WriteString(http2.ClientPreface)
	cfr.WriteSettings()
	sfr.WriteSettings(http2.Setting{ID: http2.SettingHeaderTableSize, Val: 0}, http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 20})
	csHello, scHello := cs.Len(), sc.Len() // sent before the rest
	// The client heard the server's table size of 0.
	cenc.SetMaxDynamicTableSizeLimit(0)
	cfr.WriteSettingsAck()

	req := block(t, cenc, &cbuf,
		hpack.HeaderField{Name: ":method", Value: "POST"}, hpack.HeaderField{Name: ":scheme", Value: "http"},
		hpack.HeaderField{Name: ":path", Value: "/runtime.v1.ImageService/PullImage"}, hpack.HeaderField{Name: ":authority", Value: "localhost"},
		hpack.HeaderField{Name: "content-type", Value: "application/grpc"}, hpack.HeaderField{Name: "te", Value: "trailers"},
		hpack.HeaderField{Name: "authorization", Value: "Bearer " + edgeBearer},
		hpack.HeaderField{Name: "x-token", Value: edgeBearer + "-never", Sensitive: true})
	cfr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: req[:7], PadLength: 13,
		Priority: http2.PriorityParam{StreamDep: 0, Weight: 200, Exclusive: true}})
	cfr.WriteContinuation(1, false, req[7:20])
	cfr.WriteContinuation(1, true, req[20:])
	cfr.WriteRawFrame(0xfa, 0, 1, []byte("unknown frame "+edgeBearer))
	cfr.WritePriority(3, http2.PriorityParam{StreamDep: 1, Weight: 10})
	msg := grpcMessage(t, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "registry.example/app:1"},
		Auth: &runtimeapi.AuthConfig{Username: "edge", Password: edgePassword}})
	cfr.WriteDataPadded(1, false, msg[:11], make([]byte, 3))
	cfr.WriteDataPadded(1, true, msg[11:], make([]byte, 40))
	cfr.WritePing(false, [8]byte{1, 2, 3, 4, 5, 6, 7, 8})

	sfr.WriteSettingsAck()
	resp := block(t, senc, &sbuf, hpack.HeaderField{Name: ":status", Value: "200"}, hpack.HeaderField{Name: "content-type", Value: "application/grpc"})
	sfr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: resp, EndHeaders: true})
	sfr.WriteData(1, false, grpcMessage(t, &runtimeapi.PullImageResponse{ImageRef: "sha256:" + strings.Repeat("cd", 32)}))
	trailers := block(t, senc, &sbuf, hpack.HeaderField{Name: "grpc-status", Value: "0"})
	sfr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: trailers, EndHeaders: true, EndStream: true})
	sfr.WriteGoAway(1, http2.ErrCodeNo, []byte(edgeGoAway))

	t0 := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	at := func(us int) time.Time { return t0.Add(time.Duration(us) * time.Microsecond) }
	var chunks []capture.Chunk
	split := func(conn uint64, dir capture.Dir, b []byte, off int64, every int, us int) {
		for len(b) > 0 {
			n := min(every, len(b))
			chunks = append(chunks, capture.Chunk{Conn: conn, Dir: dir, Kind: capture.Data, Time: at(us), Data: b[:n], Offset: off})
			b, off, us = b[n:], off+int64(n), us+1
		}
	}
	chunks = append(chunks, capture.Chunk{Conn: 1, Kind: capture.Open, Time: at(0)})
	split(1, capture.ClientToServer, cs.Bytes()[:csHello], 0, 17, 10)
	split(1, capture.ServerToClient, sc.Bytes()[:scHello], 0, 23, 100)
	split(1, capture.ClientToServer, cs.Bytes()[csHello:], int64(csHello), 17, 200)
	split(1, capture.ServerToClient, sc.Bytes()[scHello:], int64(scHello), 23, 500)
	chunks = append(chunks,
		capture.Chunk{Conn: 1, Dir: capture.ClientToServer, Kind: capture.Close, Time: at(900)},
		capture.Chunk{Conn: 1, Dir: capture.ServerToClient, Kind: capture.Close, Time: at(901)})

	// 2: not HTTP/2.
	chunks = append(chunks, capture.Chunk{Conn: 2, Kind: capture.Open, Time: at(1000)},
		capture.Chunk{Conn: 2, Kind: capture.Data, Time: at(1001), Data: []byte("GET / HTTP/1.1\r\nAuthorization: Basic " + edgeHTTP1 + "\r\n\r\n")})

	// 3: the server's bytes are lost after its SETTINGS.
	var s3 bytes.Buffer
	http2.NewFramer(&s3, nil).WriteSettings()
	chunks = append(chunks, capture.Chunk{Conn: 3, Kind: capture.Open, Time: at(2000)},
		capture.Chunk{Conn: 3, Kind: capture.Data, Time: at(2001), Data: []byte(http2.ClientPreface)},
		capture.Chunk{Conn: 3, Dir: capture.ServerToClient, Kind: capture.Data, Time: at(2002), Data: s3.Bytes()},
		capture.Chunk{Conn: 3, Dir: capture.ServerToClient, Kind: capture.Data, Time: at(2003), Gap: 100, Offset: int64(s3.Len()) + 100,
			Data: []byte("\x00\x00\x20\x00\x00\x00\x00\x00\x01" + edgeLost + "xxxxxxxx")})

	// 4: caught midway.
	chunks = append(chunks, capture.Chunk{Conn: 4, Kind: capture.Open, Time: at(3000), Midway: true},
		capture.Chunk{Conn: 4, Kind: capture.Data, Time: at(3001), Gap: -1, Data: []byte("\x00\x00\x10\x00\x00\x00\x00\x00\x01" + edgeMidway)})
	return chunks
}

func TestSanitizeEdgeCases(t *testing.T) {
	chunks := edgeCapture(t)
	want, _, err := decode.DecodeAll(&sliceSource{chunks: chunks}, decode.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(want) != 1 || want[0].Method != "/runtime.v1.ImageService/PullImage" || want[0].Status != 0 {
		t.Fatalf("the hand-made capture decodes as %d calls: %+v", len(want), want)
	}
	var out memSink
	var notes []string
	st, err := Rewrite(&sliceSource{chunks: chunks}, &out, Options{Log: func(f string, a ...any) { notes = append(notes, fmt.Sprintf(f, a...)) }})
	if err != nil {
		t.Fatal(err)
	}
	got, errs, err := decode.DecodeAll(&sliceSource{chunks: out.chunks}, decode.Options{})
	if err != nil {
		t.Fatal(err)
	}
	compareCalls(t, want, got)
	if len(errs) != 0 {
		t.Errorf("the sanitized chunks decode with errors: %v", errs)
	}
	if st.Rewritten != 1 || st.HeaderFields != 2 || st.DroppedFrames != 1 || st.DroppedConns != 3 {
		t.Errorf("stats %+v, want 1 message rewritten, 2 header fields, 1 frame and 3 connections dropped", st)
	}
	for _, want := range []string{"unknown type", "HTTP/2 client preface", "bytes lost", "open before the capture"} {
		found := false
		for _, n := range notes {
			found = found || strings.Contains(n, want)
		}
		if !found {
			t.Errorf("no note says %q; notes:\n%s", want, strings.Join(notes, "\n"))
		}
	}

	// What was written: no secret, no padding, no unknown frame, and a
	// header block that starts by bringing the table down to 0.
	var all []byte
	perDir := map[[2]uint64][]byte{}
	for _, c := range out.chunks {
		all = append(all, c.Data...)
		k := [2]uint64{c.Conn, uint64(c.Dir)}
		perDir[k] = append(perDir[k], c.Data...)
	}
	for _, s := range []string{edgePassword, edgeBearer, edgeGoAway, edgeHTTP1, edgeLost, edgeMidway} {
		for form, pat := range secretForms(s) {
			if bytes.Contains(all, pat) {
				t.Errorf("secret %q (%s) written", s, form)
			}
		}
	}
	for k, b := range perDir {
		if k[0] != 1 {
			if len(b) > len(http2.ClientPreface) {
				t.Errorf("connection %d %v: %d bytes written, want none beyond the preface", k[0], capture.Dir(k[1]), len(b))
			}
			continue
		}
		if k[1] == uint64(capture.ClientToServer) {
			b = b[len(http2.ClientPreface):]
		}
		fr := http2.NewFramer(nil, bytes.NewReader(b))
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				if !errors.Is(err, os.ErrClosed) && err.Error() != "EOF" {
					t.Errorf("connection 1 %v: %v", capture.Dir(k[1]), err)
				}
				break
			}
			h := f.Header()
			if h.Flags.Has(http2.FlagDataPadded) && (h.Type == http2.FrameData || h.Type == http2.FrameHeaders) {
				t.Errorf("connection 1 %v: %v frame still padded", capture.Dir(k[1]), h.Type)
			}
			if h.Type > http2.FrameContinuation {
				t.Errorf("connection 1 %v: frame of type %v written", capture.Dir(k[1]), h.Type)
			}
			if hf, ok := f.(*http2.HeadersFrame); ok && k[1] == uint64(capture.ClientToServer) && hf.HeaderBlockFragment()[0]&0xe0 != 0x20 {
				t.Errorf("the client's header block does not start with a table size update (0x20…): % x", hf.HeaderBlockFragment()[:4])
			}
		}
	}
}

// TestSanitizeBadInput: a file that is not a capture gives an error naming
// it and writes nothing; a truncated one is written up to the damage with
// an error saying so.
func TestSanitizeBadInput(t *testing.T) {
	dir := t.TempDir()
	notCap := filepath.Join(dir, "notes.txt")
	os.WriteFile(notCap, []byte("this is not a capture at all"), 0o644)
	out := filepath.Join(dir, "out.pcapng")
	if _, err := File(notCap, out, Options{}); err == nil || !strings.Contains(err.Error(), notCap) {
		t.Errorf("not a capture: err = %v, want one naming %s", err, notCap)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("not a capture: %s written (%v)", out, err)
	}
	if _, err := File(filepath.Join(dir, "missing.pcapng"), out, Options{}); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing input: %v", err)
	}

	orig, err := os.ReadFile(filepath.Join("..", "testdata", "kubelet-pull", "capture.pcapng"))
	if err != nil {
		t.Fatal(err)
	}
	cut := filepath.Join(dir, "cut.pcapng")
	os.WriteFile(cut, orig[:len(orig)*2/3], 0o600)
	_, err = File(cut, out, Options{})
	if !errors.Is(err, ErrPartial) {
		t.Fatalf("truncated input: err = %v, want ErrPartial", err)
	}
	if msg := err.Error(); strings.Count(msg, "sanitize:") != 1 || !strings.Contains(msg, "cut.pcapng: offset") {
		t.Errorf("truncated input: %q, want one naming the file and offset, prefixed once", msg)
	}
	calls, _, _ := decodeFile(t, out, false)
	if len(calls) < 50 {
		t.Errorf("truncated input: %d calls written", len(calls))
	}

	// An output that cannot be written leaves nothing behind.
	blocked := filepath.Join(dir, "adir")
	os.Mkdir(blocked, 0o755)
	if _, err := File(filepath.Join("..", "testdata", "crictl-lifecycle", "capture.pcapng"), blocked, Options{}); err == nil {
		t.Error("writing over a directory: no error")
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*")); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}

	// In place.
	inPlace := filepath.Join(dir, "same.pcapng")
	os.WriteFile(inPlace, orig, 0o644)
	if _, err := File(inPlace, inPlace, Options{}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(inPlace); bytes.Contains(b, []byte(labSecret)) {
		t.Error("sanitized in place, the secret is still there")
	}
	if st, _ := os.Stat(inPlace); st.Mode().Perm() != 0o600 {
		t.Errorf("sanitized in place: mode %v, want 0600", st.Mode().Perm())
	}
}
