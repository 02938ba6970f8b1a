package flow

import (
	"sort"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/criseq/criseq/decode"
)

// endOf is when a call returned, or when it started if it never did.
func endOf(c *decode.Call) time.Time {
	if c.End.IsZero() {
		return c.Start
	}
	return c.End
}

// worked notes that ow's pod worker returned from c: its next image calls
// come after, and the trace c carries is the pod's.
func (g *Grouper) worked(ow *owner, c *decode.Call) {
	if ow == nil {
		return
	}
	g.lastWork[ow.sid] = endOf(c)
	if t := traceID(c); t != "" {
		g.images.addTrace(t, ow)
	}
	if c.Conn != ow.conn && ow.kubelet {
		ow.kubelet = false // crictl: a connection per command
		g.images.gen++
	}
}

// work is worked for a sandbox with no start flow.
func (g *Grouper) work(sid string, c *decode.Call) {
	if sid != "" {
		g.lastWork[sid] = endOf(c)
	}
}

// openSlot opens the window of ow's next container's image calls, from c's
// end until its CreateContainer.
func (g *Grouper) openSlot(ow *owner, c *decode.Call) {
	if ow == nil || ow.pending != nil {
		return
	}
	ow.pending = &slot{ow: ow, lo: endOf(c)}
	g.images.slots = append(g.images.slots, ow.pending)
	g.images.gen++
}

// closeSlot ends ow's open window at hi with no container created: the pod
// is stopping, or its flow is done.
func (g *Grouper) closeSlot(ow *owner, hi time.Time) {
	if ow == nil || ow.pending == nil {
		return
	}
	ow.pending.hi = hi
	if ow.pending.hi.Before(ow.pending.lo) {
		ow.pending.hi = ow.pending.lo
	}
	ow.pending = nil
	g.images.gen++
}

// created closes the window of the container c creates: its image calls
// lie between the pod's previous work call and c.
func (g *Grouper) created(ow *owner, c *decode.Call, spec *runtimeapi.ImageSpec) {
	if ow == nil {
		return
	}
	s := ow.pending
	if s == nil {
		s = &slot{ow: ow, lo: g.lastWork[ow.sid]}
		g.images.slots = append(g.images.slots, s)
	}
	ow.pending = nil
	s.hi, s.create, s.names = c.Start, true, containerImages(spec)
	g.images.gen++
	g.worked(ow, c)
	if !c.OK() {
		// kubelet tries again at the pod's next sync: image calls, then
		// another CreateContainer.
		g.openSlot(ow, c)
	}
}

// containerImages are the names a container's image goes by: the image
// ID kubelet resolved, the name the user gave, with kubelet's default tag.
func containerImages(spec *runtimeapi.ImageSpec) map[string]bool {
	m := imageKeys(spec)
	for k := range m {
		m[withDefaultTag(k)] = true
	}
	return m
}

// podOf is sandbox sid's pod: as its RunPodSandbox said, else as md (a
// CreateContainer's sandbox config) says, else named by the sandbox.
func (g *Grouper) podOf(sid string, md *runtimeapi.PodSandboxMetadata) Pod {
	if pod, ok := g.pods[sid]; ok {
		return pod
	}
	if md.GetName() != "" {
		return Pod{Namespace: md.GetNamespace(), Name: md.GetName(), UID: md.GetUid()}
	}
	return Pod{Name: "sandbox " + Short(sid)}
}

// phantomCreate records the window of a container created in a sandbox
// with no start flow (a pod started before the capture, or a container
// restarted long after): its image calls must not be taken for another
// pod's.
func (g *Grouper) phantomCreate(sid string, c *decode.Call) {
	if sid == "" {
		return
	}
	r, _ := c.Request().(*runtimeapi.CreateContainerRequest)
	ow := g.phantoms[sid]
	if ow == nil {
		if len(g.phantoms) >= maxPhantoms {
			return
		}
		pod := g.podOf(sid, r.GetSandboxConfig().GetMetadata())
		ow = &owner{pod: pod, sid: sid, annotations: r.GetSandboxConfig().GetAnnotations()}
		g.phantoms[sid] = ow
		g.images.owners = append(g.images.owners, ow)
		g.images.owned++
	}
	g.images.gen++
	g.images.slots = append(g.images.slots, &slot{ow: ow, lo: g.lastWork[sid], hi: c.Start, names: containerImages(r.GetConfig().GetImage()), create: true})
	g.work(sid, c)
}

