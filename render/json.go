package render

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/criseq/criseq/flow"
)

// JSONVersion is the version of the layout JSON writes; it changes only when
// a field is removed or changes meaning.
const JSONVersion = 1

// JSON writes f as one JSON document, for scripts and CI checks: the pod,
// the kind of flow, its time split into phases and waits (flow.Timing, in
// exact milliseconds), every call with how it was put in this flow, and the
// runtime's events. Times are RFC 3339 with nanoseconds, in UTC. The output
// is deterministic and ends with a newline.
func JSON(w io.Writer, f *flow.Flow) error {
	if f == nil {
		return errors.New("render json: nil flow")
	}
	b, err := json.MarshalIndent(jsonOf(f), "", "  ")
	if err != nil {
		return fmt.Errorf("render json: %w", err)
	}
	if _, err := w.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("render json: %w", err)
	}
	return nil
}

type jsonFlow struct {
	Version   int         `json:"criseq_flow"`
	Pod       jsonPod     `json:"pod"`
	Kind      string      `json:"kind"` // "start", "restart" or "stop"
	SandboxID string      `json:"sandbox_id"`
	Client    string      `json:"client"`
	Runtime   string      `json:"runtime"`
	Complete  bool        `json:"complete"`
	Start     string      `json:"start"`
	Done      string      `json:"done,omitempty"` // the pod up (down); absent if not seen
	End       string      `json:"end"`
	TotalMS   float64     `json:"total_ms"` // to done, or to end if done was not seen
	Phases    []jsonSpan  `json:"phases"`
	Waits     []jsonSpan  `json:"waits"`
	After     *jsonAfter  `json:"after,omitempty"`
	Summary   string      `json:"summary"`
	Calls     []jsonCall  `json:"calls"`
	Events    []jsonEvent `json:"events"`
}

type jsonPod struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	UID       string `json:"uid"`
}

type jsonSpan struct {
	Name string  `json:"name"`
	MS   float64 `json:"ms"`
}

// jsonAfter is the time from done to the flow's last call: a stop's
// removal at kubelet's next clean-up.
type jsonAfter struct {
	MS     float64    `json:"ms"`
	Phases []jsonSpan `json:"phases"`
	Waits  []jsonSpan `json:"waits"`
}

type jsonCall struct {
	Conn        uint64     `json:"conn"`
	Stream      uint32     `json:"stream"`
	Service     string     `json:"service"`
	Method      string     `json:"method"`
	Start       string     `json:"start"`
	DurationMS  *float64   `json:"duration_ms"` // null if the capture ended first
	Status      *int       `json:"status"`      // gRPC status code; null if none was seen
	Code        string     `json:"code,omitempty"`
	Error       string     `json:"error,omitempty"`
	Arg         string     `json:"arg"`
	ArgID       string     `json:"arg_id,omitempty"`
	Result      string     `json:"result,omitempty"`
	ResultFull  string     `json:"result_full,omitempty"`
	Phase       string     `json:"phase,omitempty"`
	Attribution jsonAttrib `json:"attribution"`
	Inferred    bool       `json:"inferred"`
}

type jsonAttrib struct {
	By         string    `json:"by"`
	Candidates []jsonPod `json:"candidates"`
}

type jsonEvent struct {
	Time        string `json:"time"`
	CreatedAt   string `json:"created_at,omitempty"`
	Type        string `json:"type"`
	Container   string `json:"container"`
	ContainerID string `json:"container_id"`
	Conn        uint64 `json:"conn"`
	Stream      uint32 `json:"stream"`
}

func jsonOf(f *flow.Flow) jsonFlow {
	t := f.Timing()
	client := waitClient(f)
	out := jsonFlow{
		Version:   JSONVersion,
		Pod:       podJSON(f.Pod),
		Kind:      f.Kind.String(),
		SandboxID: f.SandboxID,
		Client:    f.Client,
		Runtime:   f.Runtime,
		Complete:  f.Complete,
		Start:     stamp(f.Start),
		Done:      stamp(f.Done),
		End:       stamp(f.End),
		TotalMS:   ms(t.Total),
		Summary:   Summary(f),
		Calls:     make([]jsonCall, len(f.Steps)),
		Events:    make([]jsonEvent, len(f.Events)),
	}
	out.Phases, out.Waits = spansJSON(t.Parts, client)
	if len(t.After) > 0 {
		a := &jsonAfter{}
		a.Phases, a.Waits = spansJSON(t.After, client)
		var sum time.Duration
		for _, s := range t.After {
			sum += s.Dur
		}
		a.MS = ms(sum)
		out.After = a
	}
	for i := range f.Steps {
		s := &f.Steps[i]
		c := jsonCall{Service: s.Service, Method: s.Method, Start: stamp(s.Start), Arg: s.Arg, ArgID: s.ArgID,
			Result: s.Result, Error: s.Err, Phase: s.Phase, Inferred: s.Inferred,
			Attribution: jsonAttrib{By: s.Attr.By, Candidates: make([]jsonPod, len(s.Attr.Candidates))}}
		if s.Full != s.Result {
			c.ResultFull = s.Full
		}
		for k, p := range s.Attr.Candidates {
			c.Attribution.Candidates[k] = podJSON(p)
		}
		if s.Done {
			d := ms(s.Duration)
			c.DurationMS = &d
		}
		if call := s.Call; call != nil {
			c.Conn, c.Stream = call.Conn, call.Stream
			if call.Status >= 0 {
				st := call.Status
				c.Status, c.Code = &st, codes.Code(st).String()
			}
		}
		out.Calls[i] = c
	}
	for i, e := range f.Events {
		j := jsonEvent{Time: stamp(e.Time), CreatedAt: stamp(e.Created), Type: e.Type, Container: e.Container,
			ContainerID: e.ContainerID}
		if e.Call != nil {
			j.Conn, j.Stream = e.Call.Conn, e.Call.Stream
		}
		out.Events[i] = j
	}
	return out
}

func podJSON(p flow.Pod) jsonPod { return jsonPod{Namespace: p.Namespace, Name: p.Name, UID: p.UID} }

// spansJSON splits spans into phases and waits, the waits named as the
// summary names them.
func spansJSON(spans []flow.Span, client string) (phases, waits []jsonSpan) {
	phases, waits = []jsonSpan{}, []jsonSpan{}
	for _, s := range spans {
		if s.Wait {
			waits = append(waits, jsonSpan{waitName(s.Name, client), ms(s.Dur)})
		} else {
			phases = append(phases, jsonSpan{s.Name, ms(s.Dur)})
		}
	}
	return phases, waits
}

// ms is d in milliseconds, exact to the nanosecond.
func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// stamp is t in RFC 3339 with nanoseconds, UTC; "" for the zero time.
func stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}
