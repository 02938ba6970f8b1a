package render

import (
	"strconv"
	"strings"
	"time"

	"github.com/criseq/criseq/flow"
)

// Summary is the line criseq prints for each flow it draws: how long the
// pod took, split as flow.Timing splits it, so that the phases and the
// waits add up to the total, and how many calls the flow holds:
//
//	started in 1.42s (sandbox 217ms, image 731ms, create 16ms, start 225ms; waiting: image pull queue 690ms, kubelet 12ms; 9 calls)
//	stopped in 533ms (stop 342ms, stop sandbox 189ms; waiting: kubelet 1.3ms) · removed 54.8s later (remove 12ms, remove sandbox 5.3ms; waiting: kubelet's clean-up 53.8s, kubelet 911ms); 14 calls
//	stopped in 106ms, not removed yet (stop sandbox 106ms; 3 calls)
//	restarted web (attempt 2) in 133ms (image 807µs, create 15ms, start 113ms; waiting: kubelet 4.1ms) · then 972ms more (remove 4.4ms; waiting: kubelet 967ms); 13 calls
//
// The wait named after the client ("kubelet", "crictl") is its own time
// between calls.
func Summary(f *flow.Flow) string {
	if f == nil {
		return ""
	}
	return timeText(f, f.Timing(), plural(len(f.Steps), "call"))
}

// timeText is f's time in words: "started in 1.42s (sandbox 217ms, …;
// waiting: …)" and, when calls came after the pod was up (or down), " ·
// removed 54.8s later (…)". calls, if not empty, ends the first parentheses
// when nothing came after, else the line.
func timeText(f *flow.Flow, t flow.Timing, calls string) string {
	client := waitClient(f)
	var b strings.Builder
	// A stop whose pod is down, its sandbox not removed: kubelet removes
	// it at its next clean-up, up to a minute later (or the capture ended
	// first). Live, the line comes again once it is removed.
	notRemoved := !f.Complete && f.Kind == flow.Stop && !f.Done.IsZero()
	switch {
	case notRemoved:
		b.WriteString("stopped in ")
	case !f.Complete:
		b.WriteString(f.Kind.String() + " incomplete after ")
	case f.Kind == flow.Stop:
		b.WriteString("stopped in ")
	case f.Kind == flow.Restart:
		b.WriteString("restarted ")
		if names := f.Restarted(); len(names) > 0 {
			b.WriteString(strings.Join(names, ", ") + " ")
		}
		b.WriteString("in ")
	default:
		b.WriteString("started in ")
	}
	b.WriteString(fmtDur(t.Total))
	if notRemoved {
		b.WriteString(", not removed yet")
	}
	inner := spansText(t.Parts, client)
	if len(t.After) == 0 {
		inner = joinNonEmpty("; ", inner, calls)
	}
	if inner != "" {
		b.WriteString(" (" + inner + ")")
	}
	if len(t.After) == 0 {
		return b.String()
	}
	var after time.Duration
	for _, s := range t.After {
		after += s.Dur
	}
	if f.Kind == flow.Stop && f.Complete {
		b.WriteString(" · removed " + fmtDur(after) + " later")
	} else {
		b.WriteString(" · then " + fmtDur(after) + " more")
	}
	b.WriteString(" (" + spansText(t.After, client) + ")")
	if calls != "" {
		b.WriteString("; " + calls)
	}
	return b.String()
}

// spansText lists spans as "sandbox 217ms, image 731ms; waiting: image
// pull queue 690ms, kubelet 12ms".
func spansText(spans []flow.Span, client string) string {
	var phases, waits []string
	for _, s := range spans {
		if s.Wait {
			waits = append(waits, waitName(s.Name, client)+" "+fmtDur(s.Dur))
		} else {
			phases = append(phases, s.Name+" "+fmtDur(s.Dur))
		}
	}
	w := strings.Join(waits, ", ")
	if w != "" {
		w = "waiting: " + w
	}
	return joinNonEmpty("; ", strings.Join(phases, ", "), w)
}

// waitClient is the name the client's own time between calls goes by: the
// flow's client ("kubelet", "crictl") when it is one short word, else
// "client".
func waitClient(f *flow.Flow) string {
	c := clientName(f)
	if len(c) > 24 {
		return "client"
	}
	for _, r := range c {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return "client"
		}
	}
	return c
}

// waitName is how a wait is shown: kubelet's own time between calls is
// named after the flow's client (see waitClient), which may be crictl.
func waitName(name, client string) string {
	if name == flow.WaitKubelet {
		return client
	}
	return name
}

// longestName names a span as the closing note's "longest:" does.
func longestName(s flow.Span, client string) string {
	switch {
	case !s.Wait:
		return s.Name
	case s.Name == flow.WaitPullQueue:
		return "waiting for the image pull queue"
	case s.Name == flow.WaitBackOff:
		return "back-off"
	}
	return "waiting for " + waitName(s.Name, client)
}

// longestSpan is the index of the longest of spans (of phases only, unless
// waits), or -1.
func longestSpan(spans []flow.Span, waits bool) int {
	top := -1
	for i, s := range spans {
		if (waits || !s.Wait) && s.Dur > 0 && (top < 0 || s.Dur > spans[top].Dur) {
			top = i
		}
	}
	return top
}

// countPhases is the number of spans that are phases.
func countPhases(spans []flow.Span) int {
	n := 0
	for _, s := range spans {
		if !s.Wait {
			n++
		}
	}
	return n
}

// joinNonEmpty joins the non-empty ones of parts with sep.
func joinNonEmpty(sep string, parts ...string) string {
	var out []string
	for _, p := range parts {
		if p != "" {
			out = append(out, p)
		}
	}
	return strings.Join(out, sep)
}

// plural is "1 call", "2 calls".
func plural(n int, what string) string {
	s := strconv.Itoa(n) + " " + what
	if n != 1 {
		s += "s"
	}
	return s
}
