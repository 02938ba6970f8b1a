package lab_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/criseq/criseq/decode"
	"github.com/criseq/criseq/flow"
)

// The burst scenario (lab/run.sh): 10 pods pulling registryImage (Always)
// and 10 on localImage (IfNotPresent), dropped at once, then removed at once.
const (
	burstPods     = 20
	registryImage = "127.0.0.1:5000/criseq/app:1"
	localImage    = "criseq.local/burst:1"
)

// TestBurstCaptures runs the burst checks on the committed burst captures
// (no root needed): the ground truth the attribution is judged by must hold
// on the very files the golden tests use (whose tshark check is in
// cmd/criseq's TestTsharkAgrees).
func TestBurstCaptures(t *testing.T) {
	for dir, rt := range map[string]string{"kubelet-burst": "containerd", "kubelet-burst-containerd2": "containerd2"} {
		t.Run(dir, func(t *testing.T) {
			path := filepath.Join("..", "testdata", dir, "capture.pcapng")
			if _, err := os.Stat(path); err != nil {
				t.Fatalf("the committed burst capture is missing: %v", err)
			}
			calls := decodeFile(t, path)
			checkBurst(t, rt, calls, flow.Group(calls, flow.Options{}))
		})
	}
}

// CallID names a call of a capture by its connection and HTTP/2 stream, as
// criseq's calls and render outputs do.
type CallID struct {
	Conn   uint64
	Stream uint32
}

func idOf(c *decode.Call) CallID { return CallID{c.Conn, c.Stream} }

// TraceID is the trace id of a call's W3C traceparent header
// ("00-<trace id>-<span id>-<flags>"), or "" if it carries none.
func TraceID(c *decode.Call) string {
	for _, h := range c.RequestHeaders {
		if h.Name == "traceparent" {
			if p := strings.Split(h.Value, "-"); len(p) == 4 && len(p[1]) == 32 {
				return p[1]
			}
		}
	}
	return ""
}

// sandboxConfig is the pod a request names through its sandbox config
// (RunPodSandbox, CreateContainer, PullImage), if any.
func sandboxConfig(c *decode.Call) *runtimeapi.PodSandboxConfig {
	switch r := c.Request().(type) {
	case *runtimeapi.RunPodSandboxRequest:
		return r.GetConfig()
	case *runtimeapi.CreateContainerRequest:
		return r.GetSandboxConfig()
	case *runtimeapi.PullImageRequest:
		return r.GetSandboxConfig()
	}
	return nil
}

func podOf(cfg *runtimeapi.PodSandboxConfig) flow.Pod {
	m := cfg.GetMetadata()
	return flow.Pod{Namespace: m.GetNamespace(), Name: m.GetName(), UID: m.GetUid()}
}

// imageSpec is the image an image call asks about, or nil for other calls.
func imageSpec(c *decode.Call) *runtimeapi.ImageSpec {
	switch r := c.Request().(type) {
	case *runtimeapi.ImageStatusRequest:
		return r.GetImage()
	case *runtimeapi.PullImageRequest:
		return r.GetImage()
	}
	return nil
}

// ImageOwners is the ground truth for the image calls (ImageStatus,
// PullImage) of a capture made with kubelet's tracing on: every call of one
// pod's sync carries that sync's trace id, and the RunPodSandbox,
// CreateContainer and PullImage requests of the trace name the pod in their
// sandbox config. So an image call whose trace id is a pod's belongs to that
// pod. It returns the owner of each such call; image calls whose trace names
// no pod (or that carry no traceparent) are left out. It fails if one trace
// names two pods. The attribution check compares criseq's flows with it.
func ImageOwners(calls []*decode.Call) (map[CallID]flow.Pod, error) {
	byTrace := map[string]flow.Pod{}
	for _, c := range calls {
		cfg, tid := sandboxConfig(c), TraceID(c)
		if cfg == nil || tid == "" {
			continue
		}
		p := podOf(cfg)
		if q, ok := byTrace[tid]; ok && q != p {
			return nil, fmt.Errorf("trace %s names two pods: %s and %s", tid, q, p)
		}
		byTrace[tid] = p
	}
	owners := map[CallID]flow.Pod{}
	for _, c := range calls {
		if imageSpec(c) == nil {
			continue
		}
		if p, ok := byTrace[TraceID(c)]; ok {
			owners[idOf(c)] = p
		}
	}
	return owners, nil
}

