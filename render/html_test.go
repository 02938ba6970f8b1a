package render

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"
	"golang.org/x/net/http2/hpack"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/criseq/criseq/decode"
	"github.com/criseq/criseq/flow"
)

// caseFlows is every test case's flow, in the order of cases.
func caseFlows() []*flow.Flow {
	var fs []*flow.Flow
	for _, c := range cases {
		fs = append(fs, c.flow())
	}
	return fs
}

func viewer(t testing.TB, title string, flows []*flow.Flow) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := HTML(&b, title, flows); err != nil {
		t.Fatalf("HTML: %v", err)
	}
	return b.Bytes()
}

// page is a parsed viewer.
type page struct {
	root *html.Node
}

func parsePage(t *testing.T, b []byte) page {
	t.Helper()
	root, err := html.Parse(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("html.Parse: %v", err)
	}
	return page{root}
}

func attr(n *html.Node, key string) (string, bool) {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val, true
		}
	}
	return "", false
}

// all returns the elements for which match is true, in document order.
func (p page) all(match func(*html.Node) bool) []*html.Node {
	var out []*html.Node
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode && match(n) {
			out = append(out, n)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(p.root)
	return out
}

func (p page) tag(name string) []*html.Node {
	return p.all(func(n *html.Node) bool { return n.Data == name })
}

func hasClass(n *html.Node, class string) bool {
	v, _ := attr(n, "class")
	for _, c := range strings.Fields(v) {
		if c == class {
			return true
		}
	}
	return false
}

func text(n *html.Node) string {
	var b strings.Builder
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.TextNode {
			b.WriteString(n.Data)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(n)
	return b.String()
}

type viewerData struct {
	Flows []htmlFlow `json:"flows"`
}

// data decodes the page's JSON block, checking there is exactly one, and
// exactly one other script, the viewer's own.
func (p page) data(t *testing.T) viewerData {
	t.Helper()
	scripts := p.tag("script")
	if len(scripts) != 2 {
		t.Fatalf("%d <script> elements, want 2 (the data and the viewer's)", len(scripts))
	}
	if typ, _ := attr(scripts[0], "type"); typ != "application/json" {
		t.Fatalf("first script is of type %q", typ)
	}
	if _, ok := attr(scripts[1], "src"); ok {
		t.Fatal("the viewer's script is not inline")
	}
	var d viewerData
	if err := json.Unmarshal([]byte(text(scripts[0])), &d); err != nil {
		t.Fatalf("the data block is not JSON: %v", err)
	}
	return d
}

// TestHTML checks the viewer of every case together: one entry, one diagram
// and one set of details per flow, one clickable area per call.
func TestHTML(t *testing.T) {
	flows := caseFlows()
	b := viewer(t, "cases.pcapng", flows)
	if again := viewer(t, "cases.pcapng", caseFlows()); !bytes.Equal(b, again) {
		t.Fatal("two renderings of the same flows differ")
	}
	p := parsePage(t, b)
	d := p.data(t)
	buttons := p.all(func(n *html.Node) bool { return n.Data == "button" && hasClass(n, "flow") })
	sections := p.all(func(n *html.Node) bool { return n.Data == "section" && hasClass(n, "diagram") })
	if len(buttons) != len(flows) || len(sections) != len(flows) || len(d.Flows) != len(flows) {
		t.Fatalf("%d flows: %d list entries, %d diagrams, %d in the data", len(flows), len(buttons), len(sections), len(d.Flows))
	}
	for i, f := range flows {
		name := cases[i].name
		dg, err := newDiagram(f)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := text(buttons[i]), timeText(f, f.Timing(), ""); !strings.Contains(got, want) {
			t.Errorf("%s: list entry %q lacks the time %q", name, got, want)
		}
		failed := 0
		for _, s := range f.Steps {
			if s.Err != "" {
				failed++
			}
		}
		if got, want := text(buttons[i]), fmt.Sprintf("%d failed", failed); (failed > 0) != strings.Contains(got, want) {
			t.Errorf("%s: list entry %q, want %q in it only if a call failed", name, got, want)
		}
		_, hidden := attr(sections[i], "hidden")
		if hidden != (i > 0) {
			t.Errorf("%s: hidden = %v", name, hidden)
		}
		svgs := 0
		var steps, events []string
		for c := sections[i].FirstChild; c != nil; c = c.NextSibling {
			if c.Type == html.ElementNode && c.Data == "svg" {
				svgs++
				sub := page{c}
				for _, h := range sub.all(func(n *html.Node) bool { return hasClass(n, "hit") }) {
					if e, ok := attr(h, "data-event"); ok {
						events = append(events, e)
						continue
					}
					s, _ := attr(h, "data-step")
					steps = append(steps, s)
				}
				for _, want := range []string{dg.title, dg.note} {
					if !strings.Contains(norm(text(c)), norm(want)) { // the note is wrapped
						t.Errorf("%s: diagram lacks %q", name, want)
					}
				}
			}
		}
		if svgs != 1 {
			t.Errorf("%s: %d <svg> in the diagram's section", name, svgs)
		}
		// Every call is clickable: once, or on its request and its reply
		// when other arrows come between.
		seen := map[string]int{}
		for _, s := range steps {
			seen[s]++
		}
		for j := range f.Steps {
			if n := seen[itoa(j)]; n < 1 || n > 2 {
				t.Errorf("%s: call %d has %d click areas", name, j, n)
			}
			delete(seen, itoa(j))
		}
		if len(seen) > 0 {
			t.Errorf("%s: click areas of no call: %v", name, seen)
		}
		// And every event, once.
		for j := range f.Events {
			if j >= len(events) || events[j] != itoa(j) {
				t.Errorf("%s: events' click areas %v, want one per event in order", name, events)
				break
			}
		}
		if len(events) != len(f.Events) || len(d.Flows[i].Events) != len(f.Events) {
			t.Errorf("%s: %d events, %d click areas, %d in the data", name, len(f.Events), len(events), len(d.Flows[i].Events))
		}
		if d.Flows[i].Title != dg.title || len(d.Flows[i].Calls) != len(f.Steps) {
			t.Errorf("%s: data has %q with %d calls, want %q with %d", name, d.Flows[i].Title,
				len(d.Flows[i].Calls), dg.title, len(f.Steps))
		}
		for j, c := range d.Flows[i].Calls {
			if c.Label != dg.calls[j].reqLabel() || c.At != fmtAt(dg.calls[j].at) {
				t.Errorf("%s: call %d is %q at %s", name, j, c.Label, c.At)
			}
		}
	}
	// No element may fetch anything or run script from an attribute.
	for _, n := range p.all(func(*html.Node) bool { return true }) {
		for _, a := range n.Attr {
			if strings.HasPrefix(a.Key, "on") || a.Key == "src" || a.Key == "href" || a.Key == "xlink:href" {
				t.Errorf("<%s %s=%q>", n.Data, a.Key, a.Val)
			}
		}
		if n.Data == "link" || n.Data == "img" || n.Data == "iframe" || n.Data == "object" {
			t.Errorf("<%s> in a self-contained page", n.Data)
		}
	}
	if csp := p.all(func(n *html.Node) bool {
		v, _ := attr(n, "http-equiv")
		return n.Data == "meta" && v == "Content-Security-Policy"
	}); len(csp) != 1 {
		t.Error("no Content-Security-Policy")
	}
}

func itoa(i int) string { return string(appendNum(nil, float64(i))) }

// TestHTMLHostile checks that hostile names, results, errors, messages and
// headers are shown as text, and break neither the page nor its JSON.
func TestHTMLHostile(t *testing.T) {
	f := hostileFlow()
	valid := strings.ToValidUTF8(hostile, "\uFFFD") // JSON's, and proto's
	req := &runtimeapi.RunPodSandboxRequest{Config: &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: valid, Namespace: "</script><script>alert(1)</script>"}}}
	f.Steps[0].Call = &decode.Call{
		Method: "/runtime.v1.RuntimeService/RunPodSandbox", Status: 0, Start: t0, End: t0.Add(time.Millisecond),
		Requests:        []decode.Message{{Proto: req, Size: 10}},
		Responses:       []decode.Message{{Err: hostile, Size: 3}},
		RequestHeaders:  []hpack.HeaderField{{Name: "x-<b>", Value: "</script><!--"}},
		ResponseHeaders: []hpack.HeaderField{{Name: ":status", Value: "200"}},
		Trailers:        []hpack.HeaderField{{Name: "grpc-message", Value: hostile}},
		Message:         hostile,
	}
	f.Steps[1].Call = &decode.Call{Method: "/x", Status: 5, Message: "not <found>"}
	b := viewer(t, hostile, []*flow.Flow{f, startFlow()})
	s := string(b)
	for _, bad := range []string{"<b>", "<script>x", "<script>alert", "</text><script>", "\x00", "\x1b"} {
		if strings.Contains(s, bad) {
			t.Errorf("the page holds %q unescaped", bad)
		}
	}
	if n := strings.Count(s, "</script>"); n != 2 {
		t.Errorf("%d </script>, want 2", n)
	}
	p := parsePage(t, b)
	d := p.data(t)
	if len(d.Flows) != 2 {
		t.Fatalf("%d flows in the data", len(d.Flows))
	}
	for _, n := range p.tag("b") {
		t.Errorf("a <b> element: %q", text(n))
	}
	c := d.Flows[0].Calls[0]
	if len(c.Req) != 1 || !strings.Contains(c.Req[0], `"namespace": "\u003c/script\u003e`) && !strings.Contains(c.Req[0], `"namespace": "</script><script>alert(1)</script>"`) {
		t.Errorf("request JSON: %q", c.Req)
	}
	var msg map[string]any
	if err := json.Unmarshal([]byte(c.Req[0]), &msg); err != nil {
		t.Errorf("request is not JSON: %v\n%s", err, c.Req[0])
	}
	if len(c.Resp) != 1 || !strings.Contains(c.Resp[0], "</text><script>x</script>") {
		t.Errorf("response note: %q", c.Resp)
	}
	if len(c.ReqHdrs) != 1 || c.ReqHdrs[0] != [2]string{"x-<b>", "</script><!--"} {
		t.Errorf("request headers: %q", c.ReqHdrs)
	}
	if c.Status != "OK (0)" || c.Message != valid || c.Path != "/runtime.v1.RuntimeService/RunPodSandbox" {
		t.Errorf("status %q, message %q, path %q", c.Status, c.Message, c.Path)
	}
	if got := d.Flows[0].Calls[1].Status; got != "NotFound (5)" {
		t.Errorf("status of call 2: %q", got)
	}
	// The visible text holds the hostile strings as text.
	title := p.tag("h1")
	if len(title) != 1 || !strings.Contains(text(title[0]), "</text><script>x</script>") {
		t.Errorf("h1: %v", title)
	}
	entry := text(p.all(func(n *html.Node) bool { return hasClass(n, "flow") })[0])
	if !strings.Contains(entry, `q"uo'te <b>&amp;</b>`) {
		t.Errorf("list entry: %q", entry)
	}
}

