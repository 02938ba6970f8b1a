package flow

import (
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/criseq/criseq/decode"
)

// Options tune the grouping.
type Options struct {
	// All keeps kubelet's polling calls (List*, Status, Version, ImageFsInfo,
	// stats) that happen while a flow is open.
	All bool
	// Grace is how long after a flow's last StartContainer returned its
	// status calls still join it. Default 2s.
	Grace time.Duration
	// InitWait is how long after the last StartContainer a new
	// CreateContainer in the same sandbox still belongs to the start (the next
	// container after an init container). Default 60s.
	InitWait time.Duration
	// Live hands out a start flow as soon as it is Grace past its last
	// StartContainer, instead of InitWait. If another container of the pod
	// is created within InitWait (the one after an init container), the
	// flow grows and is handed out again: the same *Flow, with more steps.
	// A stop flow is handed out Grace past its StopPodSandbox and last
	// call, the pod down, not only at kubelet's clean-up (RemovePodSandbox,
	// up to a minute later); it stays open as offline, and is handed out
	// again, grown, after its next calls.
	Live bool
	// MaxOpen bounds the flows being built; past it the oldest is handed
	// out as it is, incomplete. Default 256.
	MaxOpen int
	// Client names the CRI client lifeline. Default: "kubelet", or "crictl"
	// for a flow spread over more than two connections (kubelet keeps two
	// long-lived ones; crictl opens one per command).
	Client string
	// IgnoreTraceparent attributes image calls without the W3C traceparent
	// kubelet's tracing puts on each request: to see what kubelet's order
	// alone decides.
	IgnoreTraceparent bool
	// DropLists drops the decoded items of each list answer once
	// grouping learnt from them, but for answers of at most ShownMessages
	// bytes (what an output that shows messages, the HTML viewer, shows):
	// with All, a flow would otherwise hold every list kubelet polled
	// while it was open (21 answers of 8,000 containers took 66 MB). It
	// changes the calls handed in. A list answer kept as it came
	// (decode.Options.ListsAbove) is learnt from item by item.
	DropLists     bool
	ShownMessages int
}

func (o *Options) defaults() {
	if o.Grace == 0 {
		o.Grace = 2 * time.Second
	}
	if o.InitWait == 0 {
		o.InitWait = 60 * time.Second
	}
	if o.MaxOpen == 0 {
		o.MaxOpen = 256
	}
}

// polling lists the calls kubelet makes periodically, not for one pod.
var polling = map[string]bool{
	"ListPodSandbox": true, "ListContainers": true, "Status": true, "Version": true,
	"ImageFsInfo": true, "ListContainerStats": true, "ListPodSandboxStats": true,
	"ContainerStats": true, "PodSandboxStats": true, "ListImages": true,
	"RuntimeConfig": true, "ListMetricDescriptors": true, "ListPodSandboxMetrics": true,
	"GetContainerEvents": true, "StreamContainers": true, "StreamPodSandboxes": true,
	"StreamContainerStats": true, "StreamPodSandboxStats": true, "StreamImages": true,
	"StreamPodSandboxMetrics": true,
}

// IsPolling reports whether a CRI method is one of kubelet's periodic calls.
func IsPolling(method string) bool { return polling[method] }

// dropList drops the decoded answers of a list call larger than the
// output shows (Options.DropLists): nothing but learn reads them.
func (g *Grouper) dropList(c *decode.Call) {
	if !g.opts.DropLists || !polling[c.Name] || !strings.HasPrefix(c.Name, "List") && !strings.HasPrefix(c.Name, "Stream") {
		return
	}
	for i := range c.Responses {
		if m := &c.Responses[i]; m.Size > g.opts.ShownMessages {
			m.Proto, m.Wire = nil, nil
		}
	}
}

// Group groups calls (in start order) into flows, ordered by start time.
func Group(calls []*decode.Call, opts Options) []*Flow {
	g := NewGrouper(opts)
	var out []*Flow
	for _, c := range calls {
		out = append(out, g.Add(c)...)
	}
	out = append(out, g.Flush()...)
	Sort(out)
	return out
}

// Sort orders flows by start time, then pod name.
func Sort(fs []*Flow) {
	sort.SliceStable(fs, func(i, j int) bool {
		if !fs[i].Start.Equal(fs[j].Start) {
			return fs[i].Start.Before(fs[j].Start)
		}
		return fs[i].Pod.String() < fs[j].Pod.String()
	})
}

// open is a flow being built.
type open struct {
	f          *Flow
	steps      []Step          // the flow's own steps; image calls are added at finish
	ow         *owner          // the pod, for image calls (nil: failed sandbox, stop flows)
	imageKeys  map[string]bool // image names/IDs its containers use
	created    map[string]bool // container IDs created
	names      map[string]bool // names of the containers created (start flows)
	started    map[string]bool // container IDs started
	lastStart  time.Time       // end of the last StartContainer
	settled    bool            // past Grace: only more containers may join
	handedOut  bool            // Live: returned once, may still grow
	down       time.Time       // a stop: when its first StopPodSandbox returned OK
	containers map[string]bool // container IDs this flow knows (stop flows)
	key        string          // its key in starts or stops
	dirty      bool            // in Grouper.dirty
	// own is the index in steps of the last of the flow's own calls, and
	// ownEnd the latest end of one. The polling steps after own (--all)
	// are its tail: those that start after ownEnd are dropped unless an
	// own call follows (attachAll).
	own    int
	ownEnd time.Time
	// pollOff: the tail was dropped; polling is not attached again until
	// the flow's next own call.
	pollOff bool
}

