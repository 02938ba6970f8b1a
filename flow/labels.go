package flow

import (
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/criseq/criseq/decode"
)

// learn records what a call tells about pods, containers and the runtime.
func (g *Grouper) learn(c *decode.Call) {
	if g.opts.DropLists && len(c.Responses) > 0 && c.Responses[0].Proto == nil && c.Responses[0].Wire != nil {
		g.learnItems(c.Responses[0].Wire) // a large list kept as it came (decode.Options.ListsAbove)
		return
	}
	switch r := c.Response().(type) {
	case *runtimeapi.VersionResponse:
		if r.GetRuntimeName() != "" {
			g.runtime = strings.TrimSpace(r.GetRuntimeName() + " " + r.GetRuntimeVersion())
		}
	case *runtimeapi.ListPodSandboxResponse:
		for _, s := range r.GetItems() {
			g.learnPod(s.GetId(), s.GetMetadata())
		}
	case *runtimeapi.PodSandboxStatusResponse:
		g.learnPod(r.GetStatus().GetId(), r.GetStatus().GetMetadata())
	case *runtimeapi.ListContainersResponse:
		for _, ct := range r.GetContainers() {
			g.learnContainer(ct.GetId(), ct.GetPodSandboxId(), ct.GetMetadata().GetName())
		}
	case *runtimeapi.ContainerStatusResponse:
		st := r.GetStatus()
		if cid := st.GetId(); cid != "" && st.GetMetadata().GetName() != "" {
			ci := g.containers[cid]
			ci.name = st.GetMetadata().GetName()
			g.containers[cid] = ci
		}
	case *runtimeapi.CreateContainerResponse:
		req, _ := c.Request().(*runtimeapi.CreateContainerRequest)
		g.learnContainer(r.GetContainerId(), req.GetPodSandboxId(), req.GetConfig().GetMetadata().GetName())
	}
}

// learnItems learns from a list answer kept as it came, one item at a
// time, as learn does from one decoded whole.
func (g *Grouper) learnItems(w *decode.WireMessage) {
	switch w.Type.FullName() {
	case "runtime.v1.ListPodSandboxResponse":
		s := &runtimeapi.PodSandbox{}
		w.Items(s, func() { g.learnPod(s.GetId(), s.GetMetadata()) })
	case "runtime.v1.ListContainersResponse":
		ct := &runtimeapi.Container{}
		w.Items(ct, func() { g.learnContainer(ct.GetId(), ct.GetPodSandboxId(), ct.GetMetadata().GetName()) })
	}
}

// forgetGone drops what a successful RemovePodSandbox removed, after the call
// itself was labelled, so a grouper running for days stays small.
func (g *Grouper) forgetGone(c *decode.Call) {
	if !c.OK() || c.End.IsZero() {
		return
	}
	// Containers are forgotten with their sandbox: kubelet still asks for a
	// removed container's status, and that call belongs to the stop.
	if r, ok := c.Request().(*runtimeapi.RemovePodSandboxRequest); ok {
		sid := r.GetPodSandboxId()
		delete(g.pods, sid)
		for cid, ci := range g.containers {
			if ci.sandbox == sid {
				delete(g.containers, cid)
			}
		}
		for _, cid := range g.made[sid] {
			delete(g.exits, cid)
			delete(g.failedExecs, cid)
		}
		delete(g.made, sid)
	}
}

func (g *Grouper) learnPod(sid string, md *runtimeapi.PodSandboxMetadata) {
	if sid == "" || md == nil {
		return
	}
	if _, ok := g.pods[sid]; !ok {
		g.pods[sid] = Pod{Namespace: md.GetNamespace(), Name: md.GetName(), UID: md.GetUid()}
	}
}

// containerInfo is what grouping learnt of a container: in one map, not
// two, for a list of 80,000 containers takes 20 MB of it.
type containerInfo struct{ sandbox, name string }

func (g *Grouper) learnContainer(cid, sid, name string) {
	if cid == "" || sid == "" && name == "" {
		return
	}
	ci := g.containers[cid]
	if sid != "" {
		ci.sandbox = sid
	}
	if name != "" {
		ci.name = name
	}
	g.containers[cid] = ci
}

