package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/criseq/criseq/decode"
	"github.com/criseq/criseq/flow"
)

func capturePath(name string) string {
	return filepath.Join("..", "..", "testdata", name, "capture.pcapng")
}

// diffOut runs criseq diff and returns its standard output.
func diffOut(t *testing.T, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if err := runDiff(context.Background(), args, &stdout, &stderr); err != nil {
		t.Fatalf("criseq diff %q: %v\n%s", args, err, stderr.String())
	}
	return stdout.String()
}

// firstFlow is what render draws: the first flow of a kind in a capture.
func firstFlow(t *testing.T, name string, kind flow.Kind) *flow.Flow {
	t.Helper()
	flows, _, err := loadFlows(capturePath(name), decode.Options{}, flow.Options{}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range flows {
		if f.Kind == kind {
			return f
		}
	}
	t.Fatalf("%s has no %s flow", name, kind)
	return nil
}

// phaseMap is f's Timing (what render's summary line prints) as label →
// printed duration, waits labelled "waiting: NAME".
func phaseMap(f *flow.Flow) map[string]string {
	m := map[string]string{}
	for _, p := range f.Timing().Parts {
		label := p.Name
		if p.Wait {
			label = "waiting: " + label
		}
		m[label] = fmtDuration(p.Dur)
	}
	return m
}

// tableRows maps each row of the text table to its cells.
func tableRows(out string) map[string][]string {
	rows := map[string][]string{}
	for _, line := range strings.Split(out, "\n") {
		cells := strings.Split(strings.TrimSpace(line), "   ")
		var keep []string
		for _, c := range cells {
			if c = strings.TrimSpace(c); c != "" {
				keep = append(keep, c)
			}
		}
		if len(keep) >= 3 {
			rows[keep[0]] = keep[1:]
		}
	}
	return rows
}

func TestDiffPullWarm(t *testing.T) {
	out := diffOut(t, capturePath("kubelet-pull"), capturePath("kubelet-warm"))
	golden(t, filepath.Join("..", "..", "testdata", "kubelet-pull", "diff-warm.golden"), []byte(out))

	if !strings.Contains(out, "only in A: PullImage(127.0.0.1:5000/criseq/app:1)") {
		t.Errorf("no PullImage only in A:\n%s", out)
	}
	if !strings.Contains(out, "only in B: —") {
		t.Errorf("the warm start made a call the cold one did not:\n%s", out)
	}
	a, b := firstFlow(t, "kubelet-pull", flow.Start), firstFlow(t, "kubelet-warm", flow.Start)
	rows := tableRows(out)
	// The totals and phases are what criseq render prints for each flow.
	if got := rows["total (to running)"]; len(got) < 2 || got[0] != fmtDuration(a.Duration()) || got[1] != fmtDuration(b.Duration()) {
		t.Errorf("total row = %q, want %s and %s (as render prints)", got, fmtDuration(a.Duration()), fmtDuration(b.Duration()))
	}
	pa, pb := phaseMap(a), phaseMap(b)
	for _, label := range []string{"sandbox", "image", "create", "start", "waiting: kubelet"} {
		want := []string{pa[label], pb[label]}
		for i := range want {
			if want[i] == "" {
				want[i] = "—"
			}
		}
		if got := rows[label]; len(got) < 2 || got[0] != want[0] || got[1] != want[1] {
			t.Errorf("%s row = %q, want %q", label, got, want)
		}
	}
	if a, b := rows["sandbox"], rows["image"]; len(a) != 3 || len(b) != 3 {
		t.Errorf("sandbox row %q, image row %q: want both flows' times", a, b)
	}
	if got := rows["calls"]; len(got) != 3 || got[0] != strconv.Itoa(len(a.Steps)) || got[1] != strconv.Itoa(len(b.Steps)) {
		t.Errorf("calls row = %q, want %d and %d", got, len(a.Steps), len(b.Steps))
	}
	// Δ adds up with the printed values: 28ms − 16ms is +12ms.
	if got := rows["create"]; len(got) != 3 || got[2] != "+12ms" {
		t.Errorf("create row = %q, want Δ +12ms", got)
	}
}

// TestSummaryPhaseTimes: the summary line and diff's rows come from one
// Timing: kubelet-init's stop phase counts two StopContainer calls made
// together once, and each side's rows add up to its total.
func TestSummaryPhaseTimes(t *testing.T) {
	f := firstFlow(t, "kubelet-init", flow.Stop)
	stop := phaseMap(f)["stop"]
	if stop == "" || !strings.Contains(summary(f), "stop "+stop) {
		t.Errorf("summary %q lacks the stop phase %q", summary(f), stop)
	}
	var sum time.Duration
	for _, s := range f.Steps {
		if s.Method == "StopContainer" {
			sum += s.Duration
		}
	}
	for _, p := range f.Timing().Parts {
		if p.Name == "stop" && p.Dur >= sum {
			t.Errorf("stop phase %v not less than the sum of its overlapping calls %v", p.Dur, sum)
		}
	}
	out := diffOut(t, capturePath("kubelet-init")+"@stop", capturePath("kubelet-init")+"@stop")
	if rows := tableRows(out); len(rows["stop"]) < 2 || rows["stop"][0] != stop {
		t.Errorf("diff's stop row %q, want %s", rows["stop"], stop)
	}
}

func TestDiffInitContainers(t *testing.T) {
	out := diffOut(t, capturePath("kubelet-pull"), capturePath("kubelet-init"))
	_, onlyB, _ := strings.Cut(out, "only in B:")
	for _, want := range []string{"CreateContainer(setup)", "StartContainer(setup)", "CreateContainer(sidecar)", "StartContainer(sidecar)"} {
		if !strings.Contains(onlyB, want) {
			t.Errorf("only in B lacks %s:\n%s", want, out)
		}
	}
	// web is in both pods: its calls are matched with each other.
	if strings.Contains(onlyB, "CreateContainer(web)") || strings.Contains(onlyB, "StartContainer(web)") {
		t.Errorf("web's calls were not matched:\n%s", out)
	}
}

// TestDiffOneCapture: two flows of one capture, by SPEC or by --pod twice.
func TestDiffOneCapture(t *testing.T) {
	file := capturePath("kubelet-pull")
	out := diffOut(t, file+"@start", file+":hello-criseq-lab@stop")
	start, stop := firstFlow(t, "kubelet-pull", flow.Start), firstFlow(t, "kubelet-pull", flow.Stop)
	if !strings.Contains(out, "A: default/hello-criseq-lab start") || !strings.Contains(out, "B: default/hello-criseq-lab stop") {
		t.Errorf("legend does not name the start and the stop:\n%s", out)
	}
	rows := tableRows(out)
	if got := rows["total"]; len(got) < 2 || got[0] != fmtDuration(start.Duration()) || got[1] != fmtDuration(stop.Duration()) {
		t.Errorf("total row = %q", got)
	}
	for _, want := range []string{"only in A: RunPodSandbox(default/hello-criseq-lab)", "RemovePodSandbox("} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q:\n%s", want, out)
		}
	}

	// A flow against itself: nothing only on one side, every Δ zero.
	out = diffOut(t, file, "--pod", "hello-criseq-lab", "--pod", "default/hello-criseq-lab")
	if !strings.Contains(out, "only in A: —\nonly in B: —\n") {
		t.Errorf("a flow differs from itself:\n%s", out)
	}
	for label, cells := range tableRows(out) {
		if label != "A" && (len(cells) != 3 || cells[2] != "±0") {
			t.Errorf("row %s = %q, want Δ ±0", label, cells)
		}
	}
	// #N picks among the matching flows; --kind applies to both sides.
	out = diffOut(t, "--kind", "stop", file+"#1", capturePath("kubelet-warm"))
	if !strings.Contains(out, "total (to stopped)") || !strings.Contains(out, "B: default/warm-criseq-lab stop") {
		t.Errorf("--kind stop:\n%s", out)
	}
}

