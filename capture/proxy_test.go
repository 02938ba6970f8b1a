package capture

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// checkRecording compares what was recorded with what the tee'd client and
// server connections saw, connection by connection.
func checkRecording(t *testing.T, chunks []Chunk, clients, servers []*teeConn) {
	t.Helper()
	got := streams(t, chunks)
	var rec []pair
	for id, s := range got {
		if !s[0].opened {
			t.Errorf("conn %d: no Open chunk", id)
		}
		for d := range s {
			if !s[d].closed {
				t.Errorf("conn %d %v: no Close chunk", id, Dir(d))
			}
			if s[d].gaps != 0 {
				t.Errorf("conn %d %v: %d gaps, want none", id, Dir(d), s[d].gaps)
			}
		}
		rec = append(rec, pair{string(s[ClientToServer].data), string(s[ServerToClient].data)})
	}
	for side, tees := range map[string][]*teeConn{"client": clients, "server": servers} {
		var seen []pair
		for _, tc := range tees {
			sent, recv := tc.bytes(t)
			if side == "server" {
				sent, recv = recv, sent
			}
			seen = append(seen, pair{string(sent), string(recv)})
		}
		if len(seen) != len(rec) {
			t.Errorf("%s side has %d connections, recording %d", side, len(seen), len(rec))
			continue
		}
		rs, ss := sortedPairs(append([]pair(nil), rec...)), sortedPairs(seen)
		for i := range rs {
			if rs[i] != ss[i] {
				t.Errorf("%s side: connection %d differs from the recording: sent %d/%d bytes, received %d/%d bytes",
					side, i, len(ss[i].sent), len(rs[i].sent), len(ss[i].recv), len(rs[i].recv))
			}
		}
	}
}