// annotationOwner is the pod whose sandbox annotations include every
// annotation the image call's ImageSpec carries (kubelet copies the pod's
// annotations there on PullImage and a container's first ImageStatus):
// the pod and true when exactly one fits.
func annotationOwner(spec *runtimeapi.ImageSpec, sandboxes map[flow.Pod]map[string]string) (flow.Pod, bool) {
	if len(spec.GetAnnotations()) == 0 {
		return flow.Pod{}, false
	}
	var fit []flow.Pod
	for p, ann := range sandboxes {
		all := true
		for k, v := range spec.GetAnnotations() {
			all = all && ann[k] == v
		}
		if all {
			fit = append(fit, p)
		}
	}
	if len(fit) != 1 {
		return flow.Pod{}, false
	}
	return fit[0], true
}

// checkAttribution is where criseq's attribution is checked against the
// ground truth: every image call drawn in the diagram of the pod
// ImageOwners names, and in no other.
//
// checkAttribution checks that every image call whose pod its trace names
// is drawn in that pod's diagram: attributed to it alone, or marked
// ambiguous with it among the candidates, and never in another pod's
// diagram alone. With the traceparent used, none may be ambiguous; then the
// same again with the traceparent ignored (kubelet without tracing), where
// kubelet's order, the sandbox config and the annotations must be enough
// to be never wrong; the ambiguous ones are counted.
func checkAttribution(t *testing.T, calls []*decode.Call, flows []*flow.Flow, owners map[CallID]flow.Pod) {
	t.Helper()
	for _, mode := range []string{"traceparent", "no traceparent", "no traceparent, no annotations"} {
		ignore := mode != "traceparent"
		switch mode {
		case "no traceparent":
			flows = flow.Group(calls, flow.Options{IgnoreTraceparent: true})
		case "no traceparent, no annotations":
			// As an older kubelet sends them: image specs without the pod's annotations.
			flows = flow.Group(withoutImageAnnotations(calls), flow.Options{IgnoreTraceparent: true})
		}
		drawn := map[CallID][]flow.Step{}
		in := map[CallID][]flow.Pod{}
		for _, f := range flows {
			for _, s := range f.Steps {
				id := idOf(s.Call)
				if _, ok := owners[id]; ok {
					drawn[id] = append(drawn[id], s)
					in[id] = append(in[id], f.Pod)
				}
			}
		}
		by := map[string]int{}
		wrong, missing, ambiguous := 0, 0, 0
		for id, p := range owners {
			steps := drawn[id]
			if len(steps) == 0 {
				missing++
				t.Errorf("%s: image call (conn %d, stream %d) of %s is in no diagram", mode, id.Conn, id.Stream, p)
				continue
			}
			mine := false
			for _, q := range in[id] {
				mine = mine || q == p
			}
			if !mine {
				wrong++
				t.Errorf("%s: image call (conn %d, stream %d) of %s drawn in %v (%s)", mode, id.Conn, id.Stream, p, in[id], steps[0].Attr.By)
				continue
			}
			if steps[0].Attr.By == flow.ByAmbiguous {
				ambiguous++
				for _, s := range steps {
					if len(s.Attr.Candidates) != len(steps) {
						t.Errorf("ambiguous call (conn %d, stream %d) in %d diagrams, %d candidates", id.Conn, id.Stream, len(steps), len(s.Attr.Candidates))
					}
				}
			} else if len(steps) != 1 {
				t.Errorf("call (conn %d, stream %d) attributed %q but in %d diagrams", id.Conn, id.Stream, steps[0].Attr.By, len(steps))
			}
			by[steps[0].Attr.By]++
		}
		t.Logf("%s: %d image calls whose pod the trace names: %d wrong, %d in no diagram, %d ambiguous; attributed by %v",
			mode, len(owners), wrong, missing, ambiguous, by)
		if !ignore && ambiguous > 0 {
			t.Errorf("with the traceparent, %d image calls are ambiguous", ambiguous)
		}
	}
}

