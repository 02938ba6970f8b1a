package flow

import (
	"slices"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/criseq/criseq/decode"
)

// Which pod an image call belongs to.
//
// ImageStatus and PullImage name an image, not a pod: when pods start
// together, their image calls interleave. kubelet's model decides: a pod
// worker is sequential, so each container's image calls lie after the
// pod's previous work call (RunPodSandbox, or the previous container's
// CreateContainer/StartContainer) and before its own CreateContainer, and
// never overlap one another. Each such window is a slot; an image call may
// go to a slot whose window holds it and whose container uses its image.
// Evidence narrows that further: PullImage carries the pod's sandbox
// config; kubelet 1.37 copies the pod's annotations into the image spec;
// with kubelet tracing on, each request carries the trace of its pod's
// sync. Among what remains, the ledger keeps the assignments of calls to
// slots that break none of kubelet's rules (the pod worker's calls never
// overlap; each container created by kubelet was preceded by at least
// minImageStatus ImageStatus calls) and gives each call every pod it goes
// to in one of them: one pod is an attribution, several are ambiguous,
// and no guess is made between them.

// minImageStatus is how many ImageStatus calls kubelet makes before each
// CreateContainer: the pre-pull check (IfNotPresent, Never; or the size
// check after a pull, Always) and the image user lookup in the container's
// config.
const minImageStatus = 2

// searchBudget bounds the search for one question (can this call go to
// that slot?), and solveBudget all the questions about one group of pods.
// Past them the answer is "yes": ambiguous, never wrong.
const (
	searchBudget = 2000
	solveBudget  = 200000
)

// owner is a pod that image calls may belong to: a start flow being built,
// one handed out, or a sandbox seen only through its CreateContainer (a
// pod started before the capture, a container restarted later).
type owner struct {
	pod         Pod
	sid         string
	annotations map[string]string // the sandbox config's; nil if unknown
	kubelet     bool              // its work calls share one connection
	conn        uint64            // the connection of its RunPodSandbox
	pending     *slot             // the window open now, if any
	mark        uint64            // ledger.mark when pruneImages last kept it
	since       time.Time         // its RunPodSandbox's start; zero if unknown
}

// slot is the window of one container's image calls.
type slot struct {
	ow     *owner
	lo, hi time.Time       // lo zero: unknown; hi zero: still open
	names  map[string]bool // image names and IDs the container uses; nil: unknown
	create bool            // closed by a CreateContainer
}

// sure reports whether kubelet's minImageStatus must hold for s: a
// container kubelet created, in a window seen whole and read whole.
func (l *ledger) sure(s *slot) bool {
	if !s.create || s.lo.IsZero() || s.hi.IsZero() || !s.ow.kubelet {
		return false
	}
	for _, t := range l.unreadable {
		if !t.Before(s.lo) && !t.After(s.hi) {
			return false
		}
	}
	return true
}

// imageCall is an ImageStatus or PullImage call waiting for its pod.
type imageCall struct {
	c      *decode.Call
	status bool            // ImageStatus (counts for minImageStatus)
	names  map[string]bool // image names and IDs it asked for or got
	ann    map[string]string
	trace  string
	pod    *runtimeapi.PodSandboxMetadata // PullImage's sandbox config
	a, b   time.Time                      // start and end (end = start if unfinished)
	// exact's answers (by ignoreTrace), good while ledger.owned+1 is exactAt.
	exactOw [2]*owner
	exactAt [2]uint64
}

func newImageCall(c *decode.Call) *imageCall {
	ic := &imageCall{c: c, a: c.Start, b: c.End, trace: traceID(c)}
	if ic.b.IsZero() || ic.b.Before(ic.a) {
		ic.b = ic.a
	}
	spec := imageSpec(c.Request())
	ic.names = imageKeys(spec)
	ic.ann = spec.GetAnnotations()
	switch r := c.Request().(type) {
	case *runtimeapi.ImageStatusRequest:
		ic.status = true
		if resp, ok := c.Response().(*runtimeapi.ImageStatusResponse); ok && resp.GetImage().GetId() != "" {
			ic.names[resp.GetImage().GetId()] = true
		}
	case *runtimeapi.PullImageRequest:
		ic.pod = r.GetSandboxConfig().GetMetadata()
		if resp, ok := c.Response().(*runtimeapi.PullImageResponse); ok && resp.GetImageRef() != "" {
			ic.names[resp.GetImageRef()] = true
		}
	}
	for k := range ic.names {
		ic.names[withDefaultTag(k)] = true
	}
	return ic
}

