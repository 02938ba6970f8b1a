package lab_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/criseq/criseq/capture"
	"github.com/criseq/criseq/decode"
	"github.com/criseq/criseq/flow"
)

// runtimes are the container runtimes the lab runs every scenario on:
// Debian's containerd 1.6 and containerd 2.x from the Go module proxy.
var runtimes = []string{"containerd", "containerd2"}

// TestE2ELab runs the lab (real kubelet, containerd, crictl, registry, with
// criseq record in between) on each runtime and checks what criseq made of
// each scenario. CRISEQ_E2E_RUNTIMES (e.g. "containerd2") picks runtimes;
// CRISEQ_LAB_OUT=DIR checks the output of earlier runs in DIR/<runtime>
// instead of running the lab.
func TestE2ELab(t *testing.T) {
	if os.Getenv("CRISEQ_E2E") != "1" {
		t.Skip("end-to-end test: run as root with CRISEQ_E2E=1 (make e2e)")
	}
	if os.Geteuid() != 0 {
		t.Skip("end-to-end test needs root to run containers")
	}
	sel := runtimes
	if v := os.Getenv("CRISEQ_E2E_RUNTIMES"); v != "" {
		sel = strings.Fields(strings.ReplaceAll(v, ",", " "))
	}
	for _, rt := range sel {
		t.Run(rt, func(t *testing.T) { labRuntime(t, rt) })
	}
}

