package flow

import (
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

// PhaseTimes is one phase's or wait's time in A and in B (nil when that
// flow has none). Like Timing, the rows of a side add up to its total;
// rows of After (a stop's removal at kubelet's next clean-up) are labelled
// "later: …".
type PhaseTimes struct {
	Label string
	A, B  *time.Duration
	Wait  bool
}

// Unmatched is a call only one flow made; identical ones are counted once.
type Unmatched struct {
	Step  Step
	Count int
	Total time.Duration
}

// Compare puts two flows side by side.
func Compare(a, b *Flow) *Comparison {
	d := &Comparison{A: a, B: b, Total: "total"}
	if a.Kind.Starts() && b.Kind.Starts() {
		d.Total = "total (to running)"
	} else if a.Kind == b.Kind {
		d.Total = "total (to stopped)"
	}
	d.Phases = timeRows(a.Timing(), b.Timing())
	ua, ub := unmatchedSteps(a.Steps, b.Steps)
	d.OnlyA, d.OnlyB = collapse(ua), collapse(ub)
	return d
}

// phaseOrder is the order phases are listed in, as a pod goes through them.
var phaseOrder = []string{"sandbox", "image", "create", "start", "stop", "stop sandbox", "remove", "remove sandbox"}

// timeRows lines up two timings: phases in the order a pod goes through
// them, then waits in the order they first came; then the same for the
// parts after Done.
func timeRows(ta, tb Timing) []PhaseTimes {
	var rows []PhaseTimes
	for _, part := range []struct {
		prefix string
		a, b   []Span
	}{{"", ta.Parts, tb.Parts}, {"later: ", ta.After, tb.After}} {
		get := func(spans []Span, name string, wait bool) *time.Duration {
			for _, s := range spans {
				if s.Name == name && s.Wait == wait {
					d := s.Dur
					return &d
				}
			}
			return nil
		}
		for _, name := range phaseOrder {
			if x, y := get(part.a, name, false), get(part.b, name, false); x != nil || y != nil {
				rows = append(rows, PhaseTimes{Label: part.prefix + name, A: x, B: y})
			}
		}
		seen := map[string]bool{}
		for _, s := range append(append([]Span(nil), part.a...), part.b...) {
			if !s.Wait || seen[s.Name] {
				continue
			}
			seen[s.Name] = true
			rows = append(rows, PhaseTimes{Label: part.prefix + "waiting: " + s.Name, A: get(part.a, s.Name, true), B: get(part.b, s.Name, true), Wait: true})
		}
	}
	return rows
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