// withDefaultTag is kubelet's applyDefaultImageTag: "nginx" → "nginx:latest".
func withDefaultTag(image string) string {
	if image == "" || strings.HasPrefix(image, "sha256:") || strings.Contains(image, "@") {
		return image
	}
	last := image[strings.LastIndexByte(image, '/')+1:]
	if strings.Contains(last, ":") {
		return image
	}
	return image + ":latest"
}

// ReadsFields lists, for the large messages, the only fields grouping,
// labels and the diagrams read (decode.Options.Fields), scalars aside: a
// container's or a sandbox's whole config, a status's mounts, image and
// network, are most of what decoding them costs. Other messages are read
// whole (responses without their maps).
var ReadsFields = map[protoreflect.FullName][]string{
	"runtime.v1.RunPodSandboxRequest":   {"config.metadata", "config.annotations"},
	"runtime.v1.CreateContainerRequest": {"pod_sandbox_id", "config.metadata", "config.image", "sandbox_config.metadata", "sandbox_config.annotations"},
	"runtime.v1.PullImageRequest":       {"image", "sandbox_config.metadata"},
	// learn, Label (state, exit code), Event.
	"runtime.v1.PodSandboxStatusResponse": {"status.id", "status.metadata", "status.network.ip"},
	"runtime.v1.ContainerStatusResponse":  {"status.id", "status.metadata"},
	"runtime.v1.ImageStatusResponse":      {"image.id"},
	"runtime.v1.ListPodSandboxResponse":   {"items.id", "items.metadata"},
	"runtime.v1.ListContainersResponse":   {"containers.id", "containers.pod_sandbox_id", "containers.metadata"},
	"runtime.v1.ContainerEventResponse":   {"container_id", "pod_sandbox_status.id", "pod_sandbox_status.metadata", "containers_statuses.id", "containers_statuses.metadata"},
}

// ReadsHeader says whether grouping reads the request header field name:
// a decoder for outputs that show no headers needs keep only these
// (decode.Options.RequestHeader).
func ReadsHeader(name string) bool { return name == "traceparent" }

// traceID is the trace id of the request's W3C traceparent, or "".
func traceID(c *decode.Call) string {
	for _, h := range c.RequestHeaders {
		if h.Name == "traceparent" {
			// version-traceid-spanid-flags
			p := strings.Split(h.Value, "-")
			if len(p) == 4 && len(p[1]) == 32 && p[1] != strings.Repeat("0", 32) {
				return p[1]
			}
		}
	}
	return ""
}

// ledger holds the image calls and slots of the pods being grouped.
type ledger struct {
	calls  []*imageCall
	slots  []*slot
	owners []*owner
	traces map[string]*owner // trace id → the pod whose work calls carried it; nil: several
	// unreadable are the times of calls whose method is unknown: a window
	// holding one may miss an ImageStatus.
	unreadable []time.Time
	pruned     time.Time // when pruneImages last ran
	mark       uint64    // pruneImages' pass, to mark the owners kept
	// gen counts changes; the verdicts of the components solved since the
	// last change are kept, so the flows of one burst solve it once.
	gen, cacheGen uint64
	cache         map[*imageCall]verdict
	cached        map[*owner]bool
	// owned counts changes of owners and traces, which is all exact reads:
	// solve asks it of every call each time, and it rarely changes.
	owned uint64
	// solve's scratch.
	exactBuf []*owner
	slotsBuf []int
}

// fits reports whether ic may go to s by time, image and evidence; ex is
// the pod ic names outright, if any (exact).
func (l *ledger) fits(ic *imageCall, s *slot, ex *owner) bool {
	if !s.lo.IsZero() && ic.a.Before(s.lo) {
		return false
	}
	if !s.hi.IsZero() && ic.b.After(s.hi) {
		return false
	}
	if ex != nil {
		return ex == s.ow
	}
	if s.names != nil && !overlaps(ic.names, s.names) {
		return false
	}
	if len(ic.ann) > 0 && s.ow.annotations != nil && !subset(ic.ann, s.ow.annotations) {
		return false
	}
	return true
}

