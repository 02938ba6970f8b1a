package render

import (
	"bytes"
	"encoding/json"
	"math"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/criseq/criseq/flow"
)

// TestJSON reads the JSON of every case and recorded flow back as a script
// would, with its own types, and checks it against the flow: the pod, the
// time split into phases and waits that add up to the total, every call with
// its attribution, and every event.
func TestJSON(t *testing.T) {
	type span struct {
		Name string  `json:"name"`
		MS   float64 `json:"ms"`
	}
	type doc struct {
		Version int `json:"criseq_flow"`
		Pod     struct{ Namespace, Name, UID string }
		Kind    string  `json:"kind"`
		Total   float64 `json:"total_ms"`
		Phases  []span  `json:"phases"`
		Waits   []span  `json:"waits"`
		After   *struct {
			MS     float64 `json:"ms"`
			Phases []span  `json:"phases"`
			Waits  []span  `json:"waits"`
		} `json:"after"`
		Summary string `json:"summary"`
		Calls   []struct {
			Method   string   `json:"method"`
			Start    string   `json:"start"`
			Duration *float64 `json:"duration_ms"`
			Attr     struct {
				By         string `json:"by"`
				Candidates []struct{ Namespace, Name string }
			} `json:"attribution"`
			Inferred bool `json:"inferred"`
		} `json:"calls"`
		Events []struct {
			Time, Type, Container string
			ID                    string `json:"container_id"`
		} `json:"events"`
	}
	flows := allFlows(t)
	names := make([]string, 0, len(flows))
	for n := range flows {
		names = append(names, n)
	}
	sort.Strings(names)
	ambiguous, inferred, events := 0, 0, 0
	for _, name := range names {
		f := flows[name]
		b := render(t, "json", f)
		if !bytes.Equal(b, render(t, "json", f)) {
			t.Errorf("%s: two renderings differ", name)
		}
		var d doc
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if d.Version != JSONVersion || d.Pod.Name != strings.ToValidUTF8(f.Pod.Name, "\uFFFD") || d.Pod.UID != f.Pod.UID || d.Kind != f.Kind.String() ||
			d.Summary != Summary(f) {
			t.Errorf("%s: version %d, pod %+v, kind %q, summary %q", name, d.Version, d.Pod, d.Kind, d.Summary)
		}
		// The parts add up to the total, to the nanosecond.
		var sum time.Duration
		for _, s := range append(d.Phases, d.Waits...) {
			sum += time.Duration(math.Round(s.MS * 1e6))
		}
		if total := time.Duration(math.Round(d.Total * 1e6)); sum != total || total != f.Duration() {
			t.Errorf("%s: phases and waits add up to %v, total_ms is %v, the flow's duration %v", name, sum, total, f.Duration())
		}
		if d.After != nil {
			var after time.Duration
			for _, s := range append(d.After.Phases, d.After.Waits...) {
				after += time.Duration(math.Round(s.MS * 1e6))
			}
			if a := time.Duration(math.Round(d.After.MS * 1e6)); a != after {
				t.Errorf("%s: after's parts add up to %v, its ms %v", name, after, a)
			}
		}
		if len(d.Calls) != len(f.Steps) || len(d.Events) != len(f.Events) {
			t.Fatalf("%s: %d calls and %d events, want %d and %d", name, len(d.Calls), len(d.Events), len(f.Steps), len(f.Events))
		}
		for i, c := range d.Calls {
			s := &f.Steps[i]
			start, err := time.Parse(time.RFC3339Nano, c.Start)
			if err != nil || !start.Equal(s.Start) || c.Method != strings.ToValidUTF8(s.Method, "\uFFFD") || c.Attr.By != s.Attr.By ||
				len(c.Attr.Candidates) != len(s.Attr.Candidates) || c.Inferred != s.Inferred ||
				(c.Duration == nil) != !s.Done || c.Duration != nil && time.Duration(math.Round(*c.Duration*1e6)) != s.Duration {
				t.Errorf("%s: call %d reads %+v, the step is %s at %v for %v, %+v (%v)", name, i, c, s.Method, s.Start, s.Duration, s.Attr, err)
			}
			if c.Attr.By == flow.ByAmbiguous {
				ambiguous++
			}
			if c.Inferred {
				inferred++
			}
		}
		for i, e := range d.Events {
			at, err := time.Parse(time.RFC3339Nano, e.Time)
			if err != nil || !at.Equal(f.Events[i].Time) || e.Type != f.Events[i].Type || e.ID != f.Events[i].ContainerID {
				t.Errorf("%s: event %d reads %+v (%v)", name, i, e, err)
			}
			events++
		}
	}
	if ambiguous == 0 || inferred == 0 || events == 0 {
		t.Errorf("%d ambiguous calls, %d inferred, %d events: each must be exercised", ambiguous, inferred, events)
	}
	if err := Write(&bytes.Buffer{}, "json", nil); err == nil || !strings.Contains(err.Error(), "nil flow") {
		t.Errorf("a nil flow gives %v", err)
	}
}
