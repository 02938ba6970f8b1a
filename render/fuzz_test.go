package render

import (
	"bytes"
	"encoding/xml"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/criseq/criseq/flow"
)

// fuzzFlow builds a flow from arbitrary bytes: each step takes 4 bytes
// (service, phase, start offset, duration and state) and a piece of text
// cut from the input, so that fuzzing explores overlapping, nested,
// unanswered and failed calls with any text.
func fuzzFlow(data []byte, text string) *flow.Flow {
	// Any kind: a start, a stop or a restart.
	f := &flow.Flow{Kind: []flow.Kind{flow.Start, flow.Stop, flow.Restart}[len(text)%3], Pod: flow.Pod{Namespace: "default", Name: "fuzz"},
		Runtime: "containerd", Client: "kubelet", Start: t0, Complete: len(data)%2 == 0}
	services := []string{"RuntimeService", "ImageService", "grpc.health.v1.Health", text}
	phases := []string{"sandbox", "image", "create web", "", text}
	words := strings.Fields(text)
	word := func(i int) string {
		if len(words) == 0 {
			return ""
		}
		return words[i%len(words)]
	}
	// CRI's own names too, which phases and waits (a restart's back-off)
	// are read from.
	cri := []string{"RunPodSandbox", "PullImage", "ImageStatus", "CreateContainer", "StartContainer", "StopContainer", "RemoveContainer", "StopPodSandbox"}
	method := func(b byte) string {
		if b%5 == 4 {
			return cri[int(b/5)%len(cri)]
		}
		return "Call" + word(int(b))
	}
	at := time.Duration(0)
	for i := 0; i+4 <= len(data) && len(f.Steps) < 64; i += 4 {
		b := data[i : i+4]
		at += time.Duration(b[2]) * time.Millisecond / 4 // calls in start order
		if b[2] == 255 {
			at += 2 * time.Second // a break
		}
		s := flow.Step{
			Service:  services[int(b[0])%len(services)],
			Method:   method(b[0]),
			Arg:      word(int(b[1])),
			Result:   word(int(b[2])),
			Phase:    phases[int(b[1])%len(phases)],
			Start:    t0.Add(at),
			Duration: time.Duration(b[3]) * time.Millisecond,
			Done:     b[3]%5 != 0,
		}
		s.Inherited = b[1]%3 == 0 && len(f.Steps) > 0
		if b[0]%7 == 0 {
			s.Err = "Unknown: " + word(int(b[3]))
		}
		s.Inferred = b[1]%11 == 5
		if b[2]%13 == 3 {
			s.Attr = flow.Attribution{By: flow.ByAmbiguous,
				Candidates: []flow.Pod{{Namespace: "default", Name: "fuzz"}, {Namespace: word(int(b[1])), Name: word(int(b[3]))}}}
		}
		if b[3]%4 == 1 {
			f.Events = append(f.Events, flow.Event{Time: s.Start.Add(time.Duration(b[0]) * time.Millisecond),
				Type: "CONTAINER_STARTED", Container: word(int(b[0])), ContainerID: word(int(b[1]))})
		}
		if !s.Done {
			s.Duration = 0
		}
		if e := s.Start.Add(s.Duration); e.After(f.End) {
			f.End = e
		}
		f.Steps = append(f.Steps, s)
	}
	return f
}

// FuzzRender checks that any flow renders in every text format without
// error, to well-formed SVG, with each call's request before its reply,
// and with the SVG, PlantUML and Mermaid telling the same story.
func FuzzRender(f *testing.F) {
	f.Add([]byte{0, 0, 0, 10, 1, 1, 4, 20, 0, 2, 0, 5}, "web nginx:1.25 started")
	f.Add([]byte{0, 3, 0, 200, 0, 3, 1, 100, 0, 3, 1, 1, 1, 4, 255, 3}, hostile)
	f.Add([]byte{7, 0, 0, 0, 7, 1, 0, 0, 0, 2, 0, 0}, "a  b\tc")
	f.Fuzz(func(t *testing.T, data []byte, text string) {
		fl := fuzzFlow(data, text)
		for _, format := range []string{"svg", "puml", "mmd", "html"} {
			var b bytes.Buffer
			if err := Write(&b, format, fl); err != nil {
				t.Fatalf("%s: %v", format, err)
			}
			if format == "svg" {
				dec := xml.NewDecoder(&b)
				for {
					if _, err := dec.Token(); err == io.EOF {
						break
					} else if err != nil {
						t.Fatalf("SVG is not well-formed: %v", err)
					}
				}
			}
		}
		d, err := newDiagram(fl)
		if err != nil {
			t.Fatal(err)
		}
		seen := make([]int, len(d.calls)) // 1 after the request, 2 after the reply
		evs := make([]int, len(d.events))
		for _, r := range rows(d.calls, d.events) {
			switch {
			case r.event():
				if evs[r.ev]++; evs[r.ev] > 1 {
					t.Fatalf("event %d drawn twice", r.ev)
				}
			case !r.reply && seen[r.call] == 0:
				seen[r.call] = 1
			case r.reply && seen[r.call] == 1 && d.calls[r.call].done:
				seen[r.call] = 2
			default:
				t.Fatalf("row %+v out of order", r)
			}
		}
		for i, n := range evs {
			if n != 1 {
				t.Fatalf("event %d drawn %d times", i, n)
			}
		}
		for i, s := range seen {
			if want := 1 + btoi(d.calls[i].done); s != want {
				t.Fatalf("call %d: %d of its rows drawn, want %d", i, s, want)
			}
		}
		puml := pumlStory(t, string(render(t, "puml", fl)))
		mmdOut := string(render(t, "mmd", fl))
		if mermaidWhole(t, fl) {
			if mmd := mmdStory(t, mmdOut); !equal(puml, mmd) {
				t.Fatalf("PlantUML and Mermaid differ:\n%s", firstDiff(puml, mmd))
			}
		}
		if p, svg := dropParticipants(puml), svgStory(t, render(t, "svg", fl)); !equal(p, svg) {
			t.Fatalf("PlantUML and SVG differ:\n%s", firstDiff(p, svg))
		}
	})
}
