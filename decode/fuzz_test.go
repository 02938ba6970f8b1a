package decode

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/criseq/criseq/capture"
	"golang.org/x/net/http2"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

var writeSeeds = flag.Bool("write-fuzz-seeds", false, "rewrite testdata/fuzz/FuzzDecoder from the unit-test fixtures")

// streams joins the bytes of each direction of a connection.
func streams(chunks []capture.Chunk) (c, s []byte) {
	for _, ch := range chunks {
		if ch.Dir == c2s {
			c = append(c, ch.Data...)
		} else {
			s = append(s, ch.Data...)
		}
	}
	return c, s
}

// seedStreams are conversations for the fuzz corpus.
func seedStreams(t testing.TB) map[string][2][]byte {
	seeds := map[string][2][]byte{}
	add := func(name string, write func(w *h2)) {
		var chunks []capture.Chunk
		now := t0
		w := newH2(t, 1, &now, &chunks)
		write(w)
		c, s := streams(chunks)
		seeds[name] = [2][]byte{c, s}
	}
	add("unary", func(w *h2) {
		w.unary(1, pathRun, runReq("web"), &runtimeapi.RunPodSandboxResponse{PodSandboxId: "sb"})
		w.unary(3, pathVersion, &runtimeapi.VersionRequest{}, &runtimeapi.VersionResponse{RuntimeName: "x"})
	})
	add("continuation-padding", func(w *h2) {
		w.maxFrag, w.pad = 5, 3
		w.check(w.fr[c2s].WritePriority(1, http2.PriorityParam{Weight: 3}))
		w.unary(1, pathCreate, &runtimeapi.CreateContainerRequest{Config: &runtimeapi.ContainerConfig{
			Envs: []*runtimeapi.KeyValue{{Key: "A", Value: []byte("b")}}}}, &runtimeapi.CreateContainerResponse{ContainerId: "c"})
	})
	add("gzip-trailers-only", func(w *h2) {
		w.headers(c2s, 1, false, reqHeaders(pathPull, "grpc-encoding", "gzip")...)
		w.data(c2s, 1, true, gzipMsg(t, &runtimeapi.PullImageRequest{Auth: &runtimeapi.AuthConfig{Password: "p"}}))
		w.headers(s2c, 1, true, ":status", "200", "grpc-status", "5", "grpc-message", "not%20found")
	})
	add("stream-reset-goaway", func(w *h2) {
		w.request(1, pathEvents, &runtimeapi.GetEventsRequest{})
		w.headers(s2c, 1, false, ":status", "200")
		w.data(s2c, 1, false, append(grpcMsg(t, &runtimeapi.ContainerEventResponse{ContainerId: "a"}), grpcMsg(t, &runtimeapi.ContainerEventResponse{})...))
		w.request(3, pathStatus, &runtimeapi.ContainerStatusRequest{ContainerId: "x", Verbose: true})
		w.check(w.fr[c2s].WriteRSTStream(1, http2.ErrCodeCancel))
		w.check(w.fr[s2c].WriteSettings(http2.Setting{ID: http2.SettingHeaderTableSize, Val: 100}))
		w.check(w.fr[s2c].WriteGoAway(1, http2.ErrCodeNo, nil))
		w.flush(c2s)
		w.flush(s2c)
	})
	return seeds
}

