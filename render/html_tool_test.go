package render

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/criseq/criseq/capture"
	"github.com/criseq/criseq/decode"
	"github.com/criseq/criseq/flow"
	"github.com/criseq/criseq/internal/testpeer"
)

// viewerResult is what mermaid-check/viewer.mjs prints.
type viewerResult struct {
	Flows   int `json:"flows"`
	Visible int `json:"visible"`
	First   *struct {
		Title    string `json:"title"`
		Text     string `json:"text"`
		Selected []int  `json:"selected"`
	} `json:"first"`
	Next *struct {
		Title    string `json:"title"`
		Text     string `json:"text"`
		Selected []int  `json:"selected"`
	} `json:"next"`
	AfterRight *struct {
		Visible int  `json:"visible"`
		Panel   bool `json:"panel"`
	} `json:"afterRight"`
	AfterEsc *struct {
		Panel bool `json:"panel"`
	} `json:"afterEsc"`
	Apart *struct {
		Step     int    `json:"step"`
		Title    string `json:"title"`
		Selected []int  `json:"selected"`
	} `json:"apart"`
	Event *struct {
		Flow     int    `json:"flow"`
		Title    string `json:"title"`
		Text     string `json:"text"`
		Selected []int  `json:"selected"`
		Calls    []int  `json:"calls"`
	} `json:"event"`
	Blocked       []string `json:"blocked"`
	PageErrors    []string `json:"pageErrors"`
	ConsoleErrors []string `json:"consoleErrors"`
	Shots         []string `json:"shots"`
	Error         string   `json:"error"`
}

// loadCapture decodes and groups a capture file as criseq render does.
func loadCapture(t *testing.T, path string) []*flow.Flow {
	t.Helper()
	src, err := capture.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	g := flow.NewGrouper(flow.Options{})
	var flows []*flow.Flow
	d := decode.New(decode.Options{OnCall: func(c *decode.Call) { flows = append(flows, g.Add(c)...) }})
	for {
		c, err := src.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		d.Feed(c)
	}
	d.Close()
	flows = append(flows, g.Flush()...)
	flow.Sort(flows)
	return flows
}

