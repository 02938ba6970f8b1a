// Package render draws a pod flow as a sequence diagram.
//
// In: a *flow.Flow, the calls of one pod start or stop with the labels a
// diagram shows (key argument, shortened result, duration, error, phase).
// Out: the diagram as PlantUML (.puml), Mermaid (.mmd) or SVG (.svg) text, or
// the SVG's drawing as a PNG image at 1x or 2x, written to an io.Writer. The
// SVG is laid out here, with text measured with the Go fonts' metrics, and
// rasterized here for the PNG; no Java, browser or Graphviz is needed.
//
// All layout (rows, columns, pixels) is computed here; flow only orders calls
// by time. Output is deterministic: the same flow gives the same bytes.
package render

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/criseq/criseq/flow"
)

// Formats returns the names Write accepts: "puml", "mmd", "svg", "png"
// (the SVG's drawing as an image), "png2x" (the same at twice the size),
// "graph" and "graph-png", the ID-flow graph (see Graph) as SVG and PNG,
// "html", the viewer (see HTML) of one flow (a capture's flows go in one
// viewer with HTML), and "json", the flow as data (see JSON). Ext gives
// each one's file extension.
func Formats() []string {
	return []string{"puml", "mmd", "svg", "png", "png2x", "graph", "graph-png", "html", "json"}
}

// Ext is the file name ending for a format: ".svg", ".png", "@2x.png" for
// png2x, the usual name of a high-density image, and ".graph.svg" and
// ".graph.png" for the ID-flow graph.
func Ext(format string) string {
	format = strings.ToLower(strings.TrimPrefix(format, "."))
	switch format {
	case "png2x":
		return "@2x.png"
	case "graph":
		return ".graph.svg"
	case "graph-png":
		return ".graph.png"
	}
	return "." + format
}

// Options change how a diagram is drawn.
type Options struct {
	// TimeScale, in pixels per second, spaces the rows of the SVG and PNG
	// diagrams in proportion to time: the gap before each call and each
	// call's duration (capped, so one slow call does not make a page of
	// white). 0 spaces them evenly.
	TimeScale float64
}

// Write draws f in the given format (one of Formats, case-insensitive, with or
// without a leading dot).
func Write(w io.Writer, format string, f *flow.Flow) error {
	return WriteWith(w, format, f, Options{})
}

// WriteWith is Write with options.
func WriteWith(w io.Writer, format string, f *flow.Flow, o Options) error {
	switch strings.ToLower(strings.TrimPrefix(format, ".")) {
	case "puml":
		return PlantUML(w, f)
	case "mmd":
		return Mermaid(w, f)
	case "svg":
		return svgWith(w, f, o)
	case "png":
		return pngWith(w, f, 1, o)
	case "png2x":
		return pngWith(w, f, 2, o)
	case "graph":
		return Graph(w, f)
	case "graph-png":
		return GraphPNG(w, f)
	case "json":
		return JSON(w, f)
	case "html":
		if f == nil {
			return errors.New("render html: nil flow")
		}
		return HTML(w, f.Pod.String()+" — pod "+f.Kind.String(), []*flow.Flow{f})
	}
	return fmt.Errorf("render: unknown format %q (valid: %s)", format, strings.Join(Formats(), ", "))
}

// FileName is a stable file name for f: "namespace_name_kind.ext", e.g.
// "default_nginx_start.svg". Only ASCII letters, digits, '.', '-' and '_'
// are kept; anything else becomes '_'. A pod without a name is named after
// its sandbox ID. ext may be given with or without its dot, or empty; the
// format png2x gives "default_nginx_start@2x.png", graph
// "default_nginx_start.graph.svg" and graph-png "default_nginx_start.graph.png".
func FileName(f *flow.Flow, ext string) string {
	var parts []string
	if f != nil {
		if f.Pod.Namespace != "" {
			parts = append(parts, safeName(f.Pod.Namespace))
		}
		switch {
		case f.Pod.Name != "":
			parts = append(parts, safeName(f.Pod.Name))
		case f.SandboxID != "":
			parts = append(parts, "sandbox-"+safeName(shortID(f.SandboxID)))
		default:
			parts = append(parts, "unknown")
		}
		parts = append(parts, f.Kind.String())
	} else {
		parts = append(parts, "unknown")
	}
	name := strings.Join(parts, "_")
	switch e := Ext(ext); e {
	case "@2x.png", ".graph.svg", ".graph.png":
		return name + e
	}
	if ext = safeName(strings.TrimPrefix(ext, ".")); ext != "" {
		name += "." + ext
	}
	return name
}