// Grouper groups calls as they come; flows are returned once they are
// complete or can no longer grow. Calls must arrive in start order, give or
// take the calls that were open at the same time.
type Grouper struct {
	opts Options
	now  time.Time

	starts   map[string]*open // by sandbox ID
	restarts map[string]*open // by sandbox ID
	stops    map[string]*open // by sandbox ID (or "container:ID" when unknown)
	// up holds the sandboxes seen starting or restarting containers and
	// not stopped since: there, a RemoveContainer alone is kubelet removing
	// an exited container (a restart's older instance), not a pod stop.
	up    map[string]bool
	order []*open // open flows, oldest first
	// made is, by sandbox ID and container name, the container made last;
	// exits, by container ID, the first status call that saw such a
	// container exited while its pod ran: where kubelet learnt of the
	// exit, where the restart that makes the container again begins.
	// failedExecs, by container ID, the last ExecSync that failed on such
	// a container: a liveness probe (or a hook) that kubelet may kill and
	// restart the container for.
	made        map[string]map[string]string
	exits       map[string]*decode.Call
	failedExecs map[string]*decode.Call

	images ledger // image calls, and the windows of the pods they may belong to
	// lastWork is when each sandbox's pod worker last returned from a
	// call (RunPodSandbox, CreateContainer, StartContainer): the earliest
	// its next container's image calls may start.
	lastWork map[string]time.Time
	phantoms map[string]*owner // sandboxes with no start flow, by ID
	early    []earlyEvent      // runtime events of sandboxes whose flow has not begun

	// What the calls told about IDs, learned from any call, polling too.
	pods       map[string]Pod           // sandbox ID → pod
	containers map[string]containerInfo // container ID → what was learnt of it
	runtime    string
	maxPending int

	// Before wake, no flow left as it was can settle or be done: settle
	// and expire look only at the flows changed since (dirty), not at
	// every open flow, which was a tenth of diff's time with hundreds
	// open. changed asks for a look at every one.
	wake    time.Time
	changed bool
	dirty   []*open
	noWake  bool // tests only: scan on every call
}

// maxPhantoms bounds the sandboxes without a start flow that are tracked.
const maxPhantoms = 1024

// NewGrouper returns an empty Grouper.
func NewGrouper(opts Options) *Grouper {
	opts.defaults()
	return &Grouper{
		opts:        opts,
		starts:      map[string]*open{},
		restarts:    map[string]*open{},
		stops:       map[string]*open{},
		up:          map[string]bool{},
		made:        map[string]map[string]string{},
		exits:       map[string]*decode.Call{},
		failedExecs: map[string]*decode.Call{},
		pods:        map[string]Pod{},
		containers:  map[string]containerInfo{},
		maxPending:  4096,
		lastWork:    map[string]time.Time{},
		phantoms:    map[string]*owner{},
		images:      ledger{traces: map[string]*owner{}},
	}
}

// Add takes the next call and returns the flows it completed.
func (g *Grouper) Add(c *decode.Call) []*Flow {
	if c.Start.After(g.now) {
		g.now = c.Start
	}
	if g.due() {
		g.settle()
	}
	g.learn(c)
	g.dropList(c)
	if c.Known {
		g.route(c)
		g.forgetGone(c)
	} else {
		if c.Method == "" {
			g.images.unreadable = append(g.images.unreadable, c.Start)
			g.images.gen++
		}
		if g.opts.All {
			g.attachAll(c)
		}
	}
	return g.expire()
}

// Tick moves the grouper's clock to now (for live captures, when no call
// comes) and returns the flows that completed by then.
func (g *Grouper) Tick(now time.Time) []*Flow {
	if now.After(g.now) {
		g.now = now
	}
	if g.due() {
		g.settle()
	}
	return g.expire()
}

// Holds reports whether the grouper may hand out f again, grown (Live): a
// start within InitWait of its last StartContainer, a stop handed out
// with its pod down and still open.
func (g *Grouper) Holds(f *Flow) bool {
	if f == nil || f.SandboxID == "" {
		return false
	}
	switch f.Kind {
	case Start:
		o := g.starts[f.SandboxID]
		return o != nil && o.f == f
	case Stop:
		o := g.stops[f.SandboxID]
		return o != nil && o.f == f
	}
	return false
}

// Open is the number of flows being built.
func (g *Grouper) Open() int { return len(g.order) }

// Oldest is the earliest start of a flow being built: every flow handed out
// later starts then or after, unless a call that starts one is still to
// come. ok is false when no flow is being built.
func (g *Grouper) Oldest() (t time.Time, ok bool) {
	for _, o := range g.order {
		for _, st := range o.steps {
			if !ok || st.Start.Before(t) {
				t, ok = st.Start, true
			}
		}
	}
	return t, ok
}

// Flush returns every flow still open, complete or not, but those handed
// out as they are (Live).
func (g *Grouper) Flush() []*Flow {
	var out []*Flow
	for _, o := range g.order {
		if !o.handedOut {
			out = append(out, g.finish(o))
		}
	}
	g.order = nil
	g.changed = true
	g.starts = map[string]*open{}
	g.restarts = map[string]*open{}
	g.stops = map[string]*open{}
	g.images = ledger{traces: map[string]*owner{}, owned: g.images.owned + 1} // no answer of exact kept
	return out
}

