package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestWatchReplay: watch on a recorded kubelet run writes the same flows
// render finds.
func TestWatchReplay(t *testing.T) {
	capPath := filepath.Join("..", "..", "testdata", "kubelet-init", "capture.pcapng")
	var stdout, stderr bytes.Buffer
	out := t.TempDir()
	if err := run(context.Background(), []string{"watch", "-r", capPath, "-o", out, "--format", "puml"}, &stdout, &stderr); err != nil {
		t.Fatalf("watch: %v\n%s", err, stderr.String())
	}
	// The stop is written once the pod is down, and again, updated, when
	// kubelet's clean-up removes it 52 s later.
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], "started in") ||
		!strings.Contains(lines[1], "stopped in 733ms, not removed yet") || strings.Contains(lines[1], "(updated)") ||
		!strings.Contains(lines[2], "stopped in 733ms") || !strings.Contains(lines[2], "removed 52.3s later") || !strings.HasSuffix(lines[2], "(updated)") {
		t.Fatalf("watch printed:\n%s", stdout.String())
	}
	puml, err := os.ReadFile(filepath.Join(out, "default_with-init-criseq-lab_start.puml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"CreateContainer(setup)", "CreateContainer(web)", "CreateContainer(sidecar)", "StartContainer(sidecar)"} {
		if !strings.Contains(string(puml), c) {
			t.Errorf("live start flow lacks %s", c)
		}
	}
}

// TestWatchLive: watch relays a real grpc-go CRI client and server, writes
// the pod start as soon as it is complete, and exits after --pods 1.
func TestWatchLive(t *testing.T) { watchLive(t, false) }

// TestWatchSwap: the same with watch --swap on the server's own socket,
// which must be back in place afterwards.
func TestWatchSwap(t *testing.T) { watchLive(t, true) }

func watchLive(t *testing.T, swap bool) {
	dir, upstream, _ := serveCRI(t)
	listen, out := filepath.Join(dir, "w.sock"), filepath.Join(dir, "out")

	var stdout, stderr bytes.Buffer
	done := make(chan error, 1)
	started := time.Now()
	args := []string{"watch", "--upstream", upstream, "--listen", listen}
	if swap {
		args = []string{"watch", "--swap", upstream}
		listen = upstream
	}
	args = append(args, "-o", out, "--pods", "1", "--timeout", "20s", "-w", filepath.Join(dir, "w.pcapng"))
	go func() { done <- run(context.Background(), args, &stdout, &stderr) }()
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(listen); err == nil && (!swap || exists(upstream+".criseq-orig")) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	conn, err := grpc.NewClient("unix://"+listen, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := context.Background()
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	cfg := &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "live", Namespace: "ci", Uid: "u-2"}}
	sb, err := rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	ct, err := rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: sb.PodSandboxId,
		Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "app"}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: ct.ContainerId}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("watch: %v\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("watch did not exit after the pod's flow was written")
	}
	t.Logf("watch exited %v after it started", time.Since(started).Round(time.Millisecond))
	if !strings.Contains(stdout.String(), "ci/live") || !strings.Contains(stdout.String(), "started in") {
		t.Errorf("watch printed %q", stdout.String())
	}
	for _, f := range []string{"ci_live_start.svg", "ci_live_start.puml", "ci_live_start.mmd"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Error(err)
		}
	}
	if st, err := os.Stat(filepath.Join(dir, "w.pcapng")); err != nil || st.Size() == 0 || st.Mode().Perm() != 0o600 {
		t.Errorf("recording: %v", err)
	}
	if swap {
		if exists(upstream + ".criseq-orig") {
			t.Error("the runtime's socket was not put back")
		}
		c2, err := grpc.NewClient("unix://"+upstream, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer c2.Close()
		if _, err := runtimeapi.NewRuntimeServiceClient(c2).Version(ctx, &runtimeapi.VersionRequest{}); err != nil {
			t.Errorf("the runtime does not answer at its socket after watch --swap: %v", err)
		}
		return
	}
	if _, err := os.Stat(listen); !os.IsNotExist(err) {
		t.Errorf("listen socket left behind: %v", err)
	}
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// TestWatchTimeout: --timeout before --pods flows gives exit code 3.
func TestWatchTimeout(t *testing.T) {
	dir, err := os.MkdirTemp("", "criseq")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	upstream := filepath.Join(dir, "rt.sock")
	l, err := net.Listen("unix", upstream)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	go srv.Serve(l)
	defer srv.Stop()
	var stderr bytes.Buffer
	err = run(context.Background(), []string{"watch", "--upstream", upstream, "--listen", filepath.Join(dir, "w.sock"),
		"-o", filepath.Join(dir, "out"), "--pods", "1", "--timeout", "300ms"}, &stderr, &stderr)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 3 {
		t.Fatalf("err = %v, want exit code 3", err)
	}
}

// TestWatchPodsExact: --pods N writes N flows, though a burst completes
// many at once: the real 20-pod burst, replayed, with --pods 3.
func TestWatchPodsExact(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"watch", "-r", filepath.Join("..", "..", "testdata", "kubelet-burst", "capture.pcapng"),
		"-o", out, "--format", "svg", "--pods", "3"}, &stdout, &stderr); err != nil {
		t.Fatalf("watch: %v\n%s", err, stderr.String())
	}
	files, _ := filepath.Glob(filepath.Join(out, "*.svg"))
	if lines := strings.Count(stdout.String(), "\n"); lines != 3 || len(files) != 3 {
		t.Errorf("--pods 3: %d lines, %d files, want 3 of each:\n%s", lines, len(files), stdout.String())
	}
}

// TestWatchReplayNothing: a replay that draws no flow fails as render
// does, naming the filter and the file.
func TestWatchReplayNothing(t *testing.T) {
	capture := filepath.Join("..", "..", "testdata", "kubelet-pull", "capture.pcapng")
	for _, filter := range [][]string{{"--pod", "nosuch"}, {"--namespace", "kube-system"}} {
		var stdout, stderr bytes.Buffer
		args := append([]string{"watch", "-r", capture, "-o", filepath.Join(t.TempDir(), "out")}, filter...)
		err := run(context.Background(), args, &stdout, &stderr)
		if err == nil || !strings.Contains(err.Error(), filter[1]) || !strings.Contains(err.Error(), "capture.pcapng") {
			t.Errorf("watch -r %s: err = %v, want one naming %s and the file", filter, err, filter[1])
		}
	}
}
