package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/criseq/criseq/capture"
	"github.com/criseq/criseq/internal/testpeer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestRecordSwapUsage(t *testing.T) {
	for _, args := range [][]string{
		{"record", "--swap", "/tmp/x.sock", "--listen", "/tmp/y.sock", "-w", "x.pcapng"},
		{"record", "--swap", "/tmp/x.sock", "--upstream", "/tmp/y.sock", "-w", "x.pcapng"},
		{"record", "--swap", "/tmp/x.sock"},
		{"record", "--upstream", "/tmp/x.sock", "--listen", "/tmp/x.sock", "-w", "x.pcapng"},
	} {
		var stderr bytes.Buffer
		if err := run(context.Background(), args, &stderr, &stderr); !errors.Is(err, errUsage) {
			t.Errorf("criseq %q: err = %v, want a usage error", args, err)
		}
	}
	var stderr bytes.Buffer
	if err := runRestore(context.Background(), []string{"a", "b"}, &stderr, &stderr); !errors.Is(err, errUsage) {
		t.Errorf("restore a b: %v, want a usage error", err)
	}
}

// containerd is a private containerd, as lab/lib.sh runs one.
type containerd struct {
	t      *testing.T
	dir    string
	config string
	sock   string
	cmd    *exec.Cmd
}

func newContainerd(t *testing.T, dir string) *containerd {
	c := &containerd{t: t, dir: dir, config: filepath.Join(dir, "config.toml"), sock: filepath.Join(dir, "containerd.sock")}
	config := fmt.Sprintf(`version = 2
root = "%[1]s/root"
state = "%[1]s/state"
[grpc]
  address = "%[1]s/containerd.sock"
[ttrpc]
  address = "%[1]s/containerd.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
    Root = "%[1]s/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "%[1]s/cni"
`, dir)
	if err := os.WriteFile(c.config, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.stop)
	return c
}

func (c *containerd) start() {
	c.t.Helper()
	log, err := os.OpenFile(filepath.Join(c.dir, "containerd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		c.t.Fatal(err)
	}
	defer log.Close()
	c.cmd = exec.Command("containerd", "--config", c.config)
	c.cmd.Stdout, c.cmd.Stderr = log, log
	if err := c.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	for range 200 {
		if conn, err := net.Dial("unix", c.sock); err == nil {
			conn.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	out, _ := os.ReadFile(filepath.Join(c.dir, "containerd.log"))
	c.t.Fatalf("containerd did not answer on %s within 10s:\n%s", c.sock, out)
}

// stop stops containerd with SIGTERM (SIGKILL after 10 s). No pods run, so
// no shims are left.
func (c *containerd) stop() {
	if c.cmd == nil {
		return
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		c.cmd.Process.Kill()
		<-done
	}
	c.cmd = nil
}

// recorder is a criseq record --swap process.
type recorder struct {
	cmd    *exec.Cmd
	stderr string
	done   chan struct{}
	err    error
}

func startSwap(t *testing.T, bin, sock, file string) *recorder {
	t.Helper()
	r := &recorder{stderr: file + ".log", done: make(chan struct{})}
	log, err := os.Create(r.stderr)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	r.cmd = exec.Command(bin, "record", "--swap", sock, "-w", file)
	r.cmd.Stdout, r.cmd.Stderr = log, log
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.err = r.cmd.Wait(); close(r.done) }()
	t.Cleanup(func() { r.cmd.Process.Kill(); <-r.done })
	for range 200 {
		if strings.Contains(r.log(), "swapped "+sock) {
			return r
		}
		select {
		case <-r.done:
			t.Fatalf("criseq record --swap exited: %v\n%s", r.err, r.log())
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("criseq record --swap not ready after 10s:\n%s", r.log())
	return nil
}

func (r *recorder) log() string {
	b, _ := os.ReadFile(r.stderr)
	return string(b)
}

// wait waits for the process to exit by itself or after sig (0: none).
func (r *recorder) wait(t *testing.T, sig syscall.Signal) error {
	t.Helper()
	if sig != 0 {
		r.cmd.Process.Signal(sig)
	}
	select {
	case <-r.done:
		return r.err
	case <-time.After(10 * time.Second):
		t.Fatalf("criseq record did not exit:\n%s", r.log())
		return nil
	}
}

type criConn struct {
	conn *grpc.ClientConn
	rt   runtimeapi.RuntimeServiceClient
}

func dialCRI(t *testing.T, sock string) *criConn {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &criConn{conn, runtimeapi.NewRuntimeServiceClient(conn)}
}

// calls makes the calls kubelet makes most: Version, ListPodSandbox.
func (c *criConn) calls() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := c.rt.Version(ctx, &runtimeapi.VersionRequest{})
	if err != nil {
		return fmt.Errorf("Version: %w", err)
	}
	if v.RuntimeName != "containerd" {
		return fmt.Errorf("Version: runtime %q", v.RuntimeName)
	}
	if _, err := c.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{}); err != nil {
		return fmt.Errorf("ListPodSandbox: %w", err)
	}
	return nil
}

func inode(t *testing.T, path string) (ino uint64, uid, gid uint32, mode fs.FileMode) {
	t.Helper()
	st, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	sys := st.Sys().(*syscall.Stat_t)
	return sys.Ino, sys.Uid, sys.Gid, st.Mode()
}

func noLeftovers(t *testing.T, sock string) {
	t.Helper()
	for _, name := range []string{capture.AsideName(sock), capture.NoteName(sock)} {
		if _, err := os.Lstat(name); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s left behind (%v)", name, err)
		}
	}
}

func callsIn(t *testing.T, file string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"calls", file}, &stdout, &stderr); err != nil {
		t.Fatalf("calls %s: %v\n%s", file, err, stderr.String())
	}
	return stdout.String()
}

