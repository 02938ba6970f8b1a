package flow

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/criseq/criseq/decode"
)

// calls builds a call sequence; each call starts 10ms after the previous one.
type calls struct {
	t0   time.Time
	at   time.Duration
	list []*decode.Call
}

func (cs *calls) add(name string, req, resp proto.Message, status int, dur time.Duration) *decode.Call {
	svc := "runtime.v1.RuntimeService"
	if strings.Contains(name, "Image") {
		svc = "runtime.v1.ImageService"
	}
	c := &decode.Call{
		Method: "/" + svc + "/" + name, Service: svc, Name: name, Known: true,
		Start: cs.t0.Add(cs.at), End: cs.t0.Add(cs.at + dur), Status: status,
		Requests: []decode.Message{{Proto: req}},
	}
	if resp != nil {
		c.Responses = []decode.Message{{Proto: resp}}
	}
	cs.list = append(cs.list, c)
	cs.at += dur + 10*time.Millisecond
	return c
}

func (cs *calls) wait(d time.Duration) { cs.at += d }

func podConfig(ns, name, uid string) *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Namespace: ns, Name: name, Uid: uid}}
}

func (cs *calls) startPod(ns, name, uid, sid string, containers ...string) {
	cfg := podConfig(ns, name, uid)
	cs.add("RunPodSandbox", &runtimeapi.RunPodSandboxRequest{Config: cfg}, &runtimeapi.RunPodSandboxResponse{PodSandboxId: sid}, 0, 100*time.Millisecond)
	cs.add("PodSandboxStatus", &runtimeapi.PodSandboxStatusRequest{PodSandboxId: sid}, &runtimeapi.PodSandboxStatusResponse{}, 0, time.Millisecond)
	for _, c := range containers {
		img := &runtimeapi.ImageSpec{Image: "registry/app:1"}
		cs.add("ImageStatus", &runtimeapi.ImageStatusRequest{Image: img},
			&runtimeapi.ImageStatusResponse{Image: &runtimeapi.Image{Id: "sha256:aaaa"}}, 0, time.Millisecond)
		cid := sid + "-" + c
		cs.add("CreateContainer", &runtimeapi.CreateContainerRequest{PodSandboxId: sid, SandboxConfig: cfg,
			Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: c},
				Image: &runtimeapi.ImageSpec{Image: "sha256:aaaa", UserSpecifiedImage: "registry/app:1"}}},
			&runtimeapi.CreateContainerResponse{ContainerId: cid}, 0, 15*time.Millisecond)
		cs.add("StartContainer", &runtimeapi.StartContainerRequest{ContainerId: cid}, &runtimeapi.StartContainerResponse{}, 0, 60*time.Millisecond)
	}
}

func methods(f *Flow) string {
	var m []string
	for _, s := range f.Steps {
		m = append(m, s.Method)
	}
	return strings.Join(m, " ")
}

func TestStartAndStopFlows(t *testing.T) {
	cs := &calls{t0: time.Unix(1700000000, 0)}
	cs.add("Version", &runtimeapi.VersionRequest{}, &runtimeapi.VersionResponse{RuntimeName: "containerd", RuntimeVersion: "1.6.20"}, 0, time.Millisecond)
	cs.startPod("default", "web", "uid-1", "sb1", "app", "sidecar")
	cs.add("ListContainers", &runtimeapi.ListContainersRequest{}, &runtimeapi.ListContainersResponse{}, 0, time.Millisecond)
	cs.wait(30 * time.Second)
	for _, c := range []string{"app", "sidecar"} {
		cs.add("StopContainer", &runtimeapi.StopContainerRequest{ContainerId: "sb1-" + c}, &runtimeapi.StopContainerResponse{}, 0, 50*time.Millisecond)
	}
	cs.add("StopPodSandbox", &runtimeapi.StopPodSandboxRequest{PodSandboxId: "sb1"}, &runtimeapi.StopPodSandboxResponse{}, 0, 40*time.Millisecond)
	cs.add("RemoveContainer", &runtimeapi.RemoveContainerRequest{ContainerId: "sb1-app"}, &runtimeapi.RemoveContainerResponse{}, 0, time.Millisecond)
	cs.add("RemovePodSandbox", &runtimeapi.RemovePodSandboxRequest{PodSandboxId: "sb1"}, &runtimeapi.RemovePodSandboxResponse{}, 0, time.Millisecond)

	flows := Group(cs.list, Options{})
	if len(flows) != 2 {
		t.Fatalf("got %d flows, want 2", len(flows))
	}
	start, stop := flows[0], flows[1]
	if got, want := methods(start), "RunPodSandbox PodSandboxStatus ImageStatus CreateContainer StartContainer ImageStatus CreateContainer StartContainer"; got != want {
		t.Errorf("start flow:\n got %s\nwant %s", got, want)
	}
	if start.Pod.String() != "default/web" || start.SandboxID != "sb1" || !start.Complete || start.Runtime != "containerd 1.6.20" {
		t.Errorf("start flow = %+v", start)
	}
	// Started when the last StartContainer returned: 2×(1+15+60) + 100 + 1 + gaps.
	if d := start.Duration(); d <= 200*time.Millisecond || d >= 400*time.Millisecond {
		t.Errorf("start duration %v", d)
	}
	if got, want := methods(stop), "StopContainer StopContainer StopPodSandbox RemoveContainer RemovePodSandbox"; got != want {
		t.Errorf("stop flow:\n got %s\nwant %s", got, want)
	}
	if stop.Kind != Stop || stop.Pod.String() != "default/web" || !stop.Complete {
		t.Errorf("stop flow = %+v", stop)
	}
	if stop.Steps[0].Arg != "app" {
		t.Errorf("StopContainer arg = %q, want the container's name", stop.Steps[0].Arg)
	}
}