// safeName keeps [A-Za-z0-9.-_], replaces the rest by '_', never starts with
// a dot and is at most 100 bytes long.
func safeName(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		case r == '.' && b.Len() > 0:
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
		if b.Len() >= 100 {
			break
		}
	}
	return b.String()
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// Participant indexes in a diagram.
const (
	pClient  = 0
	pRuntime = 1 // RuntimeService
	pImage   = 2 // ImageService
)

// diagram is what every format draws: the flow reduced to labels, free of
// any syntax or layout.
type diagram struct {
	title    string // "default/nginx — pod start"
	subtitle string // "kubelet → containerd 1.6.20"
	boxTitle string // the runtime's name
	parts    []participant
	calls    []call
	events   []event     // the runtime's container events, in time order
	phases   []phaseSpan // runs of calls of one phase, in call order
	note     string      // "pod started in 1.94s (sandbox 105ms, …)"
	failed   int         // calls that failed
	complete bool        // the flow is complete
	// timeScale spaces rows in proportion to time: pixels per second of
	// the gaps between calls and of each call's duration; 0 spaces evenly.
	timeScale float64
	// timing and t0 name the waits behind breaks.
	timing flow.Timing
	t0     time.Time
	client string // the client's name, for its own time between calls
	hits   bool   // lay out the HTML viewer's click areas
}

type participant struct {
	name  string
	alias string // identifier in PlantUML and Mermaid sources
	boxed bool   // inside the runtime's box
}

// call is one step (or several identical consecutive ones, folded) as shown.
type call struct {
	to     int    // participant index
	phase  string // "" when the flow gives none
	req    string // "RunPodSandbox(default/nginx)"
	result string // "sandbox 3f2a1b9c4d5e", or the error for a failed call
	full   string // tooltip: the unshortened result or error
	argID  string // tooltip of the request: the full ID it is about
	failed bool
	done   bool          // a reply (or error) came back
	dur    time.Duration // the call's duration (summed when folded)
	hasDur bool
	at     time.Duration // start, relative to the flow's start
	end    time.Duration // when the reply came (at + dur), relative too
	n      int           // number of calls folded into this one (≥ 1)
	crit   bool          // the longest call of the flow: where the time went
	opens  int           // 1 + index in phases of the phase it opens; 0 for none
	span   int           // 1 + index in phases of its phase; 0 for none
	polled bool          // its phase is inherited: it does not time the phase
	kind   string        // its part of the pod's work (flow.PhaseOf): "image", "start"; "" for none
	amb    bool          // more than one pod may have made it: drawn in each one's diagram
	inf    bool          // its method was inferred from its messages' shape
	mark   string        // "ambiguous: one of web-1, web-2", after the request's label
	twin   bool          // an identical call was open at the same time
}

// event is one of the runtime's container events as shown: an
// asynchronous arrow from the runtime to its client.
type event struct {
	at    time.Duration // when the client got it, relative to the flow's start
	label string        // "CONTAINER_STARTED web"
	tip   string        // the container's full ID and the runtime's created_at
	n     int           // index in the flow's Events
}

// phaseSpan is a run of consecutive calls of one phase, the story's unit
// ("sandbox", "image web", "create web"), timed as flow.Timing times the
// pod's work (see owned): so the chips of one kind add up to that phase of
// the closing note. Status calls made meanwhile and waits between calls do
// not count (kubelet's garbage collector may re-send StopPodSandbox a
// minute after the stop).
type phaseSpan struct {
	name string
	kind string // the part of the pod's work its calls do (flow.PhaseOf); "" for none
	dur  time.Duration
	crit bool // a chip of the longest phase: the critical path
}

// label is the phase's separator text: "image · 1.62s".
func (p *phaseSpan) label() string {
	if p.dur <= 0 {
		return p.name
	}
	return p.name + " · " + fmtDur(p.dur)
}