// Runtime is the runtime name and version seen in a Version response.
func (g *Grouper) Runtime() string { return g.runtime }

func (g *Grouper) route(c *decode.Call) {
	req := c.Request()
	resp := c.Response()
	switch c.Name {
	case "RunPodSandbox":
		g.runPodSandbox(c)
		return
	case "CreateContainer":
		r, _ := req.(*runtimeapi.CreateContainerRequest)
		sid := r.GetPodSandboxId()
		defer g.madeContainer(sid, r, resp)
		if g.restarting(sid, r.GetConfig().GetMetadata(), c) {
			g.createIn(g.restartFlow(sid, r, c), c, r, resp)
			return
		}
		o := g.startFlow(sid, c)
		if o == nil {
			g.phantomCreate(sid, c)
			return
		}
		g.createIn(o, c, r, resp)
		return
	case "PullImage", "ImageStatus":
		g.addImageCall(c)
		return
	case "RemoveImage":
		return // kubelet's image garbage collection: no pod's work
	}
	if polling[c.Name] {
		if g.opts.All {
			g.attachAll(c)
		}
		return
	}
	cid, sid := ids(req)
	if cid != "" && sid == "" {
		sid = g.containers[cid].sandbox
	}
	switch c.Name {
	case "ContainerStatus":
		g.sawStatus(c, cid, sid)
	case "ExecSync":
		g.sawExec(c, cid, sid)
	}
	// A restart's own container: its flow, even while the pod stops.
	if o := g.restarts[sid]; o != nil && cid != "" && o.created[cid] && c.Name != "StopContainer" && c.Name != "RemoveContainer" {
		if !o.settled || c.Name == "StartContainer" {
			g.joinStarting(o, c, cid)
		}
		return
	}
	switch c.Name {
	case "RemoveContainer":
		if g.stops[stopKey(cid, sid)] == nil && g.up[sid] {
			// An exited container removed while its pod runs: the older
			// instance of a restarted one. The restart's, if it is open.
			if o := g.restarts[sid]; o != nil {
				g.add(o, c)
			}
			return
		}
		g.stopCall(c, cid, sid)
		return
	case "StopContainer", "StopPodSandbox", "RemovePodSandbox":
		g.stopCall(c, cid, sid)
		return
	}
	// Status and other per-container or per-sandbox calls join an open flow.
	if o := g.stops[stopKey(cid, sid)]; o != nil {
		o.handedOut = false // Live: grown, to be handed out again
		g.add(o, c)
		return
	}
	if o := g.restarts[sid]; o != nil && sid != "" && cid == "" && !o.settled {
		g.add(o, c) // the restarting pod's sandbox
		return
	}
	if o := g.starts[sid]; o != nil && sid != "" {
		if o.settled && c.Name != "StartContainer" {
			return
		}
		g.joinStarting(o, c, cid)
		return
	}
	if c.Name == "StartContainer" && sid != "" {
		g.work(sid, c)
	}
}

// joinStarting adds c to the start or restart flow o; a StartContainer
// keeps o open for Grace more.
func (g *Grouper) joinStarting(o *open, c *decode.Call, cid string) {
	if c.Name == "StartContainer" && cid != "" {
		g.reopen(o)
		o.started[cid] = true
		if c.End.After(o.lastStart) {
			o.lastStart = c.End
		}
		o.settled = false
		g.touch(o)
		g.worked(o.ow, c)
	}
	g.add(o, c)
}

// createIn adds the CreateContainer c to the start or restart flow o.
func (g *Grouper) createIn(o *open, c *decode.Call, r *runtimeapi.CreateContainerRequest, resp any) {
	if cr, ok := resp.(*runtimeapi.CreateContainerResponse); ok && cr.GetContainerId() != "" {
		o.created[cr.GetContainerId()] = true
		o.names[r.GetConfig().GetMetadata().GetName()] = true
		g.touch(o)
	}
	for k := range imageKeys(r.GetConfig().GetImage()) {
		o.imageKeys[k] = true
	}
	g.add(o, c)
	g.created(o.ow, c, r.GetConfig().GetImage())
	if o.f.SandboxID != "" {
		g.up[o.f.SandboxID] = true
	}
}

// restarting says whether the CreateContainer c of container md in sandbox
// sid makes a container again: one its pod's start flow already made, or,
// with no start flow open, one kubelet says it made before (attempt > 0).
// A pod's sandbox made again (same pod, next sandbox) starts its
// containers at their next attempt too: in its start flow, as the first
// of their names there.
func (g *Grouper) restarting(sid string, md *runtimeapi.ContainerMetadata, c *decode.Call) bool {
	if sid == "" {
		return false
	}
	if o := g.starts[sid]; o != nil && (o.lastStart.IsZero() || c.Start.Sub(o.lastStart) <= g.opts.InitWait) {
		return o.names[md.GetName()]
	}
	return md.GetAttempt() > 0
}

