package flow

import (
	"sort"
	"strings"
	"time"
)

// Span is one part of a flow's time: a phase (while calls of one kind of
// the pod's work were open) or a wait between them.
type Span struct {
	// Name is the phase ("sandbox", "image", "create", "start", "stop",
	// "stop sandbox", "remove", "remove sandbox", "exec") or the wait
	// ("image pull queue", "back-off", "init container NAME", "kubelet's
	// clean-up", "kubelet": kubelet's own work between calls).
	Name string
	Dur  time.Duration
	Wait bool
}

// PhaseExec is the phase of the failed command (a liveness probe, a hook)
// a restart begins with when kubelet killed the container for it.
const PhaseExec = "exec"

// Wait names.
const (
	WaitPullQueue = "image pull queue"
	WaitBackOff   = "back-off"
	WaitCleanUp   = "kubelet's clean-up"
	WaitKubelet   = "kubelet"
	waitInit      = "init container "
)

// Timing splits a flow's time into phases and waits that add up.
type Timing struct {
	// Total is the flow's Duration: until the pod was up (down), or until
	// its last call ended when that was not seen.
	Total time.Duration
	// Parts are the phases, then the waits, each in order of first
	// occurrence. Their durations add up to Total exactly: at each moment
	// the flow is in the phase of the earliest-started of its work calls
	// open then, or else waiting.
	Parts []Span
	// After is the same from Done to the flow's last call: a stop's
	// removal at kubelet's next clean-up, up to a minute later.
	After []Span
	// Segments is the timeline behind Parts and After: each stretch of
	// time with its phase or wait, in time order.
	Segments []Segment
}

// Segment is one stretch of a flow's timeline.
type Segment struct {
	Name       string
	Wait       bool
	Start, End time.Time
}

// WaitDuring is the wait that covers most of [a, b), and how much of it;
// "" if no wait does.
func (t Timing) WaitDuring(a, b time.Time) (string, time.Duration) {
	cover := map[string]time.Duration{}
	best := ""
	for _, s := range t.Segments {
		if !s.Wait {
			continue
		}
		if x, y := maxTime(s.Start, a), minTime(s.End, b); y.After(x) {
			cover[s.Name] += y.Sub(x)
			if best == "" || cover[s.Name] > cover[best] {
				best = s.Name
			}
		}
	}
	return best, cover[best]
}

// PhaseOf is the phase a call of method belongs to in a flow's timing, or
// "" for a call that does not do the pod's work (status calls, polling).
func PhaseOf(method string) string {
	switch method {
	case "RunPodSandbox":
		return "sandbox"
	case "ImageStatus", "PullImage":
		return "image"
	case "CreateContainer":
		return "create"
	case "StartContainer":
		return "start"
	case "StopContainer":
		return "stop"
	case "StopPodSandbox":
		return "stop sandbox"
	case "RemoveContainer":
		return "remove"
	case "RemovePodSandbox":
		return "remove sandbox"
	}
	return ""
}

// WorkOf is the phase step s does: PhaseOf its method, or PhaseExec for
// the failed command a restart begins with.
func WorkOf(s *Step) string {
	if s.Method == "ExecSync" && s.Phase == PhaseExec {
		return PhaseExec
	}
	return PhaseOf(s.Method)
}

// Timing computes f's phases and waits. Pure: it reads f's steps, events
// and OtherPulls.
func (f *Flow) Timing() Timing {
	if len(f.Steps) == 0 || f.Start.IsZero() || f.End.IsZero() && f.Done.IsZero() {
		return Timing{} // no time to split (Duration would be from the year 1)
	}
	t := Timing{Total: f.Duration()}
	type iv struct {
		a, b time.Time
		s    *Step
	}
	var ivs []iv
	for i := range f.Steps {
		s := &f.Steps[i]
		if !s.Done || s.Start.IsZero() || WorkOf(s) == "" {
			continue
		}
		ivs = append(ivs, iv{s.Start, s.Start.Add(s.Duration), s})
	}
	sort.SliceStable(ivs, func(i, j int) bool { return ivs[i].a.Before(ivs[j].a) })
	done := f.Start.Add(t.Total)
	var parts, after spanList
	// add counts [a, b) to name, split at done.
	add := func(name string, wait bool, a, b time.Time) {
		if !b.After(a) {
			return
		}
		t.Segments = append(t.Segments, Segment{name, wait, a, b})
		if a.Before(done) {
			parts.add(name, wait, minTime(b, done).Sub(a))
		}
		if b.After(done) {
			after.add(name, wait, b.Sub(maxTime(a, done)))
		}
	}
	cur := f.Start
	var prev, failed *Step // failed: the last failed call not yet made again with success
	for _, v := range ivs {
		if v.a.After(cur) {
			f.gap(prev, v.s, failed, cur, v.a, done, add)
		}
		if v.b.After(cur) {
			add(WorkOf(v.s), false, maxTime(cur, v.a), v.b)
			cur = v.b
		}
		switch {
		case v.s.Err != "":
			failed = v.s
		case failed != nil && v.s.Method == failed.Method && v.s.Arg == failed.Arg:
			failed = nil
		}
		prev = v.s
	}
	if done.After(cur) {
		add(WaitKubelet, true, cur, done)
	}
	t.Parts, t.After = parts.sorted(), after.sorted()
	return t
}