// row is one arrow of a diagram: a call's request, or its reply, or one of
// the runtime's events.
type row struct {
	call  int // index in the calls; -1 for an event
	reply bool
	ev    int // index in the events, for an event
	// gap is the time since the row before, when it is more than
	// breakMin: a break marker with its length comes before the row.
	gap time.Duration
	why string // the wait that took most of gap, if one did
}

func (r row) event() bool { return r.call < 0 }

// breakMin is the least time between two rows that is marked as a break
// ("… 6.9s …"), so that a long wait does not look like nothing.
const breakMin = time.Second

// apart reports, per call, whether other arrows come between its request
// and its reply in rs: such a reply names its call (see replyLabel).
func apart(rs []row, n int) []bool {
	out := make([]bool, n)
	for k, r := range rs {
		if r.reply && (k == 0 || rs[k-1].call != r.call) {
			out[r.call] = true
		}
	}
	return out
}

// replyLabel is the reply arrow's text; a reply apart from its request
// names the call: "StartContainer(web): started · 345ms", and with its
// start time when an identical call was open at the same time:
// "ImageStatus(nginx) +412ms: sha256:4e1f… · 3ms".
func (c *call) replyLabel(apart bool) string {
	if !apart {
		return c.retLabel()
	}
	if c.twin {
		return c.reqLabel() + " " + fmtAt(c.at) + ": " + c.retLabel()
	}
	return c.reqLabel() + ": " + c.retLabel()
}

// reqText is the request arrow's text: its label and, for an ambiguous
// call, the pods it may belong to.
func (c *call) reqText() string {
	if c.mark == "" {
		return c.reqLabel()
	}
	return c.reqLabel() + " · " + c.mark
}

// rows orders the arrows of calls, and the events, as they happened: a
// reply comes before every request sent after it, so that calls open at
// the same time (kubelet polls PodSandboxStatus while StartContainer runs;
// two StopContainer in parallel) interleave instead of looking sequential.
// Calls and events are in time order; a reply is placed at its call's end,
// an event after the arrows of its time. Rows more than breakMin apart get
// their gap.
func rows(calls []call, events []event) []row {
	cr := callRows(calls)
	out := cr
	if len(events) > 0 {
		out = make([]row, 0, len(cr)+len(events))
		j := 0
		for _, r := range cr {
			for t := rowAt(calls, events, r); j < len(events) && events[j].at < t; j++ {
				out = append(out, row{call: -1, ev: j})
			}
			out = append(out, r)
		}
		for ; j < len(events); j++ {
			out = append(out, row{call: -1, ev: j})
		}
	}
	var last time.Duration
	for k := range out {
		t := rowAt(calls, events, out[k])
		if k > 0 && t-last > breakMin {
			out[k].gap = t - last
		}
		if k == 0 || t > last {
			last = t
		}
	}
	return out
}

// rowAt is when r happened, relative to the flow's start.
func rowAt(calls []call, events []event, r row) time.Duration {
	switch {
	case r.event():
		return events[r.ev].at
	case r.reply:
		return calls[r.call].end
	}
	return calls[r.call].at
}

// breakLabel is the text of a break marker: "… 6.9s …", with the wait
// that took most of it: "… 1.31s: image pull queue …".
func breakLabel(r row) string {
	if r.why != "" {
		return "… " + fmtDur(r.gap) + ": " + r.why + " …"
	}
	return "… " + fmtDur(r.gap) + " …"
}

// rows is rows(calls, d.events), each break named after the wait that
// took most of it.
func (d *diagram) rows(calls []call) []row {
	rs := rows(calls, d.events)
	for k := range rs {
		r := &rs[k]
		if r.gap <= 0 || d.t0.IsZero() {
			continue
		}
		end := d.t0.Add(rowAt(calls, d.events, *r))
		name, cover := d.timing.WaitDuring(end.Add(-r.gap), end)
		if name != "" && 2*cover >= r.gap {
			r.why = clean(waitName(name, d.client))
		}
	}
	return rs
}

