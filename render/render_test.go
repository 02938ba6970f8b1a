package render

import (
	"bytes"
	"errors"
	"flag"
	"html"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/criseq/criseq/decode"
	"github.com/criseq/criseq/flow"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/golden")

// t0 is the start of every hand-made flow.
var t0 = time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)

// Flows built by hand, for the unit tests of render only (the golden tests
// on real captures live with the command).

type stepSpec struct {
	phase, svc, method, arg, result, full, err string
	at, dur                                    time.Duration
	open                                       bool // capture ended before the reply
}

func build(kind flow.Kind, complete bool, steps ...stepSpec) *flow.Flow {
	f := &flow.Flow{
		Kind:      kind,
		Pod:       flow.Pod{Namespace: "default", Name: "nginx", UID: "6f1c2b7e-1111-2222-3333-444455556666"},
		SandboxID: "3f2a1b9c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8",
		Runtime:   "containerd 1.6.20",
		Client:    "kubelet",
		Start:     t0,
		Complete:  complete,
	}
	for _, s := range steps {
		svc := s.svc
		if svc == "" {
			svc = "RuntimeService"
		}
		st := flow.Step{Service: svc, Method: s.method, Arg: s.arg, Result: s.result, Full: s.full,
			Err: s.err, Phase: s.phase, Start: t0.Add(s.at), Duration: s.dur, Done: !s.open}
		if s.open {
			st.Duration = 0
		}
		f.Steps = append(f.Steps, st)
		e := st.Start.Add(st.Duration)
		if e.After(f.End) {
			f.End = e
		}
		// Up (down) as the grouper says: the last StartContainer, the
		// first StopPodSandbox.
		if st.Done && st.Err == "" && (kind == flow.Start && s.method == "StartContainer" && e.After(f.Done) ||
			kind == flow.Stop && s.method == "StopPodSandbox" && f.Done.IsZero()) {
			f.Done = e
		}
	}
	return f
}

const (
	sandboxFull   = "3f2a1b9c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8"
	containerFull = "9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d"
	digestFull    = "sha256:4e1f0c2d9b7a6e5f4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e"
)

func startFlow() *flow.Flow {
	return build(flow.Start, true,
		stepSpec{phase: "sandbox", method: "RunPodSandbox", arg: "default/nginx",
			result: "sandbox 3f2a1b9c4d5e", full: sandboxFull, dur: 105 * time.Millisecond},
		stepSpec{phase: "sandbox", method: "PodSandboxStatus", arg: "3f2a1b9c4d5e",
			result: "SANDBOX_READY", at: 106 * time.Millisecond, dur: 1200 * time.Microsecond},
		stepSpec{phase: "image", svc: "ImageService", method: "ImageStatus", arg: "docker.io/library/nginx:1.25",
			result: "not present", at: 110 * time.Millisecond, dur: 800 * time.Microsecond},
		stepSpec{phase: "image", svc: "ImageService", method: "PullImage", arg: "docker.io/library/nginx:1.25",
			result: "sha256:4e1f0c2d9b7a", full: digestFull, at: 112 * time.Millisecond, dur: 1610 * time.Millisecond},
		stepSpec{phase: "create", method: "CreateContainer", arg: "web",
			result: "container 9c8d7e6f5a4b", full: containerFull, at: 1725 * time.Millisecond, dur: 45 * time.Millisecond},
		stepSpec{phase: "start", method: "StartContainer", arg: "9c8d7e6f5a4b",
			at: 1771 * time.Millisecond, dur: 169 * time.Millisecond},
	)
}

