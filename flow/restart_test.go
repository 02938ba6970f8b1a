package flow

import (
	"fmt"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/criseq/criseq/decode"
)

// TestCrashLoopRestarts: a real kubelet restarting containers
// (testdata/kubelet-crashloop): one that exits at once, and one killed for
// a failed liveness probe. The start flow holds the first instance only;
// each restart is a flow of its own, with its attempt (the kill first, for
// the probed one); the removals of older instances are no pod stop, and a
// pod's stop holds its StopPodSandbox. Grouped from the file and live
// alike.
func TestCrashLoopRestarts(t *testing.T) {
	calls := captureCalls(t, "kubelet-crashloop")
	for _, live := range []bool{false, true} {
		t.Run(fmt.Sprintf("live=%v", live), func(t *testing.T) {
			flows := Group(calls, Options{Live: live})
			checkRestarts(t, calls, flows, "default/crashloop-criseq-lab", "web", 3, false)
			checkRestarts(t, calls, flows, "default/liveness-criseq-lab", "probed", 2, true)
		})
	}
}

// checkRestarts checks the flows of one pod whose container restarted at
// least least times; killed: kubelet stopped it each time first.
func checkRestarts(t *testing.T, calls []*decode.Call, flows []*Flow, pod, container string, least int, killed bool) {
	t.Helper()
	var starts, restarts, stops []*Flow
	inStop := map[*decode.Call]bool{}
	inRestart := map[*decode.Call]bool{}
	for _, f := range flows {
		if f.Pod.String() != pod {
			continue
		}
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
		t.Fatalf("%s: %d start flows, want 1", pod, len(starts))
	}
	st := starts[0]
	if n := count(st, "CreateContainer"); n != 1 || count(st, "StartContainer") != 1 || !st.Complete {
		t.Errorf("%s: start flow: %d CreateContainer, %d StartContainer, complete %v; want the first instance alone, complete", pod, n, count(st, "StartContainer"), st.Complete)
	}
	for _, s := range st.Timing().Parts {
		if strings.HasPrefix(s.Name, waitInit) {
			t.Errorf("%s: start flow waits for %q: a restart taken for an init container", pod, s.Name)
		}
	}
	// Every CreateContainer of the sandbox after the first is a restart.
	creates := 0
	stopAt := -1
	mine := map[string]bool{} // the sandbox's container IDs
	for i, c := range calls {
		switch r := c.Request().(type) {
		case *runtimeapi.CreateContainerRequest:
			if r.GetPodSandboxId() == st.SandboxID && c.OK() {
				creates++
				if resp, ok := c.Response().(*runtimeapi.CreateContainerResponse); ok {
					mine[resp.GetContainerId()] = true
				}
			}
		case *runtimeapi.StopPodSandboxRequest:
			if r.GetPodSandboxId() == st.SandboxID && stopAt < 0 {
				stopAt = i
			}
		}
	}
	if n := len(restarts); killed && n > 0 && count(restarts[n-1], "CreateContainer") == 0 {
		// Killed, the pod deleted before the restart came.
		if r := restarts[n-1]; r.Complete || !killedFirst(r) || n != creates {
			t.Errorf("%s: the last restart, with no CreateContainer, is complete %v, begins with %s, is number %d of %d creates; want an incomplete kill after the last",
				pod, r.Complete, r.Steps[0].Method, n, creates)
		}
		restarts = restarts[:n-1]
	}
	if len(restarts) != creates-1 || len(restarts) < least {
		t.Fatalf("%s: %d restart flows, want one per CreateContainer after the first (%d), at least %d", pod, len(restarts), creates-1, least)
	}
	for k, f := range restarts {
		want := fmt.Sprintf("%s (attempt %d)", container, k+1)
		if got := f.Restarted(); len(got) != 1 || got[0] != want {
			t.Errorf("%s: restart %d: Restarted() = %q, want [%q]", pod, k+1, got, want)
		}
		complete := f.Complete || k == len(restarts)-1 && stopAt >= 0 // the last may be cut by the pod's stop
		if count(f, "CreateContainer") != 1 || count(f, "StartContainer") > 1 || !complete || f.SandboxID != st.SandboxID {
			t.Errorf("%s: restart %d: %d CreateContainer, %d StartContainer, complete %v, sandbox %s; want one each, complete, in %s",
				pod, k+1, count(f, "CreateContainer"), count(f, "StartContainer"), f.Complete, Short(f.SandboxID), Short(st.SandboxID))
		}
		if count(f, "ImageStatus") == 0 {
			t.Errorf("%s: restart %d has no ImageStatus: kubelet checks the image before each CreateContainer", pod, k+1)
		}
		if killed != killedFirst(f) {
			t.Errorf("%s: restart %d begins with %s (killed first: %v)", pod, k+1, f.Steps[0].Method, killed)
		}
		if !killed {
			// It begins where kubelet saw the instance before it exited:
			// the one the flow before made.
			before := st
			if k > 0 {
				before = restarts[k-1]
			}
			older := madeIn(before)
			if s := f.Steps[0]; s.Method != "ContainerStatus" || !strings.HasPrefix(s.Result, "EXITED") || s.ArgID != older || older == "" {
				t.Errorf("%s: restart %d begins with %s %s of %s, want ContainerStatus EXITED of %s, the older instance", pod, k+1, s.Method, s.Result, Short(s.ArgID), Short(older))
			}
		}
		// kubelet's back-off (10s, 20s…) between the kill or the exit
		// and the new container is named so.
		if tm := f.Timing(); tm.Total > 5*time.Second {
			var off time.Duration
			for _, sp := range tm.Parts {
				if sp.Wait && sp.Name == WaitBackOff {
					off += sp.Dur
				}
			}
			if off < tm.Total/2 {
				t.Errorf("%s: restart %d takes %v, %v of it back-off: %+v", pod, k+1, tm.Total, off, tm.Parts)
			}
		}
	}
	for i, c := range calls {
		if stopAt >= 0 && i >= stopAt {
			break
		}
		r, ok := c.Request().(*runtimeapi.RemoveContainerRequest)
		if !ok || !mine[r.GetContainerId()] {
			continue
		}
		if inStop[c] {
			t.Errorf("%s: RemoveContainer at %s, before the pod's StopPodSandbox, is in a stop flow", pod, c.Start.Format("15:04:05.000"))
		}
		if !killed && !inRestart[c] {
			t.Errorf("%s: RemoveContainer at %s, a restart's older instance removed within Grace, is in no restart flow", pod, c.Start.Format("15:04:05.000"))
		}
	}
	for _, f := range stops {
		if count(f, "StopPodSandbox") == 0 {
			t.Errorf("%s: a stop flow without the pod's StopPodSandbox", pod)
		}
		if count(f, "CreateContainer")+count(f, "StartContainer") > 0 {
			t.Errorf("%s: stop flow holds a CreateContainer or StartContainer", pod)
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

// killedFirst says whether the restart f begins with the failed exec
// (a liveness probe) of the container it then stops, and that stop, timed
// as phases of their own.
func killedFirst(f *Flow) bool {
	if len(f.Steps) < 2 {
		return false
	}
	ex, stop := f.Steps[0], f.Steps[1]
	if ex.Method != "ExecSync" || ex.Result == "exit 0" || !strings.HasPrefix(ex.Result, "exit ") || stop.Method != "StopContainer" || ex.ArgID != stop.ArgID {
		return false
	}
	var exec bool
	for _, sp := range f.Timing().Parts {
		exec = exec || sp.Name == PhaseExec && !sp.Wait && sp.Dur == ex.Duration
	}
	return exec
}

// madeIn is the ID of the container the flow's CreateContainer made.
func madeIn(f *Flow) string {
	for _, s := range f.Steps {
		if r, ok := s.Call.Response().(*runtimeapi.CreateContainerResponse); ok && s.Method == "CreateContainer" {
			return r.GetContainerId()
		}
	}
	return ""
}