// callRows orders the arrows of calls (see rows).
func callRows(calls []call) []row {
	out := make([]row, 0, 2*len(calls))
	var pending []int // calls whose reply is not placed yet, by end then index
	for i := range calls {
		c := &calls[i]
		k := 0
		for k < len(pending) && calls[pending[k]].end <= c.at {
			out = append(out, row{call: pending[k], reply: true})
			k++
		}
		pending = pending[:copy(pending, pending[k:])]
		out = append(out, row{call: i})
		if !c.done {
			continue
		}
		j := sort.Search(len(pending), func(j int) bool { return calls[pending[j]].end > c.end })
		pending = append(pending, 0)
		copy(pending[j+1:], pending[j:])
		pending[j] = i
	}
	for _, i := range pending {
		out = append(out, row{call: i, reply: true})
	}
	return out
}

// maxLabel caps the runes of one label, maxName those of a name (pod,
// client, runtime, service), maxPhase those of a phase's name; longer ones
// are cut with "…".
const (
	maxLabel = 600
	maxName  = 100
	maxPhase = 60
)

// reqLabel is the request arrow's text.
func (c *call) reqLabel() string {
	if c.n > 1 {
		return c.req + " ×" + strconv.Itoa(c.n)
	}
	return c.req
}

// reqTip is the request label's tooltip: the label with the full ID the
// call is about, which the label may show shortened.
func (c *call) reqTip() string {
	if c.argID == "" {
		return ""
	}
	return c.reqLabel() + " — " + c.argID
}

// retLabel is the return arrow's text ("" when no reply came).
func (c *call) retLabel() string {
	if !c.done {
		return ""
	}
	var parts []string
	if c.failed {
		parts = append(parts, "✗ "+c.result)
	} else if c.result != "" {
		parts = append(parts, c.result)
	}
	if c.n > 1 {
		s := "×" + strconv.Itoa(c.n)
		if c.hasDur {
			s += ", " + fmtDur(c.dur) + " total"
		}
		parts = append(parts, s)
	} else if c.hasDur {
		parts = append(parts, fmtDur(c.dur))
	}
	if len(parts) == 0 {
		return "ok"
	}
	return strings.Join(parts, " · ")
}

// noReply is shown instead of a return arrow for a call that never ended.
const noReply = "no reply (capture ended)"