// restartFlow is the open restart flow of sandbox sid, begun at c if none
// is open: it owns the image calls kubelet makes since the pod's last
// work call.
func (g *Grouper) restartFlow(sid string, r *runtimeapi.CreateContainerRequest, c *decode.Call) *open {
	if o := g.restarts[sid]; o != nil {
		o.settled = false
		g.touch(o)
		g.reopen(o)
		return o
	}
	pod := g.podOf(sid, r.GetSandboxConfig().GetMetadata())
	var o *open
	if s := g.stops[sid]; s != nil && !s.stopsSandbox() {
		// Containers stopped with no sandbox after, then made again:
		// kubelet killed them (a failed liveness probe) to restart them.
		// The kill begins the restart.
		delete(g.stops, sid)
		s.f.Kind, s.settled = Restart, false
		o = s
		// Killed after a command failed in it (a liveness probe, a
		// hook): the restart begins there.
		g.addExec(o)
		g.touch(o)
	} else {
		o = g.newOpen(Restart, pod, sid)
		if ex := g.exitOf(sid, r.GetConfig().GetMetadata().GetName(), c); ex != nil {
			// Exited, not killed: the restart begins where kubelet saw
			// the older instance exit (the same call may end the flow
			// that made it), and its back-off shows.
			g.add(o, ex)
		}
	}
	g.restarts[sid], o.key = o, sid
	ann := r.GetSandboxConfig().GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	// Its pulls are told from the start's by time: the restart's owner
	// takes the pod's calls from its last work call on.
	since := g.lastWork[sid]
	if since.IsZero() {
		since = c.Start
	}
	o.ow = &owner{pod: pod, sid: sid, annotations: ann, kubelet: true, conn: c.Conn, since: since}
	g.images.owners = append(g.images.owners, o.ow)
	g.images.owned++
	g.images.gen++
	return o
}

// maxBackOffSeen bounds the time from a container's exit, as kubelet saw
// it, to the CreateContainer that makes it again: kubelet's restart
// back-off grows to 5 minutes, then its next pod sync.
const maxBackOffSeen = 10 * time.Minute

// sawStatus keeps the ContainerStatus c if it is the first to report the
// pod's latest container of its name exited while the pod runs.
func (g *Grouper) sawStatus(c *decode.Call, cid, sid string) {
	r, ok := c.Response().(*runtimeapi.ContainerStatusResponse)
	if !ok || !c.OK() || r.GetStatus().GetState() != runtimeapi.ContainerState_CONTAINER_EXITED || !g.up[sid] {
		return
	}
	if id := r.GetStatus().GetId(); id != "" {
		cid = id
	}
	if cid == "" || g.made[sid][g.containers[cid].name] != cid || g.exits[cid] != nil {
		return
	}
	g.exits[cid] = c
}

// sawExec keeps the ExecSync c if it failed (an exit code other than 0, or
// no answer in time) on the pod's latest container of its name.
func (g *Grouper) sawExec(c *decode.Call, cid, sid string) {
	if c.End.IsZero() || cid == "" || !g.up[sid] || g.made[sid][g.containers[cid].name] != cid {
		return
	}
	if r, ok := c.Response().(*runtimeapi.ExecSyncResponse); c.OK() && (!ok || r.GetExitCode() == 0) {
		return
	}
	g.failedExecs[cid] = c
}

// addExec adds to the kill o the failed ExecSync it followed, if any.
func (g *Grouper) addExec(o *open) {
	if ex := g.execBefore(o); ex != nil {
		g.add(o, ex)
		o.steps[len(o.steps)-1].Phase = PhaseExec
	}
}

// execBefore is the failed ExecSync on a container the stop flow s
// killed that ended at most Grace before s's first call.
func (g *Grouper) execBefore(s *open) *decode.Call {
	if len(s.steps) == 0 {
		return nil
	}
	first := s.steps[0].Start
	var best *decode.Call
	for cid := range s.containers {
		ex := g.failedExecs[cid]
		if ex == nil || ex.End.After(first) || first.Sub(ex.End) > g.opts.Grace {
			continue
		}
		if best == nil || ex.Start.Before(best.Start) {
			best = ex
		}
	}
	return best
}

// exitOf is the status call where kubelet saw the older instance of
// container name in sandbox sid exit, if it came at most maxBackOffSeen
// before c, which makes it again.
func (g *Grouper) exitOf(sid, name string, c *decode.Call) *decode.Call {
	ex := g.exits[g.made[sid][name]]
	if ex == nil || ex.Start.After(c.Start) || c.Start.Sub(ex.Start) > maxBackOffSeen {
		return nil
	}
	return ex
}

// madeContainer notes the container a CreateContainer made, now the
// latest of its name in its sandbox: an exit seen of the one before it is
// no longer needed.
func (g *Grouper) madeContainer(sid string, r *runtimeapi.CreateContainerRequest, resp any) {
	cr, ok := resp.(*runtimeapi.CreateContainerResponse)
	name := r.GetConfig().GetMetadata().GetName()
	if !ok || cr.GetContainerId() == "" || sid == "" || name == "" {
		return
	}
	m := g.made[sid]
	if m == nil {
		m = map[string]string{}
		g.made[sid] = m
	}
	delete(g.exits, m[name])
	delete(g.failedExecs, m[name])
	m[name] = cr.GetContainerId()
}

