package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/criseq/criseq/decode"
	"github.com/criseq/criseq/flow"
	"github.com/criseq/criseq/internal/benchcap"
	"github.com/criseq/criseq/render"
)

// TestRenderHTML: --format html writes one viewer per capture, named after
// it, with every flow, next to the other formats' one file per flow.
func TestRenderHTML(t *testing.T) {
	capPath := filepath.Join("..", "..", "testdata", "kubelet-pull", "capture.pcapng")
	out := t.TempDir()
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"render", "-o", out, "--format", "svg,html", capPath}, &stdout, &stderr); err != nil {
		t.Fatalf("render: %v\n%s", err, stderr.String())
	}
	files, _ := filepath.Glob(filepath.Join(out, "*"))
	var names []string
	for _, f := range files {
		names = append(names, filepath.Base(f))
	}
	want := "capture.html default_hello-criseq-lab_start.svg default_hello-criseq-lab_stop.svg"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("files %q, want %q", got, want)
	}
	if !strings.Contains(stdout.String(), filepath.Join(out, "capture.html")) {
		t.Errorf("output does not name the viewer:\n%s", stdout.String())
	}
	b, err := os.ReadFile(filepath.Join(out, "capture.html"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"<!DOCTYPE html>", "default/hello-criseq-lab — pod start", "default/hello-criseq-lab — pod stop",
		`id="criseq-data"`, "RunPodSandbox", "RemovePodSandbox"} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("capture.html lacks %q", want)
		}
	}

	// html alone: the flows are listed, then the viewer.
	stdout.Reset()
	out = t.TempDir()
	if err := run(context.Background(), []string{"demo", "-o", out, "--format", "html"}, &stdout, &stderr); err != nil {
		t.Fatalf("demo: %v\n%s", err, stderr.String())
	}
	files, _ = filepath.Glob(filepath.Join(out, "*"))
	if len(files) != 1 || filepath.Base(files[0]) != "demo.html" {
		t.Errorf("demo --format html wrote %q, want demo.html", files)
	}
	if lines := strings.Split(strings.TrimSpace(stdout.String()), "\n"); len(lines) < 2 || !strings.Contains(lines[len(lines)-1], "demo.html") {
		t.Errorf("demo printed:\n%s", stdout.String())
	}
}

