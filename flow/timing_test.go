package flow

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// timed builds a flow of kind from steps given as "Method arg at+dur" in
// milliseconds, e.g. "PullImage app 120+700", with "!" after the duration
// for a failed call and "?" for one never answered.
func timed(kind Kind, steps ...string) *Flow {
	t0 := time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)
	f := &Flow{Kind: kind, Start: t0, Complete: true}
	for _, s := range steps {
		var method, arg, span string
		fmt.Sscan(s, &method, &arg, &span)
		at, dur, _ := strings.Cut(span, "+")
		st := Step{Method: method, Arg: arg, Done: true}
		switch {
		case strings.HasSuffix(dur, "!"):
			st.Err = "NotFound: no such image"
			dur = strings.TrimSuffix(dur, "!")
		case strings.HasSuffix(dur, "?"):
			st.Done = false
			dur = "0"
		}
		var a, d float64
		fmt.Sscan(at, &a)
		fmt.Sscan(dur, &d)
		st.Start = t0.Add(time.Duration(a * float64(time.Millisecond)))
		st.Duration = time.Duration(d * float64(time.Millisecond))
		if method == "ContainerStatus" {
			st.Result = "EXITED (0)"
		}
		f.Steps = append(f.Steps, st)
		end := st.Start.Add(st.Duration)
		if end.After(f.End) {
			f.End = end
		}
		if st.Done && st.Err == "" && (kind == Start && method == "StartContainer" && end.After(f.Done) ||
			kind == Stop && method == "StopPodSandbox" && f.Done.IsZero()) {
			f.Done = end
		}
	}
	return f
}

func ms(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }

// spans writes spans as "name 12ms, (wait) 3ms".
func spans(ss []Span) string {
	var out []string
	for _, s := range ss {
		n := s.Name
		if s.Wait {
			n = "(" + n + ")"
		}
		out = append(out, n+" "+s.Dur.String())
	}
	return strings.Join(out, ", ")
}

func TestTiming(t *testing.T) {
	t0 := time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)
	queued := timed(Start,
		"RunPodSandbox p 0+200", "ImageStatus app 210+1", "PullImage app 1500+700",
		"CreateContainer web 2210+15", "StartContainer web 2230+60")
	// Another pod's pull ran from 300ms to 1.4s: the queue this pull waited in.
	queued.OtherPulls = []Interval{{t0.Add(ms(300)), t0.Add(ms(1400))}}
	for _, tc := range []struct {
		name        string
		f           *Flow
		parts, post string
	}{
		{"sequential", timed(Start,
			"RunPodSandbox p 0+200", "PodSandboxStatus p 201+1", "ImageStatus app 205+2",
			"CreateContainer web 210+15", "StartContainer web 230+60"),
			"sandbox 200ms, image 2ms, create 15ms, start 60ms, (kubelet) 13ms", ""},
		{"pull queue", queued,
			"sandbox 200ms, image 701ms, create 15ms, start 60ms, (kubelet) 214ms, (image pull queue) 1.1s", ""},
		// A failed pull: kubelet backs off, checking the image now and then
		// without pulling, until it pulls again.
		{"back-off", timed(Start,
			"RunPodSandbox p 0+200", "ImageStatus app 205+1", "PullImage app 210+10!",
			"ImageStatus app 900+1", "ImageStatus app 15000+1", "PullImage app 15005+700",
			"CreateContainer web 15710+15", "StartContainer web 15730+60"),
			"sandbox 200ms, image 713ms, create 15ms, start 60ms, (kubelet) 23ms, (back-off) 14.779s", ""},
		{"init container", timed(Start,
			"RunPodSandbox p 0+200", "CreateContainer setup 210+15", "StartContainer setup 230+60",
			"ContainerStatus setup 1200+1", "CreateContainer web 1300+15", "StartContainer web 1320+60"),
			"sandbox 200ms, create 30ms, start 120ms, (kubelet) 20ms, (init container setup) 1.01s", ""},
		{"parallel stops", timed(Stop,
			"StopContainer web 0+300", "StopContainer side 1+200", "StopPodSandbox p 310+190",
			"RemoveContainer web 8000+12", "RemovePodSandbox p 8015+5"),
			"stop 300ms, stop sandbox 190ms, (kubelet) 10ms",
			"remove 12ms, remove sandbox 5ms, (kubelet's clean-up) 7.5s, (kubelet) 3ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tm := tc.f.Timing()
			if got := spans(tm.Parts); got != tc.parts {
				t.Errorf("parts %s, want %s", got, tc.parts)
			}
			if got := spans(tm.After); got != tc.post {
				t.Errorf("after %s, want %s", got, tc.post)
			}
			var sum time.Duration
			for _, s := range tm.Parts {
				sum += s.Dur
			}
			if sum != tm.Total || tm.Total != tc.f.Duration() {
				t.Errorf("parts add up to %v, total %v, the flow's duration %v", sum, tm.Total, tc.f.Duration())
			}
			var after time.Duration
			for _, s := range tm.After {
				after += s.Dur
			}
			if want := tc.f.End.Sub(tc.f.Start) - tm.Total; after != want {
				t.Errorf("after adds up to %v, want %v (from done to the last call's end)", after, want)
			}
		})
	}
}

// TestTimingEmpty: a flow without calls has no time to split, not the time
// since the year 1.
func TestTimingEmpty(t *testing.T) {
	f := &Flow{Kind: Start, Start: time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)}
	if tm := f.Timing(); tm.Total != 0 || len(tm.Parts) != 0 || len(tm.After) != 0 {
		t.Errorf("timing of an empty flow: %+v", tm)
	}
}