func (g *Grouper) runPodSandbox(c *decode.Call) {
	r, _ := c.Request().(*runtimeapi.RunPodSandboxRequest)
	md := r.GetConfig().GetMetadata()
	sid := ""
	if resp, ok := c.Response().(*runtimeapi.RunPodSandboxResponse); ok {
		sid = resp.GetPodSandboxId()
	}
	pod := Pod{Namespace: md.GetNamespace(), Name: md.GetName(), UID: md.GetUid()}
	o := g.newOpen(Start, pod, sid)
	if sid != "" {
		g.pods[sid] = pod
		g.up[sid] = true
		g.starts[sid], o.key = o, sid
		ann := r.GetConfig().GetAnnotations()
		if ann == nil {
			ann = map[string]string{}
		}
		o.ow = &owner{pod: pod, sid: sid, annotations: ann, kubelet: true, conn: c.Conn, since: c.Start}
		g.images.owners = append(g.images.owners, o.ow)
		g.images.owned++
		g.images.gen++
		g.worked(o.ow, c)
		g.openSlot(o.ow, c)
		g.takeEarly(o, sid)
	} else {
		// Failed sandbox: a flow of its own, keyed so later retries get new ones.
		o.key = "failed:" + c.Method + ":" + c.Start.String()
		g.starts[o.key] = o
	}
	g.add(o, c)
}

// startFlow finds the start flow of a sandbox for a container-creating call.
func (g *Grouper) startFlow(sid string, c *decode.Call) *open {
	o := g.starts[sid]
	if o == nil || sid == "" {
		return nil
	}
	if !o.lastStart.IsZero() && c.Start.Sub(o.lastStart) > g.opts.InitWait {
		return nil
	}
	o.settled = false
	g.touch(o)
	g.reopen(o)
	return o
}

// reopen puts a handed-out live flow back among those being built.
func (g *Grouper) reopen(o *open) {
	if o.handedOut {
		o.handedOut = false
		g.order = append(g.order, o)
		g.touch(o)
	}
}

func (g *Grouper) stopCall(c *decode.Call, cid, sid string) {
	key := stopKey(cid, sid)
	o := g.stops[key]
	if o != nil && c.Name == "StopPodSandbox" && !o.stopsSandbox() && c.Start.Sub(o.lastKill()) > g.opts.Grace {
		// Containers killed a while before, not by this stop (kubelet
		// stops them right before their sandbox): killed to be restarted
		// (a failed liveness probe), the pod deleted before the restart
		// came. A restart that never completed.
		delete(g.stops, key)
		o.f.Kind, o.settled, o.lastStart = Restart, true, time.Time{}
		g.addExec(o)
		g.touch(o)
		o = nil
	}
	if o == nil {
		// The pod is being stopped: its start and restart flows can no
		// longer grow.
		for _, m := range []map[string]*open{g.starts, g.restarts} {
			if s := m[sid]; s != nil && sid != "" {
				s.settled = true
				s.lastStart = time.Time{}
				g.touch(s)
				delete(m, sid)
				g.closeSlot(s.ow, c.Start)
			}
		}
		pod, ok := g.pods[sid]
		if !ok {
			pod = Pod{Name: "sandbox " + Short(sid)}
			if sid == "" {
				pod = Pod{Name: "container " + Short(cid)}
			}
		}
		o = g.newOpen(Stop, pod, sid)
		g.stops[key], o.key = o, key
	}
	if cid != "" {
		o.containers[cid] = true
	}
	if c.Name == "StopPodSandbox" || c.Name == "RemovePodSandbox" {
		delete(g.up, sid)
	}
	o.handedOut = false // Live: grown, to be handed out again
	g.add(o, c)
	if c.Name == "StopPodSandbox" && c.OK() && !c.End.IsZero() && o.down.IsZero() {
		o.down = c.End
	}
	if c.Name == "RemovePodSandbox" && c.OK() && !c.End.IsZero() {
		o.f.Complete = true
		g.touch(o)
	}
}

// lastKill is the end of the last StopContainer of o.
func (o *open) lastKill() time.Time {
	var t time.Time
	for _, st := range o.steps {
		if end := st.Start.Add(st.Duration); st.Method == "StopContainer" && end.After(t) {
			t = end
		}
	}
	return t
}

// stopsSandbox says whether the stop flow o holds a call on its sandbox
// (StopPodSandbox, RemovePodSandbox): a pod stop, not a container's.
func (o *open) stopsSandbox() bool {
	for _, st := range o.steps {
		if st.Method == "StopPodSandbox" || st.Method == "RemovePodSandbox" {
			return true
		}
	}
	return false
}

func stopKey(cid, sid string) string {
	if sid != "" {
		return sid
	}
	return "container:" + cid
}

func (g *Grouper) newOpen(k Kind, pod Pod, sid string) *open {
	o := &open{
		// The runtime that answers its first call: taken at its end, a
		// flow drawn live and the same flow drawn from the file could name
		// different runtimes across an upgrade.
		f:          &Flow{Kind: k, Pod: pod, SandboxID: sid, Client: g.opts.Client, Runtime: g.runtime},
		imageKeys:  map[string]bool{},
		created:    map[string]bool{},
		names:      map[string]bool{},
		started:    map[string]bool{},
		containers: map[string]bool{},
	}
	g.order = append(g.order, o)
	g.touch(o)
	return o
}

func (g *Grouper) add(o *open, c *decode.Call) {
	st := g.step(c)
	st.Attr.By = ByID
	o.steps = append(o.steps, st)
	o.own, o.pollOff = len(o.steps)-1, false
	if end := st.Start.Add(st.Duration); end.After(o.ownEnd) {
		o.ownEnd = end
	}
	g.touch(o)
}

