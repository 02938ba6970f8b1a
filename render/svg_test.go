package render

import (
	"bufio"
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/criseq/criseq/flow"
)

// svgDoc is what a test reads back from an SVG.
type svgDoc struct {
	root    xml.StartElement
	texts   []string          // character data of every <text>, in order
	titles  []string          // every <title>
	classes map[string]int    // elements per class attribute
	tags    map[string]int    // elements per tag
	attrs   map[string]string // attributes of the root
}

// parseSVG decodes a whole SVG document with encoding/xml, failing the test
// if it is not well-formed.
func parseSVG(t *testing.T, b []byte) *svgDoc {
	t.Helper()
	doc := &svgDoc{classes: map[string]int{}, tags: map[string]int{}, attrs: map[string]string{}}
	dec := xml.NewDecoder(bytes.NewReader(b))
	dec.Strict = true
	var stack []string
	var text strings.Builder
	depth := 0
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v", err)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			if depth == 0 {
				doc.root = tok.Copy()
				for _, a := range tok.Attr {
					doc.attrs[a.Name.Local] = a.Value
				}
			}
			depth++
			stack = append(stack, tok.Name.Local)
			doc.tags[tok.Name.Local]++
			for _, a := range tok.Attr {
				if a.Name.Local == "class" {
					doc.classes[a.Value]++
				}
			}
			text.Reset()
		case xml.CharData:
			text.Write(tok)
		case xml.EndElement:
			switch tok.Name.Local {
			case "text":
				doc.texts = append(doc.texts, text.String())
			case "title":
				doc.titles = append(doc.titles, text.String())
			}
			depth--
			stack = stack[:len(stack)-1]
			text.Reset()
		}
	}
	if depth != 0 || doc.root.Name.Local != "svg" {
		t.Fatalf("SVG document: root %q, depth %d at the end", doc.root.Name.Local, depth)
	}
	return doc
}

func TestSVGWellFormed(t *testing.T) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := render(t, "svg", c.flow())
			doc := parseSVG(t, out)
			if doc.root.Name.Space != "http://www.w3.org/2000/svg" {
				t.Errorf("root namespace %q", doc.root.Name.Space)
			}
			if got := doc.attrs["font-family"]; got != "Go, 'DejaVu Sans', Arial, sans-serif" {
				t.Errorf("font-family %q", got)
			}
			for _, tag := range []string{"script", "foreignObject", "image", "font", "font-face"} {
				if doc.tags[tag] > 0 {
					t.Errorf("SVG has a <%s> element", tag)
				}
			}
			if bytes.Contains(out, []byte("@font-face")) || bytes.Contains(out, []byte("base64")) {
				t.Error("SVG embeds a font")
			}
			if doc.attrs["width"] == "" || doc.attrs["viewBox"] == "" {
				t.Errorf("SVG has no size: %v", doc.attrs)
			}
		})
	}
}