func TestHTMLErrors(t *testing.T) {
	if err := HTML(&bytes.Buffer{}, "x", nil); err == nil {
		t.Error("no error for no flow")
	}
	if err := HTML(&bytes.Buffer{}, "x", []*flow.Flow{startFlow(), nil}); err == nil {
		t.Error("no error for a nil flow")
	}
	if err := HTML(failWriter{}, "x", []*flow.Flow{startFlow()}); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("error %v, want the writer's", err)
	}
}

// TestHTMLPlainSVGUnchanged: what the viewer adds to its SVGs (data-step,
// the clickable areas) is not in plain SVG.
func TestHTMLPlainSVGUnchanged(t *testing.T) {
	for _, c := range cases {
		s := string(render(t, "svg", c.flow()))
		if strings.Contains(s, "data-step") || strings.Contains(s, `class="hit"`) {
			t.Errorf("%s.svg has the viewer's additions", c.name)
		}
	}
}

// TestHTMLSample writes the viewer of every case to $RENDER_OUT/cases.html.
func TestHTMLSample(t *testing.T) {
	dir := os.Getenv("RENDER_OUT")
	if dir == "" {
		t.Skip("RENDER_OUT not set")
	}
	if err := os.WriteFile(dir+"/cases.html", viewer(t, "cases", caseFlows()), 0o644); err != nil {
		t.Fatal(err)
	}
}