// maxPollingTail bounds the polling steps a flow holds after its last own
// call (--all): on a busy node a flow left open (a stop whose
// RemovePodSandbox never comes) took every polling call to the end of the
// capture, 39,000 each on the bench capture and 413 MiB in all. A real
// kubelet polls a few times a second.
const maxPollingTail = 1000

// lastOwn is o's last own step.
func (o *open) lastOwn() *Step { return &o.steps[o.own] }

// appendSteps appends o's steps to dst but the polling steps that start
// after o's own calls ended.
func (o *open) appendSteps(dst []Step) []Step {
	dst = append(dst, o.steps[:o.own+1]...)
	for _, st := range o.steps[o.own+1:] {
		if !st.Start.After(o.ownEnd) {
			dst = append(dst, st)
		}
	}
	return dst
}

// dropTail drops the polling steps that start after o's own calls ended.
func (o *open) dropTail() {
	n := len(o.steps)
	o.steps = o.appendSteps(o.steps[:0])
	clear(o.steps[len(o.steps):n])
}

// touch notes that o changed: whether it settles or is done is looked at
// again, by settle and expire.
func (g *Grouper) touch(o *open) {
	if !o.dirty {
		o.dirty = true
		g.dirty = append(g.dirty, o)
	}
}

// attachAll adds a polling or foreign call to every flow open at its time:
// between two of the flow's own calls at most InitWait and maxPollingTail
// calls apart. Past either, the flow's tail is dropped, and it takes no
// polling until its next own call. A call that ended before a flow's
// first call began (one handed in late) was not open during it.
func (g *Grouper) attachAll(c *decode.Call) {
	for _, o := range g.order {
		if len(o.steps) > 0 && !o.settled && !o.f.Complete && !o.pollOff && (c.End.IsZero() || !c.End.Before(o.steps[0].Start)) {
			if len(o.steps)-1-o.own >= maxPollingTail || c.Start.Sub(o.ownEnd) > g.opts.InitWait {
				o.dropTail()
				o.pollOff = true
				continue
			}
			st := g.step(c)
			st.Attr.By = ByTime
			o.steps = append(o.steps, st)
			g.touch(o)
		}
	}
}

// imageSpec is the image a CRI request names, or nil.
func imageSpec(req any) *runtimeapi.ImageSpec {
	switch r := req.(type) {
	case *runtimeapi.CreateContainerRequest:
		return r.GetConfig().GetImage()
	case *runtimeapi.ImageStatusRequest:
		return r.GetImage()
	case *runtimeapi.PullImageRequest:
		return r.GetImage()
	case *runtimeapi.RemoveImageRequest:
		return r.GetImage()
	}
	return nil
}

func imageKeys(s *runtimeapi.ImageSpec) map[string]bool {
	m := map[string]bool{}
	for _, k := range []string{s.GetImage(), s.GetUserSpecifiedImage(), s.GetImageRef()} {
		if k != "" {
			m[k] = true
		}
	}
	return m
}

// settle stops start flows past their Grace from taking status calls.
func (g *Grouper) settle() {
	flows := g.order
	if !g.dueAll() {
		flows = g.dirty
	}
	for _, o := range flows {
		if g.settles(o) {
			o.settled = true
			g.touch(o)
		}
	}
}

// settles reports whether o is past its Grace at g.now, not yet settled.
func (g *Grouper) settles(o *open) bool {
	return o.f.Kind.Starts() && !o.lastStart.IsZero() && g.now.Sub(o.lastStart) > g.opts.Grace && !o.settled
}

// expire closes the flows that can no longer grow at g.now.
func (g *Grouper) expire() []*Flow {
	if !g.due() || !g.dueAll() && g.quiet() {
		g.pruneImages()
		return nil
	}
	var out []*Flow
	kept := g.order[:0]
	for i, o := range g.order {
		evict := len(g.order)-i > g.opts.MaxOpen
		if !evict && g.downNow(o) {
			// Live: the pod is down; its stop stays open, as offline,
			// for kubelet's clean-up.
			out = append(out, g.finish(o))
			o.handedOut = true
			kept = append(kept, o)
			continue
		}
		if evict && o.handedOut && o.f.Kind == Stop {
			g.forget(o) // handed out as it is
			continue
		}
		if evict || g.done(o) {
			out = append(out, g.finish(o))
			if g.opts.Live && !evict && o.f.Kind == Start && !o.lastStart.IsZero() {
				// Kept in starts for InitWait: the next container may come.
				o.handedOut = true
				continue
			}
			g.forget(o)
			continue
		}
		kept = append(kept, o)
	}
	g.order = kept
	if g.opts.Live { // only a live grouper hands out a start it keeps
		for sid, o := range g.starts {
			if o.handedOut && g.now.Sub(o.lastStart) > g.opts.InitWait {
				delete(g.starts, sid)
			}
		}
	}
	g.pruneImages()
	g.rewake()
	return out
}

// due says whether settle and expire must look at a flow: one changed,
// a time one waits for has come, or too many are open.
func (g *Grouper) due() bool { return len(g.dirty) > 0 || g.dueAll() }

// dueAll says whether settle and expire must look at every open flow.
func (g *Grouper) dueAll() bool {
	return g.changed || g.noWake || !g.now.Before(g.wake) || len(g.order) > g.opts.MaxOpen
}