// TestSVGContent checks what the SVG draws for each kind of flow.
func TestSVGContent(t *testing.T) {
	t.Run("start", func(t *testing.T) {
		doc := parseSVG(t, render(t, "svg", startFlow()))
		all := strings.Join(doc.texts, "\n")
		for _, want := range []string{"default/nginx — pod start", "kubelet", "containerd 1.6.20",
			"RuntimeService", "ImageService", "sandbox", "image", "create", "start",
			"RunPodSandbox(default/nginx)", "sandbox 3f2a1b9c4d5e · 105ms", "+0ms", "+106ms", "+1.725s",
			"pod started in 1.94s"} {
			if !strings.Contains(all, want) {
				t.Errorf("no text %q", want)
			}
		}
		if n := doc.classes["act"] + doc.classes["actc"]; n != 6 {
			t.Errorf("%d activation bars, want 6", n)
		}
		if n := doc.classes["actc"]; n != 1 {
			t.Errorf("%d bars marked as the longest call, want 1", n)
		}
		if n := doc.classes["req"]; n != 6 {
			t.Errorf("%d request arrows, want 6", n)
		}
		if n := doc.classes["ret"]; n != 6 {
			t.Errorf("%d return arrows, want 6", n)
		}
		if n := doc.classes["hd"] + doc.classes["hc"]; n != 6 {
			t.Errorf("%d header and footer boxes, want 6", n)
		}
		if n := doc.classes["ph"] + doc.classes["ph crit"]; n != 4 {
			t.Errorf("%d phase separators, want 4", n)
		}
		if n := doc.classes["chip crit"]; n != 1 {
			t.Errorf("%d phases marked as the longest, want 1", n)
		}
		if n := doc.classes["rt"]; n != 1 {
			t.Errorf("%d runtime boxes, want 1", n)
		}
		// Tooltips carry the full IDs.
		for _, want := range []string{sandboxFull, containerFull, digestFull} {
			found := false
			for _, ti := range doc.titles {
				found = found || ti == want
			}
			if !found {
				t.Errorf("no tooltip %q", want)
			}
		}
	})
	t.Run("failed-pull", func(t *testing.T) {
		doc := parseSVG(t, render(t, "svg", failedPullFlow()))
		if n := doc.classes["ret err"]; n != 2 {
			t.Errorf("%d red return arrows, want 2", n)
		}
		if n := doc.classes["e"]; n < 2 {
			t.Errorf("%d red labels, want at least 2", n)
		}
		all := strings.Join(doc.texts, " ")
		for _, want := range []string{"✗ NotFound: pull access denied · 12ms", "pod start incomplete", "+11.002s"} {
			if !strings.Contains(all, want) {
				t.Errorf("no text %q", want)
			}
		}
		if !bytes.Contains(render(t, "svg", failedPullFlow()), []byte("#c62828")) {
			t.Error("no error colour in the style")
		}
	})
	t.Run("incomplete", func(t *testing.T) {
		doc := parseSVG(t, render(t, "svg", incompleteFlow()))
		if n := doc.classes["open"]; n != 1 {
			t.Errorf("%d open activation bars, want 1", n)
		}
		all := strings.Join(doc.texts, " ")
		for _, want := range []string{noReply, "grpc.health.v1.Health", "Check()"} {
			if !strings.Contains(all, want) {
				t.Errorf("no text %q", want)
			}
		}
		if n := doc.classes["ret"]; n != 4 {
			t.Errorf("%d return arrows, want 4 (none for the call without reply)", n)
		}
	})
	t.Run("hostile", func(t *testing.T) {
		out := render(t, "svg", hostileFlow())
		doc := parseSVG(t, out)
		all := strings.Join(doc.texts, " ")
		for _, want := range []string{"</text><script>x</script>", "<b>&amp;</b>", "-->arrow", "@enduml", "%date()", "q\"uo'te"} {
			if !strings.Contains(all, want) {
				t.Errorf("hostile text %q not shown as text", want)
			}
		}
		if bytes.Contains(out, []byte("\x00")) || bytes.Contains(out, []byte("\x1b")) {
			t.Error("control characters in the SVG")
		}
	})
}

// TestSVGTextFits checks, on the layout, that every text stays inside the
// box it belongs to and that no two texts overlap, measured with the same
// metrics the layout used.
func TestSVGTextFits(t *testing.T) {
	flows := map[string]*flow.Flow{}
	for _, c := range cases {
		flows[c.name] = c.flow()
	}
	longPhase := stopFlow()
	longPhase.Steps[0].Phase = strings.Repeat("a long phase name ", 10)
	flows["long-phase"] = longPhase
	names := make([]string, 0, len(flows))
	for n := range flows {
		names = append(names, n)
	}
	sort.Strings(names)

	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			_, l := laidOut(t, flows[name])
			const eps = 0.5
			page := box{0, 0, l.w, l.h}
			for _, tx := range l.texts {
				b := tx.bounds()
				if !inside(b, page, eps) {
					t.Errorf("text %q at %+v leaves the page %+v", tx.lines, b, page)
				}
				if tx.in != nil && !inside(b, *tx.in, eps) {
					t.Errorf("text %q at %+v overflows its box %+v", tx.lines, b, *tx.in)
				}
			}
			for i, a := range l.texts {
				for _, b := range l.texts[i+1:] {
					if overlap(a.bounds(), b.bounds()) {
						t.Errorf("texts %q %+v and %q %+v overlap", a.lines, a.bounds(), b.lines, b.bounds())
					}
				}
			}
			// Header boxes do not overlap each other either.
			var hdrs []box
			for _, e := range l.elems() {
				if e.kind == eRect && (e.class == "hd" || e.class == "hc") {
					for _, h := range hdrs {
						if overlap(h, e.r) {
							t.Errorf("header boxes %+v and %+v overlap", h, e.r)
						}
					}
					hdrs = append(hdrs, e.r)
				}
			}
		})
	}
}