// TestSwapContainerd swaps a real containerd's socket with the real criseq
// binary, and checks that the socket comes back after SIGTERM, after SIGKILL
// (with criseq restore) and when containerd restarts meanwhile.
func TestSwapContainerd(t *testing.T) {
	if os.Getuid() != 0 {
		testpeer.Missing(t, "needs root: runs containerd")
	}
	if _, err := exec.LookPath("containerd"); err != nil {
		testpeer.Missing(t, "containerd is not installed")
	}
	if testing.Short() {
		t.Skip("-short: builds criseq and runs containerd")
	}
	dir, err := os.MkdirTemp("", "sw") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := filepath.Join(t.TempDir(), "criseq")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ctrd := newContainerd(t, dir)
	ctrd.start()
	sock := ctrd.sock
	t.Cleanup(func() { capture.RestoreStale(sock, t.Logf) }) // whatever a failure left
	ino, uid, gid, mode := inode(t, sock)

	before := dialCRI(t, sock)
	if err := before.calls(); err != nil {
		t.Fatalf("before the swap: %v", err)
	}

	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP} {
		t.Run(sig.String(), func(t *testing.T) {
			file := filepath.Join(dir, fmt.Sprintf("sig%d.pcapng", sig))
			rec := startSwap(t, bin, sock, file)
			if i, u, g, m := inode(t, sock); i == ino || u != uid || g != gid || m != mode {
				t.Errorf("swapped socket: inode %d (runtime's: %d), %d:%d %v, want %d:%d %v", i, ino, u, g, m, uid, gid, mode)
			}
			if !strings.Contains(rec.log(), "restart kubelet") {
				t.Errorf("no word about connections opened before the swap:\n%s", rec.log())
			}
			after := dialCRI(t, sock)
			if err := after.calls(); err != nil {
				t.Fatalf("through the relay: %v\n%s", err, rec.log())
			}
			if err := before.calls(); err != nil {
				t.Errorf("connection opened before the swap: %v", err)
			}
			after.conn.Close() // else criseq waits a second for it to finish
			if err := rec.wait(t, sig); err != nil {
				t.Fatalf("criseq record: %v\n%s", err, rec.log())
			}
			if i, u, g, m := inode(t, sock); i != ino || u != uid || g != gid || m != mode {
				t.Errorf("after %v: inode %d, %d:%d %v; want containerd's %d, %d:%d %v", sig, i, u, g, m, ino, uid, gid, mode)
			}
			noLeftovers(t, sock)
			if err := dialCRI(t, sock).calls(); err != nil {
				t.Errorf("after %v: %v", sig, err)
			}
			calls := callsIn(t, file)
			for _, m := range []string{"RuntimeService/Version", "RuntimeService/ListPodSandbox"} {
				if strings.Count(calls, m) != 1 {
					t.Errorf("capture has %d %s calls, want 1 (the relayed client's):\n%s", strings.Count(calls, m), m, calls)
				}
			}
		})
	}

	t.Run("SIGKILL", func(t *testing.T) {
		rec := startSwap(t, bin, sock, filepath.Join(dir, "kill.pcapng"))
		rec.wait(t, syscall.SIGKILL)
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			t.Fatal("killed criseq's socket still answers")
		}
		again := exec.Command(bin, "record", "--swap", sock, "-w", filepath.Join(dir, "again.pcapng"))
		out, err := again.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "criseq restore "+sock) {
			t.Fatalf("record --swap after a SIGKILL: %v, want a refusal naming criseq restore:\n%s", err, out)
		}
		// The lead registers restore in main.go; until then call it in-process.
		var restoreOut []byte
		if registered("restore") {
			restoreOut, err = exec.Command(bin, "restore", sock).CombinedOutput()
		} else {
			var b bytes.Buffer
			err = runRestore(context.Background(), []string{sock}, &b, &b)
			restoreOut = b.Bytes()
		}
		if err != nil {
			t.Fatalf("criseq restore: %v\n%s", err, restoreOut)
		}
		if !strings.Contains(string(restoreOut), "put the runtime's socket back") {
			t.Errorf("criseq restore said:\n%s", restoreOut)
		}
		if i, _, _, _ := inode(t, sock); i != ino {
			t.Error("criseq restore did not put containerd's socket back")
		}
		noLeftovers(t, sock)
		if err := dialCRI(t, sock).calls(); err != nil {
			t.Errorf("after criseq restore: %v", err)
		}
	})

	t.Run("containerd restarts", func(t *testing.T) {
		file := filepath.Join(dir, "restart.pcapng")
		rec := startSwap(t, bin, sock, file)
		if err := dialCRI(t, sock).calls(); err != nil {
			t.Fatalf("through the relay: %v", err)
		}
		// containerd removes the socket at its address when it stops (the
		// relay's) and recreates it when it starts.
		ctrd.stop()
		ctrd.start()
		err := rec.wait(t, 0)
		if err == nil || !strings.Contains(rec.log(), "no longer criseq's socket") || !strings.Contains(rec.log(), "criseq record --swap again") {
			t.Errorf("criseq record: %v, want an exit explaining the socket was replaced:\n%s", err, rec.log())
		}
		noLeftovers(t, sock)
		if err := dialCRI(t, sock).calls(); err != nil {
			t.Errorf("restarted containerd: %v\n%s", err, rec.log())
		}
		if calls := callsIn(t, file); !strings.Contains(calls, "RuntimeService/ListPodSandbox") {
			t.Errorf("capture lacks the calls made before the restart:\n%s", calls)
		}
	})
}