// newDiagram reduces f to what a diagram shows.
func newDiagram(f *flow.Flow) (*diagram, error) {
	if f == nil {
		return nil, errors.New("nil flow")
	}
	d := &diagram{}
	pod := clean(f.Pod.String())
	if f.Pod.Name == "" {
		pod = "unknown pod"
		if f.SandboxID != "" {
			pod = "sandbox " + clean(shortID(f.SandboxID))
		}
	}
	d.title = cut(pod, maxName) + " — pod " + f.Kind.String()
	client := clientName(f)
	runtime := cut(clean(f.Runtime), maxName)
	if runtime == "" {
		runtime = "container runtime"
	}
	d.boxTitle = runtime
	d.subtitle = client + " → " + runtime
	if !f.Start.IsZero() {
		d.subtitle += " · " + f.Start.UTC().Format("2006-01-02 15:04:05.000 MST")
	}
	d.parts = []participant{
		{name: client, alias: "Client"},
		{name: "RuntimeService", alias: "RS", boxed: true},
		{name: "ImageService", alias: "IS", boxed: true},
	}

	start := f.Start
	if start.IsZero() && len(f.Steps) > 0 {
		start = f.Steps[0].Start
	}
	amb, inf := 0, false
	d.calls = make([]call, 0, len(f.Steps)) // at most one each (folded calls take fewer)
	for i := range f.Steps {
		s := &f.Steps[i]
		method := cut(clean(s.Method), maxName)
		if s.Inferred {
			method = "~" + method
			inf = true
		}
		c := call{
			to:     d.participant(s.Service),
			phase:  cut(clean(s.Phase), maxPhase),
			polled: s.Inherited,
			kind:   flow.WorkOf(s),
			argID:  cut(clean(s.ArgID), maxLabel),
			req:    cut(method+"("+clean(s.Arg)+")", maxLabel),
			done:   s.Done || s.Err != "",
			inf:    s.Inferred,
			n:      1,
		}
		if s.Attr.By == flow.ByAmbiguous {
			c.amb = true
			c.mark = "ambiguous: one of " + podNames(s.Attr.Candidates)
			amb++
		}
		if !s.Start.IsZero() && !start.IsZero() {
			c.at = s.Start.Sub(start)
		}
		if s.Done || s.Duration > 0 {
			c.dur, c.hasDur = s.Duration, true
		}
		c.end = c.at + c.dur
		if s.Err != "" {
			c.failed = true
			c.result = cut(clean(s.Err), maxLabel)
			c.full = cut(clean(s.Err), 4*maxLabel)
		} else {
			c.result = cut(clean(s.Result), maxLabel)
			c.full = cut(clean(s.Full), 4*maxLabel)
		}
		d.calls = append(d.calls, c)
	}
	markTwins(d.calls)
	for i, e := range f.Events {
		ev := event{label: cut(clean(e.Type+" "+e.Container), maxLabel), n: i}
		if !e.Time.IsZero() && !start.IsZero() {
			ev.at = e.Time.Sub(start)
		}
		var tip []string
		if id := clean(e.ContainerID); id != "" {
			tip = append(tip, "container "+cut(id, maxLabel))
		}
		if !e.Created.IsZero() {
			tip = append(tip, "created_at "+e.Created.UTC().Format(timeFormat))
		}
		ev.tip = strings.Join(tip, " · ")
		d.events = append(d.events, ev)
	}
	sort.SliceStable(d.events, func(i, j int) bool { return d.events[i].at < d.events[j].at })

	crit := -1
	for i, c := range d.calls {
		if c.done && c.hasDur && c.dur > 0 && (crit < 0 || c.dur > d.calls[crit].dur) {
			crit = i
		}
	}
	if crit >= 0 && len(d.calls) > 1 {
		d.calls[crit].crit = true
	} else {
		crit = -1
	}
	d.complete = f.Complete
	t := f.Timing()
	d.timing, d.t0, d.client = t, f.Start, waitClient(f)
	d.phases = phaseSpans(d.calls)
	// The chips of the longest phase are marked, when there are several.
	longest := longestSpan(t.Parts, false)
	if n := countPhases(t.Parts); longest >= 0 && n > 1 {
		for i := range d.phases {
			d.phases[i].crit = d.phases[i].kind == t.Parts[longest].Name
		}
	}
	d.note = "pod " + timeText(f, t, "")
	note, failed := failedNote(f.Steps)
	d.note += note
	d.failed = failed
	if amb > 0 {
		d.note += " · " + plural(amb, "ambiguous call")
	}
	critCall := ""
	if crit >= 0 {
		critCall = cut(clean(f.Steps[crit].Method), maxName) + " " + fmtDur(d.calls[crit].dur)
	}
	switch top := longestSpan(t.Parts, true); {
	case top >= 0 && len(t.Parts) > 1:
		sp := t.Parts[top]
		d.note += " · longest: " + longestName(sp, waitClient(f)) + " " + fmtDur(sp.Dur)
		if critCall == "" {
			break
		}
		if !sp.Wait && d.calls[crit].kind == sp.Name {
			d.note += " (" + critCall + ")"
		} else {
			d.note += " · longest call: " + critCall
		}
	case critCall != "":
		d.note += " · longest call: " + critCall
	}
	if inf {
		d.note += " · " + inferredLegend
	}
	return d, nil
}

// inferredLegend explains the mark of a call whose method was inferred.
const inferredLegend = "~ method inferred from message shape"

// timeFormat is how diagrams and the viewer give a moment: UTC, to the
// microsecond.
const timeFormat = "2006-01-02 15:04:05.000000 MST"

// clientName is the name of the client's lifeline: the flow's client, or
// "kubelet".
func clientName(f *flow.Flow) string {
	if c := cut(clean(f.Client), maxName); c != "" {
		return c
	}
	return "kubelet"
}

// podNames lists pods by their shortest unique names: the name alone
// unless two of them share it, then namespace/name; past four, how many
// more ("a, b, c, d and 8 more").
func podNames(pods []flow.Pod) string {
	seen := map[string]int{}
	for _, p := range pods {
		seen[p.Name]++
	}
	var names []string
	for _, p := range pods {
		n := p.Name
		if seen[n] > 1 || n == "" {
			n = p.String()
		}
		names = append(names, cut(clean(n), maxName))
	}
	const most = 4
	if len(names) > most+1 {
		return strings.Join(names[:most], ", ") + " and " + strconv.Itoa(len(names)-most) + " more"
	}
	return strings.Join(names, ", ")
}

