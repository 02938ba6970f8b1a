package capture

import (
	"context"
	"errors"
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

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// shortDir is a temporary directory with a short path: unix socket paths
// are limited to 107 bytes.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "sw")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// serveRuntime serves the CRI runtime service with grpc-go at path, like a
// runtime: whatever is at path is removed first, and stopping removes path
// (Go's listener unlinks by name, as containerd's does).
func serveRuntime(t *testing.T, path string) (stop func()) {
	t.Helper()
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(srv, &criServer{})
	go srv.Serve(ln)
	// Closing ln here unlinks path now, even if Serve has not started yet
	// (it would close ln, and unlink path, whenever it did).
	stop = func() { ln.Close(); srv.Stop() }
	t.Cleanup(stop)
	return stop
}

func callVersion(c *criClient) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v, err := c.runtime.Version(ctx, &runtimeapi.VersionRequest{Version: "v1"})
	if err == nil && v.RuntimeName != "criseq-test" {
		err = errors.New("wrong runtime " + v.RuntimeName)
	}
	return err
}

func mustID(t *testing.T, path string) fileID {
	t.Helper()
	id, err := identify(path)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

type owner struct {
	uid, gid uint32
	perm     fs.FileMode
}

func ownerOf(t *testing.T, path string) owner {
	t.Helper()
	st, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	sys := st.Sys().(*syscall.Stat_t)
	return owner{sys.Uid, sys.Gid, st.Mode().Perm()}
}

// mustBeGone fails if any of the names criseq puts next to path is left.
func mustBeGone(t *testing.T, path string) {
	t.Helper()
	for _, name := range []string{AsideName(path), NoteName(path), tempName(path)} {
		if _, err := os.Lstat(name); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s left behind (%v)", filepath.Base(name), err)
		}
	}
}