func failedPullFlow() *flow.Flow {
	return build(flow.Start, false,
		stepSpec{phase: "sandbox", method: "RunPodSandbox", arg: "default/nginx",
			result: "sandbox 3f2a1b9c4d5e", full: sandboxFull, dur: 98 * time.Millisecond},
		stepSpec{phase: "image", svc: "ImageService", method: "ImageStatus", arg: "docker.io/library/nginx:nope",
			result: "not present", at: 100 * time.Millisecond, dur: 700 * time.Microsecond},
		stepSpec{phase: "image", svc: "ImageService", method: "PullImage", arg: "docker.io/library/nginx:nope",
			err: `NotFound: failed to pull and unpack image "docker.io/library/nginx:nope": failed to resolve reference "docker.io/library/nginx:nope": docker.io/library/nginx:nope: not found`,
			at:  102 * time.Millisecond, dur: 1230 * time.Millisecond},
		stepSpec{phase: "image", svc: "ImageService", method: "ImageStatus", arg: "docker.io/library/nginx:nope",
			result: "not present", at: 11 * time.Second, dur: 600 * time.Microsecond},
		stepSpec{phase: "image", svc: "ImageService", method: "PullImage", arg: "docker.io/library/nginx:nope",
			err: "NotFound: pull access denied", at: 11*time.Second + 2*time.Millisecond, dur: 12 * time.Millisecond},
	)
}

func stopFlow() *flow.Flow {
	return build(flow.Stop, true,
		stepSpec{phase: "stop", method: "StopContainer", arg: "web (grace 30s)",
			at: 0, dur: 310 * time.Millisecond},
		stepSpec{phase: "stop sandbox", method: "StopPodSandbox", arg: "3f2a1b9c4d5e",
			at: 320 * time.Millisecond, dur: 45 * time.Millisecond},
		stepSpec{phase: "remove", method: "RemoveContainer", arg: "9c8d7e6f5a4b",
			at: 2 * time.Second, dur: 12 * time.Millisecond},
		stepSpec{phase: "remove sandbox", method: "RemovePodSandbox", arg: "3f2a1b9c4d5e",
			at: 2013 * time.Millisecond, dur: 31 * time.Millisecond},
	)
}

// concurrentFlow is a stop where kubelet stops two containers at once and
// polls a status while they stop: calls open at the same time.
func concurrentFlow() *flow.Flow {
	return build(flow.Stop, true,
		stepSpec{phase: "stop", method: "StopContainer", arg: "web", at: 0, dur: 372 * time.Millisecond},
		stepSpec{phase: "stop", method: "StopContainer", arg: "sidecar", at: 200 * time.Microsecond, dur: 300 * time.Millisecond},
		stepSpec{phase: "stop", method: "ContainerStatus", arg: "web", result: "RUNNING",
			at: 100 * time.Millisecond, dur: time.Millisecond},
		stepSpec{phase: "stop sandbox", method: "StopPodSandbox", arg: "3f2a1b9c4d5e",
			at: 380 * time.Millisecond, dur: 45 * time.Millisecond},
	)
}

func incompleteFlow() *flow.Flow {
	return build(flow.Start, false,
		stepSpec{phase: "sandbox", method: "RunPodSandbox", arg: "default/nginx",
			result: "sandbox 3f2a1b9c4d5e", full: sandboxFull, dur: 105 * time.Millisecond},
		stepSpec{phase: "image", svc: "ImageService", method: "ImageStatus", arg: "docker.io/library/nginx:1.25",
			result: "sha256:4e1f0c2d9b7a", full: digestFull, at: 110 * time.Millisecond, dur: 900 * time.Microsecond},
		stepSpec{phase: "create", method: "CreateContainer", arg: "web",
			at: 115 * time.Millisecond, open: true},
		stepSpec{phase: "status", method: "ContainerStatus", arg: "web",
			result: "CONTAINER_CREATED", at: 300 * time.Millisecond, dur: 2 * time.Millisecond},
		stepSpec{phase: "status", svc: "grpc.health.v1.Health", method: "Check", arg: "",
			result: "SERVING", at: 400 * time.Millisecond, dur: 1 * time.Millisecond},
	)
}

// hostile is what an attacker-controlled pod name, image reference, runtime
// version or error message could hold.
const hostile = "q\"uo'te <b>&amp;</b> </text><script>x</script> line\nbreak\r\ttab ;semi #hash -->arrow\n" +
	"@enduml\n@startuml\n%%{init: {\"theme\":\"dark\"}}%% style x fill:#f00; classDef a fill:#0f0; **bold** //it// " +
	"--strike-- __u__ ~~w~~ \"\"m\"\" [[http://x]] <U+0041> &#60; #lt; \\n back\\slash $var %date() !include x " +
	"{{ }} ``c`` == | ^^ ,, \x00\x1b[31m \u202eevil \xff end"

