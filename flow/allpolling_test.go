package flow

import (
	"fmt"
	"testing"
	"time"

	"github.com/criseq/criseq/decode"
)

// With --all a flow shows the polling between its own calls, and no more:
// a real capture whose stop never sees RemovePodSandbox, followed by half
// an hour of the same kubelet's real polling (its calls copied, shifted in
// time). The flow left open must not take every polling call to the end
// (each flow's tail stays within maxPollingTail while grouping), and each
// flow must time, name and hold its own calls as without --all.
func TestAllPollingWithinFlow(t *testing.T) {
	real := captureCalls(t, "kubelet-missing")
	var calls, polls []*decode.Call
	var last time.Time
	for _, c := range real {
		if c.Name == "RemovePodSandbox" {
			continue
		}
		calls = append(calls, c)
		if IsPolling(c.Name) {
			polls = append(polls, c)
		}
		if c.End.After(last) {
			last = c.End
		}
	}
	if len(polls) < 20 {
		t.Fatalf("%d polling calls in the capture: too few to copy", len(polls))
	}
	span := last.Sub(polls[0].Start) + time.Second
	for k := 1; time.Duration(k)*span < 30*time.Minute; k++ {
		shift := time.Duration(k) * span
		for _, p := range polls {
			c := *p
			c.Start, c.End = p.Start.Add(shift), p.End.Add(shift)
			calls = append(calls, &c)
		}
	}

	g := NewGrouper(Options{All: true})
	var all []*Flow
	maxTail, maxOpenSteps := 0, 0
	for _, c := range calls {
		all = append(all, g.Add(c)...)
		steps := 0
		for _, o := range g.order {
			if len(o.steps) > 0 {
				maxTail = max(maxTail, len(o.steps)-1-o.own)
			}
			steps += len(o.steps)
		}
		maxOpenSteps = max(maxOpenSteps, steps)
	}
	all = append(all, g.Flush()...)
	Sort(all)
	own := Group(calls, Options{})
	t.Logf("%d calls (%d copied polling); open flows held at most %d steps, a tail of %d", len(calls), len(calls)-len(real), maxOpenSteps, maxTail)
	if maxTail > maxPollingTail {
		t.Errorf("a flow held %d polling steps after its last call, above %d", maxTail, maxPollingTail)
	}

	if len(all) != len(own) {
		t.Fatalf("%d flows with --all, %d without", len(all), len(own))
	}
	stopOpen := false
	for i, f := range all {
		w := own[i]
		if f.Kind == Stop && !f.Complete {
			stopOpen = true
		}
		got := fmt.Sprint(f.Kind, f.Pod, f.Start, f.End, f.Done, f.Complete, f.Client, f.Duration())
		want := fmt.Sprint(w.Kind, w.Pod, w.Start, w.End, w.Done, w.Complete, w.Client, w.Duration())
		if got != want {
			t.Errorf("flow %d with --all:\n%s\nwithout:\n%s", i, got, want)
		}
		var ownSteps []string
		polling := 0
		for _, s := range f.Steps {
			if s.Attr.By != ByTime {
				ownSteps = append(ownSteps, s.Method)
				continue
			}
			polling++
			if s.Start.After(f.End) {
				t.Errorf("%s %s: polling %s at %v, after the flow's end %v", f.Pod, f.Kind, s.Method, s.Start, f.End)
			}
		}
		if got, want := fmt.Sprint(ownSteps), methods(w); got != "["+want+"]" {
			t.Errorf("%s %s: own calls with --all %s, without [%s]", f.Pod, f.Kind, got, want)
		}
		t.Logf("%s %s: %d calls, %d of them polling, %v", f.Pod, f.Kind, len(f.Steps), polling, f.Duration())
	}
	if !stopOpen {
		t.Error("no stop flow was left open: the test proves nothing")
	}
}

// The polling in a gap shorter than InitWait between two of a flow's own
// calls is kept: the real stop waits 42 s for kubelet's clean-up, and its
// diagram with --all shows what kubelet polled meanwhile.
func TestAllPollingKeptBetweenCalls(t *testing.T) {
	calls := captureCalls(t, "kubelet-missing")
	for _, f := range Group(calls, Options{All: true}) {
		if f.Kind != Stop {
			continue
		}
		if !f.Complete {
			t.Fatalf("the stop of %s is not complete", f.Pod)
		}
		between := 0
		for _, s := range f.Steps {
			if s.Attr.By == ByTime && s.Start.After(f.Done) && s.Start.Before(f.End) {
				between++
			}
		}
		t.Logf("%s stop: %d calls, %d polling between StopPodSandbox and RemovePodSandbox", f.Pod, len(f.Steps), between)
		if between < 50 {
			t.Errorf("%d polling calls in the 42 s before RemovePodSandbox, want kubelet's (over 50)", between)
		}
		return
	}
	t.Fatal("no stop flow")
}
