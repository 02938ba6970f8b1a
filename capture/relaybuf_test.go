package capture

import (
	"bytes"
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// sharedSink counts chunks that came in a relay's buffer, and keeps a copy
// of each chunk's bytes taken only after a pause: bytes the relay read
// into a buffer the sink still held would show there.
type sharedSink struct {
	memSink
	mu     sync.Mutex
	shared int
}

func (s *sharedSink) Write(c Chunk) error {
	if c.shared != nil {
		s.mu.Lock()
		s.shared++
		s.mu.Unlock()
		time.Sleep(200 * time.Microsecond)
	}
	return s.memSink.Write(c)
}

// TestRelayHandsOverBuffers: large reads reach the Recorder in the relay's
// own buffer, not copied. While the sink holds such a buffer, and while the
// client is slow to read what the relay passes on, the relay reads on into
// other buffers: what each peer gets and what is recorded are the bytes
// sent, both ways.
func TestRelayHandsOverBuffers(t *testing.T) {
	dir := faultDir(t)
	u := startRawUpstream(t, dir)
	sink := &sharedSink{}
	p, stop := startFaultProxy(t, dir, u.path, NewRecorder(sink, RecorderOptions{}), nil)

	req, resp := fill(6<<20, 21), fill(24<<20, 22)
	c := dialRaw(t, p.Listen)
	s := u.accept(t)
	type result struct {
		got []byte
		err error
	}
	srv := make(chan result, 1)
	go func() {
		defer s.Close()
		wrote := make(chan error, 1)
		go func() { _, err := s.Write(resp); wrote <- err }() // both ways at once
		got, err := readToEnd(s)
		if werr := <-wrote; err == nil {
			err = werr
		}
		srv <- result{got, err}
	}()
	go func() {
		c.Write(req)
		c.CloseWrite()
	}()
	// A slow reader: the relay's writes to it back up, and bytes wait in
	// the relay's buffer.
	var got bytes.Buffer
	buf := make([]byte, 48<<10)
	for got.Len() < len(resp) {
		n, err := c.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			t.Fatalf("client read after %d bytes: %v", got.Len(), err)
		}
		if got.Len()%(1<<20) < n {
			time.Sleep(time.Millisecond)
		}
	}
	c.Close()
	r := <-srv
	if r.err != nil {
		t.Errorf("server: %v", r.err)
	}
	sameBytes(t, "client→server", req, r.got)
	sameBytes(t, "server→client", resp, got.Bytes())
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if gaps := checkRecorded(t, sink.all(), 1, req, resp); gaps != 0 {
		t.Logf("%d chunks dropped by the recorder's bound; the rest checked at their offsets", gaps)
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if sink.shared == 0 {
		t.Errorf("no chunk came in a relay buffer: the test does not exercise them")
	}
	t.Logf("%d chunks handed over in relay buffers", sink.shared)
}

// TestRelayHandsOverBuffersGRPC: real grpc-go peers, ListContainers
// replies of about 8 MiB (gRPC's flow control and pings interleaved with
// them), recorded while the sink is slow: each peer's bytes and the
// recording are equal, and large reads went to the recorder in relay
// buffers.
func TestRelayHandsOverBuffersGRPC(t *testing.T) {
	dir := t.TempDir()
	upstream, srvTees := startCRIServer(t, dir, 30000)
	sink := &sharedSink{}
	p := &Proxy{Upstream: upstream, Listen: filepath.Join(dir, "proxy.sock"), Recorder: NewRecorder(sink, RecorderOptions{})}
	stop := startProxy(t, p)
	cl := newCRIClient(t, p.Listen)
	ctx := context.Background()
	for range 4 {
		r, err := cl.runtime.ListContainers(ctx, &runtimeapi.ListContainersRequest{}, grpc.MaxCallRecvMsgSize(64<<20))
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Containers) != 30000 {
			t.Fatalf("ListContainers: %d containers, want 30000", len(r.Containers))
		}
	}
	cl.close()
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	checkRecording(t, sink.all(), cl.connections(), srvTees.accepted())
	if s := p.Recorder.Stats(); s.DroppedChunks != 0 {
		t.Errorf("dropped %d chunks", s.DroppedChunks)
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if sink.shared == 0 {
		t.Errorf("no chunk came in a relay buffer: the test does not exercise them")
	}
	t.Logf("%d chunks handed over in relay buffers", sink.shared)
}
