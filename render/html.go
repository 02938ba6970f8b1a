package render

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/criseq/criseq/decode"
	"github.com/criseq/criseq/flow"
)

// HTML writes one self-contained HTML page for the flows of a capture: a
// list of the flows (pod, start or stop, when, how long, complete or not),
// the selected flow's sequence diagram (the SVG of SVG, inline), and, for a
// call clicked in the diagram, a panel with its method, timing, gRPC status,
// request and response messages as JSON and its headers and trailers, as
// decoded (and so redacted unless the capture was decoded with NoRedact).
//
// The page needs no network and no library: its CSS and script are inline,
// the calls' details are a JSON block in it, and a Content-Security-Policy
// forbids fetching anything. It works opened from a file. Keys: ↑/↓ or j/k
// move between calls, ←/→ or [/] between flows, Esc closes the panel.
// Output is deterministic: the same flows give the same bytes.
func HTML(w io.Writer, title string, flows []*flow.Flow) error {
	p := NewHTMLPage(title, nil)
	for _, f := range flows {
		if err := p.Add(f); err != nil {
			return err
		}
	}
	return p.Write(w)
}

// HTMLPage is HTML built flow by flow, holding none of them: each flow's
// list entry, diagram and details are written out as it comes, into three
// spills, and Write puts the page together. Its flows are listed in the
// order they were added.
type HTMLPage struct {
	title              string
	nav, svgs, data    Spill
	n, calls, complete int
	err                error
}

// A Spill holds a part of the page until Write: in memory, or in a file
// (render's caller keeps the page's memory bounded so).
type Spill interface {
	io.Writer
	// Contents returns what was written, once, when the page is written (Write).
	Contents() (io.Reader, error)
}

type memSpill struct{ bytes.Buffer }

func (m *memSpill) Contents() (io.Reader, error) { return &m.Buffer, nil }

// NewHTMLPage starts a page. spill makes each of its three spills; nil
// keeps them in memory.
func NewHTMLPage(title string, spill func() (Spill, error)) *HTMLPage {
	p := &HTMLPage{title: cut(clean(title), maxLabel)}
	if spill == nil {
		spill = func() (Spill, error) { return &memSpill{}, nil }
	}
	for _, s := range []*Spill{&p.nav, &p.svgs, &p.data} {
		if *s, p.err = spill(); p.err != nil {
			p.err = fmt.Errorf("render html: %w", p.err)
			return p
		}
	}
	return p
}

// Add writes f's entry, diagram and details.
func (p *HTMLPage) Add(f *flow.Flow) error {
	if p.err != nil {
		return p.err
	}
	if err := p.add(f); err != nil {
		p.err = fmt.Errorf("render html: flow %d: %w", p.n+1, err)
		return p.err
	}
	p.n++
	return nil
}

func (p *HTMLPage) add(f *flow.Flow) error {
	i := p.n
	d, err := newDiagram(f)
	if err != nil {
		return err
	}
	// Encoded on its own, a flow's details are the very bytes it has in
	// the list of them all.
	js, err := json.Marshal(htmlFlow{Title: d.title, Calls: htmlCalls(f, d), Events: htmlEvents(f, d)}) // escapes <, > and &: no "</script>" in it
	if err != nil {
		return err
	}
	if i > 0 {
		js = append([]byte{','}, js...)
	}
	if _, err := p.data.Write(js); err != nil {
		return err
	}
	p.calls += len(f.Steps)
	if f.Complete {
		p.complete++
	}

	esc := html.EscapeString
	state, cls := "complete", "ok"
	if !f.Complete {
		state, cls = "incomplete", "warn"
	}
	if d.failed > 0 {
		state += ", " + strconv.Itoa(d.failed) + " failed"
		cls = "bad"
	}
	when := ""
	if !f.Start.IsZero() {
		when = f.Start.UTC().Format("15:04:05.000")
	}
	pod := strings.TrimSuffix(d.title, " — pod "+f.Kind.String())
	nw := newWriter(p.nav)
	nw.str(`<li><button type="button" class="flow" data-flow="`, strconv.Itoa(i), `" title="`, esc(d.title), `">`,
		`<span class="pod">`, esc(pod), `</span>`,
		`<span class="line"><span class="kind `, f.Kind.String(), `">`, f.Kind.String(), `</span>`,
		`<span class="state `, cls, `">`, state, `</span></span>`,
		`<span class="line meta">`, esc(when), ` · `, plural(len(f.Steps), "call"), `</span>`,
		`<span class="total">`, esc(timeText(f, f.Timing(), "")), `</span></button></li>
`)
	if err := nw.Flush(); err != nil {
		return err
	}

	d.hits = true
	l, err := layout(d)
	if err != nil {
		return err
	}
	sw := newWriter(p.svgs)
	sw.str(`<section class="diagram" id="flow-`, strconv.Itoa(i), `" data-flow="`, strconv.Itoa(i), `" aria-label="`, esc(d.title), `"`)
	if i > 0 {
		sw.str(" hidden")
	}
	sw.str(">\n")
	l.writeSVG(sw, true)
	sw.str("</section>\n")
	return sw.Flush()
}