func hostileFlow() *flow.Flow {
	f := build(flow.Start, false,
		stepSpec{phase: hostile, method: "RunPodSandbox", arg: hostile, result: hostile, full: hostile, dur: time.Millisecond},
		stepSpec{phase: "image", svc: "ImageService", method: "PullImage", arg: hostile, err: hostile, at: 2 * time.Millisecond, dur: time.Millisecond},
		stepSpec{phase: "status", svc: hostile, method: hostile, arg: "wrap:" + hostile, result: "nowrap:x", at: 3 * time.Millisecond, dur: time.Millisecond},
		stepSpec{phase: "status", method: "ContainerStatus", arg: hostile, at: 4 * time.Millisecond, open: true},
	)
	f.Pod = flow.Pod{Namespace: hostile, Name: hostile}
	f.Runtime = hostile
	f.Client = hostile
	return f
}

// longFlow has names and labels wider than anything usual.
func longFlow() *flow.Flow {
	f := startFlow()
	f.Client = "kubelet/v1.30.1 (linux/amd64) kubernetes/6911225 with a long user agent"
	f.Runtime = "a runtime with a very long name that is wider than its two services together"
	f.Steps[0].Arg = strings.Repeat("averyveryverylongwordwithoutspaces", 8)
	f.Steps = append(f.Steps, flow.Step{Service: "some.other.v1.Service", Method: "Call", Arg: "x",
		Result: "ok", Phase: "start", Start: t0.Add(1950 * time.Millisecond), Duration: time.Millisecond, Done: true})
	return f
}

// burstFlow is a pod start among others started at once, as kubelet with
// the Evented PLEG sends it: image checks that more than one pod may have
// made (ambiguous), two identical ImageStatus open at once, one call whose
// method was inferred (a connection caught midway), a pull that waited in
// kubelet's one-at-a-time pull queue for over a second, and the runtime's
// container events.
func burstFlow() *flow.Flow {
	ms := func(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }
	f := build(flow.Start, true,
		stepSpec{phase: "sandbox", method: "RunPodSandbox", arg: "default/web-2",
			result: "sandbox 3f2a1b9c4d5e", full: sandboxFull, dur: ms(210)},
		stepSpec{phase: "sandbox", method: "PodSandboxStatus", arg: "3f2a1b9c4d5e",
			result: "SANDBOX_READY", at: ms(212), dur: ms(1.1)},
		stepSpec{phase: "image web", svc: "ImageService", method: "ImageStatus", arg: "nginx:1.25",
			result: "not present", at: ms(215), dur: ms(3.2)},
		stepSpec{phase: "image web", svc: "ImageService", method: "ImageStatus", arg: "nginx:1.25",
			result: "not present", at: ms(216), dur: ms(3)},
		stepSpec{phase: "image web", svc: "ImageService", method: "PullImage", arg: "nginx:1.25",
			result: "sha256:4e1f0c2d9b7a", full: digestFull, at: ms(1700), dur: ms(731)},
		stepSpec{phase: "image web", svc: "ImageService", method: "ImageStatus", arg: "nginx:1.25",
			result: "sha256:4e1f0c2d9b7a", full: digestFull, at: ms(2433), dur: ms(1.4)},
		stepSpec{phase: "create web", method: "CreateContainer", arg: "web",
			result: "container 9c8d7e6f5a4b", full: containerFull, at: ms(2440), dur: ms(195)},
		stepSpec{phase: "create web", svc: "ImageService", method: "ImageStatus", arg: "busybox:1.36",
			result: "sha256:9a0b1c2d3e4f", at: ms(2500), dur: ms(2)},
		stepSpec{phase: "start web", method: "StartContainer", arg: "web",
			at: ms(2640), dur: ms(225)},
	)
	f.Pod.Name = "web-2"
	candidates := []flow.Pod{{Namespace: "default", Name: "web-1"}, {Namespace: "default", Name: "web-2"}}
	for i := range f.Steps {
		f.Steps[i].Attr = flow.Attribution{By: flow.ByID}
	}
	f.Steps[2].Attr = flow.Attribution{By: flow.ByAmbiguous, Candidates: candidates}
	f.Steps[3].Attr = flow.Attribution{By: flow.ByAnnotations}
	f.Steps[4].Attr = flow.Attribution{By: flow.BySandboxConfig}
	f.Steps[5].Attr = flow.Attribution{By: flow.ByOrder}
	f.Steps[5].Inferred = true
	f.Steps[7].Attr = flow.Attribution{By: flow.ByAmbiguous, Candidates: []flow.Pod{{Namespace: "default", Name: "web-2"},
		{Namespace: "default", Name: "web-3"}, {Namespace: "other", Name: "web-3"}}}
	f.Steps[7].Inherited = true
	f.OtherPulls = []flow.Interval{{Start: t0.Add(ms(230)), End: t0.Add(ms(1690))}}
	events := &decode.Call{Conn: 1, Stream: 5, Method: "/runtime.v1.RuntimeService/GetContainerEvents", Start: t0.Add(-time.Minute)}
	f.Events = []flow.Event{
		{Time: t0.Add(ms(2633)), Created: t0.Add(ms(2632.5)), Type: "CONTAINER_CREATED", Container: "web",
			ContainerID: containerFull, Call: events},
		{Time: t0.Add(ms(2801)), Created: t0.Add(ms(2800.2)), Type: "CONTAINER_STARTED", Container: "web",
			ContainerID: containerFull, Call: events},
	}
	return f
}