// addImageCall puts an ImageStatus or PullImage call in the ledger.
func (g *Grouper) addImageCall(c *decode.Call) {
	ic := newImageCall(c)
	l := &g.images
	l.gen++
	l.calls = append(l.calls, ic)
	if len(l.calls) > g.maxPending {
		l.calls[0] = nil
		l.calls = l.calls[1:]
	}
	// A pull names its pod: the pod's open window is for that image.
	if ow := l.exact(ic, true); ow != nil && ow.pending != nil && ic.pod != nil {
		if ow.pending.names == nil {
			ow.pending.names = map[string]bool{}
		}
		l.gen++
		for k := range ic.names {
			ow.pending.names[k] = true
		}
	}
}

// addTrace ties a trace id to a pod; a trace seen with two pods ties none.
func (l *ledger) addTrace(t string, ow *owner) {
	prev, ok := l.traces[t]
	switch {
	case !ok:
		l.traces[t] = ow
	case prev != ow && prev != nil:
		l.traces[t] = nil
	default:
		return
	}
	l.gen++
	l.owned++
}

// attribute adds to o's flow the image calls that belong to its pod (or
// may: ambiguous ones are in each candidate's flow), and notes the pulls
// of other pods it may have queued behind.
func (g *Grouper) attribute(o *open) {
	f := o.f
	f.OtherPulls = nil
	if o.ow == nil || len(o.steps) == 0 {
		return
	}
	v := g.images.solve(o.ow, g.opts.IgnoreTraceparent)
	start := o.steps[0].Start
	for _, ic := range g.images.calls {
		if ic == nil {
			continue
		}
		vd := v[ic]
		mine := false
		for _, ow := range vd.owners {
			mine = mine || ow == o.ow
		}
		if mine {
			st := g.step(ic.c)
			st.Attr.By = vd.by
			if vd.by == ByAmbiguous {
				for _, ow := range vd.owners {
					st.Attr.Candidates = append(st.Attr.Candidates, ow.pod)
				}
				sort.Slice(st.Attr.Candidates, func(i, j int) bool {
					return st.Attr.Candidates[i].String() < st.Attr.Candidates[j].String()
				})
			}
			f.Steps = append(f.Steps, st)
			continue
		}
		if !ic.status && ic.b.After(start) {
			f.OtherPulls = append(f.OtherPulls, Interval{ic.a, ic.b})
		}
	}
}

// pruneImages forgets the image calls and windows no open flow can use.
// Only start and restart flows take image calls (attribute): a stop flow left open
// (its RemovePodSandbox never seen) keeps none alive.
func (g *Grouper) pruneImages() {
	l := &g.images
	if g.now.Sub(l.pruned) < time.Second {
		return
	}
	l.pruned = g.now
	cutoff := g.now.Add(-g.opts.InitWait)
	for _, o := range g.order {
		if o.ow != nil && len(o.steps) > 0 && o.steps[0].Start.Before(cutoff) {
			cutoff = o.steps[0].Start
		}
	}
	for _, o := range g.starts {
		if o.ow != nil && len(o.steps) > 0 && o.steps[0].Start.Before(cutoff) {
			cutoff = o.steps[0].Start
		}
	}
	calls := l.calls[:0]
	for _, ic := range l.calls {
		if ic != nil && !ic.b.Before(cutoff) {
			calls = append(calls, ic)
		}
	}
	if len(calls) < len(l.calls) {
		l.gen++
	}
	clear(l.calls[len(calls):])
	l.calls = calls
	// The owners kept get a new mark (no maps: this runs every second of
	// capture time).
	l.mark++
	slots := l.slots[:0]
	for _, s := range l.slots {
		if s.hi.IsZero() || !s.hi.Before(cutoff) {
			slots = append(slots, s)
			s.ow.mark = l.mark
		}
	}
	if len(slots) < len(l.slots) {
		l.gen++
	}
	clear(l.slots[len(slots):])
	l.slots = slots
	owners := l.owners[:0]
	for _, ow := range l.owners {
		// An owner does not point to its start flow: the ledger would keep
		// every flow handed out since the oldest one still open.
		if s := g.starts[ow.sid]; ow.mark == l.mark || s != nil && s.ow == ow {
			ow.mark = l.mark
			owners = append(owners, ow)
			continue
		}
		if g.phantoms[ow.sid] == ow {
			delete(g.phantoms, ow.sid)
		}
	}
	if len(owners) < len(l.owners) {
		l.owned++
	}
	clear(l.owners[len(owners):])
	l.owners = owners
	for t, ow := range l.traces {
		if ow == nil || ow.mark != l.mark {
			l.owned++
			delete(l.traces, t)
		}
	}
	un := l.unreadable[:0]
	for _, t := range l.unreadable {
		if !t.Before(cutoff) {
			un = append(un, t)
		}
	}
	l.unreadable = un
}