// withoutImageAnnotations returns calls with the annotations taken out of
// every image spec (the calls and their requests are copies).
func withoutImageAnnotations(calls []*decode.Call) []*decode.Call {
	out := make([]*decode.Call, len(calls))
	for i, c := range calls {
		out[i] = c
		if imageSpec(c) == nil || len(imageSpec(c).GetAnnotations()) == 0 {
			continue
		}
		cc := *c
		cc.Requests = append([]decode.Message(nil), c.Requests...)
		req := proto.Clone(c.Request())
		switch r := req.(type) {
		case *runtimeapi.ImageStatusRequest:
			r.Image.Annotations = nil
		case *runtimeapi.PullImageRequest:
			r.Image.Annotations = nil
		}
		cc.Requests[0].Proto = req
		out[i] = &cc
	}
	return out
}

// checkBurst checks the burst scenario on runtime rt: all 20 pods ran and
// were removed with the right number of calls, every call of each pod's sync
// carries its trace, and the image calls' owners by trace agree with the
// sandbox config and annotations they carry.
func checkBurst(t *testing.T, rt string, calls []*decode.Call, flows []*flow.Flow) {
	t.Helper()
	count, untraced := map[string]int{}, map[string]int{}
	for _, c := range calls {
		count[c.Name]++
		if TraceID(c) == "" {
			untraced[c.Name]++
		}
	}
	t.Logf("%s: %d calls: %v", rt, len(calls), count)
	// With tracing on, kubelet's CRI client sends a traceparent on every
	// call, its pods' syncs and its polling alike.
	if len(untraced) > 0 {
		t.Errorf("calls without a traceparent, by method: %v", untraced)
	}

	// The pods, by the sandbox RunPodSandbox returned, and their containers.
	sandboxes := map[string]flow.Pod{}              // sandbox ID → pod
	trace := map[flow.Pod]string{}                  // pod → its start sync's trace id
	annotations := map[flow.Pod]map[string]string{} // pod → its sandbox annotations
	containers := map[string]flow.Pod{}             // container ID → pod
	image := map[flow.Pod]string{}                  // pod → its container's image
	for _, c := range calls {
		if r, ok := c.Request().(*runtimeapi.RunPodSandboxRequest); ok && c.OK() {
			p := podOf(r.GetConfig())
			sandboxes[c.Response().(*runtimeapi.RunPodSandboxResponse).GetPodSandboxId()] = p
			trace[p] = TraceID(c)
			annotations[p] = r.GetConfig().GetAnnotations()
		}
	}
	wantPods := func(method string, n int) {
		t.Helper()
		if count[method] != n {
			t.Errorf("%d %s calls, want %d", count[method], method, n)
		}
	}
	wantPods("RunPodSandbox", burstPods)
	if len(sandboxes) != burstPods {
		t.Fatalf("%d pods got a sandbox, want %d", len(sandboxes), burstPods)
	}
	wantPods("CreateContainer", burstPods)
	wantPods("StartContainer", burstPods)
	wantPods("PullImage", burstPods/2) // one per Always pod
	wantPods("RemoveContainer", burstPods)
	wantPods("RemovePodSandbox", burstPods)

	// Every call about a pod's sandbox or container succeeded; the calls
	// of its start sync carry its trace.
	stops := map[string]int{}
	for _, c := range calls {
		sid, cid := "", ""
		switch r := c.Request().(type) {
		case *runtimeapi.CreateContainerRequest:
			sid = r.GetPodSandboxId()
			if c.OK() {
				p := sandboxes[sid]
				containers[c.Response().(*runtimeapi.CreateContainerResponse).GetContainerId()] = p
				// kubelet passes the resolved image ID and the name the pod asked for.
				image[p] = r.GetConfig().GetImage().GetUserSpecifiedImage()
			}
		case *runtimeapi.StartContainerRequest:
			cid = r.GetContainerId()
		case *runtimeapi.StopContainerRequest:
			cid = r.GetContainerId()
		case *runtimeapi.RemoveContainerRequest:
			cid = r.GetContainerId()
		case *runtimeapi.StopPodSandboxRequest:
			sid = r.GetPodSandboxId()
		case *runtimeapi.RemovePodSandboxRequest:
			sid = r.GetPodSandboxId()
		default:
			continue
		}
		p, ok := sandboxes[sid]
		if cid != "" {
			p, ok = containers[cid]
			stops[c.Name+" "+cid]++
		} else {
			stops[c.Name+" "+sid]++
		}
		if !ok {
			t.Errorf("%s of %s%s, which no pod of the burst has", c.Name, sid, cid)
			continue
		}
		if !c.OK() {
			t.Errorf("%s of %s failed: %d %s", c.Name, p, c.Status, c.Message)
		}
		if tid := TraceID(c); (c.Name == "CreateContainer" || c.Name == "StartContainer") && tid != trace[p] {
			t.Errorf("%s of %s in trace %s, its RunPodSandbox in %s: not one sync", c.Name, p, tid, trace[p])
		}
	}
	for cid, p := range containers {
		for _, m := range []string{"StartContainer", "RemoveContainer"} {
			if n := stops[m+" "+cid]; n != 1 {
				t.Errorf("%s of %s's container: %d calls, want 1", m, p, n)
			}
		}
		if stops["StopContainer "+cid] < 1 {
			t.Errorf("%s's container was never stopped", p)
		}
	}
	for sid, p := range sandboxes {
		if n := stops["RemovePodSandbox "+sid]; n != 1 {
			t.Errorf("RemovePodSandbox of %s: %d calls, want 1", p, n)
		}
		if stops["StopPodSandbox "+sid] < 1 {
			t.Errorf("%s's sandbox was never stopped", p)
		}
	}
	pulls, locals := 0, 0
	for p, img := range image {
		switch {
		case strings.HasPrefix(p.Name, "burst-pull-") && img == registryImage:
			pulls++
		case strings.HasPrefix(p.Name, "burst-local-") && img == localImage:
			locals++
		default:
			t.Errorf("%s runs image %q", p, img)
		}
	}
	if pulls != burstPods/2 || locals != burstPods/2 {
		t.Errorf("%d pods pulled %s and %d ran %s, want %d each", pulls, registryImage, locals, localImage, burstPods/2)
	}

	// Image calls: the trace says whose they are; the sandbox config
	// (PullImage) and the annotations, where present, must say the same.
	owners, err := ImageOwners(calls)
	if err != nil {
		t.Fatal(err)
	}
	var imageCalls, traced, owned, byAnn, byConfig int
	for _, c := range calls {
		spec := imageSpec(c)
		if spec == nil {
			continue
		}
		imageCalls++
		if TraceID(c) != "" {
			traced++
		}
		p, ok := owners[idOf(c)]
		if ok {
			owned++
			if spec.GetImage() != image[p] {
				t.Errorf("%s of %s in %s's trace, which runs %s", c.Name, spec.GetImage(), p, image[p])
			}
		}
		if q, ok2 := annotationOwner(spec, annotations); ok2 {
			byAnn++
			if !ok || q != p {
				t.Errorf("%s (stream %d) carries %s's annotations but is in the trace of %v", c.Name, c.Stream, q, p)
			}
		}
		if cfg := sandboxConfig(c); cfg != nil {
			byConfig++
			if q := podOf(cfg); !ok || q != p {
				t.Errorf("PullImage for %s is in the trace of %v", q, p)
			}
		}
	}
	t.Logf("%s: %d image calls: %d carry a traceparent, %d in a pod's sync trace, %d carry the pod's annotations, %d its sandbox config",
		rt, imageCalls, traced, owned, byAnn, byConfig)
	if imageCalls == 0 || traced != imageCalls {
		t.Errorf("%d of %d image calls carry a traceparent, want all", traced, imageCalls)
	}
	// Every pod's sync asked for its image at least once.
	seen := map[flow.Pod]bool{}
	for _, p := range owners {
		seen[p] = true
	}
	if len(seen) != burstPods {
		t.Errorf("image calls of %d pods found by trace, want %d", len(seen), burstPods)
	}

	checkEvents(t, rt, calls, containers, sandboxes)

	// criseq's flows: one start and one stop per pod, linked by ID.
	var names []string
	for _, p := range sandboxes {
		names = append(names, p.String())
	}
	sort.Strings(names)
	for _, name := range names {
		f := only(t, flows, flow.Start, name)
		wantOrder(t, f, "RunPodSandbox", "CreateContainer", "StartContainer")
		checkLinks(t, f)
		if !f.Complete {
			t.Errorf("start of %s not complete", name)
		}
		s := only(t, flows, flow.Stop, name)
		wantOrder(t, s, "StopContainer", "StopPodSandbox", "RemoveContainer", "RemovePodSandbox")
		if !s.Complete || s.SandboxID != f.SandboxID {
			t.Errorf("stop of %s: complete=%v sandbox %s, want complete and %s", name, s.Complete, s.SandboxID, f.SandboxID)
		}
	}
	checkAttribution(t, calls, flows, owners)
}

