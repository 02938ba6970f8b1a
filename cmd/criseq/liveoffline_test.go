package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/criseq/criseq/internal/benchcap"

	"github.com/gopacket/gopacket/pcapgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestWatchAgreesWithRender: watch -w on real grpc-go traffic (pods
// started at once over concurrent connections) draws live exactly what
// render draws from watch's own capture, byte for byte; and that capture
// holds its packets in time order.
func TestWatchAgreesWithRender(t *testing.T) {
	const pods = 20
	srv := burstServer{&criServer{}}
	dir, upstream := serveCRIWith(t, srv, srv)
	listen, live, file := filepath.Join(dir, "w.sock"), filepath.Join(dir, "live"), filepath.Join(dir, "w.pcapng")
	formats := "svg,puml,mmd"
	var stdout, stderr bytes.Buffer
	done := make(chan error, 1)
	go func() {
		done <- run(context.Background(), []string{"watch", "--upstream", upstream, "--listen", listen,
			"-o", live, "--format", formats, "--pods", fmt.Sprint(pods), "--timeout", "60s", "-w", file}, &stdout, &stderr)
	}()
	for i := 0; i < 200; i++ {
		if _, err := os.Stat(listen); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	var wg sync.WaitGroup
	errs := make(chan error, pods)
	for p := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- startPod(context.Background(), listen, fmt.Sprintf("pod-%d", p))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("watch: %v\n%s", err, stderr.String())
		}
	case <-time.After(90 * time.Second):
		t.Fatal("watch did not exit after the pods' flows were written")
	}

	checkTimeOrder(t, file)

	offline := filepath.Join(dir, "offline")
	var rout bytes.Buffer
	if err := run(context.Background(), []string{"render", "-o", offline, "--format", formats, file}, &rout, &rout); err != nil {
		t.Fatalf("render: %v\n%s", err, rout.String())
	}
	a, b := dirFiles(t, live), dirFiles(t, offline)
	if len(a) != pods*3 {
		t.Errorf("watch wrote %d files, want %d:\n%s", len(a), pods*3, stdout.String())
	}
	for name, la := range a {
		lb, ok := b[name]
		switch {
		case !ok:
			t.Errorf("%s: drawn live, not by render of the capture", name)
		case !bytes.Equal(la, lb):
			t.Errorf("%s differs live and offline:\n%s", name, firstDiff(la, lb))
		}
	}
	for name := range b {
		if _, ok := a[name]; !ok {
			t.Errorf("%s: drawn by render of the capture, not live", name)
		}
	}
}

// burstServer gives each pod and container IDs of its own.
type burstServer struct{ *criServer }

func (burstServer) RunPodSandbox(_ context.Context, r *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
	return &runtimeapi.RunPodSandboxResponse{PodSandboxId: fmt.Sprintf("%064x", sha256.Sum256([]byte(r.GetConfig().GetMetadata().GetUid())))}, nil
}

func (burstServer) CreateContainer(_ context.Context, r *runtimeapi.CreateContainerRequest) (*runtimeapi.CreateContainerResponse, error) {
	return &runtimeapi.CreateContainerResponse{ContainerId: fmt.Sprintf("%064x", sha256.Sum256([]byte(r.PodSandboxId+r.GetConfig().GetMetadata().GetName())))}, nil
}

// startPod is a pod start on a connection of its own, with the status
// calls kubelet makes around it.
func startPod(ctx context.Context, sock, name string) error {
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	rt, img := runtimeapi.NewRuntimeServiceClient(conn), runtimeapi.NewImageServiceClient(conn)
	cfg := &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "burst", Uid: "u-" + name}}
	sb, err := rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		return err
	}
	if _, err := rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: sb.PodSandboxId}); err != nil {
		return err
	}
	spec := &runtimeapi.ImageSpec{Image: "registry.local/" + name + ":1"}
	if _, err := img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: spec}); err != nil {
		return err
	}
	pulled, err := img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: spec, SandboxConfig: cfg})
	if err != nil {
		return err
	}
	ct, err := rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: sb.PodSandboxId, SandboxConfig: cfg,
		Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "app"},
			Image: &runtimeapi.ImageSpec{Image: pulled.ImageRef, UserSpecifiedImage: spec.Image}}})
	if err != nil {
		return err
	}
	if _, err := rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: ct.ContainerId}); err != nil {
		return err
	}
	_, err = rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: sb.PodSandboxId})
	return err
}

// checkTimeOrder reads a pcapng file's packets in file order and fails
// if one is timed before the one before it.
func checkTimeOrder(t *testing.T, file string) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewNgReader(f, pcapgo.DefaultNgReaderOptions)
	if err != nil {
		t.Fatal(err)
	}
	var last time.Time
	n := 0
	for {
		_, ci, err := r.ReadPacketData()
		if err != nil {
			break
		}
		n++
		if ci.Timestamp.Before(last) {
			t.Errorf("%s: packet %d is timed %v before packet %d", file, n, last.Sub(ci.Timestamp), n-1)
		}
		last = ci.Timestamp
	}
	if n == 0 {
		t.Errorf("%s: no packets", file)
	}
}

func dirFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string][]byte{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		m[e.Name()] = b
	}
	return m
}

// TestReplayAgreesWithRenderAcrossRuntimes: copies of real captures of
// two runtimes (containerd 1.6 and 2.x, as across an upgrade), replayed
// through watch's live pipeline and rendered from the file, give the same
// diagrams (their names aside: watch numbers a pod's flows as they
// complete, render as they start), each naming the runtime that answered
// its first call.
func TestReplayAgreesWithRenderAcrossRuntimes(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "two.pcapng")
	srcs := []string{
		filepath.Join("..", "..", "testdata", "kubelet-pull", "capture.pcapng"),
		filepath.Join("..", "..", "testdata", "kubelet-pull-containerd2", "capture.pcapng"),
	}
	if _, err := benchcap.Write(file, srcs, 2<<20); err != nil {
		t.Fatal(err)
	}
	contents := map[string][]string{}
	for _, args := range [][]string{
		{"watch", "-r", file, "-o", filepath.Join(dir, "watch"), "--format", "svg,puml"},
		{"render", "-o", filepath.Join(dir, "render"), "--format", "svg,puml", file},
	} {
		var out bytes.Buffer
		if err := run(context.Background(), args, &out, &out); err != nil {
			t.Fatalf("%s: %v\n%s", args[0], err, out.String())
		}
		for _, b := range dirFiles(t, filepath.Join(dir, args[0])) {
			contents[args[0]] = append(contents[args[0]], string(b))
		}
		slices.Sort(contents[args[0]])
	}
	w, r := contents["watch"], contents["render"]
	if !slices.Equal(w, r) {
		t.Fatalf("watch -r drew %d files, render %d; not the same diagrams", len(w), len(r))
	}
	runtimes := map[string]int{}
	for _, s := range w {
		for _, rt := range []string{"containerd 1.6", "containerd v2", "containerd 2"} {
			if strings.Contains(s, rt) {
				runtimes[rt]++
			}
		}
	}
	if len(runtimes) < 2 {
		t.Errorf("diagrams name the runtimes %v, want both", runtimes)
	}
	t.Logf("%d files, runtimes %v", len(w), runtimes)
}