// markTwins marks the calls that were open at the same time as an
// identical call (same service, method and argument): their replies, when
// apart from their requests, say which of them they answer.
func markTwins(calls []call) {
	type key struct {
		to  int
		req string
	}
	groups := map[key][]int{}
	var keys []key
	for i := range calls {
		k := key{calls[i].to, calls[i].req}
		if len(groups[k]) == 0 {
			keys = append(keys, k)
		}
		groups[k] = append(groups[k], i)
	}
	end := func(c *call) time.Duration {
		if !c.done {
			return math.MaxInt64 // open until the capture's end
		}
		return c.end
	}
	for _, k := range keys {
		g := groups[k]
		for a, i := range g {
			for _, j := range g[a+1:] {
				if calls[j].at >= end(&calls[i]) && calls[j].at > calls[i].at {
					break // calls are in start order: none after j was open with i
				}
				calls[i].twin, calls[j].twin = true, true
			}
		}
	}
}

// failedNote says how many calls failed and with which gRPC codes, e.g.
// " · 6 calls failed (NotFound)", and returns their number: kubelet asking
// after a container it has just removed reads differently from a pull
// that was refused.
func failedNote(steps []flow.Step) (string, int) {
	var codes []string
	count := map[string]int{}
	n := 0
	for _, s := range steps {
		if s.Err == "" {
			continue
		}
		n++
		code, _, _ := strings.Cut(s.Err, ":") // flow.ErrorText: "NotFound: …"
		if code == "" || strings.ContainsAny(code, " \t") {
			continue // "no grpc-status"
		}
		if count[code] == 0 {
			codes = append(codes, code)
		}
		count[code]++
	}
	if n == 0 {
		return "", 0
	}
	note := " · 1 call failed"
	if n > 1 {
		note = " · " + strconv.Itoa(n) + " calls failed"
	}
	if len(codes) == 0 {
		return note, n
	}
	for k, c := range codes {
		if len(codes) > 1 || count[c] < n {
			codes[k] = c + " ×" + strconv.Itoa(count[c])
		}
	}
	return note + " (" + strings.Join(codes, ", ") + ")", n
}

// phaseSpans splits calls into runs of one phase, times each run, and marks
// the call that opens each.
func phaseSpans(calls []call) []phaseSpan {
	own := owned(calls)
	var out []phaseSpan
	prev := ""
	for i := range calls {
		c := &calls[i]
		if c.phase != "" && c.phase != prev {
			out = append(out, phaseSpan{name: c.phase})
			c.opens = len(out)
		}
		prev = c.phase
		if len(out) == 0 || c.phase == "" {
			continue
		}
		c.span = len(out)
		p := &out[len(out)-1]
		p.dur += own[i]
		if p.kind == "" && !c.polled {
			p.kind = c.kind
		}
	}
	return out
}

// owned is the time flow.Timing gives each call: the answered calls that
// do the pod's work, in start order, each moment of the flow to the
// earliest-started of them open then; none to the others.
func owned(calls []call) []time.Duration {
	own := make([]time.Duration, len(calls))
	var idx []int
	for i := range calls {
		if c := &calls[i]; c.done && c.kind != "" {
			idx = append(idx, i)
		}
	}
	sort.SliceStable(idx, func(a, b int) bool { return calls[idx[a]].at < calls[idx[b]].at })
	var cur time.Duration // the flow's start
	for _, i := range idx {
		if c := &calls[i]; c.end > cur {
			own[i] = c.end - max(cur, c.at)
			cur = c.end
		}
	}
	return own
}

// participant returns the index of service's lifeline, adding one for a
// service that is not CRI.
func (d *diagram) participant(service string) int {
	switch service {
	case "RuntimeService", "runtime.v1.RuntimeService", "runtime.v1alpha2.RuntimeService":
		return pRuntime
	case "ImageService", "runtime.v1.ImageService", "runtime.v1alpha2.ImageService":
		return pImage
	}
	name := cut(clean(service), maxName)
	if name == "" {
		name = "unknown service"
	}
	for i, p := range d.parts {
		if i > pImage && p.name == name {
			return i
		}
	}
	d.parts = append(d.parts, participant{name: name, alias: "S" + strconv.Itoa(len(d.parts)-pImage), boxed: true})
	return len(d.parts) - 1
}