// quiet reports whether no flow changed since wake was set can settle or
// be done at g.now; if so, it clears them, wake moved to their times.
// A wake set early (a flow's time moved later) costs one scan, no more.
func (g *Grouper) quiet() bool {
	for _, o := range g.dirty {
		if g.settles(o) || g.done(o) || g.downNow(o) {
			return false
		}
	}
	for _, o := range g.dirty {
		if t, ok := g.wakeOf(o); ok && t.Before(g.wake) {
			g.wake = t
		}
		o.dirty = false
	}
	clear(g.dirty)
	g.dirty = g.dirty[:0]
	return true
}

// wakeOf is the earliest time at which settle or done may give another
// answer for the open flow o as it is now; ok is false for a stop flow
// done only when it is complete: a change.
func (g *Grouper) wakeOf(o *open) (t time.Time, ok bool) {
	if o.f.Kind == Stop {
		if t, ok := g.downAfter(o); ok {
			return t.Add(1), true // done is strictly after
		}
		return t, false
	}
	t = g.doneAfter(o)
	if !o.lastStart.IsZero() && !o.settled {
		if settle := o.lastStart.Add(g.opts.Grace); settle.Before(t) {
			t = settle
		}
	}
	return t, true
}

// rewake sets wake to the earliest time at which settle or done may give
// another answer for an open flow as it is now.
func (g *Grouper) rewake() {
	g.changed = false
	for _, o := range g.dirty {
		o.dirty = false
	}
	clear(g.dirty)
	g.dirty = g.dirty[:0]
	var wake time.Time
	at := func(t time.Time) {
		if wake.IsZero() || t.Before(wake) {
			wake = t
		}
	}
	for _, o := range g.order {
		if t, ok := g.wakeOf(o); ok {
			at(t)
		}
	}
	if g.opts.Live {
		for _, o := range g.starts {
			if o.handedOut {
				at(o.lastStart.Add(g.opts.InitWait))
			}
		}
	}
	if wake.IsZero() {
		wake = g.now.Add(1 << 62) // nothing waits on time, only on a change
	}
	g.wake = wake
}

// done reports whether o can no longer grow at g.now.
func (g *Grouper) done(o *open) bool {
	if o.f.Kind == Stop {
		return o.f.Complete
	}
	return g.now.After(g.doneAfter(o))
}

// downNow says whether o is a stop to hand out now, still open: Live,
// its pod down, Grace past that and its last call, not handed out since.
func (g *Grouper) downNow(o *open) bool {
	t, ok := g.downAfter(o)
	return ok && g.now.After(t)
}

// downAfter is, for a live grouper, the time after which the stop flow o,
// its pod down, is handed out as it is: Grace past its StopPodSandbox and
// its last call; ok is false if it is not to be (again).
func (g *Grouper) downAfter(o *open) (time.Time, bool) {
	if !g.opts.Live || o.f.Kind != Stop || o.down.IsZero() || o.f.Complete || o.handedOut {
		return time.Time{}, false
	}
	return maxTime(o.down, o.ownEnd).Add(g.opts.Grace), true
}

// doneAfter is the time after which the start flow o, as it is, is done.
func (g *Grouper) doneAfter(o *open) time.Time {
	if o.f.Kind == Restart && o.lastStart.IsZero() && !o.settled {
		// No container of it started yet: kubelet may make it again
		// after a back-off.
		return o.lastOwn().Start.Add(g.opts.InitWait)
	}
	if o.lastStart.IsZero() {
		// Closed by a stop: done after its last call. A sandbox that never
		// got a container: ten times InitWait from its first call.
		t := o.steps[0].Start.Add(10 * g.opts.InitWait)
		if last := o.lastOwn().Start; o.settled && last.Before(t) {
			t = last
		}
		return t
	}
	if g.opts.Live || o.f.Kind == Restart {
		// A restart is done once its containers run, live or not: no
		// other container follows it as one follows an init container.
		for id := range o.created {
			if !o.started[id] {
				// A container created but never started: give up after InitWait.
				return o.lastOwn().Start.Add(g.opts.InitWait)
			}
		}
		return o.lastStart.Add(g.opts.Grace)
	}
	return o.lastStart.Add(g.opts.InitWait)
}

func (g *Grouper) forget(o *open) {
	if o.ow != nil && len(o.steps) > 0 {
		last := o.lastOwn()
		g.closeSlot(o.ow, last.Start.Add(last.Duration))
	}
	if g.starts[o.key] == o {
		delete(g.starts, o.key)
	}
	if g.restarts[o.key] == o {
		delete(g.restarts, o.key)
	}
	if g.stops[o.key] == o {
		delete(g.stops, o.key)
	}
}