// labRuntime runs every scenario on one runtime and checks them.
func labRuntime(t *testing.T, rt string) {
	var out string
	if dir := os.Getenv("CRISEQ_LAB_OUT"); dir != "" {
		out = filepath.Join(dir, rt)
	} else {
		var err error
		if out, err = os.MkdirTemp("", "criseq-e2e-"+rt+"-"); err != nil {
			t.Fatal(err)
		}
		// The lab's logs stay for a look when a check fails.
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("the lab's captures and logs are kept in %s", out)
			} else {
				os.RemoveAll(out)
			}
		})
		cmd := exec.Command("./run.sh", "-o", out)
		cmd.Env = append(os.Environ(), "RUNTIME="+rt)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		start := time.Now()
		err = cmd.Run()
		t.Logf("lab/run.sh on %s: %v", rt, time.Since(start).Round(time.Second))
		if err != nil {
			t.Fatalf("RUNTIME=%s lab/run.sh: %v", rt, err)
		}
	}
	flowsOf := func(t *testing.T, scenario string) ([]*decode.Call, []*flow.Flow) {
		t.Helper()
		calls := decodeCapture(t, filepath.Join(out, scenario, "capture.pcapng"))
		return calls, flow.Group(calls, flow.Options{})
	}

	t.Run("runtime", func(t *testing.T) {
		// The lab really ran the runtime asked for: kubelet's Version call says which.
		_, flows := flowsOf(t, "warm")
		f := only(t, flows, flow.Start, "default/warm-criseq-lab")
		want := map[string]string{"containerd": "containerd 1.6.", "containerd2": "containerd v2.4.2"}[rt]
		if want == "" || !strings.HasPrefix(f.Runtime, want) {
			t.Errorf("RUNTIME=%s: the runtime answered Version as %q, want %q…", rt, f.Runtime, want)
		}
	})
	t.Run("warm", func(t *testing.T) {
		_, flows := flowsOf(t, "warm")
		f := only(t, flows, flow.Start, "default/warm-criseq-lab")
		wantOrder(t, f, "RunPodSandbox", "PodSandboxStatus", "ImageStatus", "CreateContainer", "StartContainer")
		noMethod(t, f, "PullImage")
		checkLinks(t, f)
		if !f.Complete {
			t.Error("warm start not complete")
		}
	})
	t.Run("pull", func(t *testing.T) {
		_, flows := flowsOf(t, "pull")
		f := only(t, flows, flow.Start, "default/hello-criseq-lab")
		// With imagePullPolicy Always, kubelet 1.37 pulls without asking ImageStatus first.
		wantOrder(t, f, "RunPodSandbox", "PodSandboxStatus", "PullImage", "ImageStatus", "CreateContainer", "StartContainer")
		checkLinks(t, f)
		s := only(t, flows, flow.Stop, "default/hello-criseq-lab")
		wantOrder(t, s, "StopContainer", "StopPodSandbox", "RemoveContainer", "RemovePodSandbox")
		if !s.Complete || s.SandboxID != f.SandboxID {
			t.Errorf("stop flow complete=%v sandbox %s, want complete and %s", s.Complete, s.SandboxID, f.SandboxID)
		}
	})
	t.Run("init", func(t *testing.T) {
		_, flows := flowsOf(t, "init")
		f := only(t, flows, flow.Start, "default/with-init-criseq-lab")
		wantOrder(t, f, "RunPodSandbox", "CreateContainer", "StartContainer", "CreateContainer", "StartContainer", "CreateContainer", "StartContainer")
		var names []string
		ip := false
		for _, s := range f.Steps {
			if s.Method == "CreateContainer" {
				names = append(names, s.Arg)
			}
			ip = ip || s.Method == "PodSandboxStatus" && strings.Contains(s.Result, "198.18.77.")
		}
		if strings.Join(names, ",") != "setup,web,sidecar" {
			t.Errorf("containers created: %v, want setup,web,sidecar", names)
		}
		if !ip {
			t.Error("no PodSandboxStatus shows the pod IP from the bridge network")
		}
		checkLinks(t, f)
	})
	t.Run("missing", func(t *testing.T) {
		_, flows := flowsOf(t, "missing")
		f := only(t, flows, flow.Start, "default/missing-criseq-lab")
		failed := 0
		for _, s := range f.Steps {
			if s.Method == "PullImage" && s.Err != "" {
				failed++
			}
		}
		if failed < 2 {
			t.Errorf("%d failed PullImage in the flow, want the first pull and a retry after back-off", failed)
		}
		noMethod(t, f, "CreateContainer")
		if f.Complete {
			t.Error("a pod whose image is missing is marked started")
		}
	})
	t.Run("crashloop", func(t *testing.T) {
		// Each restart a flow of its own, live and from the file alike;
		// the removals of older instances no pod stop.
		calls, _ := flowsOf(t, "crashloop")
		for _, live := range []bool{false, true} {
			flows := flow.Group(calls, flow.Options{Live: live})
			f := only(t, flows, flow.Start, "default/crashloop-criseq-lab")
			wantOrder(t, f, "RunPodSandbox", "CreateContainer", "StartContainer")
			atMost(t, f, "CreateContainer", 1)
			var restarts []string
			for _, r := range flows {
				if r.Pod != f.Pod {
					continue
				}
				switch r.Kind {
				case flow.Restart:
					wantOrder(t, r, "ContainerStatus", "CreateContainer", "StartContainer")
					atMost(t, r, "CreateContainer", 1)
					// Exited, not killed: from where kubelet saw the older
					// instance exit; from the second on, after a back-off.
					if s := r.Steps[0]; s.Method != "ContainerStatus" || !strings.HasPrefix(s.Result, "EXITED") {
						t.Errorf("live=%v: a crash-loop restart begins with %s %s, not the status that saw the older instance exited", live, s.Method, s.Result)
					}
					if off := backOff(r); len(restarts) > 0 && off < 5*time.Second {
						t.Errorf("live=%v: restart %d waited %v of back-off, want kubelet's (10s, 20s)", live, len(restarts)+1, off)
					}
					if !r.Complete || r.SandboxID != f.SandboxID {
						t.Errorf("live=%v: restart complete=%v sandbox %s, want complete in %s", live, r.Complete, r.SandboxID, f.SandboxID)
					}
					restarts = append(restarts, r.Restarted()...)
				case flow.Stop:
					noMethod(t, r, "CreateContainer")
					noMethod(t, r, "StartContainer")
					if m := r.Steps[0].Method; m != "StopContainer" && m != "StopPodSandbox" {
						t.Errorf("live=%v: a stop flow begins with %s", live, m)
					}
				}
			}
			if want := "web (attempt 1),web (attempt 2),web (attempt 3)"; strings.Join(restarts, ",") != want {
				t.Errorf("live=%v: restarts %q, want %s", live, restarts, want)
			}
			// Killed for its liveness probe: each restart begins with the kill.
			only(t, flows, flow.Start, "default/liveness-criseq-lab")
			var killed []string
			for _, r := range flows {
				if r.Pod.String() != "default/liveness-criseq-lab" {
					continue
				}
				switch {
				case r.Kind == flow.Restart:
					// The pod may be deleted after a kill, before its
					// restart: a restart that never completed.
					if r.Complete {
						wantOrder(t, r, "ExecSync", "StopContainer", "CreateContainer", "StartContainer")
					}
					// The failed probe, then the kill.
					if len(r.Steps) < 2 || r.Steps[0].Method != "ExecSync" || r.Steps[0].Result != "exit 1" || r.Steps[1].Method != "StopContainer" {
						t.Errorf("live=%v: a restart of the probed container begins with %s %s, not its failed probe and kill", live, r.Steps[0].Method, r.Steps[0].Result)
					}
					killed = append(killed, r.Restarted()...)
				case r.Kind == flow.Stop:
					wantOrder(t, r, "StopPodSandbox")
				}
			}
			if len(killed) < 2 || killed[0] != "probed (attempt 1)" || killed[1] != "probed (attempt 2)" {
				t.Errorf("live=%v: restarts of the probed container %q, want attempts 1, 2…", live, killed)
			}
		}
	})
	t.Run("durations match kubelet's log", func(t *testing.T) {
		_, flows := flowsOf(t, "pull")
		f := only(t, flows, flow.Start, "default/hello-criseq-lab")
		logged := kubeletDurations(t, filepath.Join(out, "pull", "kubelet.log"))
		// kubelet logs these calls at verbosity 10 (PullImage it does not).
		for _, m := range []string{"RunPodSandbox", "CreateContainer", "StartContainer"} {
			var got time.Duration
			for _, s := range f.Steps {
				if s.Method == m {
					got = s.Duration
					break
				}
			}
			want, ok := logged[m]
			if !ok || got == 0 {
				t.Errorf("%s: kubelet logged %v, criseq measured %v", m, want, got)
				continue
			}
			// kubelet's clock starts before it formats the request into its
			// log (for RunPodSandbox the whole pod config, ~10ms at v=10) and
			// stops after; criseq sees the bytes on the wire. So criseq can be
			// shorter by that much, never longer than about a millisecond.
			if d := want - got; d > 15*time.Millisecond || d < -time.Millisecond {
				t.Errorf("%s took %v by criseq, %v by kubelet's log", m, got, want)
			}
			t.Logf("%s: criseq %v, kubelet %v", m, got, want)
		}
	})
	t.Run("criseq changes nothing", func(t *testing.T) {
		with, err1 := os.ReadFile(filepath.Join(out, "warm", "outcome.txt"))
		without, err2 := os.ReadFile(filepath.Join(out, "direct", "outcome.txt"))
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
		if len(with) == 0 || string(with) != string(without) {
			t.Errorf("pod outcome through criseq:\n%s\nwithout criseq:\n%s", with, without)
		}
	})
	t.Run("watch", func(t *testing.T) {
		b, err := os.ReadFile(filepath.Join(out, "watch", "watch.txt"))
		if err != nil {
			t.Fatal(err)
		}
		// The stop is written as soon as the pod is down, and again once
		// kubelet's clean-up removed its sandbox.
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) != 3 || !strings.Contains(lines[0], "default/live-criseq-lab") || !strings.Contains(lines[0], "started in") ||
			!strings.Contains(lines[1], "stopped in") || !strings.Contains(lines[1], "not removed yet") ||
			!strings.Contains(lines[2], "stopped in") || !regexp.MustCompile(`removed [0-9.]+s later`).MatchString(lines[2]) || !strings.HasSuffix(lines[2], "(updated)") {
			t.Errorf("criseq watch printed:\n%s", b)
		}
		_, flows := flowsOf(t, "watch")
		only(t, flows, flow.Start, "default/live-criseq-lab")
	})
	t.Run("swap", func(t *testing.T) {
		_, flows := flowsOf(t, "swap")
		f := only(t, flows, flow.Start, "default/swapped-criseq-lab")
		wantOrder(t, f, "RunPodSandbox", "CreateContainer", "StartContainer")
		checkLinks(t, f)
		b, err := os.ReadFile(filepath.Join(out, "swap", "outcome.txt"))
		if err != nil || strings.TrimSpace(string(b)) != "web Running 0" {
			t.Errorf("after criseq put the socket back, the pods were %q (%v), want web Running 0", b, err)
		}
	})
	t.Run("tcp", func(t *testing.T) {
		// Captured by tshark over TCP, not by criseq: the reader's reassembly path.
		_, flows := flowsOf(t, "tcp")
		f := only(t, flows, flow.Start, "default/hello-crictl")
		wantOrder(t, f, "RunPodSandbox", "PullImage", "CreateContainer", "StartContainer")
		checkLinks(t, f)
		only(t, flows, flow.Stop, "default/hello-crictl")
	})
	t.Run("burst", func(t *testing.T) {
		calls, flows := flowsOf(t, "burst")
		checkBurst(t, rt, calls, flows)
	})
	t.Run("crictl", func(t *testing.T) {
		calls, flows := flowsOf(t, "crictl")
		f := only(t, flows, flow.Start, "default/hello-crictl")
		wantOrder(t, f, "RunPodSandbox", "PullImage", "CreateContainer", "StartContainer")
		checkLinks(t, f)
		s := only(t, flows, flow.Stop, "default/hello-crictl")
		wantOrder(t, s, "StopContainer", "RemoveContainer", "StopPodSandbox", "RemovePodSandbox")
		for _, c := range calls {
			for _, m := range c.Requests {
				if m.Proto != nil && strings.Contains(prototext.Format(m.Proto), "s3cret-env-value") {
					t.Errorf("%s request shows the environment value", c.Name)
				}
			}
		}
	})
}

