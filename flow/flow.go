// Package flow groups decoded CRI calls into pod flows: one per pod start
// (RunPodSandbox … StartContainer of every container), one per container
// restart (CreateContainer of a container the pod ran before …
// StartContainer) and one per pod stop (StopContainer … RemovePodSandbox).
//
// In: decode.Calls in start-time order. Out: Flows, each a list of Steps with
// the labels a diagram shows (key argument, returned ID or digest, duration,
// error). Pure logic, no I/O.
package flow

import (
	"strconv"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/criseq/criseq/decode"
)

// Kind says whether a flow starts a pod, restarts its containers or stops
// it.
type Kind int

const (
	Start Kind = iota
	Stop
	// Restart is a container of a running pod made again after it exited
	// (kubelet's restart policy, CrashLoopBackOff): from the ContainerStatus
	// where kubelet saw its older instance exited, if that was seen, its
	// image calls, its CreateContainer (metadata.attempt > 0), its
	// StartContainer, and the removal of its older instance if kubelet
	// makes it then; when kubelet killed the container to restart it (a
	// failed liveness probe), from that StopContainer on, or from the
	// failed ExecSync (the probe) it followed.
	Restart
)

func (k Kind) String() string {
	switch k {
	case Stop:
		return "stop"
	case Restart:
		return "restart"
	}
	return "start"
}

// Starts says whether a flow of kind k brings containers up (a start or a
// restart): it is done when they run.
func (k Kind) Starts() bool { return k != Stop }

// Pod names the pod a flow belongs to.
type Pod struct {
	Namespace, Name, UID string
}

// String is "namespace/name".
func (p Pod) String() string {
	if p.Namespace == "" {
		return p.Name
	}
	return p.Namespace + "/" + p.Name
}

// Flow is the calls of one pod start or stop.
type Flow struct {
	Kind      Kind
	Pod       Pod
	SandboxID string
	Runtime   string // e.g. "containerd 1.6.20", from the Version response; "" if unknown
	Client    string // e.g. "kubelet" or "crictl", from the user-agent
	Steps     []Step
	Start     time.Time // first call's start
	End       time.Time // last call's end
	// Done is when the pod was up (its last StartContainer returned) or
	// down (its first StopPodSandbox returned); zero if that was not seen.
	Done     time.Time
	Complete bool // every container started (start) / sandbox removed (stop)
	// Events are the runtime's container events for this pod (the
	// GetContainerEvents stream of kubelet's Evented PLEG), in time order.
	Events []Event
	// OtherPulls are the PullImage calls of other pods (or of no known
	// pod) that were open during this flow: the image pull queue a start
	// may have waited in.
	OtherPulls []Interval
}

// Interval is a span of time.
type Interval struct{ Start, End time.Time }

// Event is one container event the runtime sent kubelet on its
// GetContainerEvents stream.
type Event struct {
	Time        time.Time // when the message reached the client (the capture's time)
	Created     time.Time // the runtime's created_at
	Type        string    // "CONTAINER_CREATED", "CONTAINER_STARTED", "CONTAINER_STOPPED", "CONTAINER_DELETED"
	ContainerID string
	Container   string // the container's name, or its short ID
	Call        *decode.Call
}

// How a step was put into its flow: the evidence that ties the call to
// the pod, strongest first.
const (
	ByID            = "id"              // the request names the pod's sandbox or one of its containers
	BySandboxConfig = "sandbox config"  // PullImage carries the pod's sandbox config
	ByTraceparent   = "traceparent"     // the request's trace is one of the pod's syncs
	ByAnnotations   = "annotations"     // the image spec carries the pod's annotations, and no other pod's
	ByOrder         = "kubelet's order" // the only pod whose sequential start leaves room for the call
	ByAmbiguous     = "ambiguous"       // more than one pod fits; the call is in each of their flows
	ByTime          = "time"            // a polling call shown with --all: open while the flow was
)

// Attribution says why a step is in its flow.
type Attribution struct {
	By string // one of the By* constants
	// Candidates are the pods an ambiguous call may belong to (this
	// flow's pod among them), sorted; empty unless By is ByAmbiguous.
	Candidates []Pod
}

// Duration is how long the pod took to start or stop: until Done, or until
// the last call's end when Done was not seen.
func (f *Flow) Duration() time.Duration {
	if !f.Done.IsZero() {
		return f.Done.Sub(f.Start)
	}
	return f.End.Sub(f.Start)
}

// Step is one call of a flow, with what a diagram shows of it.
type Step struct {
	Call    *decode.Call
	Service string // "RuntimeService", "ImageService", or the service's full name if not CRI
	Method  string // e.g. "RunPodSandbox"
	Arg     string // key argument: "default/nginx", "nginx:1.25", "web"
	ArgID   string // the full container or sandbox ID the call is about, if any
	Result  string // what came back, shortened: "sandbox 3f2a1b9c…", "sha256:4e1f…"
	Full    string // Result unshortened (for tooltips)
	Err     string // "NotFound: image not found" if the call failed
	Phase   string // "sandbox", "image web", "create web", "start web", "stop", "stop sandbox", "remove", "remove sandbox"; "image" for a pull no container followed
	// Inherited is set when Phase was taken from the step before: a status
	// call made during that phase, which does not make the phase last longer.
	Inherited bool
	Start     time.Time
	Duration  time.Duration // 0 if the call never finished
	Done      bool          // false if the capture ended before the call did
	Attr      Attribution
	// Inferred: the method was inferred from the messages' shape (a
	// connection caught midway), not read from the request's :path.
	Inferred bool
}

// Restarted names the containers a restart flow made again, with the
// attempt kubelet gave each (its restart count): "web (attempt 3)". Empty
// for other flows.
func (f *Flow) Restarted() []string {
	if f.Kind != Restart {
		return nil
	}
	var out []string
	seen := map[string]bool{}
	for _, s := range f.Steps {
		if s.Method != "CreateContainer" || s.Call == nil {
			continue
		}
		r, ok := s.Call.Request().(*runtimeapi.CreateContainerRequest)
		if !ok {
			continue
		}
		md := r.GetConfig().GetMetadata()
		name := md.GetName() + " (attempt " + strconv.FormatUint(uint64(md.GetAttempt()), 10) + ")"
		if !seen[name] {
			seen[name] = true
			out = append(out, name)
		}
	}
	return out
}