// setOwner gives the runtime's socket 0660 and, as root, another group, so
// that copying them is tested.
func setOwner(t *testing.T, path string) owner {
	t.Helper()
	if os.Getuid() == 0 {
		if err := os.Chown(path, 0, 4242); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(path, 0o660); err != nil {
		t.Fatal(err)
	}
	return ownerOf(t, path)
}

func TestSwapRelaysAndRestores(t *testing.T) {
	dir := shortDir(t)
	path := filepath.Join(dir, "rt.sock")
	serveRuntime(t, path)
	want := setOwner(t, path)
	realID := mustID(t, path)

	before := newCRIClient(t, path)
	defer before.close()
	if err := callVersion(before); err != nil {
		t.Fatalf("before the swap: %v", err)
	}

	var logs logBuf
	sw, err := Swap(path, logs.printf)
	if err != nil {
		t.Fatal(err)
	}
	defer sw.Restore()
	if got := mustID(t, AsideName(path)); got != realID {
		t.Errorf("%s is not the runtime's socket", AsideName(path))
	}
	if mustID(t, path) == realID {
		t.Fatal("path still is the runtime's socket after the swap")
	}
	if got := ownerOf(t, path); got != want {
		t.Errorf("relay socket has owner/mode %+v, want the runtime's %+v", got, want)
	}
	n, err := readNote(NoteName(path))
	if err != nil || n.PID != os.Getpid() || n.Path != path || n.Relay != mustID(t, path) {
		t.Errorf("note %+v, %v", n, err)
	}

	sink := &memSink{}
	p := &Proxy{Listener: sw.Listener(), Listen: path, Upstream: sw.Aside, Recorder: NewRecorder(sink, RecorderOptions{}), Log: logs.printf}
	stop := startProxy(t, p)

	after := newCRIClient(t, path)
	if err := callVersion(after); err != nil {
		t.Fatalf("new client through the relay: %v", err)
	}
	if err := callVersion(before); err != nil {
		t.Errorf("client connected before the swap: %v", err)
	}
	if n := len(before.connections()); n != 1 {
		t.Errorf("client connected before the swap made %d connections, want 1", n)
	}

	if err := sw.Restore(); err != nil {
		t.Fatal(err)
	}
	if mustID(t, path) != realID {
		t.Fatal("path is not the runtime's socket after Restore")
	}
	if got := ownerOf(t, path); got != want {
		t.Errorf("after Restore owner/mode %+v, want %+v", got, want)
	}
	mustBeGone(t, path)
	direct := newCRIClient(t, path)
	if err := callVersion(direct); err != nil {
		t.Errorf("new client after Restore: %v", err)
	}
	direct.close()
	if err := callVersion(after); err != nil {
		t.Errorf("relayed connection after Restore: %v", err)
	}

	// What was recorded is exactly what the relayed client exchanged.
	after.close()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	got := streams(t, sink.all())
	if len(got) != 1 {
		t.Fatalf("recorded %d connections, want the relayed client's only", len(got))
	}
	sent, recv := after.connections()[0].bytes(t)
	s := got[1]
	if string(s[ClientToServer].data) != string(sent) || string(s[ServerToClient].data) != string(recv) {
		t.Errorf("recording differs from the client's bytes: %d/%d sent, %d/%d received",
			len(s[ClientToServer].data), len(sent), len(s[ServerToClient].data), len(recv))
	}
	if !strings.HasPrefix(string(sent), "PRI * HTTP/2.0") {
		t.Errorf("client sent %q, want the HTTP/2 preface", sent[:min(len(sent), 20)])
	}
}

func TestSwapRefuses(t *testing.T) {
	dir := shortDir(t)
	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("x"), 0o600)

	dead := filepath.Join(dir, "dead.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: dead, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()

	swapped := filepath.Join(dir, "rt.sock")
	serveRuntime(t, swapped)
	os.WriteFile(AsideName(swapped), nil, 0o600)

	noted := filepath.Join(dir, "rt2.sock")
	serveRuntime(t, noted)
	os.WriteFile(NoteName(noted), []byte("{}"), 0o600)

	long := filepath.Join(dir, strings.Repeat("l", 100)+".sock")

	for _, c := range []struct{ name, path, want string }{
		{"not a socket", file, "not a unix socket"},
		{"missing", filepath.Join(dir, "none.sock"), "no such file"},
		{"nobody serving", dead, "nobody accepts connections"},
		{"aside exists", swapped, "criseq restore " + swapped},
		{"note exists", noted, "already swapped"},
		{"too long", long, "too long"},
	} {
		t.Run(c.name, func(t *testing.T) {
			before, _ := identify(c.path)
			sw, err := Swap(c.path, t.Logf)
			if err == nil {
				sw.Restore()
				t.Fatal("Swap succeeded")
			}
			if !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "swap: ") {
				t.Errorf("error %q, want it to mention %q", err, c.want)
			}
			if after, _ := identify(c.path); after != before {
				t.Error("path changed")
			}
			if _, err := os.Lstat(tempName(c.path)); !errors.Is(err, fs.ErrNotExist) {
				t.Error("temporary socket left behind")
			}
		})
	}
}

// killSwap leaves a swap as a criseq killed with SIGKILL would: the relay's
// file stays, nobody accepts on it.
func killSwap(sw *SwapState) { sw.Listener().Close() }

