package ebpf

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/criseq/criseq/capture"
)

// TestAttachFollowsRestart: traced by name, the process exits (its
// connections end in the capture) and a new one of the same name starts
// (exec): its new connection is traced from its first byte.
func TestAttachFollowsRestart(t *testing.T) {
	needBPF(t)
	eachAttachment(t, testFollowsRestart)
}

func testFollowsRestart(t *testing.T, via attachment) {
	dir := t.TempDir()
	sock := startServer(t, dir)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The name a process runs as is its executable's base name.
	name := "cq-fakelet"
	link := filepath.Join(dir, name)
	if err := os.Symlink(exe, link); err != nil {
		t.Fatal(err)
	}
	first := startChild(t, link)
	c := first.do("dial %s rw", sock)[0]
	first.do("calls %s 5", c)
	tr := attach(t, &Tracer{Comm: name, Socket: sock, via: via})
	first.do("calls %s 5", c)
	first.stop()

	second := startChild(t, link)
	c = second.do("dial %s rw", sock)[0]
	second.do("calls %s 10", c)
	second.do("close %s", c)
	time.Sleep(600 * time.Millisecond) // a housekeeping round or two
	chunks := tr.stop(t)

	conns := splitConns(t, chunks, false)
	if len(conns) != 2 {
		t.Fatalf("%d connections traced, want the first process's and the second's", len(conns))
	}
	if !conns[1].midway || !conns[1].closed[0] || !conns[1].closed[1] {
		t.Errorf("first process's connection: midway %v closed %v, want midway and closed when it exited", conns[1].midway, conns[1].closed)
	}
	if conns[2].midway {
		t.Error("second process's connection marked midway; it was traced from its connect")
	}
	calls, errs := decodeConn(t, chunks, 2)
	if len(errs) > 0 || len(calls) != 11 {
		t.Errorf("second connection: %d calls, errors %v; want 11 and none", len(calls), errs)
	}
	for _, want := range []string{"exited", "new " + name + " process"} {
		if !strings.Contains(tr.logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, tr.logs.String())
		}
	}
}

// TestAttachPIDExits: attached by --pid, the process exits: the tracer
// stops with a message saying so and how to follow restarts.
func TestAttachPIDExits(t *testing.T) {
	needBPF(t)
	dir := t.TempDir()
	sock := startServer(t, dir)
	ch := startChild(t, "")
	c := ch.do("dial %s rw", sock)[0]
	tr := &Tracer{PID: ch.Pid, Socket: sock, Recorder: capture.NewRecorder(&memSink{}, capture.RecorderOptions{})}
	ready := make(chan struct{})
	tr.Ready = func(Attached) { close(ready) }
	done := make(chan error, 1)
	go func() { done <- tr.Run(context.Background()) }()
	<-ready
	ch.do("calls %s 3", c)
	ch.stop()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "exited") || !strings.Contains(err.Error(), "without --pid") {
			t.Errorf("Run: %v, want an error saying the process exited and how to follow restarts", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not stop after the traced process exited")
	}
}

// TestAttachErrors: what cannot be traced is refused with the fix.
func TestAttachErrors(t *testing.T) {
	needBPF(t)
	dir := t.TempDir()
	sock := startServer(t, dir)
	for _, tc := range []struct {
		name string
		tr   *Tracer
		want string
	}{
		{"no such process", &Tracer{PID: 1 << 30, Socket: sock}, "no process"},
		{"no process of that name", &Tracer{Comm: "cq-nothing-here", Socket: sock}, "--pid"},
		{"socket missing", &Tracer{PID: os.Getpid(), Socket: filepath.Join(dir, "nothing.sock")}, "--socket"},
		{"not a socket", &Tracer{PID: os.Getpid(), Socket: dir}, "not a unix socket"},
		{"bad ring size", &Tracer{PID: os.Getpid(), Socket: sock, RingSize: 1000}, "power of two"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.tr.Recorder = capture.NewRecorder(&memSink{}, capture.RecorderOptions{})
			err := tc.tr.Run(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Run: %v, want an error with %q", err, tc.want)
			}
		})
	}
	// Several processes of one name.
	exe, _ := os.Executable()
	link := filepath.Join(dir, "cq-twice")
	os.Symlink(exe, link)
	startChild(t, link)
	startChild(t, link)
	tr := &Tracer{Comm: "cq-twice", Socket: sock, Recorder: capture.NewRecorder(&memSink{}, capture.RecorderOptions{})}
	if err := tr.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "choose one with --pid") {
		t.Errorf("two processes: %v, want an error asking for --pid", err)
	}
}