// checkEvents: with the EventedPLEG gate on kubelet opens a
// GetContainerEvents stream. containerd 2.x serves it: each burst container
// is reported created, started, stopped and deleted. Debian's containerd 1.6
// answers Unimplemented, and kubelet goes on with its relisting PLEG.
// containerd 2.x also replays events it kept from before the stream opened
// (pods of earlier lab scenarios): they are counted, not checked.
func checkEvents(t *testing.T, rt string, calls []*decode.Call, containers, sandboxes map[string]flow.Pod) {
	t.Helper()
	var streams []*decode.Call
	for _, c := range calls {
		if c.Name == "GetContainerEvents" {
			streams = append(streams, c)
		}
	}
	if len(streams) == 0 {
		t.Fatal("kubelet opened no GetContainerEvents stream (EventedPLEG on)")
	}
	if rt == "containerd" {
		for _, c := range streams {
			if c.Status != 12 { // codes.Unimplemented
				t.Errorf("containerd 1.6 answered GetContainerEvents with status %d %q, want Unimplemented", c.Status, c.Message)
			}
		}
		t.Logf("%s: %d GetContainerEvents calls, all Unimplemented", rt, len(streams))
		return
	}
	seen := map[string]int{}
	events, others := 0, 0
	for _, c := range streams {
		for _, m := range c.Responses {
			e, ok := m.Proto.(*runtimeapi.ContainerEventResponse)
			if !ok {
				continue
			}
			events++
			id := e.GetContainerId()
			if _, ours := containers[id]; ours {
				seen[id+" "+e.GetContainerEventType().String()]++
			} else if _, ours := sandboxes[id]; !ours {
				others++
			}
		}
	}
	t.Logf("%s: %d GetContainerEvents streams, %d events (%d about containers of no burst pod)", rt, len(streams), events, others)
	for cid, p := range containers {
		for _, ev := range []runtimeapi.ContainerEventType{runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT,
			runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT, runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT,
			runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT} {
			if seen[cid+" "+ev.String()] != 1 {
				t.Errorf("%s's container: %d %s events, want 1", p, seen[cid+" "+ev.String()], ev)
			}
		}
	}
}
