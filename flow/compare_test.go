package flow

import (
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/criseq/criseq/capture"
	"github.com/criseq/criseq/decode"
)

// captureCalls decodes a testdata capture whole with the real decoder,
// every body read.
func captureCalls(t *testing.T, name string) []*decode.Call {
	t.Helper()
	src, err := capture.OpenFile(filepath.Join("..", "testdata", name, "capture.pcapng"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	calls, _, err := decode.DecodeAll(src, decode.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return calls
}

// captureFlows decodes and groups a testdata capture with the real decoder.
func captureFlows(t *testing.T, name string) []*Flow {
	t.Helper()
	return Group(captureCalls(t, name), Options{})
}

func firstFlow(t *testing.T, name string, kind Kind) *Flow {
	t.Helper()
	for _, f := range captureFlows(t, name) {
		if f.Kind == kind {
			return f
		}
	}
	t.Fatalf("%s has no %s flow", name, kind)
	return nil
}

func hasMethod(f *Flow, method string) bool {
	return slices.ContainsFunc(f.Steps, func(s Step) bool { return s.Method == method })
}

// TestTimingAddsUpOnCaptures: in every flow of every capture, phases and
// waits add up to the total; a phase is at least its longest call and at
// most the sum of its calls (kubelet stops two containers together, which
// counts once); and Compare's rows are the same times.
func TestTimingAddsUpOnCaptures(t *testing.T) {
	dirs, _ := filepath.Glob(filepath.Join("..", "testdata", "*", "capture.pcapng"))
	if len(dirs) == 0 {
		t.Fatal("no testdata captures")
	}
	overlapped := false
	for _, c := range dirs {
		for _, f := range captureFlows(t, filepath.Base(filepath.Dir(c))) {
			tm := f.Timing()
			var total time.Duration
			for _, p := range tm.Parts {
				total += p.Dur
			}
			if total != tm.Total || tm.Total != f.Duration() {
				t.Errorf("%s %s %s: parts add up to %v, total %v, duration %v", c, f.Pod, f.Kind, total, tm.Total, f.Duration())
			}
			all := append(append([]Span(nil), tm.Parts...), tm.After...)
			for _, name := range phaseOrder {
				var sum, longest, got time.Duration
				for _, s := range f.Steps {
					if s.Done && PhaseOf(s.Method) == name {
						sum += s.Duration
						longest = max(longest, s.Duration)
					}
				}
				for _, p := range all {
					if p.Name == name && !p.Wait {
						got += p.Dur
					}
				}
				if sum == 0 {
					continue
				}
				if got > sum || got < longest {
					t.Errorf("%s %s %s %s: %v, want between the longest call %v and the sum %v", c, f.Pod, f.Kind, name, got, longest, sum)
				}
				if got < sum {
					overlapped = true
				}
			}
			d := Compare(f, f)
			for _, r := range d.Phases {
				if r.A == nil || r.B == nil || *r.A != *r.B {
					t.Errorf("%s %s %s: compared with itself, row %s = %v / %v", c, f.Pod, f.Kind, r.Label, r.A, r.B)
				}
			}
		}
	}
	if !overlapped {
		t.Error("no capture has calls of one phase open together (kubelet-init's stop has)")
	}
}

// TestUnmatchedByCount: the fallback for very long flows finds the same
// calls as the LCS when the order agrees.
func TestUnmatchedByCount(t *testing.T) {
	a, b := firstFlow(t, "kubelet-pull", Start), firstFlow(t, "kubelet-init", Start)
	la, lb := unmatchedSteps(a.Steps, b.Steps)
	ca, cb := unmatchedByCount(callKeys(a.Steps, b.Steps), callKeys(b.Steps, a.Steps), a.Steps, b.Steps)
	if len(la) != len(ca) || len(lb) != len(cb) {
		t.Errorf("LCS leaves %d+%d calls, counting %d+%d", len(la), len(lb), len(ca), len(cb))
	}
	if len(la) != 1 || la[0].Method != "PullImage" {
		t.Errorf("only in A = %v", la)
	}
}

// TestCompare: a cold start (with a pull) against a warm one of the same
// image; an init-container pod against a plain one.
func TestCompare(t *testing.T) {
	cold, warm := firstFlow(t, "kubelet-pull", Start), firstFlow(t, "kubelet-warm", Start)
	d := Compare(cold, warm)
	if d.Total != "total (to running)" {
		t.Errorf("total row %q", d.Total)
	}
	var labels []string
	for _, p := range d.Phases {
		labels = append(labels, p.Label)
		if p.Label == "image" && (p.A == nil || p.B == nil || *p.A <= *p.B) {
			t.Errorf("image phase: A %v, B %v; want the pull to make A's longer", p.A, p.B)
		}
	}
	if want := []string{"sandbox", "image", "create", "start", "waiting: kubelet"}; !slices.Equal(labels, want) {
		t.Errorf("phases %v, want %v", labels, want)
	}
	if len(d.OnlyA) != 1 || d.OnlyA[0].Step.Method != "PullImage" || d.OnlyA[0].Count != 1 || len(d.OnlyB) != 0 {
		t.Errorf("only A %+v, only B %+v; want the PullImage alone", d.OnlyA, d.OnlyB)
	}

	d = Compare(cold, firstFlow(t, "kubelet-init", Start))
	var onlyB []string
	for _, u := range d.OnlyB {
		onlyB = append(onlyB, u.Step.Method+"("+u.Step.Arg+")")
	}
	for _, want := range []string{"CreateContainer(setup)", "StartContainer(setup)", "CreateContainer(sidecar)", "StartContainer(sidecar)"} {
		if !slices.Contains(onlyB, want) {
			t.Errorf("only in B %v lacks %s", onlyB, want)
		}
	}
	if slices.Contains(onlyB, "CreateContainer(web)") {
		t.Errorf("web's calls were not matched: only in B %v", onlyB)
	}
	if d := Compare(cold, firstFlow(t, "kubelet-pull", Stop)); d.Total != "total" {
		t.Errorf("a start against a stop: total row %q", d.Total)
	}
}

func TestErrCode(t *testing.T) {
	for in, want := range map[string]string{"NotFound: image not found": "NotFound", "": "", "Unknown": "Unknown"} {
		if got := ErrCode(in); got != want {
			t.Errorf("ErrCode(%q) = %q, want %q", in, got, want)
		}
	}
}