// exact is the pod a call names outright: by its sandbox config, or by
// its trace.
func (l *ledger) exact(ic *imageCall, ignoreTrace bool) *owner {
	k := 0
	if ignoreTrace {
		k = 1
	}
	if ic.exactAt[k] != l.owned+1 {
		ic.exactOw[k], ic.exactAt[k] = l.exactNow(ic, ignoreTrace), l.owned+1
	}
	return ic.exactOw[k]
}

func (l *ledger) exactNow(ic *imageCall, ignoreTrace bool) *owner {
	if ic.pod != nil {
		// The latest sandbox of the pod made before the call: kubelet
		// makes a pod's sandbox again (same UID, next attempt), and pulls
		// for the new one.
		for k := len(l.owners) - 1; k >= 0; k-- {
			if ow := l.owners[k]; samePod(ow.pod, ic.pod) && !ow.since.After(ic.a) {
				return ow
			}
		}
	}
	if !ignoreTrace && ic.trace != "" {
		if ow := l.traces[ic.trace]; ow != nil {
			return ow
		}
	}
	return nil
}

func samePod(p Pod, md *runtimeapi.PodSandboxMetadata) bool {
	if md.GetUid() != "" {
		return p.UID == md.GetUid()
	}
	return p.Name == md.GetName() && p.Namespace == md.GetNamespace()
}

func overlaps(a, b map[string]bool) bool {
	for k := range a {
		if b[k] {
			return true
		}
	}
	return false
}