// TestRenderHTMLStreamed: render writes the viewer flow by flow, through
// unnamed files, holding no flow for it: the page is the one render.HTML
// makes of the flows in the order render hands them out (and prints
// them), also when the bound on flows held for order sends some out late;
// nothing but the diagrams and the page is left in the directory.
func TestRenderHTMLStreamed(t *testing.T) {
	capPath := filepath.Join(t.TempDir(), "flows.pcapng")
	if _, err := benchcap.Write(capPath, benchcap.DefaultSources(filepath.Join("..", "..")), 2<<20); err != nil {
		t.Fatal(err)
	}
	for _, limit := range []int{maxHeldCalls, 20} {
		saved := maxHeldCalls
		maxHeldCalls = limit
		var flows []*flow.Flow
		if _, err := streamFlows(capPath, decode.Options{}, "", flow.Options{}, io.Discard, nil, func(f *flow.Flow) error {
			flows = append(flows, f)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		late := 0
		for i := 1; i < len(flows); i++ {
			if flows[i].Start.Before(flows[i-1].Start) {
				late++
			}
		}
		if limit == 20 && late == 0 {
			t.Errorf("with at most %d calls held, no flow came late: the test does not see the order kept", limit)
		}
		var want bytes.Buffer
		if err := render.HTML(&want, filepath.Base(capPath), flows); err != nil {
			t.Fatal(err)
		}
		out := t.TempDir()
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), []string{"render", "-o", out, "--format", "html,mmd", capPath}, &stdout, &stderr)
		maxHeldCalls = saved
		if err != nil {
			t.Fatalf("render: %v\n%s", err, stderr.String())
		}
		got, err := os.ReadFile(filepath.Join(out, "flows.html"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want.Bytes()) {
			t.Errorf("held calls %d: the page (%d bytes) is not render.HTML's of the %d flows in render's order (%d bytes)", limit, len(got), len(flows), want.Len())
		}
		ents, _ := os.ReadDir(out)
		for _, e := range ents {
			if n := e.Name(); n != "flows.html" && !strings.HasSuffix(n, ".mmd") {
				t.Errorf("left in the directory: %s", n)
			}
		}
	}
}

// With --all, a list answer larger than the viewer shows (1.4 MB here,
// between real grpc-go peers) is shown by its size, not decoded whole;
// the pod's own messages are shown whole.
func TestRenderHTMLLargeListsBySize(t *testing.T) {
	capPath := podWithLists(t, 6000, 1, 1)
	out := t.TempDir()
	if err := run(context.Background(), []string{"render", "--all", "-o", out, "--format", "html", capPath}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	page, err := os.ReadFile(filepath.Join(out, "cri.html"))
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(page, []byte("too large to show here")); n != 2 {
		t.Errorf("%d messages shown by size, want the 2 list answers", n)
	}
	for _, want := range []string{"pod_sandbox_id", "sandbox_config"} {
		if !bytes.Contains(page, []byte(want)) {
			t.Errorf("the page lacks %q: the pod's own messages are not shown", want)
		}
	}
	if bytes.Contains(page, []byte("io.kubernetes.pod.namespace")) {
		t.Error("a list answer's labels are shown")
	}
}

// TestRenderAllListsByItems: with --all, ListContainers answers over
// listsByItemsAbove (about 6 MB here, recorded between real grpc-go
// peers) are read item by item and their bytes handed back once learnt
// from; every file render writes, in every format, is the one it writes
// decoding them whole, and so is what watch -r draws.
func TestRenderAllListsByItems(t *testing.T) {
	capPath := podWithLists(t, 25000, 3, 0)
	if st, err := os.Stat(capPath); err != nil || st.Size() < 3*int64(listsByItemsAbove) {
		t.Fatalf("capture %v, %v: want three answers over %d bytes", st, err, listsByItemsAbove)
	}
	recycled := 0
	onListRecycled = func() { recycled++ }
	defer func(above int) { onListRecycled, listsByItemsAbove = nil, above }(listsByItemsAbove)
	outputs := func(above int) (map[string]fileOf, int) {
		listsByItemsAbove, recycled = above, 0
		out, watched := t.TempDir(), t.TempDir()
		for _, args := range [][]string{
			{"render", "--all", "-o", out, "--format", "svg,html,json,puml", capPath},
			{"watch", "--all", "-r", capPath, "-o", watched, "--format", "svg"},
		} {
			if err := run(context.Background(), args, io.Discard, io.Discard); err != nil {
				t.Fatal(err)
			}
		}
		files := readDir(t, out)
		for name, f := range readDir(t, watched) {
			files["watch/"+name] = f
		}
		return files, recycled
	}
	want, n := outputs(0)
	if n != 0 {
		t.Fatalf("%d answers handed back with the answers decoded whole", n)
	}
	got, n := outputs(4 << 20)
	if n != 6 { // three answers, by render and by watch
		t.Errorf("%d answers read item by item and handed back, want 6", n)
	}
	if len(want) < 5 || len(got) != len(want) {
		t.Fatalf("%d files, want %d", len(got), len(want))
	}
	for name, w := range want {
		if g, ok := got[name]; !ok || !bytes.Equal(g.data, w.data) {
			t.Errorf("%s differs when the answers are read item by item", name)
		}
	}
}

// podWithLists records a pod started between real grpc-go peers, with
// before ListContainers answers of n containers before its container is
// created and after more before it is started.
func podWithLists(t *testing.T, n, before, after int) string {
	srv := listServer{&criServer{}, n}
	dir, upstream := serveCRIWith(t, srv, srv)
	return recordSession(t, dir, upstream, func(ctx context.Context, rt runtimeapi.RuntimeServiceClient, img runtimeapi.ImageServiceClient) {
		lists := func(k int) {
			for range k {
				if _, err := rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{}, grpc.MaxCallRecvMsgSize(64<<20)); err != nil {
					t.Fatal(err)
				}
			}
		}
		cfg := &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "lists", Namespace: "default", Uid: "u1"}}
		sb, err := rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
		if err != nil {
			t.Fatal(err)
		}
		lists(before)
		c, err := rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: sb.PodSandboxId, SandboxConfig: cfg,
			Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "c"}, Image: &runtimeapi.ImageSpec{Image: "busybox"}}})
		if err != nil {
			t.Fatal(err)
		}
		lists(after)
		if _, err := rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: c.ContainerId}); err != nil {
			t.Fatal(err)
		}
	})
}