func TestRestoreStale(t *testing.T) {
	dir := shortDir(t)
	path := filepath.Join(dir, "rt.sock")
	serveRuntime(t, path)
	want := setOwner(t, path)
	realID := mustID(t, path)

	if err := RestoreStale(path, t.Logf); !errors.Is(err, ErrNotSwapped) {
		t.Fatalf("RestoreStale before any swap: %v, want ErrNotSwapped", err)
	}

	// While the relay runs, RestoreStale refuses and names its pid.
	sw, err := Swap(path, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	startProxy(t, &Proxy{Listener: sw.Listener(), Listen: path, Upstream: sw.Aside})
	err = RestoreStale(path, t.Logf)
	if err == nil || !strings.Contains(err.Error(), "still served by criseq") || !strings.Contains(err.Error(), "kill -TERM") {
		t.Fatalf("RestoreStale while the relay runs: %v", err)
	}
	if _, err := Swap(path, t.Logf); err == nil || !strings.Contains(err.Error(), "criseq restore") {
		t.Fatalf("second Swap while swapped: %v", err)
	}
	killSwap(sw)

	if answers(path) {
		t.Fatal("the killed relay still answers")
	}
	if _, err := Swap(path, t.Logf); err == nil || !strings.Contains(err.Error(), "criseq restore "+path) {
		t.Fatalf("Swap after a kill: %v, want a refusal naming criseq restore", err)
	}
	var logs logBuf
	if err := RestoreStale(path, logs.printf); err != nil {
		t.Fatal(err)
	}
	if mustID(t, path) != realID || ownerOf(t, path) != want {
		t.Fatal("path is not the runtime's socket after RestoreStale")
	}
	mustBeGone(t, path)
	c := newCRIClient(t, path)
	defer c.close()
	if err := callVersion(c); err != nil {
		t.Errorf("after RestoreStale: %v", err)
	}
	if logs.count("put the runtime's socket back") != 1 {
		t.Errorf("log: %q", logs.lines)
	}
	if err := RestoreStale(path, t.Logf); !errors.Is(err, ErrNotSwapped) {
		t.Errorf("second RestoreStale: %v, want ErrNotSwapped", err)
	}
}

// TestRestoreInterrupted: criseq killed in the middle of Swap or Restore.
func TestRestoreInterrupted(t *testing.T) {
	for _, c := range []struct {
		name string
		kill func(t *testing.T, sw *SwapState)
	}{
		{"after the exchange of Swap", func(t *testing.T, sw *SwapState) {
			// The runtime's socket still has the temporary name.
			if err := os.Rename(sw.Aside, tempName(sw.Path)); err != nil {
				t.Fatal(err)
			}
		}},
		{"after the exchange of Restore", func(t *testing.T, sw *SwapState) {
			if err := renameExchange(sw.Aside, sw.Path); err != nil {
				t.Fatal(err)
			}
		}},
		{"note lost", func(t *testing.T, sw *SwapState) { os.Remove(NoteName(sw.Path)) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(shortDir(t), "rt.sock")
			serveRuntime(t, path)
			realID := mustID(t, path)
			sw, err := Swap(path, t.Logf)
			if err != nil {
				t.Fatal(err)
			}
			c.kill(t, sw)
			killSwap(sw)
			if err := RestoreStale(path, t.Logf); err != nil {
				t.Fatal(err)
			}
			if mustID(t, path) != realID {
				t.Fatal("path is not the runtime's socket")
			}
			mustBeGone(t, path)
		})
	}
}

// TestSwapRuntimeRestarts: a runtime that stops removes the socket at its
// address, which is the relay's, and recreates it when it starts. criseq
// notices, leaves the new socket alone and removes the stale aside one.
func TestSwapRuntimeRestarts(t *testing.T) {
	for _, restart := range []bool{true, false} {
		name := map[bool]string{true: "restarted", false: "stopped"}[restart]
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(shortDir(t), "rt.sock")
			stopRuntime := serveRuntime(t, path)
			sw, err := Swap(path, t.Logf)
			if err != nil {
				t.Fatal(err)
			}
			defer sw.Restore()
			startProxy(t, &Proxy{Listener: sw.Listener(), Listen: path, Upstream: sw.Aside})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			lost := sw.Watch(ctx, 10*time.Millisecond)
			if sw.Replaced() {
				t.Fatal("Replaced right after the swap")
			}

			stopRuntime()
			var newID fileID
			if restart {
				serveRuntime(t, path)
				newID = mustID(t, path)
			}
			select {
			case <-lost:
			case <-time.After(5 * time.Second):
				t.Fatal("Watch did not notice")
			}
			var logs logBuf
			sw.log = logs.printf
			if err := sw.Restore(); err != nil {
				t.Fatal(err)
			}
			mustBeGone(t, path)
			if !restart {
				if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("stopped runtime: path is %v, want it absent as the runtime left it", err)
				}
				if logs.count("the runtime stopped") != 1 {
					t.Errorf("log: %q", logs.lines)
				}
				return
			}
			if mustID(t, path) != newID {
				t.Fatal("Restore replaced the restarted runtime's socket")
			}
			if logs.count("left it alone") != 1 {
				t.Errorf("log: %q", logs.lines)
			}
			c := newCRIClient(t, path)
			defer c.close()
			if err := callVersion(c); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestSwapWithoutExchange: on a file system without RENAME_EXCHANGE, a link
// and a rename do the swap and a rename the restore.
func TestSwapWithoutExchange(t *testing.T) {
	old := renameExchange
	renameExchange = func(a, b string) error { return &os.LinkError{Op: "renameat2", Old: a, New: b, Err: unix.EINVAL} }
	defer func() { renameExchange = old }()

	path := filepath.Join(shortDir(t), "rt.sock")
	serveRuntime(t, path)
	want := setOwner(t, path)
	realID := mustID(t, path)
	var logs logBuf
	sw, err := Swap(path, logs.printf)
	if err != nil {
		t.Fatal(err)
	}
	if mustID(t, sw.Aside) != realID || ownerOf(t, path) != want {
		t.Fatal("not swapped")
	}
	startProxy(t, &Proxy{Listener: sw.Listener(), Listen: path, Upstream: sw.Aside})
	c := newCRIClient(t, path)
	defer c.close()
	if err := callVersion(c); err != nil {
		t.Fatal(err)
	}
	if err := sw.Restore(); err != nil {
		t.Fatal(err)
	}
	if mustID(t, path) != realID {
		t.Fatal("not restored")
	}
	mustBeGone(t, path)
	if logs.count("cannot exchange names") != 2 {
		t.Errorf("fallbacks not logged: %q", logs.lines)
	}
}

// TestRelayPanicIsContained: a panic in a relay goroutine closes that
// connection only.
func TestRelayPanicIsContained(t *testing.T) {
	dir := shortDir(t)
	var once sync.Once
	var logs logBuf
	p := &Proxy{Upstream: filepath.Join(dir, "none.sock"), Listen: filepath.Join(dir, "p.sock"), Log: func(format string, args ...any) {
		if strings.HasPrefix(format, "proxy: dial upstream") {
			once.Do(func() { panic("boom") })
		}
		logs.printf(format, args...)
	}}
	// The proxy needs an upstream socket to copy the owner from; it is then removed.
	stopUp := serveRuntime(t, p.Upstream)
	os.Chmod(p.Upstream, 0o600)
	ready := make(chan struct{})
	p.Ready = func() { close(ready) }
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	<-ready
	stopUp()
	for i := range 2 {
		c, err := net.Dial("unix", p.Listen)
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("connection %d: read %v, want EOF", i, err)
		}
		c.Close()
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if logs.count("panic in a relay: boom") != 1 {
		t.Errorf("panic not logged: %q", logs.lines)
	}
}

type panicSink struct{ memSink }

func (s *panicSink) Write(c Chunk) error { panic("sink broke") }

func TestRecorderSinkPanic(t *testing.T) {
	var logs logBuf
	r := NewRecorder(&panicSink{}, RecorderOptions{Log: logs.printf})
	r.Record(Chunk{Conn: 1, Kind: Open})
	err := r.Close()
	if err == nil || !strings.Contains(err.Error(), "panic in the sink: sink broke") {
		t.Errorf("Close: %v", err)
	}
	if logs.count("recording stopped") != 1 {
		t.Errorf("log: %q", logs.lines)
	}
}