// subset reports whether every annotation of a is in b with the same value.
func subset(a, b map[string]string) bool {
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// verdict is where a call goes.
type verdict struct {
	owners []*owner // the pods it may belong to; one unless ambiguous
	by     string
}

// solve attributes the calls that may belong to seed, and every call
// linked to them through the pods they may belong to: each gets the pods
// it goes to in at least one assignment that keeps kubelet's rules.
func (l *ledger) solve(seed *owner, ignoreTrace bool) map[*imageCall]verdict {
	if l.cacheGen != l.gen || l.cache == nil {
		l.cacheGen, l.cache, l.cached = l.gen, map[*imageCall]verdict{}, map[*owner]bool{}
	}
	if l.cached[seed] {
		return l.cache
	}
	// Scratch slices of the ledger: solve runs for most flows that end.
	exact := slices.Grow(l.exactBuf[:0], len(l.calls))[:len(l.calls)]
	l.exactBuf = exact
	defer clear(exact) // no pruned pod kept alive by the scratch
	for i, ic := range l.calls {
		exact[i] = nil
		if ic != nil {
			exact[i] = l.exact(ic, ignoreTrace)
		}
	}
	cand := map[int][]int{}
	owners := []*owner{seed}
	inComp := map[*owner]bool{seed: true}
	for k := 0; k < len(owners); k++ {
		// The component's pods are few: their slots are found by a scan.
		slotsOf := l.slotsBuf[:0]
		for j, s := range l.slots {
			if s.ow == owners[k] {
				slotsOf = append(slotsOf, j)
			}
		}
		l.slotsBuf = slotsOf
		for i, ic := range l.calls {
			if ic == nil {
				continue
			}
			if _, done := cand[i]; done || !l.fitsOwner(ic, slotsOf, exact[i]) {
				continue
			}
			cand[i] = nil
			for j, s := range l.slots {
				if !l.fits(ic, s, exact[i]) {
					continue
				}
				cand[i] = append(cand[i], j)
				if !inComp[s.ow] {
					inComp[s.ow] = true
					owners = append(owners, s.ow)
				}
			}
		}
	}
	members := make([]int, 0, len(cand))
	for i := range cand {
		members = append(members, i)
	}
	sort.Ints(members)
	feasible := l.search(members, cand)
	out := map[*imageCall]verdict{}
	for _, i := range members {
		ic := l.calls[i]
		var owners []*owner
		seen := map[*owner]bool{}
		for _, j := range feasible[i] {
			if ow := l.slots[j].ow; !seen[ow] {
				seen[ow] = true
				owners = append(owners, ow)
			}
		}
		if len(owners) == 0 {
			continue
		}
		v := verdict{owners: owners, by: ByAmbiguous}
		if len(owners) == 1 {
			v.by = l.evidence(ic, owners[0], ignoreTrace)
		}
		out[ic] = v
	}
	// A call that names its pod outright belongs to it even when kubelet's
	// model finds no window for it there.
	for i, ic := range l.calls {
		if ex := exact[i]; ex != nil && inComp[ex] {
			if _, ok := out[ic]; !ok {
				out[ic] = verdict{owners: []*owner{ex}, by: l.evidence(ic, ex, ignoreTrace)}
			}
		}
	}
	for ic, v := range out {
		l.cache[ic] = v
	}
	for ow := range inComp {
		l.cached[ow] = true
	}
	return l.cache
}

func (l *ledger) fitsOwner(ic *imageCall, slots []int, ex *owner) bool {
	for _, j := range slots {
		if l.fits(ic, l.slots[j], ex) {
			return true
		}
	}
	return false
}

// evidence names the strongest reason a call belongs to its only pod.
func (l *ledger) evidence(ic *imageCall, ow *owner, ignoreTrace bool) string {
	switch {
	case ic.pod != nil && samePod(ow.pod, ic.pod):
		return BySandboxConfig
	case !ignoreTrace && ic.trace != "" && l.traces[ic.trace] == ow:
		return ByTraceparent
	case len(ic.ann) > 0 && ow.annotations != nil && subset(ic.ann, ow.annotations) && l.onlyAnnotated(ic, ow):
		return ByAnnotations
	}
	return ByOrder
}

// onlyAnnotated reports whether ow is the only known pod whose annotations
// hold ic's.
func (l *ledger) onlyAnnotated(ic *imageCall, ow *owner) bool {
	for _, x := range l.owners {
		if x != ow && (x.annotations == nil || subset(ic.ann, x.annotations)) {
			return false
		}
	}
	return true
}

// search finds, for each call of a component, the slots it takes in at
// least one valid assignment: the calls of one pod do not overlap in
// time, and each sure slot gets at least minImageStatus ImageStatus calls.
// If no assignment is valid (kubelet did something its model does not
// know), every static candidate stays: ambiguous rather than wrong.
func (l *ledger) search(members []int, cand map[int][]int) map[int][]int {
	n := len(members)
	st := &searchState{l: l, calls: make([]*imageCall, n), need: map[int]int{}}
	dom := make([][]int, n)
	for k, i := range members {
		st.calls[k], dom[k] = l.calls[i], cand[i]
		for _, j := range cand[i] {
			if l.sure(l.slots[j]) {
				st.need[j] = minImageStatus
			}
		}
	}
	st.overlapping()
	all := func() map[int][]int {
		out := map[int][]int{}
		for _, i := range members {
			out[i] = cand[i]
		}
		return out
	}
	seen := make([]map[int]bool, n)
	for k := range seen {
		seen[k] = map[int]bool{}
	}
	record := func(d [][]int) {
		for k, x := range d {
			seen[k][x[0]] = true
		}
	}
	st.budget = searchBudget
	sol := st.solve(dom, -1, -1)
	switch {
	case sol == nil && st.budget > 0:
		return all() // no valid assignment
	case sol != nil:
		record(sol)
	}
	total := solveBudget
	for k := range members {
		for _, j := range dom[k] {
			if seen[k][j] {
				continue
			}
			if total <= 0 {
				seen[k][j] = true // undecided: possible
				continue
			}
			st.budget = min(searchBudget, total)
			sol := st.solve(dom, k, j)
			total -= min(searchBudget, total) - max(st.budget, 0)
			if sol != nil {
				record(sol)
			} else if st.budget <= 0 {
				seen[k][j] = true // undecided: possible
			}
		}
	}
	out := map[int][]int{}
	for k, i := range members {
		for _, j := range cand[i] {
			if seen[k][j] {
				out[i] = append(out[i], j)
			}
		}
	}
	return out
}

type searchState struct {
	l      *ledger
	calls  []*imageCall
	ov     [][]int     // for each call, the calls overlapping it in time
	need   map[int]int // sure slot → ImageStatus calls it needs
	budget int
}

// covered reports whether the domains still let every sure slot get the
// ImageStatus calls it needs: a matching of each slot's needs to distinct
// calls that may go there (Kuhn's augmenting paths; the sizes are small).
func (st *searchState) covered(d [][]int) bool {
	if len(st.need) == 0 {
		return true
	}
	var units []int // one per ImageStatus call a slot needs
	for j, n := range st.need {
		for range n {
			units = append(units, j)
		}
	}
	sort.Ints(units)
	match := make([]int, len(d)) // call → unit, -1
	for x := range match {
		match[x] = -1
	}
	var visited []bool
	var try func(u int) bool
	try = func(u int) bool {
		for x, dx := range d {
			if visited[x] || !st.calls[x].status || !contains(dx, units[u]) {
				continue
			}
			visited[x] = true
			if match[x] < 0 || try(match[x]) {
				match[x] = u
				return true
			}
		}
		return false
	}
	for u := range units {
		visited = make([]bool, len(d))
		if !try(u) {
			return false
		}
	}
	return true
}

// overlapping fills st.ov.
func (st *searchState) overlapping() {
	n := len(st.calls)
	st.ov = make([][]int, n)
	idx := make([]int, n)
	for k := range idx {
		idx[k] = k
	}
	sort.Slice(idx, func(a, b int) bool { return st.calls[idx[a]].a.Before(st.calls[idx[b]].a) })
	for x, k := range idx {
		ck := st.calls[k]
		for _, m := range idx[x+1:] {
			cm := st.calls[m]
			if !cm.a.Before(ck.b) {
				break
			}
			st.ov[k] = append(st.ov[k], m)
			st.ov[m] = append(st.ov[m], k)
		}
	}
}

// solve returns one valid assignment (each domain cut to one slot), with
// call k fixed to slot j (k < 0: none), or nil.
func (st *searchState) solve(dom [][]int, k, j int) [][]int {
	d := make([][]int, len(dom))
	copy(d, dom)
	fixed := make([]bool, len(dom))
	var queue []int
	if k >= 0 {
		d[k] = []int{j}
	}
	for x := range d {
		if len(d[x]) == 1 {
			queue = append(queue, x)
		}
	}
	if !st.propagate(d, fixed, queue) {
		return nil
	}
	return st.dfs(d, fixed)
}

// propagate fixes the calls in queue to their only slot and takes that
// slot's pod from the calls overlapping them, fixing those left with one.
func (st *searchState) propagate(d [][]int, fixed []bool, queue []int) bool {
	for len(queue) > 0 {
		k := queue[0]
		queue = queue[1:]
		if fixed[k] {
			continue
		}
		fixed[k] = true
		ow := st.l.slots[d[k][0]].ow
		for _, m := range st.ov[k] {
			if fixed[m] {
				if st.l.slots[d[m][0]].ow == ow {
					return false
				}
				continue
			}
			var keep []int
			for _, x := range d[m] {
				if st.l.slots[x].ow != ow {
					keep = append(keep, x)
				}
			}
			if len(keep) == len(d[m]) {
				continue
			}
			if len(keep) == 0 {
				return false
			}
			d[m] = keep
			if len(keep) == 1 {
				queue = append(queue, m)
			}
		}
	}
	return true
}

func (st *searchState) dfs(d [][]int, fixed []bool) [][]int {
	st.budget--
	if st.budget < 0 {
		return nil
	}
	if !st.covered(d) {
		return nil
	}
	best := -1
	for x := range d {
		if !fixed[x] && (best < 0 || len(d[x]) < len(d[best])) {
			best = x
		}
	}
	if best < 0 {
		return d
	}
	for _, j := range d[best] {
		nd := make([][]int, len(d))
		copy(nd, d)
		nf := make([]bool, len(fixed))
		copy(nf, fixed)
		nd[best] = []int{j}
		if st.propagate(nd, nf, []int{best}) {
			if sol := st.dfs(nd, nf); sol != nil {
				return sol
			}
		}
		if st.budget < 0 {
			return nil
		}
	}
	return nil
}

func contains(s []int, x int) bool {
	for _, v := range s {
		if v == x {
			return true
		}
	}
	return false
}