// TestAttachSIGKILL: a tracer killed with SIGKILL leaves no BPF program
// behind (they go with its file descriptors).
func TestAttachSIGKILL(t *testing.T) {
	needBPF(t)
	eachAttachment(t, func(t *testing.T, via attachment) {
		dir := t.TempDir()
		sock := startServer(t, dir)
		ch := startChild(t, "")
		got, ids := childAttach(t, ch, "attach %s %d", sock, via)
		if got != via {
			t.Fatalf("attached via %v, want %v", got, via)
		}
		killLeavesNothing(t, ch, ids)
	})
}

// TestAttachFallback: where the perf syscall tracepoints cannot be attached
// (here: perf_event_open denied to the tracer by seccomp, as some container
// runtimes and security policies do), the raw tracepoints take over, say
// so, and go with the process too.
func TestAttachFallback(t *testing.T) {
	needBPF(t)
	if len(attachments(t)) < 2 {
		t.Skip("no raw tracepoint programs for this machine")
	}
	dir := t.TempDir()
	sock := startServer(t, dir)
	ch := startChild(t, "")
	got, ids := childAttach(t, ch, "noperf attach %s %d", sock, anyAttachment)
	if got != rawTracepoints {
		t.Fatalf("attached via %v with perf_event_open denied, want %v", got, rawTracepoints)
	}
	killLeavesNothing(t, ch, ids)
}

// childAttach has the child trace itself; it returns how it attached and
// its programs' IDs.
func childAttach(t *testing.T, ch *child, format string, args ...any) (attachment, []ebpf.ProgramID) {
	t.Helper()
	reply := ch.do(format, args...)
	via, _ := strconv.Atoi(reply[0])
	var ids []ebpf.ProgramID
	for _, s := range reply[1:] {
		n, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			t.Fatalf("child's program IDs: %v", err)
		}
		ids = append(ids, ebpf.ProgramID(n))
	}
	return attachment(via), ids
}

// killLeavesNothing kills the child with SIGKILL and waits until none of
// its programs ids is loaded.
func killLeavesNothing(t *testing.T, ch *child, ids []ebpf.ProgramID) {
	t.Helper()
	if len(ids) == 0 || loaded(t, ids) != len(ids) {
		t.Fatalf("the child's tracer has %d programs, %d of them loaded: the check below could not fail", len(ids), loaded(t, ids))
	}
	if err := ch.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ch.cmd.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := loaded(t, ids)
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of the killed tracer's %d BPF programs still loaded 10s after SIGKILL", n, len(ids))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// loaded counts the programs of ids still loaded, going through every
// loaded program by ID as bpftool does.
func loaded(t testing.TB, ids []ebpf.ProgramID) int {
	t.Helper()
	n := 0
	id := ebpf.ProgramID(0)
	for {
		next, err := ebpf.ProgramGetNextID(id)
		if errors.Is(err, os.ErrNotExist) {
			return n
		}
		if err != nil {
			t.Fatalf("list BPF programs: %v", err)
		}
		id = next
		if !slices.Contains(ids, id) {
			continue
		}
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue // gone meanwhile
		}
		info, err := p.Info()
		p.Close()
		if err == nil && strings.HasPrefix(info.Name, ProgPrefix) {
			n++
		}
	}
}

// TestAttachNotRoot: without root, attach says so, with the fix and the
// fallback, before touching anything.
func TestAttachNotRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		err := Check()
		if err == nil || !strings.Contains(err.Error(), "needs root") || !strings.Contains(err.Error(), "--swap") {
			t.Errorf("Check as a user: %v, want a message asking for root, with --swap as the fallback", err)
		}
		return
	}
	// As root: run a copy of this test as nobody.
	dir := t.TempDir()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "ebpf.test")
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	for d := dir; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	cmd := exec.Command(bin, "-test.run=^TestAttachNotRoot$", "-test.count=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	cmd.Env = append(os.Environ(), "CI=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("as nobody: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "PASS") {
		t.Errorf("as nobody:\n%s", out)
	}
}