func inside(a, b box, eps float64) bool {
	return a.x >= b.x-eps && a.y >= b.y-eps && a.right() <= b.right()+eps && a.bottom() <= b.bottom()+eps
}

func overlap(a, b box) bool {
	return a.x < b.right() && b.x < a.right() && a.y < b.bottom() && b.y < a.bottom()
}

func TestWrap(t *testing.T) {
	ms, err := newMeasurer()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"", "short", "a few words that will need to be wrapped onto several lines of text",
		strings.Repeat("x", 200), "mixed " + strings.Repeat("y", 120) + " words ✗ · — 日本語のテキスト"} {
		lines := ms.wrap(regular, fontSize, s, 150)
		if got := strings.Join(lines, ""); strings.ReplaceAll(s, " ", "") != strings.ReplaceAll(got, " ", "") {
			t.Errorf("wrap lost text: %q → %q", s, lines)
		}
		for _, l := range lines {
			if w := ms.width(regular, fontSize, l); w > 150 && len([]rune(l)) > 1 {
				t.Errorf("line %q is %.1fpx wide, over 150", l, w)
			}
		}
	}
	if w := ms.width(regular, fontSize, "RuntimeService"); w < 80 || w > 130 {
		t.Errorf("RuntimeService measures %.1fpx at 13px", w)
	}
	if ms.width(bold, fontSize, "kubelet") <= ms.width(regular, fontSize, "kubelet") {
		t.Error("bold is not wider than regular")
	}
}