// Write writes the page.
func (p *HTMLPage) Write(w io.Writer) error {
	if p.err != nil {
		return p.err
	}
	if err := p.writeTo(w); err != nil {
		return fmt.Errorf("render html: %w", err)
	}
	return nil
}

func (p *HTMLPage) writeTo(w io.Writer) error {
	if p.n == 0 {
		return errors.New("no flow")
	}
	bw := newWriter(w)
	esc := html.EscapeString
	bw.str(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<meta name="generator" content="criseq">
<title>`, esc(p.title), ` — criseq</title>
<style>`, htmlStyle, scopedSVGStyle(), `</style>
</head>
<body>
<header id="top"><h1>`, esc(p.title), `</h1><p class="totals">`,
		plural(p.n, "pod flow"), ` · `, strconv.Itoa(p.complete), ` complete · `, plural(p.calls, "call"),
		`</p><p class="keys"><kbd>↑</kbd><kbd>↓</kbd> or <kbd>j</kbd><kbd>k</kbd> calls · <kbd>←</kbd><kbd>→</kbd> or <kbd>[</kbd><kbd>]</kbd> flows · <kbd>Esc</kbd> close</p></header>
<div id="app">
<nav id="flows" aria-label="Pod flows"><ol>
`)
	if err := copySpill(bw, p.nav); err != nil {
		return err
	}
	bw.str(`</ol></nav>
<main id="view" tabindex="-1">
`)
	if err := copySpill(bw, p.svgs); err != nil {
		return err
	}
	bw.str(`<p id="hint">Click an arrow, or press <kbd>↓</kbd>, to see a call's messages, headers and timing.</p>
</main>
<aside id="detail" aria-label="Call details" hidden>
<div class="dhead"><h2 id="d-title"></h2><button type="button" id="d-close" title="Close (Esc)" aria-label="Close">×</button></div>
<div id="d-body"></div>
</aside>
</div>
<script type="application/json" id="criseq-data">{"flows":[`)
	if err := copySpill(bw, p.data); err != nil {
		return err
	}
	bw.str("]}</script>\n<script>", htmlScript, "</script>\n</body>\n</html>\n")
	return bw.Flush()
}

func copySpill(w io.Writer, s Spill) error {
	r, err := s.Contents()
	if err != nil {
		return err
	}
	_, err = io.Copy(w, r)
	return err
}

// htmlCall is what the detail panel shows of one call.
type htmlCall struct {
	Name     string      `json:"name"`             // "RunPodSandbox"
	Path     string      `json:"path"`             // "/runtime.v1.RuntimeService/RunPodSandbox"
	Label    string      `json:"label"`            // the request arrow's text
	Result   string      `json:"result,omitempty"` // the full result or error
	Phase    string      `json:"phase,omitempty"`
	At       string      `json:"at"`                // "+105ms"
	Time     string      `json:"time,omitempty"`    // "10:00:00.105 UTC"
	Dur      string      `json:"dur"`               // "1.61s" or "no reply (capture ended)"
	Status   string      `json:"status"`            // "OK (0)", "NotFound (5)", "none"
	Message  string      `json:"message,omitempty"` // grpc-message
	Failed   bool        `json:"failed,omitempty"`
	Req      []string    `json:"req"`  // one pretty JSON (or a note) per message
	Resp     []string    `json:"resp"` // idem
	ReqHdrs  [][2]string `json:"reqHeaders"`
	RespHdrs [][2]string `json:"respHeaders"`
	Trailers [][2]string `json:"trailers"`
	Errors   []string    `json:"errors,omitempty"` // stream-level problems
	By       string      `json:"by,omitempty"`     // how the call was put in this flow: "sandbox config", …
	Inferred bool        `json:"inferred,omitempty"`
}

// htmlEvent is what the detail panel shows of one of the runtime's events.
type htmlEvent struct {
	Type        string `json:"type"`              // "CONTAINER_STARTED"
	Container   string `json:"container"`         // its name, or short ID
	ContainerID string `json:"containerId"`       // the full ID
	Created     string `json:"created,omitempty"` // the runtime's created_at
	At          string `json:"at"`                // "+412ms"
	Time        string `json:"time,omitempty"`    // when the client got it
	Stream      string `json:"stream,omitempty"`  // "connection 1, stream 5"
	Path        string `json:"path,omitempty"`    // the stream's method
	Label       string `json:"label"`             // the arrow's text
}

type htmlFlow struct {
	Title  string      `json:"title"`
	Calls  []htmlCall  `json:"calls"`
	Events []htmlEvent `json:"events"`
}

// htmlCalls is the detail of every call of f, in the order of d.calls
// (which is f.Steps').
func htmlCalls(f *flow.Flow, d *diagram) []htmlCall {
	out := make([]htmlCall, len(f.Steps))
	for i := range f.Steps {
		s := &f.Steps[i]
		c := &d.calls[i]
		h := htmlCall{
			Name:   cut(clean(s.Method), maxName),
			Path:   "/" + clean(s.Service) + "/" + clean(s.Method),
			Label:  c.reqLabel(),
			Result: c.full,
			Phase:  c.phase,
			At:     fmtAt(c.at),
			Dur:    noReply,
			Status: "none",
			Failed: c.failed,
			Req:    []string{},
			Resp:   []string{},
		}
		if h.Result == "" {
			h.Result = c.result
		}
		if !s.Start.IsZero() {
			h.Time = s.Start.UTC().Format(timeFormat)
		}
		if c.done && c.hasDur {
			h.Dur = s.Duration.Round(time.Microsecond).String()
			if d := fmtDur(s.Duration); d != h.Dur {
				h.Dur = d + " (" + h.Dur + ")"
			}
		} else if c.done {
			h.Dur = "unknown"
		}
		if call := s.Call; call != nil {
			h.Path = call.Method
			if call.Status >= 0 {
				h.Status = codes.Code(call.Status).String() + " (" + strconv.Itoa(call.Status) + ")"
			}
			h.Message = call.Message
			for _, m := range call.Requests {
				h.Req = append(h.Req, messageJSON(m))
			}
			for _, m := range call.Responses {
				h.Resp = append(h.Resp, messageJSON(m))
			}
			h.ReqHdrs = headerPairs(call.RequestHeaders)
			h.RespHdrs = headerPairs(call.ResponseHeaders)
			h.Trailers = headerPairs(call.Trailers)
			h.Errors = call.Errors
		} else if c.done {
			if s.Err != "" {
				h.Status = "failed"
				h.Message = s.Err
			} else {
				h.Status = "OK"
			}
		}
		if s.Attr.By != "" {
			h.By = s.Attr.By
			if s.Attr.By == flow.ByAmbiguous {
				h.By = c.mark
			}
		}
		h.Inferred = s.Inferred
		if h.ReqHdrs == nil {
			h.ReqHdrs = [][2]string{}
		}
		if h.RespHdrs == nil {
			h.RespHdrs = [][2]string{}
		}
		if h.Trailers == nil {
			h.Trailers = [][2]string{}
		}
		out[i] = h
	}
	return out
}

// htmlEvents is the detail of every event of f, in the order of f.Events.
func htmlEvents(f *flow.Flow, d *diagram) []htmlEvent {
	out := make([]htmlEvent, len(f.Events))
	for _, ev := range d.events {
		e := &f.Events[ev.n]
		h := htmlEvent{
			Type:        cut(clean(e.Type), maxName),
			Container:   cut(clean(e.Container), maxName),
			ContainerID: cut(clean(e.ContainerID), maxLabel),
			At:          fmtAt(ev.at),
			Label:       ev.label,
		}
		if !e.Created.IsZero() {
			h.Created = e.Created.UTC().Format(timeFormat)
		}
		if !e.Time.IsZero() {
			h.Time = e.Time.UTC().Format(timeFormat)
		}
		if c := e.Call; c != nil {
			h.Stream = "connection " + strconv.FormatUint(c.Conn, 10) + ", stream " + strconv.FormatUint(uint64(c.Stream), 10)
			h.Path = c.Method
		}
		out[ev.n] = h
	}
	return out
}

func headerPairs(hs []hpack.HeaderField) [][2]string {
	out := make([][2]string, len(hs))
	for i, h := range hs {
		out[i] = [2]string{h.Name, h.Value}
	}
	return out
}

// MaxShownMessage is the largest message the HTML viewer shows; a larger
// one (a list of thousands of containers) is shown by its size, and need
// not be decoded whole (decode.Options.FieldsAbove).
const MaxShownMessage = 1 << 20

// messageJSON is m as indented JSON with the proto field names, or a note
// saying why it is not shown.
func messageJSON(m decode.Message) string {
	size := plural(m.Size, "byte")
	if m.Compressed {
		size += ", compressed"
	}
	if m.Size > MaxShownMessage {
		return "(" + size + ": too large to show here; criseq calls --json writes it)"
	}
	if m.Proto == nil {
		if m.Err != "" {
			return "(" + size + ": " + m.Err + ")"
		}
		return "(" + size + ", type unknown)"
	}
	b, err := protojson.MarshalOptions{Multiline: true, UseProtoNames: true}.Marshal(m.Proto)
	if err != nil {
		return "(" + size + ": " + err.Error() + ")"
	}
	// protojson varies its spacing from build to build on purpose; Indent
	// makes it the same every time.
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return string(b)
	}
	return out.String()
}

// scopedSVGStyle is svgStyle with every rule limited to the viewer's inline
// SVGs (class "sq"), so that it styles nothing else on the page.
func scopedSVGStyle() string {
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimSpace(svgStyle), "\n") {
		b.WriteString("svg.sq ")
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return b.String()
}

const htmlStyle = `
*{box-sizing:border-box}
html,body{margin:0;height:100%}
body{font:14px/1.4 system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',Arial,sans-serif;color:#263238;background:#eceff1;display:flex;flex-direction:column}
kbd{font:11px 'DejaVu Sans Mono',monospace;border:1px solid #b0bec5;border-bottom-width:2px;border-radius:3px;padding:0 4px;margin:0 1px;background:#fff}
#top{display:flex;align-items:baseline;gap:16px;flex-wrap:wrap;padding:8px 16px;background:#37474f;color:#eceff1}
#top h1{font-size:16px;margin:0;overflow-wrap:anywhere}
#top p{margin:0;font-size:13px}
#top .keys{margin-left:auto;color:#b0bec5}
#top kbd{color:#263238}
#app{flex:1;display:flex;min-height:0}
#flows{width:270px;flex:none;overflow:auto;background:#fafafa;border-right:1px solid #cfd8dc}
#flows ol{list-style:none;margin:0;padding:0}
.flow{display:block;width:100%;text-align:left;border:0;border-bottom:1px solid #e0e0e0;border-left:4px solid transparent;background:none;padding:8px 10px;font:inherit;color:inherit;cursor:pointer}
.flow:hover{background:#eef3f7}
.flow[aria-current=true]{background:#e3f2fd;border-left-color:#1976d2}
.flow:focus-visible{outline:2px solid #1976d2;outline-offset:-2px}
.flow span{display:block}
.flow .pod{font-weight:600;overflow-wrap:anywhere}
.flow .line{display:flex;gap:6px;align-items:center;font-size:12px;color:#607d8b;margin-top:2px}
.flow .line span{display:inline}
.flow .total{font-size:12px;margin-top:2px;overflow-wrap:anywhere}
.kind,.state{font-size:11px;border-radius:8px;padding:0 6px;line-height:16px}
.kind.start{background:#e8f5e9;color:#2e7d32}
.kind.stop{background:#ede7f6;color:#4527a0}
.kind.restart{background:#fff3e0;color:#e65100}
.state.ok{background:#f1f8e9;color:#558b2f}
.state.warn{background:#fff3e0;color:#e65100}
.state.bad{background:#ffebee;color:#c62828}
#view{flex:1;overflow:auto;padding:16px;min-width:0}
#view:focus{outline:none}
.diagram svg{display:block;background:#fff;box-shadow:0 1px 3px rgba(0,0,0,.15)}
#hint{color:#607d8b;font-size:13px}
svg.sq .hit{fill:transparent;cursor:pointer}
svg.sq .hit:hover{fill:#1976d2;fill-opacity:.06}
svg.sq .hit.sel{fill:#1976d2;fill-opacity:.10;stroke:#1976d2;stroke-width:1.5}
#detail{width:min(520px,42vw);flex:none;overflow:auto;background:#fff;border-left:1px solid #cfd8dc;padding:0 16px 16px}
#detail[hidden]{display:none}
.dhead{position:sticky;top:0;background:#fff;display:flex;align-items:flex-start;gap:8px;padding:12px 0 8px;border-bottom:1px solid #eceff1}
.dhead h2{flex:1;font-size:16px;margin:0;overflow-wrap:anywhere}
#d-close{border:1px solid #cfd8dc;background:#fff;border-radius:4px;font-size:18px;line-height:20px;width:28px;height:28px;cursor:pointer;color:#455a64}
#d-close:hover{background:#eceff1}
#detail h3{font-size:13px;margin:14px 0 4px;color:#455a64;text-transform:uppercase;letter-spacing:.04em}
#detail dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:8px 0 0;font-size:13px}
#detail dt{color:#607d8b}
#detail dd{margin:0;overflow-wrap:anywhere}
#detail .err{color:#c62828}
#detail pre{margin:0 0 6px;padding:8px;background:#f5f7fa;border:1px solid #e0e0e0;border-radius:4px;font:12px/1.45 'DejaVu Sans Mono',Menlo,Consolas,monospace;white-space:pre-wrap;overflow-wrap:anywhere}
#detail table{border-collapse:collapse;width:100%;font:12px/1.45 'DejaVu Sans Mono',Menlo,Consolas,monospace}
#detail td{border-bottom:1px solid #eceff1;padding:2px 4px;vertical-align:top;overflow-wrap:anywhere}
#detail td:first-child{color:#455a64;white-space:nowrap;width:1%}
#detail .none{color:#90a4ae;font-size:12px;margin:0}
`

const htmlScript = `
(function () {
  'use strict';
  var data = JSON.parse(document.getElementById('criseq-data').textContent);
  var buttons = document.querySelectorAll('#flows .flow');
  var views = document.querySelectorAll('#view .diagram');
  var panel = document.getElementById('detail');
  var body = document.getElementById('d-body');
  var hint = document.getElementById('hint');
  var cur = -1, call = -1;

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function setHash() {
    // Not an element's id, which the browser would scroll to.
    var h = '#flow=' + (cur + 1) + (call >= 0 ? '&call=' + (call + 1) : '');
    try { history.replaceState(null, '', h); } catch (e) { /* some file:// setups refuse */ }
  }
  function showFlow(i, focus) {
    if (i < 0 || i >= views.length) return;
    cur = i;
    for (var k = 0; k < views.length; k++) {
      views[k].hidden = k !== i;
      buttons[k].setAttribute('aria-current', k === i ? 'true' : 'false');
    }
    buttons[i].scrollIntoView({ block: 'nearest' });
    if (focus) buttons[i].focus({ preventScroll: true });
    document.getElementById('view').scrollTo(0, 0);
    showCall(-1);
  }
  // A call has one click area, or two (its request and its reply) when other
  // arrows come between them.
  function hits() { return views[cur].querySelectorAll('.hit'); }
  function nCalls() { return cur >= 0 ? data.flows[cur].calls.length : 0; }
  // select marks the click areas of call j, or of event e, and returns the
  // first.
  function select(j, e) {
    var hs = cur >= 0 ? hits() : [], first = null;
    for (var k = 0; k < hs.length; k++) {
      var s = hs[k].getAttribute('data-step'), v = hs[k].getAttribute('data-event');
      var on = s !== null ? +s === j : +v === e;
      hs[k].classList.toggle('sel', on);
      if (on && !first) first = hs[k];
    }
    return first;
  }
  function showEvent(e) {
    var ev = cur >= 0 && data.flows[cur].events[e];
    if (!ev) return;
    select(-1, e);
    call = -1;
    document.getElementById('d-title').textContent = ev.type;
    body.textContent = '';
    var dl = el('dl');
    function row(k, v) {
      if (v === undefined || v === '') return;
      dl.appendChild(el('dt', '', k));
      dl.appendChild(el('dd', '', v));
    }
    row('Event', (e + 1) + ' of ' + data.flows[cur].events.length + ' in ' + data.flows[cur].title);
    row('Arrow', ev.label);
    row('Container', ev.container);
    row('Container ID', ev.containerId);
    row('Created at', ev.created);
    row('Received', ev.at + (ev.time ? '  (' + ev.time + ')' : ''));
    row('Stream', ev.stream + (ev.path ? ' (' + ev.path + ')' : ''));
    body.appendChild(dl);
    panel.hidden = false;
    hint.hidden = true;
    panel.scrollTop = 0;
  }
  function showCall(j) {
    var first = select(j, -1);
    call = j;
    if (j < 0 || j >= nCalls()) {
      call = -1;
      panel.hidden = true;
      hint.hidden = false;
      setHash();
      return;
    }
    fill(data.flows[cur].calls[j], j, nCalls());
    panel.hidden = false;
    hint.hidden = true;
    panel.scrollTop = 0;
    var r = first && first.getBoundingClientRect(), v = document.getElementById('view').getBoundingClientRect();
    if (r && (r.top < v.top || r.bottom > v.bottom)) first.scrollIntoView({ block: 'nearest' });
    setHash();
  }
  function fill(c, j, n) {
    document.getElementById('d-title').textContent = c.name;
    body.textContent = '';
    var dl = el('dl');
    function row(k, v, cls) {
      if (v === undefined || v === '') return;
      dl.appendChild(el('dt', '', k));
      dl.appendChild(el('dd', cls || '', v));
    }
    row('Call', (j + 1) + ' of ' + n + ' in ' + data.flows[cur].title);
    row('Method', c.path);
    row('Arrow', c.label);
    row('Phase', c.phase);
    row('In this flow by', c.by);
    if (c.inferred) row('Inferred', 'the method, from the messages\' shape (its :path was not seen)');
    row('Start', c.at + (c.time ? '  (' + c.time + ')' : ''));
    row('Duration', c.dur);
    row('Status', c.status, c.failed ? 'err' : '');
    row('Message', c.message, 'err');
    row('Result', c.result, c.failed ? 'err' : '');
    (c.errors || []).forEach(function (e) { row('Problem', e, 'err'); });
    body.appendChild(dl);
    msgs('Request', c.req);
    msgs('Response', c.resp);
    headers('Request headers', c.reqHeaders);
    headers('Response headers', c.respHeaders);
    headers('Trailers', c.trailers);
  }
  function msgs(title, list) {
    body.appendChild(el('h3', '', title + (list.length > 1 ? 's (' + list.length + ')' : '')));
    if (!list.length) { body.appendChild(el('p', 'none', 'none captured')); return; }
    list.forEach(function (m) { body.appendChild(el('pre', 'json', m)); });
  }
  function headers(title, list) {
    body.appendChild(el('h3', '', title));
    if (!list.length) { body.appendChild(el('p', 'none', 'none captured')); return; }
    var t = el('table');
    list.forEach(function (h) {
      var tr = el('tr');
      tr.appendChild(el('td', '', h[0]));
      tr.appendChild(el('td', '', h[1]));
      t.appendChild(tr);
    });
    body.appendChild(t);
  }

  for (var k = 0; k < buttons.length; k++) {
    buttons[k].addEventListener('click', function (e) {
      showFlow(+e.currentTarget.getAttribute('data-flow'), false);
    });
  }
  document.getElementById('view').addEventListener('click', function (e) {
    var t = e.target.closest && e.target.closest('[data-step],[data-event]');
    if (!t) return;
    if (t.hasAttribute('data-event')) showEvent(+t.getAttribute('data-event'));
    else showCall(+t.getAttribute('data-step'));
  });
  document.getElementById('d-close').addEventListener('click', function () { showCall(-1); });
  document.addEventListener('keydown', function (e) {
    if (e.altKey || e.ctrlKey || e.metaKey || cur < 0) return;
    var n = nCalls();
    switch (e.key) {
      case 'ArrowDown': case 'j':
        if (n) showCall(call < 0 ? 0 : Math.min(call + 1, n - 1));
        break;
      case 'ArrowUp': case 'k':
        if (n) showCall(call < 0 ? n - 1 : Math.max(call - 1, 0));
        break;
      case 'ArrowRight': case ']':
        showFlow(Math.min(cur + 1, views.length - 1), true);
        break;
      case 'ArrowLeft': case '[':
        showFlow(Math.max(cur - 1, 0), true);
        break;
      case 'Escape':
        showCall(-1);
        break;
      default:
        return;
    }
    e.preventDefault();
  });

  var m = /^#flow=(\d+)(?:&call=(\d+))?$/.exec(location.hash);
  showFlow(m && +m[1] >= 1 && +m[1] <= views.length ? +m[1] - 1 : 0, false);
  if (m && m[2] !== undefined) showCall(+m[2] - 1);
})();
`
