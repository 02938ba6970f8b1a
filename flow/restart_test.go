package flow

import (
	"fmt"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/criseq/criseq/decode"
)

// TestCrashLoopRestarts: a real kubelet restarting a container that exits
// at once (testdata/kubelet-crashloop). The start flow holds the first
// instance only; each restart is a flow of its own, with its attempt; the
// removals of older instances are no pod stop, and the pod's stop begins
// with its StopPodSandbox. Grouped from the file and live alike.
func TestCrashLoopRestarts(t *testing.T) {
	calls := captureCalls(t, "kubelet-crashloop")
	for _, live := range []bool{false, true} {
		t.Run(fmt.Sprintf("live=%v", live), func(t *testing.T) {
			checkRestarts(t, calls, Group(calls, Options{Live: live}))
		})
	}
}

// checkRestarts checks the flows of a capture of one crash-looping pod.
func checkRestarts(t *testing.T, calls []*decode.Call, flows []*Flow) {
	t.Helper()
	var attempts []uint32
	stopAt := -1
	for i, c := range calls {
		if r, ok := c.Request().(*runtimeapi.CreateContainerRequest); ok && c.OK() {
			attempts = append(attempts, r.GetConfig().GetMetadata().GetAttempt())
		}
		if c.Name == "StopPodSandbox" && stopAt < 0 {
			stopAt = i
		}
	}
	if len(attempts) < 3 || attempts[0] != 0 {
		t.Fatalf("the capture's CreateContainer attempts are %v: not a crash loop", attempts)
	}
	var starts, restarts, stops []*Flow
	inStop := map[*decode.Call]bool{}
	inRestart := map[*decode.Call]bool{}
	for _, f := range flows {
		switch f.Kind {
		case Start:
			starts = append(starts, f)
		case Restart:
			restarts = append(restarts, f)
		case Stop:
			stops = append(stops, f)
		}
		for _, s := range f.Steps {
			if f.Kind == Stop {
				inStop[s.Call] = true
			}
			if f.Kind == Restart {
				inRestart[s.Call] = true
			}
		}
	}
	if len(starts) != 1 {
		t.Fatalf("%d start flows, want 1", len(starts))
	}
	st := starts[0]
	if n := count(st, "CreateContainer"); n != 1 || count(st, "StartContainer") != 1 || !st.Complete {
		t.Errorf("start flow: %d CreateContainer, %d StartContainer, complete %v; want the first instance alone, complete", n, count(st, "StartContainer"), st.Complete)
	}
	for _, s := range st.Timing().Parts {
		if strings.HasPrefix(s.Name, waitInit) {
			t.Errorf("start flow waits for %q: a restart taken for an init container", s.Name)
		}
	}
	if len(restarts) != len(attempts)-1 {
		t.Fatalf("%d restart flows, want one per CreateContainer after the first (%d)", len(restarts), len(attempts)-1)
	}
	for k, f := range restarts {
		want := fmt.Sprintf("web (attempt %d)", k+1)
		if got := f.Restarted(); len(got) != 1 || got[0] != want {
			t.Errorf("restart %d: Restarted() = %q, want [%q]", k+1, got, want)
		}
		if count(f, "CreateContainer") != 1 || count(f, "StartContainer") != 1 || !f.Complete || f.Pod != st.Pod || f.SandboxID != st.SandboxID {
			t.Errorf("restart %d: %d CreateContainer, %d StartContainer, complete %v, pod %v sandbox %s; want one each, complete, in %v %s",
				k+1, count(f, "CreateContainer"), count(f, "StartContainer"), f.Complete, f.Pod, Short(f.SandboxID), st.Pod, Short(st.SandboxID))
		}
		if count(f, "ImageStatus") == 0 {
			t.Errorf("restart %d has no ImageStatus: kubelet checks the image before each CreateContainer", k+1)
		}
		if tm := f.Timing(); tm.Total <= 0 {
			t.Errorf("restart %d: total %v", k+1, tm.Total)
		}
	}
	for i, c := range calls {
		if stopAt >= 0 && i >= stopAt {
			break
		}
		if c.Name == "RemoveContainer" {
			if inStop[c] {
				t.Errorf("RemoveContainer at %s, before the pod's StopPodSandbox, is in a stop flow", c.Start.Format("15:04:05.000"))
			}
			if !inRestart[c] {
				t.Errorf("RemoveContainer at %s, a restart's older instance removed within Grace, is in no restart flow", c.Start.Format("15:04:05.000"))
			}
		}
	}
	for _, f := range stops {
		if m := f.Steps[0].Method; m != "StopContainer" && m != "StopPodSandbox" {
			t.Errorf("stop flow begins with %s", m)
		}
		if count(f, "CreateContainer")+count(f, "StartContainer") > 0 {
			t.Error("stop flow holds a CreateContainer or StartContainer")
		}
	}
}

func count(f *Flow, method string) int {
	n := 0
	for _, s := range f.Steps {
		if s.Method == method {
			n++
		}
	}
	return n
}