func TestDiffMarkdownAndJSON(t *testing.T) {
	a, b := firstFlow(t, "kubelet-pull", flow.Start), firstFlow(t, "kubelet-warm", flow.Start)
	md := diffOut(t, "--format", "md", capturePath("kubelet-pull"), capturePath("kubelet-warm"))
	for _, want := range []string{
		"| | A | B | Δ |\n|---|---:|---:|---:|\n",
		"| total (to running) | " + fmtDuration(a.Duration()) + " | " + fmtDuration(b.Duration()) + " | +27ms |",
		"| image | " + phaseMap(a)["image"] + " | " + phaseMap(b)["image"] + " | −29ms |",
		"**Only in A**\n\n- `PullImage(127.0.0.1:5000/criseq/app:1)`",
		"**Only in B**: none",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}

	var j jsonDiff
	if err := json.Unmarshal([]byte(diffOut(t, "--json", capturePath("kubelet-pull"), capturePath("kubelet-warm"))), &j); err != nil {
		t.Fatal(err)
	}
	if len(j.OnlyA) != 1 || j.OnlyA[0].Method != "PullImage" || j.OnlyA[0].Service != "ImageService" || len(j.OnlyB) != 0 {
		t.Errorf("only_a = %+v, only_b = %+v", j.OnlyA, j.OnlyB)
	}
	if j.A.Pod != a.Pod.String() || j.B.Pod != b.Pod.String() || j.A.Calls != len(a.Steps) || !j.A.Complete {
		t.Errorf("flows = %+v, %+v", j.A, j.B)
	}
	if len(j.Phases) == 0 || j.Phases[0].Phase != "total" || *j.Phases[0].AMS != ms(a.Duration()) || *j.Phases[0].BMS != ms(b.Duration()) {
		t.Errorf("total = %+v", j.Phases)
	}
	// A wait only one flow had: kubelet-init's waiting for its init container.
	if err := json.Unmarshal([]byte(diffOut(t, "--json", capturePath("kubelet-pull"), capturePath("kubelet-init"))), &j); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, p := range j.Phases {
		if p.Phase == "waiting: init container setup" {
			found = true
			if !p.Wait || p.AMS != nil || p.BMS == nil || p.DeltaMS != nil {
				t.Errorf("init wait = %+v, want b_ms only, marked a wait", p)
			}
		}
	}
	if !found {
		t.Errorf("no init container wait in %+v", j.Phases)
	}
}

