package flow

import (
	"slices"
	"strings"
	"time"
)

// Comparison is two flows side by side: each phase's time in both, and the
// calls only one of them made.
type Comparison struct {
	A, B *Flow
	// Total labels the row of the flows' durations: "total (to running)"
	// for two starts, "total (to stopped)" for two stops, else "total".
	Total        string
	Phases       []PhaseTimes
	OnlyA, OnlyB []*Unmatched
}

// PhaseTimes is one phase's time in A and in B (nil when that flow has no
// such call).
type PhaseTimes struct {
	Label string
	A, B  *time.Duration
}

// Unmatched is a call only one flow made; identical ones are counted once.
type Unmatched struct {
	Step  Step
	Count int
	Total time.Duration
}

// PhaseMethods are the calls that do a pod's work, in the order render's
// summary line and diff's table list them, with the phase each names.
var PhaseMethods = []struct{ Method, Label string }{
	{"RunPodSandbox", "sandbox"}, {"PullImage", "pull"}, {"CreateContainer", "create"},
	{"StartContainer", "start"}, {"StopContainer", "stop"}, {"StopPodSandbox", "stop sandbox"},
	{"RemoveContainer", "remove"}, {"RemovePodSandbox", "remove sandbox"},
}

// PhaseTime is the time during which a flow had a call of method open: two
// StopContainer calls made together count once, as they took the pod's
// time once. ok is false if the flow made none.
func PhaseTime(f *Flow, method string) (sum time.Duration, ok bool) {
	var spans [][2]time.Time
	for _, s := range f.Steps {
		if s.Method != method {
			continue
		}
		ok = true
		if s.Start.IsZero() {
			sum += s.Duration
			continue
		}
		spans = append(spans, [2]time.Time{s.Start, s.Start.Add(s.Duration)})
	}
	slices.SortFunc(spans, func(a, b [2]time.Time) int { return a[0].Compare(b[0]) })
	var start, end time.Time
	for i, sp := range spans {
		switch {
		case i == 0:
			start, end = sp[0], sp[1]
		case sp[0].After(end): // a gap: the interval before is counted
			sum += end.Sub(start)
			start, end = sp[0], sp[1]
		case sp[1].After(end):
			end = sp[1]
		}
	}
	return sum + end.Sub(start), ok
}

// Compare puts two flows side by side.
func Compare(a, b *Flow) *Comparison {
	d := &Comparison{A: a, B: b, Total: "total"}
	if a.Kind == b.Kind {
		if a.Kind == Start {
			d.Total = "total (to running)"
		} else {
			d.Total = "total (to stopped)"
		}
	}
	for _, p := range PhaseMethods {
		ta, okA := PhaseTime(a, p.Method)
		tb, okB := PhaseTime(b, p.Method)
		if !okA && !okB {
			continue
		}
		row := PhaseTimes{Label: p.Label}
		if okA {
			row.A = &ta
		}
		if okB {
			row.B = &tb
		}
		d.Phases = append(d.Phases, row)
	}
	ua, ub := unmatchedSteps(a.Steps, b.Steps)
	d.OnlyA, d.OnlyB = collapse(ua), collapse(ub)
	return d
}

// callKeys gives each step the key calls are matched by: service and
// method, plus the argument when the other flow made the same call with
// the same argument (a container's name, an image both used), so that
// "CreateContainer web" pairs with "CreateContainer web", not with an init
// container's, while pods with different names and images still pair up.
func callKeys(steps, other []Step) []string {
	theirs := map[string]bool{}
	for _, s := range other {
		theirs[s.Service+"/"+s.Method+"\x00"+s.Arg] = true
	}
	keys := make([]string, len(steps))
	for i, s := range steps {
		k := s.Service + "/" + s.Method + "\x00" + s.Arg
		if !theirs[k] {
			k = s.Service + "/" + s.Method + "\x00*"
		}
		keys[i] = k
	}
	return keys
}

// lcsLimit bounds the LCS table (cells); longer pairs of flows (--all on
// a long capture) are matched by counting keys instead of in order.
const lcsLimit = 4 << 20

// unmatchedSteps aligns the two flows' calls with a longest common
// subsequence over their keys and returns the calls left over on each side.
func unmatchedSteps(as, bs []Step) (onlyA, onlyB []Step) {
	ka, kb := callKeys(as, bs), callKeys(bs, as)
	// Common prefix and suffix match without a table.
	lo := 0
	for lo < len(ka) && lo < len(kb) && ka[lo] == kb[lo] {
		lo++
	}
	ha, hb := len(ka), len(kb)
	for ha > lo && hb > lo && ka[ha-1] == kb[hb-1] {
		ha--
		hb--
	}
	ka, kb = ka[lo:ha], kb[lo:hb]
	sa, sb := as[lo:ha], bs[lo:hb]
	n, m := len(ka), len(kb)
	if n == 0 || m == 0 {
		return sa, sb
	}
	if n*m > lcsLimit {
		return unmatchedByCount(ka, kb, sa, sb)
	}
	// t[i][j] = LCS length of ka[i:], kb[j:].
	w := m + 1
	t := make([]int32, (n+1)*w)
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			switch {
			case ka[i] == kb[j]:
				t[i*w+j] = t[(i+1)*w+j+1] + 1
			case t[(i+1)*w+j] >= t[i*w+j+1]:
				t[i*w+j] = t[(i+1)*w+j]
			default:
				t[i*w+j] = t[i*w+j+1]
			}
		}
	}
	i, j := 0, 0
	for i < n && j < m {
		switch {
		case ka[i] == kb[j]:
			i++
			j++
		case t[(i+1)*w+j] >= t[i*w+j+1]:
			onlyA = append(onlyA, sa[i])
			i++
		default:
			onlyB = append(onlyB, sb[j])
			j++
		}
	}
	onlyA = append(onlyA, sa[i:]...)
	onlyB = append(onlyB, sb[j:]...)
	return onlyA, onlyB
}

// unmatchedByCount pairs calls with the same key regardless of order.
func unmatchedByCount(ka, kb []string, sa, sb []Step) (onlyA, onlyB []Step) {
	na, nb := map[string]int{}, map[string]int{}
	for _, k := range ka {
		na[k]++
	}
	for _, k := range kb {
		nb[k]++
	}
	// The first min(na, nb) calls of each key are matched.
	left := func(keys []string, steps []Step, theirs map[string]int) []Step {
		used := map[string]int{}
		var out []Step
		for i, k := range keys {
			used[k]++
			if used[k] > theirs[k] {
				out = append(out, steps[i])
			}
		}
		return out
	}
	return left(ka, sa, nb), left(kb, sb, na)
}

// collapse counts identical calls (same method, argument and failure)
// once, in the order they first came.
func collapse(steps []Step) []*Unmatched {
	var out []*Unmatched
	byKey := map[string]*Unmatched{}
	for _, s := range steps {
		k := s.Service + "/" + s.Method + "\x00" + s.Arg + "\x00" + ErrCode(s.Err)
		c := byKey[k]
		if c == nil {
			c = &Unmatched{Step: s}
			byKey[k] = c
			out = append(out, c)
		}
		c.Count++
		c.Total += s.Duration
	}
	return out
}

// ErrCode is the gRPC code of a step's error text ("NotFound: …").
func ErrCode(e string) string {
	if i := strings.Index(e, ":"); i >= 0 {
		return e[:i]
	}
	return e
}
