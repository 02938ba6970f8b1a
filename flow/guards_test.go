package flow

import (
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
	"weak"

	"golang.org/x/net/http2/hpack"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/criseq/criseq/decode"
)

// An image call made before the pod's sandbox was ready (a pull by hand,
// another pod's check) is not the pod's, even for the same image.
func TestImageCallBeforeSandboxReadyNotClaimed(t *testing.T) {
	cs := &calls{t0: time.Unix(1700000000, 0)}
	img := &runtimeapi.ImageSpec{Image: "registry/app:1"}
	early := cs.add("ImageStatus", &runtimeapi.ImageStatusRequest{Image: img},
		&runtimeapi.ImageStatusResponse{Image: &runtimeapi.Image{Id: "sha256:aaaa"}}, 0, time.Millisecond)
	// One that starts while RunPodSandbox is still open is early too.
	cs.at = 0
	cs.startPod("default", "web", "uid-1", "sb1", "app")
	during := cs.add("ImageStatus", &runtimeapi.ImageStatusRequest{Image: img},
		&runtimeapi.ImageStatusResponse{Image: &runtimeapi.Image{Id: "sha256:aaaa"}}, 0, time.Millisecond)
	during.Start, during.End = cs.t0.Add(50*time.Millisecond), cs.t0.Add(51*time.Millisecond)
	flows := Group(cs.list, Options{})
	if len(flows) != 1 {
		t.Fatalf("%d flows, want 1", len(flows))
	}
	for _, s := range flows[0].Steps {
		if s.Call == early || s.Call == during {
			t.Errorf("ImageStatus at +%s, before the sandbox was ready, is in the pod's flow", s.Start.Sub(cs.t0))
		}
	}
	if got := strings.Count(methods(flows[0]), "ImageStatus"); got != 1 {
		t.Errorf("%d ImageStatus calls in the flow, want the pod's own 1: %s", got, methods(flows[0]))
	}
}

// A stop is complete only when RemovePodSandbox succeeded.
func TestFailedRemovePodSandboxLeavesStopIncomplete(t *testing.T) {
	for _, status := range []int{0, 2} {
		cs := &calls{t0: time.Unix(1700000000, 0)}
		cs.startPod("default", "web", "uid-1", "sb1", "app")
		cs.wait(time.Minute)
		cs.add("StopContainer", &runtimeapi.StopContainerRequest{ContainerId: "sb1-app"}, &runtimeapi.StopContainerResponse{}, 0, 50*time.Millisecond)
		cs.add("StopPodSandbox", &runtimeapi.StopPodSandboxRequest{PodSandboxId: "sb1"}, &runtimeapi.StopPodSandboxResponse{}, 0, 40*time.Millisecond)
		cs.add("RemovePodSandbox", &runtimeapi.RemovePodSandboxRequest{PodSandboxId: "sb1"}, &runtimeapi.RemovePodSandboxResponse{}, status, 5*time.Millisecond)
		var stop *Flow
		for _, f := range Group(cs.list, Options{}) {
			if f.Kind == Stop {
				stop = f
			}
		}
		if stop == nil {
			t.Fatal("no stop flow")
		}
		if want := status == 0; stop.Complete != want {
			t.Errorf("RemovePodSandbox status %d: stop complete = %v, want %v", status, stop.Complete, want)
		}
	}
}