func TestDiffErrors(t *testing.T) {
	pull := capturePath("kubelet-pull")
	for _, args := range [][]string{
		{},
		{pull},
		{pull, pull, pull},
		{pull, "--pod", "a"},
		{pull, "--pod", "a", "--pod", "b", "--pod", "c"},
		{"--kind", "reboot", pull, pull},
		{"--format", "html", pull, pull},
		{pull + "#0", pull},
		{pull + "#x", pull},
		{pull + "@reboot", pull},
		{pull + ":", pull},
		{pull + "#2@stop", pull},
		{pull + "@stop:hello", pull},
		{":hello", pull},
	} {
		var stderr bytes.Buffer
		err := runDiff(context.Background(), args, io.Discard, &stderr)
		if !errors.Is(err, errUsage) {
			t.Errorf("criseq diff %q: err = %v, want a usage error", args, err)
		}
	}

	var stderr bytes.Buffer
	if err := runDiff(context.Background(), []string{"-h"}, io.Discard, &stderr); !errors.Is(err, flag.ErrHelp) ||
		!strings.Contains(stderr.String(), "Examples:") || !strings.Contains(stderr.String(), "FILE[:POD][@KIND][#N]") {
		t.Errorf("diff -h: %v\n%s", err, stderr.String())
	}

	// A flow the file does not have: the error names the file and lists its flows.
	for _, args := range [][]string{
		{pull + ":nope", capturePath("kubelet-warm")},
		{pull + "#2", pull},
		{capturePath("kubelet-warm"), pull, "--pod", "warm-criseq-lab"},
	} {
		err := runDiff(context.Background(), args, io.Discard, io.Discard)
		if err == nil || errors.Is(err, errUsage) || !strings.Contains(err.Error(), pull+" has ") ||
			!strings.Contains(err.Error(), "default/hello-criseq-lab") || !strings.Contains(err.Error(), pull+":default/hello-criseq-lab@stop") {
			t.Errorf("criseq diff %q: err = %v, want one naming %s and listing its flows", args, err, pull)
		}
	}
	missing := filepath.Join(t.TempDir(), "missing.pcapng")
	if err := runDiff(context.Background(), []string{missing + ":web", pull}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing file: err = %v, want one naming it", err)
	}
}

func TestParseDiffSpec(t *testing.T) {
	files := map[string]bool{"cri.pcapng": true, "odd#1.pcapng": true, "dir:x/cri.pcapng": true}
	exists := func(p string) bool { return files[p] }
	for _, c := range []struct {
		arg, file, pod string
		kind           flow.Kind
		n              int
	}{
		{"cri.pcapng", "cri.pcapng", "", flow.Start, 1},
		{"cri.pcapng:default/web", "cri.pcapng", "default/web", flow.Start, 1},
		{"cri.pcapng:web@stop#2", "cri.pcapng", "web", flow.Stop, 2},
		{"cri.pcapng@stop", "cri.pcapng", "", flow.Stop, 1},
		{"cri.pcapng#3", "cri.pcapng", "", flow.Start, 3},
		{"odd#1.pcapng", "odd#1.pcapng", "", flow.Start, 1},
		{"odd#1.pcapng#2", "odd#1.pcapng", "", flow.Start, 2},
		{"dir:x/cri.pcapng:web", "dir:x/cri.pcapng", "web", flow.Start, 1},
		{"gone.pcapng:web", "gone.pcapng", "web", flow.Start, 1},
	} {
		s, err := parseDiffSpec(c.arg, exists)
		if err != nil || s.file != c.file || s.pod != c.pod || s.kind != c.kind || s.n != c.n {
			t.Errorf("parseDiffSpec(%q) = %+v, %v; want file %q pod %q kind %s #%d", c.arg, s, err, c.file, c.pod, c.kind, c.n)
		}
	}
}