func TestProxyRelaysAndRecords(t *testing.T) {
	dir := t.TempDir()
	upstream, srvTees := startCRIServer(t, dir, 3)
	sink := &memSink{}
	var logs logBuf
	p := &Proxy{Upstream: upstream, Listen: filepath.Join(dir, "proxy.sock"), Recorder: NewRecorder(sink, RecorderOptions{}), Log: logs.printf}
	stop := startProxy(t, p)

	cl := newCRIClient(t, p.Listen)
	ctx := context.Background()
	for i := range 3 {
		if _, err := cl.callAll(ctx, fmt.Sprintf("pod-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	cl.close()
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, err := os.Lstat(p.Listen); !os.IsNotExist(err) {
		t.Errorf("listen socket left behind after stop: %v", err)
	}
	if !sink.closed {
		t.Error("recorder's sink not closed by Run")
	}
	chunks := sink.all()
	if len(chunks) == 0 || chunks[0].Kind != Open || chunks[0].Conn != 1 {
		t.Fatalf("first chunk is %+v, want Open of conn 1", chunks[0])
	}
	checkRecording(t, chunks, cl.connections(), srvTees.accepted())
	if len(cl.connections()) != 1 {
		t.Errorf("client made %d connections, want 1", len(cl.connections()))
	}
	if s := p.Recorder.Stats(); s.DroppedChunks != 0 {
		t.Errorf("dropped %d chunks", s.DroppedChunks)
	}
}

func TestProxyConcurrentClients(t *testing.T) {
	dir := t.TempDir()
	upstream, srvTees := startCRIServer(t, dir, 50)
	sink := &memSink{}
	p := &Proxy{Upstream: upstream, Listen: filepath.Join(dir, "proxy.sock"), Recorder: NewRecorder(sink, RecorderOptions{})}
	stop := startProxy(t, p)

	const clients, rounds = 6, 15
	var wg sync.WaitGroup
	cls := make([]*criClient, clients)
	errs := make(chan error, clients)
	for i := range clients {
		cls[i] = newCRIClient(t, p.Listen)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				if _, err := cls[i].callAll(context.Background(), fmt.Sprintf("c%d-r%d", i, r)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var clientTees []*teeConn
	for _, c := range cls {
		c.close()
		clientTees = append(clientTees, c.connections()...)
	}
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	chunks := sink.all()
	ids := map[uint64]bool{}
	for _, c := range chunks {
		ids[c.Conn] = true
	}
	for id := uint64(1); id <= uint64(len(clientTees)); id++ {
		if !ids[id] {
			t.Errorf("no chunks of connection %d; ids seen %v", id, ids)
		}
	}
	checkRecording(t, chunks, clientTees, srvTees.accepted())
}

// blockingSink never finishes its first Write until released.
func TestProxyBlockedRecorderDoesNotStall(t *testing.T) {
	dir := t.TempDir()
	upstream, _ := startCRIServer(t, dir, 200) // ListContainers answers ~40 KB
	sink := &memSink{block: make(chan struct{}), blocked: make(chan struct{})}
	var logs logBuf
	rec := NewRecorder(sink, RecorderOptions{MaxChunks: 8, MaxBytes: 64 << 10, Log: logs.printf})
	p := &Proxy{Upstream: upstream, Listen: filepath.Join(dir, "proxy.sock"), Recorder: rec}
	stop := startProxy(t, p)

	cl := newCRIClient(t, p.Listen)
	for i := range 40 {
		if _, err := cl.callAll(context.Background(), fmt.Sprintf("pod-%d", i)); err != nil {
			t.Fatalf("call %d with a stuck recorder: %v", i, err)
		}
	}
	<-sink.blocked
	st := rec.Stats()
	if st.DroppedChunks == 0 || st.DroppedBytes == 0 {
		t.Fatalf("stuck recorder dropped nothing: %+v", st)
	}
	if n := logs.count("queue full"); n == 0 {
		t.Errorf("drops not logged; log:\n%s", logs.String())
	}
	cl.close()
	close(sink.block)
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}

	tees := cl.connections()
	got := streams(t, sink.all())
	if len(got) != 1 || len(tees) != 1 {
		t.Fatalf("%d recorded connections, %d client connections; want 1", len(got), len(tees))
	}
	sent, recv := tees[0].bytes(t)
	s := got[1]
	gaps := 0
	for d, want := range [2][]byte{sent, recv} {
		st := s[d]
		gaps += st.gaps
		if !st.closed {
			t.Errorf("%v: no Close chunk", Dir(d))
		}
		for _, pc := range st.pieces {
			end := pc.off + int64(len(pc.data))
			if end > int64(len(want)) || !bytes.Equal(want[pc.off:end], pc.data) {
				t.Errorf("%v: recorded bytes at %d..%d differ from what the client saw", Dir(d), pc.off, end)
			}
		}
	}
	if gaps == 0 {
		t.Error("dropped chunks but no chunk carries a Gap")
	}
}

func TestProxyListenSocket(t *testing.T) {
	root := os.Geteuid() == 0
	for _, tc := range []struct {
		name string
		mode fs.FileMode
		gid  int // -1: keep
	}{
		{"0660 other group", 0o660, 12345},
		{"0600", 0o600, -1},
		{"0666", 0o666, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.gid >= 0 && !root {
				t.Skip("chown to another group needs root")
			}
			dir := t.TempDir()
			up := filepath.Join(dir, "up.sock")
			ln, err := net.Listen("unix", up)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			if err := os.Chmod(up, tc.mode); err != nil {
				t.Fatal(err)
			}
			if tc.gid >= 0 {
				if err := os.Chown(up, -1, tc.gid); err != nil {
					t.Fatal(err)
				}
			}
			p := &Proxy{Upstream: up, Listen: filepath.Join(dir, "proxy.sock")}
			stop := startProxy(t, p)
			ust, lst := statT(t, up), statT(t, p.Listen)
			if lst.Mode&0o7777 != ust.Mode&0o7777 || lst.Uid != ust.Uid || lst.Gid != ust.Gid {
				t.Errorf("listen socket mode %o owner %d:%d; upstream %o %d:%d",
					lst.Mode&0o7777, lst.Uid, lst.Gid, ust.Mode&0o7777, ust.Uid, ust.Gid)
			}
			if lst.Mode&syscall.S_IFMT != syscall.S_IFSOCK {
				t.Errorf("listen path is not a socket")
			}
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Lstat(p.Listen); !os.IsNotExist(err) {
				t.Errorf("listen socket not removed: %v", err)
			}
		})
	}
}

func statT(t *testing.T, path string) *syscall.Stat_t {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return &st
}

func TestProxyListenPathChecks(t *testing.T) {
	dir := t.TempDir()
	up := filepath.Join(dir, "up.sock")
	ln, err := net.Listen("unix", up)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	t.Run("stale socket is replaced", func(t *testing.T) {
		stale := filepath.Join(t.TempDir(), "stale.sock")
		sl, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		sl.SetUnlinkOnClose(false)
		sl.Close()
		var logs logBuf
		p := &Proxy{Upstream: up, Listen: stale, Log: logs.printf, Drain: time.Millisecond}
		stop := startProxy(t, p)
		if logs.count("removed stale socket") != 1 {
			t.Errorf("stale socket removal not logged: %s", logs.String())
		}
		c, err := net.Dial("unix", stale)
		if err != nil {
			t.Fatalf("proxy not listening on the former stale path: %v", err)
		}
		c.Close()
		stop()
	})
	t.Run("live socket is refused", func(t *testing.T) {
		live := filepath.Join(t.TempDir(), "live.sock")
		ll, err := net.Listen("unix", live)
		if err != nil {
			t.Fatal(err)
		}
		defer ll.Close()
		err = (&Proxy{Upstream: up, Listen: live}).Run(context.Background())
		if err == nil || !strings.Contains(err.Error(), "live socket") {
			t.Errorf("Run over a live socket: %v", err)
		}
	})
	t.Run("regular file is refused", func(t *testing.T) {
		f := writeFile(t, "file", []byte("precious"))
		err := (&Proxy{Upstream: up, Listen: f}).Run(context.Background())
		if err == nil || !strings.Contains(err.Error(), "not a socket") {
			t.Errorf("Run over a regular file: %v", err)
		}
		if b, _ := os.ReadFile(f); string(b) != "precious" {
			t.Error("regular file was touched")
		}
	})
	t.Run("upstream must be a socket", func(t *testing.T) {
		err := (&Proxy{Upstream: writeFile(t, "f", nil), Listen: filepath.Join(t.TempDir(), "x.sock")}).Run(context.Background())
		if err == nil || !strings.Contains(err.Error(), "not a unix socket") {
			t.Errorf("Run with a file as upstream: %v", err)
		}
	})
}

func TestProxyUpstreamDownLogsOncePerBurst(t *testing.T) {
	dir := t.TempDir()
	up := filepath.Join(dir, "up.sock")
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: up, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ul.SetUnlinkOnClose(false)
	ul.Close() // a socket file nobody accepts on: dials are refused
	var logs logBuf
	p := &Proxy{Upstream: up, Listen: filepath.Join(dir, "proxy.sock"), Log: logs.printf, Recorder: NewRecorder(&memSink{}, RecorderOptions{})}
	stop := startProxy(t, p)
	for range 5 {
		c, err := net.Dial("unix", p.Listen)
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("client of a dead upstream: read %d, %v; want EOF", n, err)
		}
		c.Close()
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if n := logs.count("dial upstream"); n != 1 {
		t.Errorf("dial failures logged %d times, want 1:\n%s", n, logs.String())
	}
}

// TestProxyHalfClose checks that a client's half-close reaches the server and
// the server's answer after it still reaches the client.
func TestProxyHalfClose(t *testing.T) {
	dir := t.TempDir()
	up := filepath.Join(dir, "up.sock")
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: up, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ul.Close()
	go func() {
		c, err := ul.AcceptUnix()
		if err != nil {
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c) // until the client's half-close
		c.Write([]byte("got " + string(b)))
	}()
	sink := &memSink{}
	p := &Proxy{Upstream: up, Listen: filepath.Join(dir, "proxy.sock"), Recorder: NewRecorder(sink, RecorderOptions{})}
	stop := startProxy(t, p)
	nc, err := net.Dial("unix", p.Listen)
	if err != nil {
		t.Fatal(err)
	}
	c := nc.(*net.UnixConn)
	c.Write([]byte("hello"))
	c.CloseWrite()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	reply, err := io.ReadAll(c)
	if err != nil || string(reply) != "got hello" {
		t.Fatalf("reply %q, %v", reply, err)
	}
	c.Close()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	s := streams(t, sink.all())[1]
	if string(s[ClientToServer].data) != "hello" || string(s[ServerToClient].data) != "got hello" || !s[0].closed || !s[1].closed {
		t.Errorf("recorded %q / %q, closed %v %v", s[0].data, s[1].data, s[0].closed, s[1].closed)
	}
}

// TestProxyDrainClosesIdleConnections: a connection nobody closes is closed
// after Drain once the proxy is stopped.
func TestProxyDrainClosesIdleConnections(t *testing.T) {
	dir := t.TempDir()
	upstream, _ := startCRIServer(t, dir, 1)
	p := &Proxy{Upstream: upstream, Listen: filepath.Join(dir, "proxy.sock"), Drain: 10 * time.Millisecond}
	stop := startProxy(t, p)
	cl := newCRIClient(t, p.Listen)
	defer cl.close()
	if _, err := cl.callAll(context.Background(), "x"); err != nil {
		t.Fatal(err)
	}
	if err := stop(); err != nil { // returns only once the relay is closed
		t.Fatal(err)
	}
}

// logBuf collects log lines.
type logBuf struct {
	mu    sync.Mutex
	lines []string
}

func (l *logBuf) printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

func (l *logBuf) count(sub string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.lines {
		if strings.Contains(s, sub) {
			n++
		}
	}
	return n
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// TestProxyReleasesDescriptors: the relay's duplicated sockets are closed
// when connections end, whether their peers close them or a drain does.
func TestProxyReleasesDescriptors(t *testing.T) {
	openFds := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Skipf("no /proc/self/fd: %v", err)
		}
		return len(ents)
	}
	dir := t.TempDir()
	upstream, _ := startCRIServer(t, dir, 1)
	before := openFds()
	p := &Proxy{Upstream: upstream, Listen: filepath.Join(dir, "proxy.sock"), Recorder: NewRecorder(&memSink{}, RecorderOptions{}), Drain: 10 * time.Millisecond}
	stop := startProxy(t, p)
	for i := range 3 {
		cl := newCRIClient(t, p.Listen)
		if _, err := cl.callAll(context.Background(), fmt.Sprintf("pod-%d", i)); err != nil {
			t.Fatal(err)
		}
		if i < 2 {
			cl.close() // the last one is left to the drain
		} else {
			defer cl.close()
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// The server's side of each connection closes once it sees the end.
	deadline := time.Now().Add(5 * time.Second)
	for openFds() > before+1 && time.Now().Before(deadline) { // +1: the last client
		time.Sleep(10 * time.Millisecond)
	}
	if n := openFds(); n > before+1 {
		t.Errorf("%d descriptors open after the proxy stopped, %d before (+1 for a client still open)", n, before)
	}
}