// Phases and waits add up to the total; the wait for the pull queue and
// kubelet's clean-up are named.
func TestTimingAddsUp(t *testing.T) {
	t0 := time.Unix(1700000000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	step := func(method string, from, to int) Step {
		return Step{Method: method, Start: at(from), Duration: at(to).Sub(at(from)), Done: true}
	}
	start := &Flow{Kind: Start, Start: at(0), Done: at(1500), Steps: []Step{
		step("RunPodSandbox", 0, 200),
		step("PodSandboxStatus", 201, 202),
		step("PullImage", 900, 1000), // queued behind another pod's pull from 150 to 850
		step("ImageStatus", 1001, 1003),
		step("CreateContainer", 1010, 1100),
		step("ContainerStatus", 1050, 1060), // status: no phase
		step("StartContainer", 1100, 1500),
	}, OtherPulls: []Interval{{at(150), at(850)}}}
	tm := start.Timing()
	want := map[string]time.Duration{"sandbox": 200 * time.Millisecond, "image": 102 * time.Millisecond,
		"create": 90 * time.Millisecond, "start": 400 * time.Millisecond,
		WaitPullQueue: 650 * time.Millisecond, WaitKubelet: 58 * time.Millisecond}
	var sum time.Duration
	for _, p := range tm.Parts {
		sum += p.Dur
		if p.Dur != want[p.Name] {
			t.Errorf("%s: %s, want %s", p.Name, p.Dur, want[p.Name])
		}
		delete(want, p.Name)
	}
	for name := range want {
		t.Errorf("no %s in %+v", name, tm.Parts)
	}
	if sum != tm.Total || tm.Total != 1500*time.Millisecond {
		t.Errorf("parts add up to %s, total %s", sum, tm.Total)
	}

	stop := &Flow{Kind: Stop, Start: at(0), Done: at(500), Steps: []Step{
		step("StopContainer", 0, 300),
		step("StopContainer", 0, 320), // two containers stopped together count once
		step("StopPodSandbox", 330, 500),
		step("StopPodSandbox", 8000, 8010),
		step("RemovePodSandbox", 8010, 8020),
	}}
	tm = stop.Timing()
	var before, after time.Duration
	for _, p := range tm.Parts {
		before += p.Dur
	}
	for _, p := range tm.After {
		after += p.Dur
	}
	if before != 500*time.Millisecond || after != 7520*time.Millisecond {
		t.Errorf("stop: %s before done, %s after; want 500ms, 7.52s: %+v / %+v", before, after, tm.Parts, tm.After)
	}
	if len(tm.After) == 0 || tm.After[len(tm.After)-1].Name != WaitCleanUp || tm.After[len(tm.After)-1].Dur != 7500*time.Millisecond {
		t.Errorf("stop: no 7.5s wait for kubelet's clean-up in %+v", tm.After)
	}
}

// The runtime's container events join their pod's flows: creation and
// start the start, stop and deletion the stop.
func TestEventsJoinTheirPod(t *testing.T) {
	cs := &calls{t0: time.Unix(1700000000, 0)}
	g := NewGrouper(Options{})
	stream := &decode.Call{Conn: 1, Stream: 1, Name: "GetContainerEvents", Known: true}
	event := func(typ runtimeapi.ContainerEventType, cid string, at time.Duration) {
		g.Event(stream, decode.Message{Time: cs.t0.Add(at), Proto: &runtimeapi.ContainerEventResponse{
			ContainerId: cid, ContainerEventType: typ, CreatedAt: cs.t0.Add(at).UnixNano(),
			PodSandboxStatus: &runtimeapi.PodSandboxStatus{Id: "sb1", Metadata: &runtimeapi.PodSandboxMetadata{Name: "web", Namespace: "default", Uid: "uid-1"}}}})
	}
	var flows []*Flow
	cs.startPod("default", "web", "uid-1", "sb1", "app")
	for _, c := range cs.list {
		flows = append(flows, g.Add(c)...)
		if c.Name == "CreateContainer" {
			event(runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT, "sb1-app", c.End.Sub(cs.t0))
		}
		if c.Name == "StartContainer" {
			event(runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT, "sb1-app", c.End.Sub(cs.t0))
		}
	}
	n := len(cs.list)
	cs.wait(time.Minute)
	cs.add("StopContainer", &runtimeapi.StopContainerRequest{ContainerId: "sb1-app"}, &runtimeapi.StopContainerResponse{}, 0, 50*time.Millisecond)
	flows = append(flows, g.Add(cs.list[n])...)
	event(runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT, "sb1-app", cs.at)
	flows = append(flows, g.Flush()...)
	got := map[Kind]string{}
	for _, f := range flows {
		for _, e := range f.Events {
			got[f.Kind] += e.Type + " " + e.Container + ";"
		}
	}
	if want := "CONTAINER_CREATED app;CONTAINER_STARTED app;"; got[Start] != want {
		t.Errorf("start events %q, want %q", got[Start], want)
	}
	if want := "CONTAINER_STOPPED app;"; got[Stop] != want {
		t.Errorf("stop events %q, want %q", got[Stop], want)
	}
}

// exact (the pod an image call names outright) is kept per call until
// the ledger's owners or traces change: a sandbox added, or a trace
// learnt, after a call was first weighed names it then.
func TestExactFollowsOwnersAndTraces(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	cs := &calls{t0: t0}
	cfg := podConfig("default", "web", "uid-web")
	run := cs.add("RunPodSandbox", &runtimeapi.RunPodSandboxRequest{Config: cfg}, &runtimeapi.RunPodSandboxResponse{PodSandboxId: "sb-web"}, 0, 100*time.Millisecond)
	pull := cs.add("PullImage", &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "registry/app:1"}, SandboxConfig: cfg},
		&runtimeapi.PullImageResponse{ImageRef: "sha256:aaaa"}, 0, 50*time.Millisecond)
	pull.Start = run.Start.Add(10 * time.Millisecond) // made while the sandbox call was still open
	g := NewGrouper(Options{})
	g.Add(pull)
	if len(g.images.calls) != 1 {
		t.Fatalf("%d image calls in the ledger, want the pull", len(g.images.calls))
	}
	ic := g.images.calls[0]
	if ow := g.images.exact(ic, false); ow != nil {
		t.Fatalf("pull names %v before its sandbox was seen", ow.pod)
	}
	g.Add(run)
	if ow := g.images.exact(ic, false); ow == nil || ow.sid != "sb-web" {
		t.Errorf("pull names %v once its sandbox is seen, want sb-web", ow)
	}

	// A trace learnt after an image call was weighed.
	l := &ledger{traces: map[string]*owner{}}
	st := &decode.Call{Name: "ImageStatus", Known: true, Start: t0, End: t0.Add(time.Millisecond),
		Requests:       []decode.Message{{Proto: &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: "registry/app:1"}}}},
		RequestHeaders: []hpack.HeaderField{{Name: "traceparent", Value: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}}
	ic = newImageCall(st)
	if ic.trace == "" {
		t.Fatal("no trace read from the traceparent")
	}
	if ow := l.exact(ic, false); ow != nil {
		t.Fatalf("status call names %v before its trace is known", ow.pod)
	}
	ow := &owner{pod: Pod{Namespace: "default", Name: "web", UID: "uid-web"}, sid: "sb-web"}
	l.addTrace(ic.trace, ow)
	if got := l.exact(ic, false); got != ow {
		t.Errorf("status call names %v once its trace is known, want sb-web", got)
	}
}