// folded returns calls with runs of identical consecutive calls, each
// ending before the next starts, merged into one ("ContainerStatus(web) ×5").
func folded(calls []call) []call {
	var out []call
	for _, c := range calls {
		if n := len(out); n > 0 {
			p := &out[n-1]
			if p.to == c.to && p.phase == c.phase && p.req == c.req && p.result == c.result &&
				p.failed == c.failed && p.done == c.done && p.hasDur == c.hasDur && p.end <= c.at {
				p.n += c.n
				p.dur += c.dur
				p.end = c.end
				p.crit = p.crit || c.crit
				continue
			}
		}
		out = append(out, c)
	}
	return out
}

// clean makes s printable on one line: control, format and line-separator
// characters become spaces, invalid UTF-8 becomes U+FFFD, and surrounding
// space is trimmed.
func clean(s string) string {
	ok := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f {
			ok = false // printable ASCII needs no rune checks
			break
		}
	}
	if ok {
		return strings.TrimSpace(s)
	}
	ok = true
	for _, r := range s {
		if r == utf8.RuneError || r == '\u00a0' || unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zl, unicode.Zp) {
			ok = false
			break
		}
	}
	if ok {
		return strings.TrimSpace(s)
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\u00a0' || unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zl, unicode.Zp):
			b.WriteByte(' ')
		default:
			b.WriteRune(r) // utf8.RuneError is written as U+FFFD
		}
	}
	return strings.TrimSpace(b.String())
}

// cut shortens s to at most n runes, ending it with "…" when cut.
func cut(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	i := 0
	for j := range s {
		if i == n-1 {
			return s[:j] + "…"
		}
		i++
	}
	return s
}

// fmtDur formats a duration the way the diagrams show it: "850µs", "2.3ms",
// "105ms", "1.94s", "12.5s", "2m05s".
func fmtDur(d time.Duration) string {
	if d < 0 {
		return "-" + fmtDur(-max(d, -math.MaxInt64))
	}
	switch {
	case d < time.Millisecond:
		if us := int64(math.Round(float64(d) / 1e3)); us < 1000 {
			return strconv.FormatInt(us, 10) + "µs"
		}
		return "1ms"
	case d < 10*time.Millisecond:
		s := strconv.FormatFloat(float64(d)/1e6, 'f', 1, 64)
		return strings.TrimSuffix(s, ".0") + "ms"
	case d < time.Second:
		ms := int64(math.Round(float64(d) / 1e6))
		if ms >= 1000 {
			return "1.00s"
		}
		return strconv.FormatInt(ms, 10) + "ms"
	case d < 10*time.Second:
		return strconv.FormatFloat(float64(d)/1e9, 'f', 2, 64) + "s"
	case d < time.Minute:
		return strconv.FormatFloat(float64(d)/1e9, 'f', 1, 64) + "s"
	}
	s := int64(math.Round(float64(d) / 1e9))
	return fmt.Sprintf("%dm%02ds", s/60, s%60)
}

// fmtAt formats a call's start relative to the flow's, to the millisecond:
// "+0ms", "+105ms", "+1.725s", "+2m05.120s".
func fmtAt(d time.Duration) string {
	sign := "+"
	if d < 0 {
		sign, d = "-", -d
	}
	ms := int64(math.Round(float64(d) / 1e6))
	switch {
	case ms < 1000:
		return sign + strconv.FormatInt(ms, 10) + "ms"
	case ms < 60000:
		return fmt.Sprintf("%s%d.%03ds", sign, ms/1000, ms%1000)
	}
	return fmt.Sprintf("%s%dm%02d.%03ds", sign, ms/60000, ms/1000%60, ms%1000)
}

// errWriter is a bufio.Writer that keeps the first error.
type errWriter struct {
	*bufio.Writer
}

func newWriter(w io.Writer) errWriter { return errWriter{bufio.NewWriterSize(w, 64<<10)} }

func (w errWriter) str(ss ...string) {
	for _, s := range ss {
		w.WriteString(s)
	}
}