// gap names the wait [a, b) between the flow's work calls prev (nil at the
// start) and next. failed is the last call that failed and was not made
// again with success since: until it is, a start is backing off (kubelet
// checks the image now and then without pulling it, ErrImagePullBackOff).
func (f *Flow) gap(prev, next, failed *Step, a, b, done time.Time, add func(string, bool, time.Time, time.Time)) {
	switch {
	case next.Method == "PullImage" && f.Kind.Starts():
		// Pulls are queued one at a time (kubelet's serialized puller):
		// the part of the gap while another pod's pull ran is the queue.
		// (kubelet checks the image right before it pulls: a back-off
		// ends before that check, not here.)
		q := overlap(f.OtherPulls, a, b)
		add(WaitPullQueue, true, a, a.Add(q))
		add(WaitKubelet, true, a.Add(q), b)
		return
	case failed != nil && f.Kind.Starts():
		add(WaitBackOff, true, a, b)
		return
	case f.Kind == Restart && prev != nil && (prev.Method == "StopContainer" || prev.Method == "RemoveContainer") &&
		(PhaseOf(next.Method) == "image" || next.Method == "CreateContainer") && b.Sub(a) > time.Second:
		// Killed to be restarted, the container is made again after
		// kubelet's restart back-off (none the first time: a few ms).
		add(WaitBackOff, true, a, b)
		return
	case f.Kind == Restart && prev == nil && f.fromExit() &&
		(PhaseOf(next.Method) == "image" || next.Method == "CreateContainer") && b.Sub(a) > time.Second:
		// From the older instance's exit, as kubelet saw it, to the new
		// one: kubelet's restart back-off (CrashLoopBackOff).
		add(WaitBackOff, true, a, b)
		return
	case prev != nil && prev.Method == "StartContainer" && next.Arg != prev.Arg && f.exited(prev.Arg, a, b):
		add(waitInit+prev.Arg, true, a, b)
		return
	case f.Kind == Stop && !a.Before(done) && b.Sub(a) > time.Second:
		add(WaitCleanUp, true, a, b)
		return
	}
	add(WaitKubelet, true, a, b)
}

// fromExit says whether the restart f begins where kubelet saw its
// container's older instance exited (a ContainerStatus), not at a kill.
func (f *Flow) fromExit() bool {
	for _, s := range f.Steps {
		if s.Attr.By != ByTime {
			return s.Method == "ContainerStatus" && strings.HasPrefix(s.Result, "EXITED")
		}
	}
	return false
}

// exited reports whether the flow saw container name exit by time b (a
// status call or an event), after it was started: an init container that
// the next container waited for.
func (f *Flow) exited(name string, a, b time.Time) bool {
	for _, e := range f.Events {
		if e.Container == name && e.Type == "CONTAINER_STOPPED" && !e.Time.After(b) {
			return true
		}
	}
	for _, s := range f.Steps {
		if s.Method == "ContainerStatus" && s.Arg == name && strings.HasPrefix(s.Result, "EXITED") && !s.Start.After(b) {
			return true
		}
	}
	return false
}

// overlap is how much of [a, b) the intervals cover (counted once).
func overlap(ivs []Interval, a, b time.Time) time.Duration {
	type seg struct{ a, b time.Time }
	var segs []seg
	for _, v := range ivs {
		x, y := maxTime(v.Start, a), minTime(v.End, b)
		if y.After(x) {
			segs = append(segs, seg{x, y})
		}
	}
	sort.Slice(segs, func(i, j int) bool { return segs[i].a.Before(segs[j].a) })
	var sum time.Duration
	var cur time.Time
	for _, s := range segs {
		if s.a.Before(cur) {
			s.a = cur
		}
		if s.b.After(s.a) {
			sum += s.b.Sub(s.a)
			cur = s.b
		}
	}
	return sum
}

// spanList accumulates spans by name, keeping first-occurrence order.
type spanList struct {
	spans []Span
	index map[string]int
}

func (l *spanList) add(name string, wait bool, d time.Duration) {
	if d <= 0 {
		return
	}
	if l.index == nil {
		l.index = map[string]int{}
	}
	key := name
	if wait {
		key = "\x00" + name
	}
	if i, ok := l.index[key]; ok {
		l.spans[i].Dur += d
		return
	}
	l.index[key] = len(l.spans)
	l.spans = append(l.spans, Span{Name: name, Dur: d, Wait: wait})
}

// sorted returns the phases, then the waits, each in first-occurrence order.
func (l *spanList) sorted() []Span {
	sort.SliceStable(l.spans, func(i, j int) bool { return !l.spans[i].Wait && l.spans[j].Wait })
	return l.spans
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