func TestWriteFuzzSeeds(t *testing.T) {
	if !*writeSeeds {
		t.Skip("use -write-fuzz-seeds to rewrite the corpus")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzDecoder")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, s := range seedStreams(t) {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n[]byte(%q)\n", s[0], s[1])
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// feedStreams feeds two byte streams as one connection, in pieces of n
// bytes, alternating directions when interleave is set.
func feedStreams(d *Decoder, c, s []byte, n int, interleave bool) {
	t := t0
	var off [2]int64
	feed := func(dir capture.Dir, b []byte) {
		t = t.Add(time.Microsecond)
		d.Feed(capture.Chunk{Conn: 1, Dir: dir, Time: t, Data: b, Offset: off[dir]})
		off[dir] += int64(len(b))
	}
	in := [2][]byte{c, s}
	for len(in[0])+len(in[1]) > 0 {
		for dir := range in {
			if !interleave && dir == 1 && len(in[0]) > 0 {
				break
			}
			k := min(n, len(in[dir]))
			if k > 0 {
				feed(capture.Dir(dir), in[dir][:k])
				in[dir] = in[dir][k:]
			}
		}
	}
	d.Feed(capture.Chunk{Conn: 1, Dir: c2s, Kind: capture.Close, Time: t})
	d.Feed(capture.Chunk{Conn: 1, Dir: s2c, Kind: capture.Close, Time: t})
}

func decodeStreams(c, s []byte, n int, interleave bool) string {
	var calls []*Call
	d := New(Options{OnCall: func(c *Call) { calls = append(calls, c) }})
	feedStreams(d, c, s, n, interleave)
	d.Close()
	return summaries(calls, d.Errors())
}

func FuzzDecoder(f *testing.F) {
	for _, s := range seedStreams(f) {
		f.Add(s[0], s[1])
	}
	f.Add([]byte(http2.ClientPreface), []byte{})
	f.Add([]byte(http2.ClientPreface+"\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00\x05\x01\x04\x00\x00\x00\x01\xff\xff\xff\xff\x0f"), []byte("\x00\x00\x00\x04\x00\x00\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, c, s []byte) {
		// No panic, whatever the bytes and their interleaving.
		var calls []*Call
		d := New(Options{OnCall: func(c *Call) { calls = append(calls, c) }, NoRedact: len(c)%2 == 0})
		feedStreams(d, c, s, 1+len(s)%97, true)
		d.Close()
		// (A stream may show up twice: the fuzzer's interleaving can put a
		// response before its request, which then makes a call of its own.)
		for _, call := range calls {
			if call.Conn != 1 || call.Status < -1 || call.Stream == 0 || (!call.End.IsZero() && call.End.Before(call.Start)) {
				t.Fatalf("bad call %s", summary(call))
			}
		}
		for _, e := range d.Errors() {
			if e.Err == nil || e.Offset < 0 || !strings.HasPrefix(e.Err.Error(), "decode: ") {
				t.Fatalf("bad error %v", e)
			}
		}
		// With the same order across directions, the chunk size changes
		// nothing, unless bytes had to be skipped: a resync trusts a frame
		// that starts a chunk (a write), so there chunks matter.
		whole := decodeStreams(c, s, len(c)+len(s)+1, false)
		if strings.Contains(whole, "connerror") {
			return
		}
		if bytewise := decodeStreams(c, s, 1, false); bytewise != whole {
			t.Fatalf("bytewise decode differs:\n%s\nwhole:\n%s", bytewise, whole)
		}
	})
}

// feedMidway feeds two byte streams as a connection caught midway, in
// pieces of n bytes, alternating directions.
func feedMidway(d *Decoder, c, s []byte, n int) {
	t := t0
	d.Feed(capture.Chunk{Conn: 1, Kind: capture.Open, Midway: true, Time: t})
	var off [2]int64
	in := [2][]byte{c, s}
	for len(in[0])+len(in[1]) > 0 {
		for dir := range in {
			k := min(n, len(in[dir]))
			if k == 0 {
				continue
			}
			t = t.Add(time.Microsecond)
			d.Feed(capture.Chunk{Conn: 1, Dir: capture.Dir(dir), Time: t, Data: in[dir][:k], Offset: off[dir]})
			off[dir] += int64(k)
			in[dir] = in[dir][k:]
		}
	}
	d.Feed(capture.Chunk{Conn: 1, Dir: c2s, Kind: capture.Close, Time: t})
	d.Feed(capture.Chunk{Conn: 1, Dir: s2c, Kind: capture.Close, Time: t})
}

// resyncSeeds are conversations cut somewhere, for the resync fuzzer:
// the unit-test fixtures and the start of a real kubelet connection.
func resyncSeeds(f *testing.F) {
	for _, s := range seedStreams(f) {
		f.Add(s[0], s[1], uint16(len(s[0])/2), uint16(len(s[1])/3), uint8(7))
		f.Add(s[0], s[1], uint16(40), uint16(0), uint8(96))
	}
	files, _ := filepath.Glob(filepath.Join("..", "testdata", "kubelet-pull", "capture.pcapng"))
	for _, file := range files {
		st := dirStreams(readChunks(f, file))
		c, s := st[[2]uint64{1, 0}], st[[2]uint64{1, 1}]
		c, s = c[:min(len(c), 6000)], s[:min(len(s), 6000)]
		f.Add(c, s, uint16(1000), uint16(1500), uint8(200))
		f.Add(c, s, uint16(2001), uint16(77), uint8(13))
	}
}

// FuzzResync feeds bytes as a connection caught midway, from any offset:
// frame resync and HPACK with an unknown-prefix table. No panic, calls
// and errors as documented, and the same bytes decode the same way.
func FuzzResync(f *testing.F) {
	resyncSeeds(f)
	f.Fuzz(func(t *testing.T, c, s []byte, cutC, cutS uint16, piece uint8) {
		c, s = c[min(int(cutC), len(c)):], s[min(int(cutS), len(s)):]
		n := 1 + int(piece)
		run := func() string {
			var calls []*Call
			d := New(Options{OnCall: func(c *Call) { calls = append(calls, c) }, NoRedact: piece%2 == 0})
			feedMidway(d, c, s, n)
			d.Close()
			for _, call := range calls {
				if call.Conn != 1 || call.Status < -1 || call.Stream == 0 || (!call.End.IsZero() && call.End.Before(call.Start)) ||
					call.Method == "" && (call.Known || call.Name != "") || call.Flags&Inferred != 0 && (!call.Known || call.Method == "") {
					t.Fatalf("bad call %s", summary(call))
				}
			}
			for _, e := range d.Errors() {
				if e.Err == nil || e.Offset < 0 || e.Resumed < -1 || e.Lost < 0 || e.Unknown < 0 || !strings.HasPrefix(e.Err.Error(), "decode: ") {
					t.Fatalf("bad error %v", e)
				}
			}
			return summaries(calls, d.Errors())
		}
		if a, b := run(), run(); a != b {
			t.Fatalf("two decodes of the same bytes differ:\n%s\n---\n%s", a, b)
		}
	})
}