// TestHandedOutFlowsNotKept: a pod whose image never pulls keeps its
// start flow open for ten minutes, and the image ledger keeps what may
// still be attributed until then; the flows handed out meanwhile must not
// be kept with it (on a busy node that was every flow of those minutes).
func TestHandedOutFlowsNotKept(t *testing.T) {
	cs := &calls{t0: time.Unix(1700000000, 0)}
	cfg := podConfig("default", "broken", "uid-b")
	cs.add("RunPodSandbox", &runtimeapi.RunPodSandboxRequest{Config: cfg}, &runtimeapi.RunPodSandboxResponse{PodSandboxId: "sbb"}, 0, 100*time.Millisecond)
	img := &runtimeapi.ImageSpec{Image: "127.0.0.1:5000/missing:1"}
	cs.add("PullImage", &runtimeapi.PullImageRequest{Image: img, SandboxConfig: cfg}, nil, 2, 20*time.Millisecond)
	for i := range 40 {
		cs.wait(10 * time.Second)
		id := strconv.Itoa(i)
		cs.startPod("default", "web-"+id, "uid-"+id, "sb-"+id, "app")
	}
	g := NewGrouper(Options{})
	var handed []weak.Pointer[Flow]
	for _, c := range cs.list {
		for _, f := range g.Add(c) {
			if f.Pod.Name == "broken" {
				t.Fatal("the broken pod's start was handed out within ten minutes")
			}
			handed = append(handed, weak.Make(f))
		}
	}
	if len(handed) < 20 {
		t.Fatalf("%d flows handed out, want most of the 40 starts", len(handed))
	}
	runtime.GC()
	kept := 0
	for _, w := range handed {
		if w.Value() != nil {
			kept++
		}
	}
	if kept > 0 {
		t.Errorf("%d of %d flows handed out are still kept by the grouper", kept, len(handed))
	}
	runtime.KeepAlive(g)
}