// step describes a call the way a diagram shows it.
func (g *Grouper) step(c *decode.Call) Step {
	s := Step{
		Call:     c,
		Service:  c.Service,
		Method:   c.Name,
		Start:    c.Start,
		Duration: c.Duration(),
		Done:     !c.End.IsZero(),
		Inferred: c.Flags&decode.Inferred != 0,
	}
	if i := strings.LastIndexByte(c.Service, '.'); i >= 0 && c.Known {
		s.Service = c.Service[i+1:]
	}
	if s.Method == "" {
		s.Method = c.Method
	}
	if s.Method == "" {
		s.Method = "(unknown)" // a connection caught midway: no method fits its messages alone
	}
	if s.Done && !c.OK() {
		s.Err = ErrorText(c)
	}
	req, resp := c.Request(), c.Response()
	container := func(cid string) string {
		if n := g.containers[cid].name; n != "" {
			return n
		}
		return Short(cid)
	}
	switch r := req.(type) {
	case *runtimeapi.RunPodSandboxRequest:
		md := r.GetConfig().GetMetadata()
		s.Arg, s.Phase = Pod{Namespace: md.GetNamespace(), Name: md.GetName()}.String(), "sandbox"
		if rr, ok := resp.(*runtimeapi.RunPodSandboxResponse); ok {
			s.Full = rr.GetPodSandboxId()
			s.Result = "sandbox " + Short(s.Full)
		}
	case *runtimeapi.PodSandboxStatusRequest:
		s.Arg = Short(r.GetPodSandboxId())
		if rr, ok := resp.(*runtimeapi.PodSandboxStatusResponse); ok {
			st := rr.GetStatus()
			s.Result = strings.TrimPrefix(st.GetState().String(), "SANDBOX_")
			if ip := st.GetNetwork().GetIp(); ip != "" {
				s.Result += " " + ip
			}
		}
	case *runtimeapi.ImageStatusRequest:
		s.Arg, s.Phase = r.GetImage().GetImage(), "image"
		if rr, ok := resp.(*runtimeapi.ImageStatusResponse); ok {
			if id := rr.GetImage().GetId(); id != "" {
				s.Full, s.Result = id, Short(id)
			} else {
				s.Result = "not present"
			}
		}
	case *runtimeapi.PullImageRequest:
		s.Arg, s.Phase = r.GetImage().GetImage(), "image"
		if rr, ok := resp.(*runtimeapi.PullImageResponse); ok {
			s.Full, s.Result = rr.GetImageRef(), Short(rr.GetImageRef())
		}
	case *runtimeapi.CreateContainerRequest:
		name := r.GetConfig().GetMetadata().GetName()
		s.Arg, s.Phase = name, "create "+name
		if rr, ok := resp.(*runtimeapi.CreateContainerResponse); ok {
			s.Full = rr.GetContainerId()
			s.Result = "container " + Short(s.Full)
		}
	case *runtimeapi.StartContainerRequest:
		name := container(r.GetContainerId())
		s.Arg, s.Phase = name, "start "+name
		if s.Done && c.OK() {
			s.Result = "started"
		}
	case *runtimeapi.ContainerStatusRequest:
		s.Arg = container(r.GetContainerId())
		if rr, ok := resp.(*runtimeapi.ContainerStatusResponse); ok {
			st := rr.GetStatus()
			s.Result = strings.TrimPrefix(st.GetState().String(), "CONTAINER_")
			if st.GetState() == runtimeapi.ContainerState_CONTAINER_EXITED {
				s.Result += fmt.Sprintf(" (%d)", st.GetExitCode())
			}
		}
	case *runtimeapi.ExecSyncRequest:
		// A probe's or a hook's command: its exit code, not its output.
		s.Arg = container(r.GetContainerId())
		if rr, ok := resp.(*runtimeapi.ExecSyncResponse); ok {
			s.Result = "exit " + strconv.FormatInt(int64(rr.GetExitCode()), 10)
		}
	case *runtimeapi.StopContainerRequest:
		s.Arg, s.Phase = container(r.GetContainerId()), "stop"
	case *runtimeapi.StopPodSandboxRequest:
		s.Arg, s.Phase = Short(r.GetPodSandboxId()), "stop sandbox"
	case *runtimeapi.RemoveContainerRequest:
		s.Arg, s.Phase = container(r.GetContainerId()), "remove"
	case *runtimeapi.RemovePodSandboxRequest:
		s.Arg, s.Phase = Short(r.GetPodSandboxId()), "remove sandbox"
	default:
		if cid, sid := ids(req); cid != "" {
			s.Arg = container(cid)
		} else if sid != "" {
			s.Arg = Short(sid)
		}
	}
	if s.Full == "" {
		s.Full = s.Result
	}
	if cid, sid := ids(req); cid != "" {
		s.ArgID = cid
	} else if sid != "" {
		s.ArgID = sid
	}
	return s
}

// inheritPhases gives status and other calls the phase of the step before
// them, so a diagram's phase dividers follow the story, not the polling.
func inheritPhases(steps []Step) {
	prev := ""
	for i := range steps {
		if steps[i].Phase == "" && prev != "" {
			steps[i].Phase, steps[i].Inherited = prev, true
		}
		prev = steps[i].Phase
	}
}

// nameImagePhases names a run of image calls after the container created
// right after it ("image web"): kubelet checks, and pulls, each container's
// image before creating it. A run followed by no CreateContainer (a failed
// pull) stays "image".
func nameImagePhases(steps []Step) {
	for i := 0; i < len(steps); {
		if steps[i].Phase != "image" {
			i++
			continue
		}
		j := i
		for j < len(steps) && steps[j].Phase == "image" {
			j++
		}
		if j < len(steps) {
			if name, ok := strings.CutPrefix(steps[j].Phase, "create "); ok {
				for k := i; k < j; k++ {
					steps[k].Phase = "image " + name
				}
			}
		}
		i = j
	}
}

// ErrorText is a failed call's gRPC code and message, e.g. "NotFound: no such image".
func ErrorText(c *decode.Call) string {
	if c.Status < 0 {
		return "no grpc-status"
	}
	t := codes.Code(c.Status).String()
	if c.Message != "" {
		t += ": " + c.Message
	}
	return t
}

// Short shortens an ID or digest for display: 12 hex digits, keeping a
// "sha256:" prefix. Image names and other text are kept whole.
func Short(id string) string {
	algo, hex := "", id
	if i := strings.IndexByte(id, ':'); i >= 0 && !strings.Contains(id, "/") {
		algo, hex = id[:i+1], id[i+1:]
	}
	if len(hex) <= 13 || !isHex(hex) {
		return id
	}
	return algo + hex[:12] + "…"
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