// decodeCapture decodes a capture, checks it is private (0600) and that
// real tshark sees the same calls.
func decodeCapture(t *testing.T, path string) []*decode.Call {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", path, st.Mode().Perm())
	}
	calls := decodeFile(t, path)
	checkTshark(t, path, calls)
	return calls
}

// decodeFile decodes a capture file; any decoding error fails the test.
func decodeFile(t *testing.T, path string) []*decode.Call {
	t.Helper()
	src, err := capture.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	calls, connErrs, err := decode.DecodeAll(src, decode.Options{})
	if err != nil || len(connErrs) > 0 {
		t.Fatalf("decoding %s: %v %v", path, err, connErrs)
	}
	return calls
}

// kubeletDurations reads kubelet's own log (cri-client at verbosity 10)
// and returns how long the first call of each method took by its clock.
func kubeletDurations(t *testing.T, path string) map[string]time.Duration {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`^[IWE]\d{4} (\d\d:\d\d:\d\d\.\d{6})\s+\d+ remote_(?:runtime|image)\.go:\d+\] "\[Remote(?:Runtime|Image)Service\] (\w+)( Response)?"`)
	start := map[string]time.Time{}
	out := map[string]time.Duration{}
	for _, line := range strings.Split(string(b), "\n") {
		m := re.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		at, err := time.Parse("15:04:05.000000", m[1])
		if err != nil {
			continue
		}
		// The end is the "Response" line, or for CreateContainer the same
		// message logged again with the new container's ID.
		_, seen := start[m[2]]
		switch {
		case !seen && m[3] == "":
			start[m[2]] = at
		case seen && out[m[2]] == 0:
			out[m[2]] = at.Sub(start[m[2]])
		}
	}
	return out
}