// TestHTMLViewerTool opens the viewer of the real kubelet capture in headless
// Chromium from file://, clicks the first request arrow and checks the panel
// shows the call, then ArrowDown, ArrowRight and Escape. Screenshots go to
// $VIEWER_SHOTS if set (else a temporary directory).
func TestHTMLViewerTool(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the HTML viewer (headless Chromium) not run")
	}
	const deps = "run lab/test-deps.sh as root"
	node, err := exec.LookPath("node")
	if err != nil {
		testpeer.Missing(t, "node not installed (Node.js 20 or later with npm, then %s): HTML viewer not checked in a browser", deps)
	}
	if _, err := os.Stat(filepath.Join(mermaidCheck, "node_modules", "playwright-core", "package.json")); err != nil {
		testpeer.Missing(t, "render/%s/node_modules/playwright-core missing (%s, or npm ci there): HTML viewer not checked in a browser", mermaidCheck, deps)
	}
	chromium := os.Getenv("CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if _, err := os.Stat(chromium); err != nil {
		testpeer.Missing(t, "%s missing (%s, or apt-get install -y chromium): HTML viewer not checked in a browser", chromium, deps)
	}

	flows := loadCapture(t, filepath.Join("..", "testdata", "kubelet-pull", "capture.pcapng"))
	if len(flows) < 2 || len(flows[0].Steps) < 2 {
		t.Fatalf("kubelet-pull: %d flows, want a start and a stop", len(flows))
	}
	// A flow with the runtime's events (kubelet's Evented PLEG), which
	// the recorded captures lack.
	burst := burstFlow()
	flows = append(flows, burst)
	dir := t.TempDir()
	page := filepath.Join(dir, "capture.html")
	if err := os.WriteFile(page, viewer(t, "capture.pcapng", flows), 0o644); err != nil {
		t.Fatal(err)
	}
	shots := os.Getenv("VIEWER_SHOTS")
	if shots == "" {
		shots = filepath.Join(dir, "shots")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join(mermaidCheck, "viewer.mjs"), "--out", shots, page)
	cmd.Env = append(os.Environ(), "CHROMIUM="+chromium)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	var r viewerResult
	if err := json.Unmarshal(bytes.TrimSpace(stdout.Bytes()), &r); err != nil {
		t.Fatalf("viewer.mjs: %v, printed %q: %v\n%s", runErr, stdout.String(), err, stderr.String())
	}
	if runErr != nil || r.Error != "" {
		t.Fatalf("viewer.mjs: %v: %s\n%s", runErr, r.Error, stderr.String())
	}
	t.Logf("screenshots: %s", strings.Join(r.Shots, " "))

	if r.Flows != len(flows) || r.Visible != 0 {
		t.Errorf("page lists %d flows and shows #%d, want %d and #0", r.Flows, r.Visible, len(flows))
	}
	first, second := flows[0].Steps[0], flows[0].Steps[1]
	switch {
	case r.First == nil:
		t.Fatal("no detail panel after clicking the first request arrow")
	case r.First.Title != first.Method || first.Method != "RunPodSandbox":
		t.Errorf("panel shows %q after clicking the first arrow, want RunPodSandbox", r.First.Title)
	}
	for _, want := range []string{`"name": "` + flows[0].Pod.Name + `"`, `"namespace": "default"`,
		"/runtime.v1.RuntimeService/RunPodSandbox", "OK (0)", "grpc-status", "content-type", "pod_sandbox_id"} {
		if !strings.Contains(r.First.Text, want) {
			t.Errorf("panel lacks %q:\n%s", want, r.First.Text)
		}
	}
	if len(r.First.Selected) != 1 || r.First.Selected[0] != 0 {
		t.Errorf("selected calls %v, want [0]", r.First.Selected)
	}
	if r.Next == nil || r.Next.Title != second.Method || !strings.Contains(r.Next.Text, "2 of ") {
		t.Errorf("after ArrowDown the panel shows %+v, want %s", r.Next, second.Method)
	}
	if r.AfterRight == nil || r.AfterRight.Visible != 1 || r.AfterRight.Panel {
		t.Errorf("after ArrowRight: %+v, want flow 1 shown and the panel closed", r.AfterRight)
	}
	if r.AfterEsc == nil || r.AfterEsc.Panel {
		t.Error("Escape did not close the panel")
	}
	// The stop flow's StopPodSandbox replies after kubelet's status calls:
	// its reply arrow is apart from its request, with a click area of its own.
	switch a := r.Apart; {
	case a == nil:
		t.Error("no call of the stop flow has its reply apart from its request")
	case a.Step < 0 || a.Step >= len(flows[1].Steps):
		t.Errorf("clicked call %d of %d", a.Step, len(flows[1].Steps))
	case a.Title != flows[1].Steps[a.Step].Method || len(a.Selected) != 2 || a.Selected[0] != a.Step || a.Selected[1] != a.Step:
		t.Errorf("after clicking call %d's reply the panel shows %q and %v is selected, want %s on both its areas",
			a.Step, a.Title, a.Selected, flows[1].Steps[a.Step].Method)
	}
	if len(r.Blocked) > 0 {
		t.Errorf("the viewer fetched %v", r.Blocked)
	}
	if len(r.PageErrors)+len(r.ConsoleErrors) > 0 {
		t.Errorf("page errors %v, console errors %v", r.PageErrors, r.ConsoleErrors)
	}
	switch e := r.Event; {
	case e == nil:
		t.Error("no event arrow clicked")
	case e.Flow != len(flows)-1 || e.Title != burst.Events[0].Type || len(e.Selected) != 1 || e.Selected[0] != 0 || len(e.Calls) != 0:
		t.Errorf("after clicking the first event of flow %d the panel shows %q, events %v and calls %v selected; want %s, [0] and none",
			e.Flow, e.Title, e.Selected, e.Calls, burst.Events[0].Type)
	default:
		for _, want := range []string{burst.Events[0].ContainerID, "web", "connection 1, stream 5",
			"/runtime.v1.RuntimeService/GetContainerEvents", "Created at", burst.Events[0].Created.UTC().Format(timeFormat)} {
			if !strings.Contains(e.Text, want) {
				t.Errorf("event panel lacks %q:\n%s", want, e.Text)
			}
		}
	}
	if len(r.Shots) != 6 {
		t.Errorf("%d screenshots, want 6", len(r.Shots))
	}
}