// finish orders a flow's steps and fills in its totals.
func (g *Grouper) finish(o *open) *Flow {
	f := o.f
	f.Steps = nil
	if len(o.steps) > 0 {
		// Polling after the flow's last call is not the flow's; in Live
		// mode an own call may still come, and it stays in o.
		f.Steps = o.appendSteps(make([]Step, 0, len(o.steps)))
	}
	g.attribute(o)
	sort.SliceStable(f.Steps, func(i, j int) bool { return f.Steps[i].Start.Before(f.Steps[j].Start) })
	sort.SliceStable(f.Events, func(i, j int) bool { return f.Events[i].Time.Before(f.Events[j].Time) })
	inheritPhases(f.Steps)
	nameImagePhases(f.Steps)
	if f.Runtime == "" {
		f.Runtime = g.runtime
	}
	if f.Client == "" {
		conns := map[uint64]bool{}
		for _, s := range f.Steps {
			if s.Attr.By != ByTime { // polling may come on other connections
				conns[s.Call.Conn] = true
			}
		}
		f.Client = "kubelet"
		if len(conns) > 2 {
			f.Client = "crictl"
		}
	}
	if len(f.Steps) > 0 {
		// The flow's own calls span it: polling (--all) open at its ends
		// is drawn, not timed.
		f.Start = time.Time{}
		for _, s := range f.Steps {
			if s.Attr.By == ByTime {
				continue
			}
			if f.Start.IsZero() {
				f.Start = s.Start
			}
			end := s.Start.Add(s.Duration)
			if end.After(f.End) {
				f.End = end
			}
			if !s.Done || s.Err != "" {
				continue
			}
			// Up: the last StartContainer. Down: the first StopPodSandbox
			// (kubelet removes the sandbox later, at its next clean-up).
			if f.Kind.Starts() && s.Method == "StartContainer" && end.After(f.Done) ||
				f.Kind == Stop && s.Method == "StopPodSandbox" && f.Done.IsZero() {
				f.Done = end
			}
		}
	}
	if f.Kind.Starts() {
		f.Complete = len(o.created) > 0 && len(o.started) >= len(o.created)
		for id := range o.created {
			if !o.started[id] {
				f.Complete = false
			}
		}
	}
	return f
}

// ids reads the container_id and pod_sandbox_id fields of a CRI request.
func ids(m interface{ ProtoReflect() protoreflect.Message }) (cid, sid string) {
	if m == nil {
		return "", ""
	}
	r := m.ProtoReflect()
	if !r.IsValid() {
		return "", ""
	}
	fields := r.Descriptor().Fields()
	if fd := fields.ByName("container_id"); fd != nil && fd.Kind() == protoreflect.StringKind {
		cid = r.Get(fd).String()
	}
	if fd := fields.ByName("pod_sandbox_id"); fd != nil && fd.Kind() == protoreflect.StringKind {
		sid = r.Get(fd).String()
	}
	return cid, sid
}

// SkipBody reports whether a grouper without Options.All can do without
// the decoded messages of a method (decode.Options.SkipBodies): kubelet's
// polling, but for Version (the runtime's name) and GetContainerEvents
// (the runtime's events).
func SkipBody(_, method string) bool {
	return IsPolling(method) && method != "Version" && method != "GetContainerEvents"
}

// Event takes one message of a GetContainerEvents stream (see
// decode.Options.OnStreamMessage): the runtime telling kubelet that a
// container was created, started, stopped or deleted. It joins the flow of
// its pod being built, the stop for a stop or deletion if there is one.
func (g *Grouper) Event(c *decode.Call, m decode.Message) {
	ev, ok := m.Proto.(*runtimeapi.ContainerEventResponse)
	if !ok {
		return
	}
	cid := ev.GetContainerId()
	st := ev.GetPodSandboxStatus()
	sid := st.GetId()
	g.learnPod(sid, st.GetMetadata())
	for _, cs := range ev.GetContainersStatuses() {
		if cs.GetId() != "" && cs.GetMetadata().GetName() != "" {
			g.learnContainer(cs.GetId(), sid, cs.GetMetadata().GetName())
		}
	}
	if sid == "" {
		sid = g.containers[cid].sandbox
	}
	if sid == "" {
		return
	}
	name := g.containers[cid].name
	switch {
	case cid == sid:
		name = "sandbox" // the pod's sandbox itself
	case name == "":
		name = Short(cid)
	}
	typ := strings.TrimSuffix(ev.GetContainerEventType().String(), "_EVENT")
	first, second := g.starts[sid], g.stops[sid]
	if r := g.restarts[sid]; r != nil && (r.created[cid] || first == nil) {
		first = r
	}
	if typ == "CONTAINER_STOPPED" || typ == "CONTAINER_DELETED" {
		first, second = second, first
	}
	o := first
	if o == nil {
		o = second
	}
	e := Event{Time: m.Time, Type: typ, ContainerID: cid, Container: name, Call: c}
	if ns := ev.GetCreatedAt(); ns > 0 {
		e.Created = time.Unix(0, ns).UTC()
	}
	if o == nil {
		// The sandbox's events come while RunPodSandbox is still open: they
		// wait for its flow.
		if len(g.early) < maxEarlyEvents {
			g.early = append(g.early, earlyEvent{sid, e})
		}
		return
	}
	o.f.Events = append(o.f.Events, e)
}

// maxEarlyEvents bounds the events kept for flows not begun yet.
const maxEarlyEvents = 1024

// earlyEvent is an event of a sandbox whose flow has not begun.
type earlyEvent struct {
	sid string
	e   Event
}

// takeEarly gives o the events of its sandbox that came before it began,
// and forgets those older than InitWait.
func (g *Grouper) takeEarly(o *open, sid string) {
	kept := g.early[:0]
	for _, x := range g.early {
		switch {
		case x.sid == sid:
			o.f.Events = append(o.f.Events, x.e)
		case g.now.Sub(x.e.Time) < g.opts.InitWait:
			kept = append(kept, x)
		}
	}
	clear(g.early[len(kept):])
	g.early = kept
}