func only(t *testing.T, flows []*flow.Flow, k flow.Kind, pod string) *flow.Flow {
	t.Helper()
	var found []*flow.Flow
	var all []string
	for _, f := range flows {
		all = append(all, f.Kind.String()+" "+f.Pod.String())
		if f.Kind == k && f.Pod.String() == pod {
			found = append(found, f)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want one %s flow of %s, got %d (flows: %v)", k, pod, len(found), all)
	}
	return found[0]
}

// wantOrder checks that the flow holds the methods in this order (others may come between).
func wantOrder(t *testing.T, f *flow.Flow, methods ...string) {
	t.Helper()
	var got []string
	i := 0
	for _, s := range f.Steps {
		got = append(got, s.Method)
		if i < len(methods) && s.Method == methods[i] {
			i++
		}
		if flow.IsPolling(s.Method) {
			t.Errorf("polling call %s leaked into the %s flow", s.Method, f.Kind)
		}
	}
	if i < len(methods) {
		t.Errorf("%s flow of %s: want %v in order, got %v", f.Kind, f.Pod, methods, got)
	}
}

func noMethod(t *testing.T, f *flow.Flow, m string) {
	t.Helper()
	for _, s := range f.Steps {
		if s.Method == m {
			t.Errorf("%s flow has an unexpected %s", f.Kind, m)
		}
	}
}

// atMost fails if f holds m more than n times.
func atMost(t *testing.T, f *flow.Flow, m string, n int) {
	t.Helper()
	k := 0
	for _, s := range f.Steps {
		if s.Method == m {
			k++
		}
	}
	if k > n {
		t.Errorf("%s flow has %d %s, want at most %d", f.Kind, k, m, n)
	}
}

// checkLinks: the sandbox ID RunPodSandbox returned is the one CreateContainer
// used, and the container IDs CreateContainer returned are the ones StartContainer used.
func checkLinks(t *testing.T, f *flow.Flow) {
	t.Helper()
	created := map[string]bool{}
	for _, s := range f.Steps {
		switch s.Method {
		case "CreateContainer":
			if sid := field(s, "pod_sandbox_id"); sid != f.SandboxID {
				t.Errorf("CreateContainer in sandbox %q, RunPodSandbox returned %q", sid, f.SandboxID)
			}
			created[s.Full] = true
		case "StartContainer":
			if cid := field(s, "container_id"); !created[cid] {
				t.Errorf("StartContainer of %q, which no CreateContainer of this flow returned", cid)
			}
		}
	}
}

func field(s flow.Step, name string) string {
	m := s.Call.Request().ProtoReflect()
	fd := m.Descriptor().Fields().ByName(protoreflect.Name(name))
	if fd == nil {
		return ""
	}
	return m.Get(fd).String()
}

// checkTshark: real tshark sees the same method paths as criseq.
func checkTshark(t *testing.T, path string, calls []*decode.Call) {
	t.Helper()
	out, err := exec.Command("tshark", "-n", "-r", path, "-d", "tcp.port==10010,http2", "-Y", "http2.headers.path",
		"-T", "fields", "-E", "occurrence=a", "-E", "aggregator=|", "-e", "http2.headers.path").Output()
	if err != nil {
		t.Fatalf("tshark on %s: %v", path, err)
	}
	var want, got []string
	for _, line := range strings.Fields(string(out)) {
		want = append(want, strings.Split(line, "|")...)
	}
	for _, c := range calls {
		got = append(got, c.Method)
	}
	sort.Strings(want)
	sort.Strings(got)
	if strings.Join(want, " ") != strings.Join(got, " ") {
		t.Errorf("tshark sees %d calls in %s, criseq %d", len(want), path, len(got))
	}
}

// backOff is how much of f's time is kubelet's back-off.
func backOff(f *flow.Flow) time.Duration {
	var d time.Duration
	for _, sp := range f.Timing().Parts {
		if sp.Wait && sp.Name == flow.WaitBackOff {
			d += sp.Dur
		}
	}
	return d
}