func TestPollingKeptWithAll(t *testing.T) {
	cs := &calls{t0: time.Unix(1700000000, 0)}
	cs.add("RunPodSandbox", &runtimeapi.RunPodSandboxRequest{Config: podConfig("ns", "p", "u")}, &runtimeapi.RunPodSandboxResponse{PodSandboxId: "sb"}, 0, 100*time.Millisecond)
	cs.add("ListPodSandbox", &runtimeapi.ListPodSandboxRequest{}, &runtimeapi.ListPodSandboxResponse{}, 0, time.Millisecond)
	cs.add("CreateContainer", &runtimeapi.CreateContainerRequest{PodSandboxId: "sb", Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "c"}}},
		&runtimeapi.CreateContainerResponse{ContainerId: "cid"}, 0, time.Millisecond)
	cs.add("StartContainer", &runtimeapi.StartContainerRequest{ContainerId: "cid"}, &runtimeapi.StartContainerResponse{}, 0, time.Millisecond)
	if got := methods(Group(cs.list, Options{})[0]); strings.Contains(got, "ListPodSandbox") {
		t.Errorf("polling leaked into the flow: %s", got)
	}
	if got := methods(Group(cs.list, Options{All: true})[0]); !strings.Contains(got, "ListPodSandbox") {
		t.Errorf("--all lost the polling call: %s", got)
	}
}

func TestFailedPullStaysInFlow(t *testing.T) {
	cs := &calls{t0: time.Unix(1700000000, 0)}
	cfg := podConfig("default", "broken", "uid-b")
	cs.add("RunPodSandbox", &runtimeapi.RunPodSandboxRequest{Config: cfg}, &runtimeapi.RunPodSandboxResponse{PodSandboxId: "sbb"}, 0, 100*time.Millisecond)
	for i := 0; i < 3; i++ {
		img := &runtimeapi.ImageSpec{Image: "127.0.0.1:5000/missing:1"}
		cs.add("ImageStatus", &runtimeapi.ImageStatusRequest{Image: img}, &runtimeapi.ImageStatusResponse{}, 0, time.Millisecond)
		c := cs.add("PullImage", &runtimeapi.PullImageRequest{Image: img, SandboxConfig: cfg}, nil, 2, 20*time.Millisecond)
		c.Message = "failed to pull: not found"
		cs.wait(10 * time.Second)
	}
	flows := Group(cs.list, Options{})
	if len(flows) != 1 {
		t.Fatalf("got %d flows, want 1", len(flows))
	}
	f := flows[0]
	if got, want := methods(f), "RunPodSandbox ImageStatus PullImage ImageStatus PullImage ImageStatus PullImage"; got != want {
		t.Errorf("got %s\nwant %s", got, want)
	}
	if f.Complete {
		t.Error("a pod whose image never pulled is marked complete")
	}
	if e := f.Steps[2].Err; e != "Unknown: failed to pull: not found" {
		t.Errorf("PullImage error = %q", e)
	}
}

func TestInitContainerJoinsStart(t *testing.T) {
	cs := &calls{t0: time.Unix(1700000000, 0)}
	cs.startPod("default", "withinit", "uid-i", "sbi", "init")
	cs.wait(5 * time.Second) // the init container runs
	cs.add("ContainerStatus", &runtimeapi.ContainerStatusRequest{ContainerId: "sbi-init"}, &runtimeapi.ContainerStatusResponse{}, 0, time.Millisecond)
	cs.add("CreateContainer", &runtimeapi.CreateContainerRequest{PodSandboxId: "sbi", Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "app"}}},
		&runtimeapi.CreateContainerResponse{ContainerId: "sbi-app"}, 0, time.Millisecond)
	cs.add("StartContainer", &runtimeapi.StartContainerRequest{ContainerId: "sbi-app"}, &runtimeapi.StartContainerResponse{}, 0, time.Millisecond)
	flows := Group(cs.list, Options{})
	if len(flows) != 1 {
		t.Fatalf("got %d flows, want 1", len(flows))
	}
	if got, want := methods(flows[0]), "RunPodSandbox PodSandboxStatus ImageStatus CreateContainer StartContainer CreateContainer StartContainer"; got != want {
		t.Errorf("got %s\nwant %s", got, want)
	}
}