// TestSVGConcurrent renders from several goroutines at once (for -race).
func TestSVGConcurrent(t *testing.T) {
	want := render(t, "svg", failedPullFlow())
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var b bytes.Buffer
			if err := SVG(&b, failedPullFlow()); err != nil {
				errs <- err
				return
			}
			if !bytes.Equal(b.Bytes(), want) {
				errs <- fmt.Errorf("concurrent rendering differs")
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// bigFlow is a flow of n calls, some failed, some without reply.
func bigFlow(n int) *flow.Flow {
	f := startFlow()
	f.Steps = f.Steps[:0]
	phases := []string{"sandbox", "image", "create", "start", "status"}
	for i := 0; i < n; i++ {
		s := flow.Step{Service: "RuntimeService", Method: "ContainerStatus", Arg: fmt.Sprintf("web-%d", i%7),
			Result: "CONTAINER_RUNNING", Phase: phases[i/50%len(phases)], Start: t0.Add(time.Duration(i) * time.Millisecond),
			Duration: 300 * time.Microsecond, Done: true}
		switch {
		case i%97 == 0:
			s.Service, s.Method, s.Arg, s.Result = "ImageService", "PullImage", "docker.io/library/nginx:1.25", "sha256:4e1f0c2d9b7a"
		case i%101 == 0:
			s.Err = "DeadlineExceeded: context deadline exceeded"
		case i%1009 == 0:
			s.Done, s.Duration = false, 0
		}
		f.Steps = append(f.Steps, s)
	}
	f.End = t0.Add(time.Duration(n) * time.Millisecond)
	return f
}

func TestSVGBig(t *testing.T) {
	out := render(t, "svg", bigFlow(2000))
	doc := parseSVG(t, out)
	if n := doc.classes["req"]; n != 2000 {
		t.Errorf("%d request arrows, want 2000", n)
	}
}

// BenchmarkSVG renders a flow of 10,000 calls.
func BenchmarkSVG(b *testing.B) {
	f := bigFlow(10000)
	var buf bytes.Buffer
	b.ReportAllocs()
	for b.Loop() {
		buf.Reset()
		if err := SVG(&buf, f); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(buf.Len())/1e6, "MB/op")
}

// BenchmarkSVGCaptures draws every flow of the real captures in ../testdata:
// many small diagrams, as render and watch draw them, where BenchmarkSVG
// is one large one.
func BenchmarkSVGCaptures(b *testing.B) {
	flows := capturesFlows(b, "kubelet-burst", "kubelet-burst-containerd2", "kubelet-pull", "kubelet-warm", "kubelet-init", "kubelet-missing", "crictl-lifecycle")
	// One buffered writer for all, as render's is.
	var buf bytes.Buffer
	bw := bufio.NewWriterSize(&buf, 64<<10)
	n := 0
	b.ReportAllocs()
	for b.Loop() {
		n = 0
		for _, f := range flows {
			buf.Reset()
			bw.Reset(&buf)
			if err := SVG(bw, f); err != nil {
				b.Fatal(err)
			}
			n += buf.Len()
		}
	}
	b.ReportMetric(float64(len(flows)), "diagrams/op")
	b.ReportMetric(float64(n)/1e6, "MB/op")
}

// capturesFlows is the flows of each of the captures in ../testdata.
func capturesFlows(tb testing.TB, names ...string) []*flow.Flow {
	var flows []*flow.Flow
	for _, name := range names {
		flows = append(flows, captureFlows(tb, name)...)
	}
	return flows
}

// TestTimeScale: with a time scale a slow call takes more room than a
// fast one, and without it the drawing is as before.
func TestTimeScale(t *testing.T) {
	f := startFlow()
	var even, scaled bytes.Buffer
	if err := SVG(&even, f); err != nil {
		t.Fatal(err)
	}
	if err := WriteWith(&scaled, "svg", f, Options{TimeScale: 400}); err != nil {
		t.Fatal(err)
	}
	var plain bytes.Buffer
	if err := WriteWith(&plain, "svg", f, Options{}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(plain.Bytes(), even.Bytes()) {
		t.Error("WriteWith with no options differs from SVG")
	}
	height := func(b []byte) float64 {
		var h float64
		fmt.Sscanf(string(b[bytes.Index(b, []byte(`height="`))+8:]), "%g", &h)
		return h
	}
	if height(scaled.Bytes()) <= height(even.Bytes())+100 {
		t.Errorf("time-scaled drawing is %g px high, evenly spaced %g: the 1.9s of calls took no room",
			height(scaled.Bytes()), height(even.Bytes()))
	}
}

// TestSVGOverlappingCalls checks that calls open at the same time are drawn as
// they happened: each arrow at its row, the bars of calls open together on
// one lifeline side by side, and replies apart from their request naming
// their call.
func TestSVGOverlappingCalls(t *testing.T) {
	_, l := laidOut(t, concurrentFlow())
	type arrow struct {
		y, x float64 // the arrow's height and its end at the runtime side
	}
	req, ret := map[int]arrow{}, map[int]arrow{}
	for _, e := range l.layers[layerShapes] {
		if e.kind != eLine || e.step == 0 {
			continue
		}
		switch e.class {
		case "req":
			req[e.step-1] = arrow{e.pts[1], e.pts[2] + headLen - 1} // the line stops at its head
		case "ret":
			ret[e.step-1] = arrow{e.pts[1], e.pts[0]}
		}
	}
	// Calls: 0 StopContainer(web), 1 StopContainer(sidecar),
	// 2 ContainerStatus(web), 3 StopPodSandbox.
	order := []float64{req[0].y, req[1].y, req[2].y, ret[2].y, ret[1].y, ret[0].y, req[3].y, ret[3].y}
	if !sort.Float64sAreSorted(order) {
		t.Errorf("arrows at %v, want them top to bottom in the order they happened", order)
	}
	if !(req[0].x < req[1].x && req[1].x < req[2].x) {
		t.Errorf("request arrows end at x %v, %v, %v: want the bars of the three open calls side by side",
			req[0].x, req[1].x, req[2].x)
	}
	if req[3].x != req[0].x {
		t.Errorf("StopPodSandbox's bar at x %v, want the first slot %v once the others closed", req[3].x, req[0].x)
	}
	for i := range 3 {
		if got, want := ret[i].x, req[i].x; got != want {
			t.Errorf("call %d: reply leaves from x %v, its request arrives at %v", i, got, want)
		}
	}
	var texts []string
	for _, tb := range l.texts {
		texts = append(texts, strings.Join(tb.lines, " "))
	}
	all := strings.Join(texts, "\n")
	for _, want := range []string{"StopContainer(web): 372ms", "StopContainer(sidecar): 300ms", "\nRUNNING · 1ms\n"} {
		if !strings.Contains(all, want) {
			t.Errorf("no label %q in\n%s", want, all)
		}
	}
	// The viewer's click areas: StopContainer(web)'s request and reply
	// rows are apart, so it has two; ContainerStatus, one.
	n := map[int]int{}
	for _, h := range l.hits {
		n[h.step]++
	}
	if n[0] != 2 || n[1] != 2 || n[2] != 1 || n[3] != 1 {
		t.Errorf("click areas per call %v, want 2 2 1 1", n)
	}
}

// TestPhaseChipsOverTheirCalls checks that a phase's chip is centred over
// the lifelines its calls reach: the CRI services, and another service
// only for the phase that called it.
func TestPhaseChipsOverTheirCalls(t *testing.T) {
	d, l := laidOut(t, longFlow())
	var heads, chips []float64 // centres
	for _, e := range l.layers[layerShapes] {
		if e.kind != eRect {
			continue
		}
		switch c := e.r.x + e.r.w/2; e.class {
		case "hd", "hc":
			if len(heads) < len(d.parts) {
				heads = append(heads, c)
			}
		case "chip", "chip crit":
			chips = append(chips, c)
		}
	}
	if len(heads) != 4 || len(chips) != len(d.phases) {
		t.Fatalf("%d headers, %d chips for %d phases", len(heads), len(chips), len(d.phases))
	}
	for p, c := range chips {
		reach := pImage
		if d.phases[p].name == "start" {
			reach = 3 // some.other.v1.Service
		}
		if want := math.Round((heads[0] + heads[reach]) / 2); math.Abs(c-want) > 0.5 {
			t.Errorf("phase %s: chip at x %v, want %v (between the client and lifeline %d)", d.phases[p].name, c, want, reach)
		}
	}
}

// laidOut is f's diagram and its layout.
func laidOut(t *testing.T, f *flow.Flow) (*diagram, *drawing) {
	t.Helper()
	d, err := newDiagram(f)
	if err != nil {
		t.Fatal(err)
	}
	d.hits = true // as the HTML viewer lays it out: everything
	l, err := layout(d)
	if err != nil {
		t.Fatal(err)
	}
	return d, l
}

// TestBarsUncut checks, on criseq's own PNG of every case and recorded flow,
// that no activation bar is cut by what is drawn over it: a reply's label
// that crosses the bar of a call still open (a 195ms CreateContainer while
// ImageStatus replies) must not hide a piece of it. The browser test checks
// the same on Chromium's screenshots of the SVG.
func TestBarsUncut(t *testing.T) {
	flows := allFlows(t)
	crossed := 0 // labels drawn across a bar
	for name, f := range flows {
		_, l := laidOut(t, f)
		bars := layoutBars(l)
		for _, b := range bars {
			for _, p := range l.layers[layerPlates] {
				if p.class == "plate" && overlap(p.r, b.box()) {
					crossed++
				}
			}
		}
		for _, p := range barCuts(rasterize(t, l), bars) {
			t.Errorf("%s: %s", name, p)
		}
	}
	if crossed == 0 {
		t.Error("no label crosses a bar in any flow: the test shows nothing")
	}
}

// Drawings are reused from one diagram to the next: what one diagram drew
// never shows in the next, in SVG or PNG.
func TestDrawingsReused(t *testing.T) {
	draw := func(f *flow.Flow) (string, string) {
		t.Helper()
		var svg, png bytes.Buffer
		if err := SVG(&svg, f); err != nil {
			t.Fatal(err)
		}
		if err := PNG(&png, f, 1); err != nil {
			t.Fatal(err)
		}
		return svg.String(), png.String()
	}
	small, big := stopFlow(), longFlow()
	svg1, png1 := draw(small)
	for range 3 {
		draw(big)
		svg2, png2 := draw(small)
		if svg2 != svg1 || png2 != png1 {
			t.Fatalf("the stop flow drawn after a long one differs from its first drawing (SVG %d bytes, then %d)", len(svg1), len(svg2))
		}
	}
}