func registered(name string) bool {
	for _, c := range commands() {
		if c.name == name {
			return true
		}
	}
	return false
}

// panicWriter panics the first time it is given text containing trigger.
type panicWriter struct {
	trigger string
	fired   bool
	buf     bytes.Buffer
}

func (w *panicWriter) Write(b []byte) (int, error) {
	if !w.fired && strings.Contains(string(b), w.trigger) {
		w.fired = true
		panic("injected")
	}
	return w.buf.Write(b)
}

// TestRecordSwapPanic: a panic in criseq record --swap puts the socket back
// before it goes on.
func TestRecordSwapPanic(t *testing.T) {
	dir, err := os.MkdirTemp("", "sw")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "rt.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(srv, &criServer{})
	go srv.Serve(l)
	defer srv.Stop()
	ino, _, _, _ := inode(t, sock)

	// The message printed once the relay is up, from the goroutine that runs it.
	w := &panicWriter{trigger: "restart kubelet"}
	func() {
		defer func() {
			if v := recover(); v != "injected" {
				t.Errorf("recovered %v, want the injected panic", v)
			}
		}()
		run(context.Background(), []string{"record", "--swap", sock, "-w", filepath.Join(dir, "f.pcapng")}, w, w)
		t.Error("record returned instead of panicking")
	}()
	if i, _, _, _ := inode(t, sock); i != ino {
		t.Errorf("after the panic, %s is not the runtime's socket:\n%s", sock, w.buf.String())
	}
	noLeftovers(t, sock)
	c := &criConn{}
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c.rt = runtimeapi.NewRuntimeServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.rt.Version(ctx, &runtimeapi.VersionRequest{}); err != nil {
		t.Errorf("after the panic: %v", err)
	}
}