func TestShort(t *testing.T) {
	for in, want := range map[string]string{
		"fd90439adcdc0123456789abcdef0123456789abcdef": "fd90439adcdc…",
		"sha256:aa4d74f6e7d30123456789abcdef0123":      "sha256:aa4d74f6e7d3…",
		"docker.io/library/nginx:1.25":                 "docker.io/library/nginx:1.25",
		"short":                                        "short",
	} {
		if got := Short(in); got != want {
			t.Errorf("Short(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestLiveHandsOutEarlyAndGrows: in live mode a start is handed out Grace
// after its StartContainer, and again when the next container comes.
func TestLiveHandsOutEarlyAndGrows(t *testing.T) {
	cs := &calls{t0: time.Unix(1700000000, 0)}
	cs.startPod("default", "withinit", "uid-i", "sbi", "init")
	g := NewGrouper(Options{Live: true})
	var got []*Flow
	for _, c := range cs.list {
		got = append(got, g.Add(c)...)
	}
	if len(got) != 0 {
		t.Fatalf("handed out %d flows before Grace", len(got))
	}
	last := cs.list[len(cs.list)-1].End
	got = g.Tick(last.Add(3 * time.Second))
	if len(got) != 1 || len(got[0].Steps) != 5 {
		t.Fatalf("after Grace: %d flows, want the start with 5 steps", len(got))
	}
	first := got[0]
	cs.list = nil
	cs.wait(5 * time.Second)
	cs.add("CreateContainer", &runtimeapi.CreateContainerRequest{PodSandboxId: "sbi", Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "app"}}},
		&runtimeapi.CreateContainerResponse{ContainerId: "sbi-app"}, 0, time.Millisecond)
	cs.add("StartContainer", &runtimeapi.StartContainerRequest{ContainerId: "sbi-app"}, &runtimeapi.StartContainerResponse{}, 0, time.Millisecond)
	for _, c := range cs.list {
		got = append(got, g.Add(c)...)
	}
	got = g.Tick(cs.list[len(cs.list)-1].End.Add(3 * time.Second))
	if len(got) != 1 || got[0] != first || len(first.Steps) != 7 || !first.Complete {
		t.Fatalf("the grown flow was not handed out again: %d flows", len(got))
	}
	if rest := g.Flush(); len(rest) != 0 {
		t.Errorf("Flush handed out %d flows already given", len(rest))
	}
}

// TestLiveStopHandedOutWhenDown: live, a real pod stop (kubelet 1.37,
// testdata/kubelet-pull) is handed out once the pod is down, long before
// kubelet's clean-up removes its sandbox, and again, the same flow grown
// to the offline one, when RemovePodSandbox comes.
func TestLiveStopHandedOutWhenDown(t *testing.T) {
	calls := captureCalls(t, "kubelet-pull")
	var offline *Flow
	for _, f := range Group(calls, Options{}) {
		if f.Kind == Stop {
			offline = f
		}
	}
	if offline == nil || !offline.Complete {
		t.Fatal("kubelet-pull: no complete stop flow offline")
	}
	var removeAt time.Time
	for _, s := range offline.Steps {
		if s.Method == "RemovePodSandbox" {
			removeAt = s.Start
		}
	}
	g := NewGrouper(Options{Live: true})
	var outs []*Flow
	var handed *Flow
	var at []time.Time
	for _, c := range calls {
		for _, f := range g.Add(c) {
			if f.Kind == Stop {
				if len(outs) > 0 && f != handed {
					t.Errorf("a second stop flow handed out")
				}
				handed = f
				cp := *f // as it was handed out: finish fills f again
				outs = append(outs, &cp)
				at = append(at, c.Start)
			}
		}
	}
	for _, f := range g.Flush() {
		if f.Kind == Stop {
			t.Errorf("Flush handed out the stop again (complete %v)", f.Complete)
		}
	}
	if len(outs) < 2 {
		t.Fatalf("the stop was handed out %d times, want when the pod was down, then complete", len(outs))
	}
	first, last := outs[0], outs[len(outs)-1]
	if first.Complete || first.Done.IsZero() || !at[0].Before(removeAt) || at[0].Sub(first.Done) > 5*time.Second {
		t.Errorf("first hand-out at %v: complete %v, down at %v; want incomplete, handed out within 5s of the pod down, before RemovePodSandbox at %v",
			at[0], first.Complete, first.Done, removeAt)
	}
	t.Logf("handed out %d times; first %v after the pod was down, %v before RemovePodSandbox", len(outs), at[0].Sub(first.Done).Round(time.Millisecond), removeAt.Sub(at[0]).Round(time.Millisecond))
	if !last.Complete || len(last.Steps) != len(offline.Steps) || !last.Done.Equal(offline.Done) || !last.End.Equal(offline.End) {
		t.Errorf("last hand-out: complete %v, %d steps, done %v, end %v; offline: %d steps, done %v, end %v",
			last.Complete, len(last.Steps), last.Done, last.End, len(offline.Steps), offline.Done, offline.End)
	}
}