// burstStopFlow is a stop with the runtime's events and kubelet's clean-up
// long after: a break of several seconds.
func burstStopFlow() *flow.Flow {
	ms := func(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }
	f := build(flow.Stop, true,
		stepSpec{phase: "stop", method: "StopContainer", arg: "web (grace 30s)", dur: ms(342)},
		stepSpec{phase: "stop sandbox", method: "StopPodSandbox", arg: "3f2a1b9c4d5e", at: ms(343), dur: ms(190)},
		stepSpec{phase: "remove", method: "RemoveContainer", arg: "web", at: ms(8760), dur: ms(12)},
		stepSpec{phase: "remove sandbox", method: "RemovePodSandbox", arg: "3f2a1b9c4d5e", at: ms(8775), dur: ms(5.3)},
	)
	f.Pod.Name = "web-2"
	f.Events = []flow.Event{
		{Time: t0.Add(ms(338)), Type: "CONTAINER_STOPPED", Container: "web", ContainerID: containerFull},
		{Time: t0.Add(ms(8771)), Type: "CONTAINER_DELETED", Container: "web", ContainerID: containerFull},
	}
	return f
}

// cases are the flows every format is tested on.
var cases = []struct {
	name string
	flow func() *flow.Flow
}{
	{"start", startFlow},
	{"failed-pull", failedPullFlow},
	{"stop", stopFlow},
	{"concurrent", concurrentFlow},
	{"incomplete", incompleteFlow},
	{"hostile", hostileFlow},
	{"long", longFlow},
	{"burst", burstFlow},
	{"burst-stop", burstStopFlow},
}

func render(t testing.TB, format string, f *flow.Flow) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := Write(&b, format, f); err != nil {
		t.Fatalf("Write %s: %v", format, err)
	}
	return b.Bytes()
}

// TestGolden checks every format of every case against testdata/golden, and
// that rendering twice gives the same bytes.
func TestGolden(t *testing.T) {
	for _, c := range cases {
		for _, format := range Formats() {
			if isImage(format) || isGraph(format) {
				continue // pinned to x/image's rasterizer or to Graphviz; png_test and graph_test check them
			}
			t.Run(c.name+"."+format, func(t *testing.T) {
				got := render(t, format, c.flow())
				if again := render(t, format, c.flow()); !bytes.Equal(got, again) {
					t.Fatal("two renderings of the same flow differ")
				}
				path := filepath.Join("testdata", "golden", c.name+"."+format)
				if *update {
					if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(path, got, 0o644); err != nil {
						t.Fatal(err)
					}
					return
				}
				want, err := os.ReadFile(path)
				if err != nil {
					t.Fatalf("%v (run go test ./render -update to create it)", err)
				}
				if !bytes.Equal(got, want) {
					t.Errorf("%s differs from its golden file; run go test ./render -update and review the diff", path)
				}
			})
		}
	}
}

