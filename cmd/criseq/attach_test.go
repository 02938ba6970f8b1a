package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/criseq/criseq/capture/ebpf"
)

func TestAttachUsage(t *testing.T) {
	for _, args := range [][]string{
		{"record", "--pid", "1", "--listen", "/tmp/x.sock", "-w", "x"},
		{"record", "--attach", "--swap", "/tmp/x.sock", "-w", "x"},
		{"record", "--attach"},
		{"record", "--attach", "--ring-size", "3", "-w", "x"},
		{"watch", "--attach", "--listen", "/tmp/x.sock"},
		{"watch", "--socket", "/tmp/x.sock", "--listen", "/tmp/y.sock"},
	} {
		var stderr bytes.Buffer
		if err := run(context.Background(), args, &stderr, &stderr); !errors.Is(err, errUsage) {
			t.Errorf("criseq %q: err = %v, want a usage error", args, err)
		}
	}
}

func needAttach(t *testing.T) {
	t.Helper()
	if err := ebpf.Check(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI must run attach tests: %v", err)
		}
		t.Skipf("attach mode cannot run here: %v", err)
	}
}

// syncBuf is a bytes.Buffer safe for a command writing while the test reads.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startAttached runs "criseq CMD --attach" on this very process's
// connections to sock, and waits until it is attached.
func startAttached(t *testing.T, sock string, args ...string) (stdout, stderr *syncBuf, stop func() error) {
	t.Helper()
	stdout, stderr = &syncBuf{}, &syncBuf{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	args = append(args, "--attach", "--pid", strconv.Itoa(os.Getpid()), "--socket", sock)
	go func() { done <- run(ctx, args, stdout, stderr) }()
	for !strings.Contains(stderr.String(), "attached to process") {
		select {
		case err := <-done:
			cancel()
			t.Fatalf("criseq %q: %v\n%s", args, err, stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() { cancel(); err = <-done })
		return err
	}
	t.Cleanup(func() { stop() })
	return stdout, stderr, stop
}

// podStart makes the calls of a pod start on a new connection to sock.
func podStart(t *testing.T, sock, name string) {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := context.Background()
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	cfg := &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "ci", Uid: "u-" + name}}
	sb, err := rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	ct, err := rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: sb.PodSandboxId, SandboxConfig: cfg,
		Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "app"}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: ct.ContainerId}); err != nil {
		t.Fatal(err)
	}
}

// TestRecordAttach: record --attach on a real grpc-go client (this
// process) and server, then calls lists what the client did.
func TestRecordAttach(t *testing.T) {
	needAttach(t)
	dir, sock, _ := serveCRI(t)
	file := filepath.Join(dir, "cri.pcapng")
	_, stderr, stop := startAttached(t, sock, "record", "-w", file)
	podStart(t, sock, "traced")
	time.Sleep(300 * time.Millisecond)
	if err := stop(); err != nil {
		t.Fatalf("record --attach: %v\n%s", err, stderr.String())
	}
	if st, err := os.Stat(file); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("capture file: %v; want mode 0600", err)
	}
	calls := callsIn(t, file)
	for _, want := range []string{"RunPodSandbox", "CreateContainer", "StartContainer"} {
		if !strings.Contains(calls, want) {
			t.Errorf("calls lacks %s:\n%s", want, calls)
		}
	}
	if !strings.Contains(stderr.String(), "traced 1 connections") || !strings.Contains(stderr.String(), "write ") {
		t.Errorf("no report of what was traced:\n%s", stderr.String())
	}
}

// TestWatchAttach: watch --attach draws the pod start of a traced client.
func TestWatchAttach(t *testing.T) {
	needAttach(t)
	dir, sock, _ := serveCRI(t)
	out := filepath.Join(dir, "out")
	stdout, stderr, stop := startAttached(t, sock, "watch", "-o", out, "--format", "svg")
	podStart(t, sock, "drawn")
	deadline := time.Now().Add(20 * time.Second)
	for !exists(filepath.Join(out, "ci_drawn_start.svg")) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if err := stop(); err != nil {
		t.Fatalf("watch --attach: %v\n%s", err, stderr.String())
	}
	if !exists(filepath.Join(out, "ci_drawn_start.svg")) || !strings.Contains(stdout.String(), "ci/drawn") {
		t.Errorf("no diagram of the pod start; stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	}
}