func TestWriteUnknownFormat(t *testing.T) {
	err := Write(&bytes.Buffer{}, "gif", startFlow())
	if err == nil {
		t.Fatal("no error for format gif")
	}
	for _, want := range []string{`"gif"`, "puml", "mmd", "svg", "png, png2x"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	for _, f := range []string{"SVG", ".puml", "mmd", "PNG", ".png2x"} {
		if err := Write(&bytes.Buffer{}, f, startFlow()); err != nil {
			t.Errorf("Write %q: %v", f, err)
		}
	}
}

func TestNilFlow(t *testing.T) {
	for _, format := range Formats() {
		if err := Write(&bytes.Buffer{}, format, nil); err == nil {
			t.Errorf("%s: no error for a nil flow", format)
		}
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestWriteError(t *testing.T) {
	for _, format := range Formats() {
		err := Write(failWriter{}, format, startFlow())
		if err == nil || !strings.Contains(err.Error(), "disk full") {
			t.Errorf("%s: error %v, want the writer's", format, err)
		}
	}
}

func TestFileName(t *testing.T) {
	f := startFlow()
	for _, tc := range []struct {
		f    *flow.Flow
		ext  string
		want string
	}{
		{f, "svg", "default_nginx_start.svg"},
		{f, ".puml", "default_nginx_start.puml"},
		{f, "", "default_nginx_start"},
		{stopFlow(), "mmd", "default_nginx_stop.mmd"},
		{&flow.Flow{Pod: flow.Pod{Namespace: "kube-system", Name: "coredns-5d78c9869d-x2x7k"}}, "svg", "kube-system_coredns-5d78c9869d-x2x7k_start.svg"},
		{&flow.Flow{SandboxID: sandboxFull, Kind: flow.Stop}, "svg", "sandbox-3f2a1b9c4d5e_stop.svg"},
		{&flow.Flow{}, "svg", "unknown_start.svg"},
		{&flow.Flow{Pod: flow.Pod{Namespace: "../..", Name: "a/b c\x00ü"}}, "s/vg", "_._.._a_b_c___start.s_vg"},
		{nil, "svg", "unknown.svg"},
		{f, "png", "default_nginx_start.png"},
		{f, "png2x", "default_nginx_start@2x.png"},
		{f, ".png2x", "default_nginx_start@2x.png"},
	} {
		if got := FileName(tc.f, tc.ext); got != tc.want {
			t.Errorf("FileName(%v, %q) = %q, want %q", tc.f, tc.ext, got, tc.want)
		}
	}
	long := &flow.Flow{Pod: flow.Pod{Name: strings.Repeat("a", 300)}}
	if n := len(FileName(long, "svg")); n > 120 {
		t.Errorf("FileName of a long pod name is %d bytes", n)
	}
}

func TestFmtDur(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0µs"},
		{850 * time.Microsecond, "850µs"},
		{999900 * time.Nanosecond, "1ms"},
		{2300 * time.Microsecond, "2.3ms"},
		{3 * time.Millisecond, "3ms"},
		{9990 * time.Microsecond, "10ms"},
		{105 * time.Millisecond, "105ms"},
		{999700 * time.Microsecond, "1.00s"},
		{1940 * time.Millisecond, "1.94s"},
		{12500 * time.Millisecond, "12.5s"},
		{125 * time.Second, "2m05s"},
		{-5 * time.Millisecond, "-5ms"},
	} {
		if got := fmtDur(tc.d); got != tc.want {
			t.Errorf("fmtDur(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
}

func TestFmtAt(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{0, "+0ms"},
		{400 * time.Microsecond, "+0ms"},
		{105 * time.Millisecond, "+105ms"},
		{1725 * time.Millisecond, "+1.725s"},
		{11*time.Second + 2*time.Millisecond, "+11.002s"},
		{125*time.Second + 120*time.Millisecond, "+2m05.120s"},
		{-3 * time.Millisecond, "-3ms"},
	} {
		if got := fmtAt(tc.d); got != tc.want {
			t.Errorf("fmtAt(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
}

// TestLabels checks the text of arrows and notes, the same in every format.
func TestLabels(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    *flow.Flow
		want []string
	}{
		{"start", startFlow(), []string{
			"default/nginx — pod start", "kubelet → containerd 1.6.20",
			"RunPodSandbox(default/nginx)", "sandbox 3f2a1b9c4d5e · 105ms",
			"PullImage(docker.io/library/nginx:1.25)", "sha256:4e1f0c2d9b7a · 1.61s",
			"CreateContainer(web)", "container 9c8d7e6f5a4b · 45ms",
			"StartContainer(9c8d7e6f5a4b)", "169ms",
			"pod started in 1.94s (sandbox 105ms, image 1.61s, create 45ms, start 169ms; waiting: kubelet 10ms)",
			"longest: image 1.61s (PullImage 1.61s)"}},
		{"failed-pull", failedPullFlow(), []string{
			"✗ NotFound: pull access denied · 12ms",
			"pod start incomplete after 11.0s (sandbox 98ms, image 1.24s; waiting: kubelet 4.7ms, back-off 9.67s)",
			"longest: back-off 9.67s"}},
		{"stop", stopFlow(), []string{"default/nginx — pod stop", "StopContainer(web (grace 30s))",
			"pod stopped in 365ms (stop 310ms, stop sandbox 45ms; waiting: kubelet 10ms) · removed 1.68s later (remove 12ms, remove sandbox 31ms; waiting: kubelet's clean-up 1.64s, kubelet 1ms)",
			"… 1.64s: kubelet's clean-up …"}},
		{"incomplete", incompleteFlow(), []string{noReply, "Check()", "SERVING · 1ms",
			"pod start incomplete after 401ms (sandbox 105ms, image 900µs; waiting: kubelet 295ms)"}},
		{"burst", burstFlow(), []string{
			"ImageStatus(nginx:1.25) · ambiguous: one of web-1, web-2", // the candidates' shortest names
			"ImageStatus(busybox:1.36) · ambiguous: one of web-2, default/web-3, other/web-3",
			"ImageStatus(nginx:1.25) +215ms: not present · 3.2ms", // two identical calls open at once
			"ImageStatus(nginx:1.25) +216ms: not present · 3ms",
			"~ImageStatus(nginx:1.25)", "CONTAINER_CREATED web", "CONTAINER_STARTED web", "… 1.48s: image pull queue …",
			"pod started in 2.87s (sandbox 210ms, image 736ms, create 195ms, start 225ms; waiting: kubelet 39ms, image pull queue 1.46s)",
			"2 ambiguous calls", "longest: waiting for the image pull queue 1.46s", "~ method inferred from message shape"}},
		{"burst-stop", burstStopFlow(), []string{"CONTAINER_STOPPED web", "CONTAINER_DELETED web", "… 8.23s: kubelet's clean-up …",
			"removed 8.25s later (remove 12ms, remove sandbox 5.3ms; waiting: kubelet's clean-up 8.23s, kubelet 3ms)"}},
	} {
		for _, format := range Formats() {
			if isImage(format) || isGraph(format) || format == "json" {
				continue // the JSON is data, not labels: TestJSON
			}
			out := string(render(t, format, tc.f))
			// The closing note is broken into lines in every format.
			out = strings.NewReplacer("\\n", " ", "<br>", " ").Replace(out)
			switch format {
			case "puml":
				out = pumlText(out) // spaces dropped, as in the wants below
				out = pumlDelayLine.ReplaceAllString(out, "…${1}…")
			case "mmd":
				out = strings.ReplaceAll(out, "#59;", ";")
			}
			if format == "svg" || format == "html" {
				out = strings.Join(svgTextLines(out), " ")
			}
			for _, w := range tc.want {
				if format == "mmd" && strings.HasPrefix(w, "kubelet → ") {
					continue // Mermaid's title is short: participants and box name them
				}
				if format == "puml" {
					w = norm(w)
				}
				if !strings.Contains(out, w) {
					t.Errorf("%s.%s lacks %q", tc.name, format, w)
				}
			}
		}
	}
}

// TestSamples writes every case in every format to $RENDER_OUT, for looking
// at them (converted to PNG) by eye.
func TestSamples(t *testing.T) {
	dir := os.Getenv("RENDER_OUT")
	if dir == "" {
		t.Skip("RENDER_OUT not set")
	}
	for _, c := range cases {
		for _, format := range Formats() {
			if err := os.WriteFile(filepath.Join(dir, c.name+Ext(format)), render(t, format, c.flow()), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func isImage(format string) bool { return strings.HasPrefix(format, "png") }

// isGraph: the ID-flow graph draws links, not the diagram's labels.
func isGraph(format string) bool { return strings.HasPrefix(format, "graph") }

// TestRows checks the order of arrows: each reply at its call's end, before
// any request sent after it.
func TestRows(t *testing.T) {
	ms := func(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }
	c := func(at, end float64) call { return call{at: ms(at), end: ms(end), done: true} }
	open := call{done: false}
	tests := []struct {
		name  string
		calls []call
		want  string // "0 1' …": request of call 0, reply of call 1, …
	}{
		{"sequential, touching", []call{c(0, 10), c(10, 20)}, "0 0' 1 1'"},
		{"nested", []call{c(0, 372), c(0.2, 300.2), c(100, 101), c(380, 425)}, "0 1 2 2' 1' 0' 3 3'"},
		{"crossing", []call{c(0, 10), c(5, 15)}, "0 1 0' 1'"},
		{"same end", []call{c(0, 10), c(1, 10)}, "0 1 0' 1'"},
		{"zero durations", []call{c(0, 0), c(0, 0)}, "0 0' 1 1'"},
		{"no reply", []call{open, c(5, 6), c(7, 8)}, "0 1 1' 2 2'"},
		{"reply after the last request", []call{c(0, 100), c(1, 2), c(3, 4)}, "0 1 1' 2 2' 0'"},
	}
	for _, tt := range tests {
		var got []string
		for _, r := range rows(tt.calls, nil) {
			s := strconv.Itoa(r.call)
			if r.reply {
				s += "'"
			}
			got = append(got, s)
		}
		if g := strings.Join(got, " "); g != tt.want {
			t.Errorf("%s: rows %q, want %q", tt.name, g, tt.want)
		}
	}
}

// TestPhaseSpans checks how phases are timed: the time while one of their
// own calls was open, status calls made meanwhile and waits not counted.
func TestPhaseSpans(t *testing.T) {
	ms := func(v int) time.Duration { return time.Duration(v) * time.Millisecond }
	c := func(phase string, at, end int, polled bool) call {
		kind := phase
		if polled {
			kind = "" // a status call: no part of the pod's work
		}
		return call{phase: phase, kind: kind, at: ms(at), end: ms(end), done: true, polled: polled}
	}
	calls := []call{
		c("stop", 0, 340, false),
		c("stop", 1, 300, false), // in parallel with the first
		c("stop", 345, 533, false),
		c("stop", 600, 1400, true), // a status call: not counted
		c("stop", 42000, 42001, false),
		c("remove", 42002, 42010, false),
		c("stop", 42020, 42025, false), // the same name again: a phase of its own
		{phase: "stop", at: ms(42030)}, // never answered: not counted
	}
	got := phaseSpans(calls)
	want := []phaseSpan{{name: "stop", kind: "stop", dur: ms(340 + 188 + 1)}, {name: "remove", kind: "remove", dur: ms(8)},
		{name: "stop", kind: "stop", dur: ms(5)}}
	if len(got) != len(want) {
		t.Fatalf("phases %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("phase %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	for i, wantOpens := range []int{1, 0, 0, 0, 0, 2, 3, 0} {
		if calls[i].opens != wantOpens {
			t.Errorf("call %d opens phase %d, want %d", i, calls[i].opens, wantOpens)
		}
	}
}

// TestNoteCountsFailures checks that the closing note says how many calls
// failed and with which codes, and says nothing of failures when none did.
func TestNoteCountsFailures(t *testing.T) {
	mixed := failedPullFlow()
	mixed.Steps[len(mixed.Steps)-1].Err = "Unavailable"
	mixed.Steps[1].Err = "NotFound"
	noCode := failedPullFlow()
	noCode.Steps[0].Err = "no grpc-status"
	for _, tt := range []struct {
		f    *flow.Flow
		want string
	}{
		{failedPullFlow(), " · 2 calls failed (NotFound) ·"},
		{mixed, " · 3 calls failed (NotFound ×2, Unavailable ×1) ·"},
		{noCode, " · 3 calls failed (NotFound ×2) ·"},
		{startFlow(), ""},
	} {
		d, err := newDiagram(tt.f)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(d.note, "failed"); got != (tt.want != "") || !strings.Contains(d.note, tt.want) {
			t.Errorf("note %q, want %q in it", d.note, tt.want)
		}
	}
}

// pumlDelayLine is a PlantUML delay, "...1.48s...", once pumlText dropped
// the spaces around it.
var pumlDelayLine = regexp.MustCompile(`\.\.\.([0-9.]+[µmins]+(:[^.]+)?)\.\.\.`)

var svgText = regexp.MustCompile(`<text[^>]*>([^<]*)</text>`)

// svgTextLines is the text of every <text> element of an SVG (or a page
// holding SVGs), unescaped.
func svgTextLines(src string) []string {
	var out []string
	for _, m := range svgText.FindAllStringSubmatch(src, -1) {
		out = append(out, html.UnescapeString(m[1]))
	}
	return out
}

// TestChipsAddUpToTiming checks that the phase chips agree with the closing
// note and the summary line where they overlap: the chips of one kind
// ("start setup", "start web") add up to that phase of flow.Timing ("start"),
// on every case and every recorded flow.
func TestChipsAddUpToTiming(t *testing.T) {
	flows := allFlows(t)
	several := 0 // phases shown as several chips
	for name, f := range flows {
		d, err := newDiagram(f)
		if err != nil {
			t.Fatal(err)
		}
		tm := f.Timing()
		want := map[string]time.Duration{}
		for _, s := range append(tm.Parts, tm.After...) {
			if !s.Wait {
				want[s.Name] += s.Dur
			}
		}
		got := map[string]time.Duration{}
		chips := map[string]int{}
		for _, p := range d.phases {
			got[p.kind] += p.dur
			chips[p.kind]++
		}
		for kind, w := range want {
			if got[kind] != w {
				t.Errorf("%s: chips of %s add up to %v, the timing says %v", name, kind, got[kind], w)
			}
			if chips[kind] > 1 {
				several++
			}
		}
		for kind, g := range got {
			if _, ok := want[kind]; !ok && g > 0 {
				t.Errorf("%s: chips of %q take %v, a phase the timing does not have", name, kind, g)
			}
		}
	}
	if several == 0 {
		t.Error("no flow shows a phase in several chips: the sums are not exercised")
	}
}

// allFlows is every case and every flow of the recorded captures, by name
// ("start", "kubelet-init/1-stop").
func allFlows(t *testing.T) map[string]*flow.Flow {
	t.Helper()
	flows := map[string]*flow.Flow{}
	for _, c := range cases {
		flows[c.name] = c.flow()
	}
	captures, err := filepath.Glob(filepath.Join("..", "testdata", "*", "capture.pcapng"))
	if err != nil || len(captures) == 0 {
		t.Fatalf("no testdata captures: %v", err)
	}
	for _, c := range captures {
		for i, f := range loadCapture(t, c) {
			flows[filepath.Base(filepath.Dir(c))+"/"+strconv.Itoa(i)+"-"+f.Kind.String()] = f
		}
	}
	return flows
}
