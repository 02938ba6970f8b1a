package render

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/draw"
	"image/png"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/criseq/criseq/flow"
	"github.com/criseq/criseq/internal/testpeer"
)

// The browser check of plain SVG files: criseq's SVG of every flow of the
// recorded captures (../testdata/*/capture.pcapng), and of one hostile flow
// made here, is opened from file:// in headless Chromium by
// mermaid-check/svgshot.mjs, which screenshots it and measures every <text>.
// What the browser drew is then held against the layout: each text must stay
// in the box the layout made for it, no two texts may overlap, and the
// screenshot must look like criseq's own PNG of the flow.

// svgShotBox is a rectangle in a sidecar, in SVG units.
type svgShotBox struct {
	X float64 `json:"x"`
	Y float64 `json:"y"`
	W float64 `json:"w"`
	H float64 `json:"h"`
}

func (b svgShotBox) box() box { return box{b.X, b.Y, b.W, b.H} }

// svgShotText is one <text> element of a drawing, a line of a textBlock, as
// the layout placed it.
type svgShotText struct {
	Block  int         `json:"block"` // index of its textBlock, in document order
	Line   int         `json:"line"`  // index of the line in the block
	Class  string      `json:"class,omitempty"`
	Text   string      `json:"text"`
	In     *svgShotBox `json:"in"`      // where it must stay (textBlock.in); null: on the page
	Layout svgShotBox  `json:"layout"`  // the line's extent as the layout measures it (Go fonts, widthSlack)
	GoW    float64     `json:"goWidth"` // its width in the Go font of its class, without widthSlack
}

// svgShotSidecar is written next to each SVG as NAME.json, for a person
// looking at NAME.chromium.png to know what the layout meant.
type svgShotSidecar struct {
	Flow   string        `json:"flow"`
	Width  float64       `json:"width"`
	Height float64       `json:"height"`
	Texts  []svgShotText `json:"texts"`
	Bars   []svgShotBar  `json:"bars"` // the activation bars, which nothing may cut
}

// svgShotBar is an activation bar, in drawing order: a later one (a call
// made while it was open) may lie on it.
type svgShotBar struct {
	svgShotBox
	Dashed bool `json:"dashed"` // a call never answered: its edge has gaps
}

// layoutBars lists the activation bars of l in drawing order.
func layoutBars(l *drawing) []svgShotBar {
	var out []svgShotBar
	for _, e := range l.layers[layerBars] {
		if e.kind == eRect && e.r.h > 0 {
			out = append(out, svgShotBar{svgShotBox{e.r.x, e.r.y, e.r.w, e.r.h}, e.class == "open"})
		}
	}
	return out
}

// svgShotMeasure is one <text> as Chromium drew it.
type svgShotMeasure struct {
	Text string  `json:"text"`
	X    float64 `json:"x"` // getBBox, in SVG units
	Y    float64 `json:"y"`
	W    float64 `json:"w"`
	H    float64 `json:"h"`
	Len  float64 `json:"len"` // getComputedTextLength
}

// svgShotResult is one line of mermaid-check/svgshot.mjs.
type svgShotResult struct {
	File          string           `json:"file"`
	PNG           string           `json:"png"`
	Root          string           `json:"root"`
	ParseError    string           `json:"parseError"`
	Width         float64          `json:"width"`
	Height        float64          `json:"height"`
	AttrWidth     float64          `json:"attrWidth"`
	AttrHeight    float64          `json:"attrHeight"`
	PageWidth     float64          `json:"pageWidth"`
	PageHeight    float64          `json:"pageHeight"`
	Texts         []svgShotMeasure `json:"texts"`
	Fonts         map[string]int   `json:"fonts"`
	PageErrors    []string         `json:"pageErrors"`
	ConsoleErrors []string         `json:"consoleErrors"`
	Blocked       []string         `json:"blocked"`
	Error         string           `json:"error"`
}

// svgShotCase is one flow drawn to files.
type svgShotCase struct {
	name  string // "kubelet-init/default_with-init-criseq-lab_start"
	svg   string // path of the SVG; the other files go next to it
	side  svgShotSidecar
	goPNG []byte // criseq's own PNG at scale 1
}

// svgShotHostileFlow is the worst a pod can throw at the layout: IDs with no
// place to break, a long error, text in several scripts including ones the
// Go fonts lack (CJK, fullwidth, emoji, Hebrew, Arabic), markup, seven
// lifelines, a run of identical calls and a call never answered.
func svgShotHostileFlow() *flow.Flow {
	id := strings.Repeat("3f2a1b9c4d5e6f708192a3b4c5d6e7f8", 3)
	digest := "sha256:" + strings.Repeat("4e1f0c2d9b7a6e5f", 4)
	wide := "容器启动失败 ＷＩＤＥ ｆｕｌｌｗｉｄｔｈ 🚀🐳 Ελληνικά Кириллица עברית العربية"
	ref := "registry.example.com:5000/" + strings.Repeat("very-long-repository-path-", 4) + "app@" + digest
	steps := []stepSpec{
		{phase: "sandbox", method: "RunPodSandbox", arg: "ns-" + wide + "/" + id, result: "sandbox " + id, full: id,
			dur: 105 * time.Millisecond},
		{phase: "image " + wide, svc: "ImageService", method: "ImageStatus", arg: ref, result: "not present",
			at: 110 * time.Millisecond, dur: time.Millisecond},
		{phase: "image " + wide, svc: "ImageService", method: "PullImage", arg: ref,
			err: "Unknown: failed to pull and unpack image \"" + ref + "\": failed to resolve reference: " +
				"unexpected status from HEAD request to https://registry.example.com:5000/v2/" + id + "/manifests/" +
				digest + ": 503 Service Unavailable · " + wide,
			at: 112 * time.Millisecond, dur: 12*time.Second + 345*time.Millisecond},
		{phase: strings.Repeat("a-phase-name-without-any-space", 4),
			svc:    "io.example.v1alpha1." + strings.Repeat("VeryLong", 8) + "Service",
			method: strings.Repeat("Method", 12), arg: id, result: wide, at: 13 * time.Second, dur: 3 * time.Millisecond},
		{phase: "status", svc: "grpc.health.v1.Health", method: "Check", at: 13*time.Second + 10*time.Millisecond,
			result: "SERVING", dur: time.Millisecond},
		{phase: "status", svc: "服务 " + wide, method: "Watch", arg: hostile, result: hostile,
			at: 13*time.Second + 20*time.Millisecond, dur: time.Millisecond},
		{phase: "status", svc: "x.y.Z", method: "Z", at: 13*time.Second + 30*time.Millisecond, dur: 40 * time.Microsecond},
	}
	for i := range 5 {
		steps = append(steps, stepSpec{phase: "status", method: "ContainerStatus", arg: id, result: "CONTAINER_RUNNING",
			at: 13*time.Second + time.Duration(40+i)*time.Millisecond, dur: 300 * time.Microsecond})
	}
	steps = append(steps,
		stepSpec{phase: "create", method: "CreateContainer", arg: id + " in " + id, err: "AlreadyExists: " + id,
			at: 14 * time.Second, dur: 2 * time.Millisecond},
		stepSpec{phase: "start", method: "StartContainer", arg: id, at: 14*time.Second + 5*time.Millisecond, open: true})
	f := build(flow.Start, false, steps...)
	f.Pod = flow.Pod{Namespace: "ns-" + wide, Name: "pod-" + id}
	f.SandboxID = id
	f.Client = "kubelet/v1.30.1 " + id
	f.Runtime = "containerd " + wide + " " + id
	return f
}

// svgShotSide lists the <text> elements l writes, in document order, with
// the box each must stay in.
func svgShotSide(t *testing.T, name string, l *drawing) svgShotSidecar {
	t.Helper()
	ms, err := newMeasurer()
	if err != nil {
		t.Fatal(err)
	}
	rs, err := loadRules()
	if err != nil {
		t.Fatal(err)
	}
	side := svgShotSidecar{Flow: name, Width: l.w, Height: l.h, Bars: layoutBars(l)}
	block := 0
	for _, e := range l.elems() {
		if e.kind != eText {
			continue
		}
		tb := e.text
		st, err := resolveStyle(rs, true, tb.class)
		if err != nil {
			t.Fatal(err)
		}
		var in *svgShotBox
		if tb.in != nil {
			in = &svgShotBox{tb.in.x, tb.in.y, tb.in.w, tb.in.h}
		}
		for k, s := range tb.lines {
			w := ms.width(st.face, tb.size, s)
			x := tb.x
			switch tb.anchor {
			case "middle":
				x -= w / 2
			case "end":
				x -= w
			}
			base := tb.y + float64(k)*lineStep(tb.size)
			side.Texts = append(side.Texts, svgShotText{Block: block, Line: k, Class: tb.class, Text: s, In: in,
				Layout: svgShotBox{x, base - 0.8*tb.size, w, 1.05 * tb.size}, GoW: w / widthSlack[st.face]})
		}
		block++
	}
	return side
}

// svgShotCases draws every flow of the recorded captures, and the hostile
// one, into dir/CAPTURE/: NAME.svg (what criseq writes), NAME.json (the
// sidecar) and NAME.criseq.png (criseq's own PNG, to compare by eye).
func svgShotCases(t *testing.T, dir string) []*svgShotCase {
	t.Helper()
	captures, err := filepath.Glob(filepath.Join("..", "testdata", "*", "capture.pcapng"))
	if err != nil {
		t.Fatal(err)
	}
	if len(captures) == 0 {
		t.Fatal("no ../testdata/*/capture.pcapng found")
	}
	type named struct {
		dir, name string
		f         *flow.Flow
	}
	var all []named
	for _, c := range captures {
		capName := filepath.Base(filepath.Dir(c))
		seen := map[string]int{}
		for _, f := range loadCapture(t, c) {
			n := FileName(f, "")
			if seen[n]++; seen[n] > 1 {
				n = fmt.Sprintf("%s-%d", n, seen[n])
			}
			all = append(all, named{capName, n, f})
		}
	}
	all = append(all, named{"synthetic", "hostile", svgShotHostileFlow()},
		named{"synthetic", "burst", burstFlow()}, named{"synthetic", "burst-stop", burstStopFlow()})

	var out []*svgShotCase
	for _, n := range all {
		c := &svgShotCase{name: n.dir + "/" + n.name, svg: filepath.Join(dir, n.dir, n.name+".svg")}
		if err := os.MkdirAll(filepath.Dir(c.svg), 0o755); err != nil {
			t.Fatal(err)
		}
		// The file is what criseq writes; the layout it comes from is made
		// again here, for its boxes, and must write the same bytes.
		var svg bytes.Buffer
		if err := svgWith(&svg, n.f, Options{}); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		d, err := newDiagram(n.f)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		l, err := layout(d)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		var again bytes.Buffer
		bw := newWriter(&again)
		l.write(bw)
		if err := bw.Flush(); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(svg.Bytes(), again.Bytes()) {
			t.Fatalf("%s: svgWith and layout+write give different SVGs, so the boxes checked would not be the file's", c.name)
		}
		c.side = svgShotSide(t, c.name, l)
		side, err := json.MarshalIndent(c.side, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		var pngB bytes.Buffer
		if err := pngWith(&pngB, n.f, 1, Options{}); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		c.goPNG = pngB.Bytes()
		base := strings.TrimSuffix(c.svg, ".svg")
		for p, b := range map[string][]byte{c.svg: svg.Bytes(), base + ".json": side, base + ".criseq.png": c.goPNG} {
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		out = append(out, c)
	}
	return out
}

// TestSVGBrowserTool opens criseq's SVG of every recorded flow, and of a
// hostile one, in headless Chromium as a person would, and fails on page or
// console errors, a drawing not shown at its own size, text outside the box
// the layout made for it (or off the page), overlapping texts, a blank or
// mis-sized screenshot, or a screenshot unlike criseq's own PNG of the flow.
// The files (NAME.svg, NAME.json, the screenshot NAME.chromium.png and
// criseq's NAME.criseq.png) go to $SVG_SHOTS if set, else a temporary
// directory.
func TestSVGBrowserTool(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: SVG files not looked at in a browser (headless Chromium)")
	}
	const deps = "run lab/test-deps.sh as root"
	node, err := exec.LookPath("node")
	if err != nil {
		testpeer.Missing(t, "node not installed (Node.js 20 or later with npm, then %s): SVG files not looked at in a browser", deps)
	}
	if _, err := os.Stat(filepath.Join(mermaidCheck, "node_modules", "playwright-core", "package.json")); err != nil {
		testpeer.Missing(t, "render/%s/node_modules/playwright-core missing (%s, or npm ci there): SVG files not looked at in a browser", mermaidCheck, deps)
	}
	chromium := os.Getenv("CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if _, err := os.Stat(chromium); err != nil {
		testpeer.Missing(t, "%s missing (%s, or apt-get install -y chromium): SVG files not looked at in a browser", chromium, deps)
	}

	dir := os.Getenv("SVG_SHOTS")
	if dir == "" {
		dir = t.TempDir()
	} else if dir, err = filepath.Abs(dir); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	shots := svgShotCases(t, dir)
	drawn := time.Since(start)

	files := make([]string, len(shots))
	for i, c := range shots {
		files[i] = c.svg
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, append([]string{filepath.Join(mermaidCheck, "svgshot.mjs")}, files...)...)
	cmd.Env = append(os.Environ(), "CHROMIUM="+chromium)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start = time.Now()
	runErr := cmd.Run()
	looked := time.Since(start)
	results := map[string]*svgShotResult{}
	sc := bufio.NewScanner(&stdout)
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		r := &svgShotResult{}
		if err := json.Unmarshal(sc.Bytes(), r); err != nil {
			t.Fatalf("svgshot.mjs printed %q: %v", sc.Text(), err)
		}
		results[r.File] = r
	}
	if len(results) == 0 {
		t.Fatalf("svgshot.mjs: %v, no result\n%s", runErr, stderr.String())
	}
	t.Logf("%d flows drawn in %v, looked at in Chromium in %v; files in %s", len(shots), drawn.Round(time.Millisecond),
		looked.Round(time.Millisecond), dir)

	fonts := map[string]int{}
	var widest [nFaces]float64
	var worst shotDiff // the worst of each figure
	worst.corrX, worst.corrY = 1, 1
	worstIoU := 1.0
	for _, c := range shots {
		r := results[c.svg]
		t.Run(c.name, func(t *testing.T) {
			if r == nil {
				t.Fatalf("svgshot.mjs gave no result for %s (%v)\n%s", c.svg, runErr, stderr.String())
			}
			for f, n := range r.Fonts {
				fonts[f] += n
			}
			shotWidest(c.side, r, &widest)
			d := checkSVGShot(t, c, r)
			worst.mad = math.Max(worst.mad, d.mad)
			worstIoU = math.Min(worstIoU, d.iou())
			worst.corrX, worst.corrY = math.Min(worst.corrX, d.corrX), math.Min(worst.corrY, d.corrY)
			worst.dx, worst.dy = max(worst.dx, abs(d.dx)), max(worst.dy, abs(d.dy))
		})
	}
	if runErr != nil {
		t.Errorf("svgshot.mjs: %v\n%s", runErr, stderr.String())
	}
	var fs []string
	for f, n := range fonts {
		fs = append(fs, fmt.Sprintf("%s (%d glyphs)", f, n))
	}
	sort.Strings(fs)
	t.Logf("Chromium drew the text in %s", strings.Join(fs, ", "))
	t.Logf("widest text in Chromium / in the Go fonts: regular ×%.3f (widthSlack %.2f), bold ×%.3f (%.2f), mono ×%.3f (%.2f)",
		widest[regular], widthSlack[regular], widest[bold], widthSlack[bold], widest[mono], widthSlack[mono])
	t.Logf("worst vs criseq's PNG: MAD %.2f (max %.1f), IoU %.3f (min %.2f), profile correlation x %.3f (min %.2f) y %.3f (min %.2f), offset %d,%d px (max %d)",
		worst.mad, shotMaxMAD, worstIoU, shotMinIoU, worst.corrX, shotMinCorrX, worst.corrY, shotMinCorrY, worst.dx, worst.dy, shotMaxShift)
}

// checkSVGShot holds what Chromium saw of one SVG against its layout and
// criseq's PNG, and returns how the screenshot differs from the PNG.
func checkSVGShot(t *testing.T, c *svgShotCase, r *svgShotResult) shotDiff {
	t.Helper()
	for _, p := range shotProblems(c.side, r) {
		t.Error(p)
	}
	if r.Error != "" || r.PNG == "" {
		t.FailNow()
	}
	shotB, err := os.ReadFile(r.PNG)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	shot, err := png.Decode(bytes.NewReader(shotB))
	if err != nil {
		t.Fatalf("screenshot %s: %v", r.PNG, err)
	}
	if b := shot.Bounds(); b.Dx() != int(c.side.Width) || b.Dy() != int(c.side.Height) {
		t.Errorf("screenshot is %dx%d, the SVG %gx%g", b.Dx(), b.Dy(), c.side.Width, c.side.Height)
	}
	if err := notBlank(shot); err != nil {
		t.Errorf("screenshot %s: %v", r.PNG, err)
	}
	for _, p := range barCuts(shot, c.side.Bars) {
		t.Errorf("screenshot %s: %s", r.PNG, p)
	}
	own, err := png.Decode(bytes.NewReader(c.goPNG))
	if err != nil {
		t.Fatal(err)
	}
	d, err := compareShots(shot, own)
	if err != nil {
		t.Fatalf("screenshot vs criseq's PNG: %v", err)
	}
	t.Logf("%s: %d <text>; vs criseq's PNG: %s", c.name, len(r.Texts), d)
	if err := d.check(); err != nil {
		t.Errorf("screenshot %s unlike criseq's PNG %s.criseq.png: %v", r.PNG, strings.TrimSuffix(c.svg, ".svg"), err)
	}
	return d
}

// Tolerances of the browser check, in CSS pixels.
const (
	shotSizeTol = 0.5 // rendered size vs the layout's
	shotBoxTol  = 1.0 // a text's browser box past its container's edge
	shotOverTol = 1.0 // overlap of two texts, in both directions, before it counts
)

// shotProblems lists what is wrong in what Chromium saw of a drawing:
// errors, a size not the layout's, texts not the ones written, out of their
// boxes or overlapping.
func shotProblems(side svgShotSidecar, r *svgShotResult) []string {
	var p []string
	add := func(format string, a ...any) { p = append(p, fmt.Sprintf(format, a...)) }
	switch {
	case r.Error != "":
		add("Chromium could not look at %s: %s", r.File, r.Error)
		return p
	case r.ParseError != "" || r.Root != "svg":
		add("Chromium did not read %s as SVG (root <%s>): %s", r.File, r.Root, r.ParseError)
		return p
	}
	for _, e := range r.PageErrors {
		add("page error: %s", e)
	}
	for _, e := range r.ConsoleErrors {
		add("console error: %s", e)
	}
	for _, u := range r.Blocked {
		add("the SVG made the browser fetch %s", u)
	}
	for _, s := range []struct {
		what string
		w, h float64
	}{{"rendered", r.Width, r.Height}, {"width/height attribute", r.AttrWidth, r.AttrHeight}, {"page", r.PageWidth, r.PageHeight}} {
		if math.Abs(s.w-side.Width) > shotSizeTol || math.Abs(s.h-side.Height) > shotSizeTol {
			add("%s size %gx%g, the layout's is %gx%g", s.what, s.w, s.h, side.Width, side.Height)
		}
	}

	if len(r.Texts) != len(side.Texts) {
		add("Chromium found %d <text> elements, the layout wrote %d", len(r.Texts), len(side.Texts))
		return p
	}
	page := box{0, 0, side.Width, side.Height}
	boxes := make([]box, len(r.Texts))
	for i, bt := range r.Texts {
		lt := side.Texts[i]
		if bt.Text != lt.Text {
			add("<text> %d reads %s in Chromium, the layout wrote %s", i, quoteCut(bt.Text), quoteCut(lt.Text))
			return p
		}
		boxes[i] = box{bt.X, bt.Y, bt.W, bt.H}
		if bt.W == 0 {
			continue // an empty line
		}
		in, where := page, "the page"
		if lt.In != nil {
			in, where = lt.In.box(), "its box"
		}
		if !inside(boxes[i], in, shotBoxTol) {
			add("%s (line %d of text %d, class %q) leaves %s by %s: drawn at %s, box %s, layout's extent %s",
				quoteCut(lt.Text), lt.Line, lt.Block, lt.Class, where, overflow(boxes[i], in),
				fmtBox(boxes[i]), fmtBox(in), fmtBox(lt.Layout.box()))
		}
	}
	// Overlaps, among texts sorted by their top edge so that only those
	// close in height are compared.
	order := make([]int, len(boxes))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return boxes[order[a]].y < boxes[order[b]].y })
	for a, i := range order {
		for _, j := range order[a+1:] {
			bi, bj := boxes[i], boxes[j]
			if bj.y >= bi.bottom()-shotOverTol {
				break
			}
			if side.Texts[i].Block == side.Texts[j].Block || bi.w == 0 || bj.w == 0 {
				continue
			}
			ox := math.Min(bi.right(), bj.right()) - math.Max(bi.x, bj.x)
			oy := math.Min(bi.bottom(), bj.bottom()) - math.Max(bi.y, bj.y)
			if ox > shotOverTol && oy > shotOverTol {
				add("texts overlap by %.1fx%.1f px: %s at %s and %s at %s", ox, oy,
					quoteCut(side.Texts[i].Text), fmtBox(bi), quoteCut(side.Texts[j].Text), fmtBox(bj))
			}
		}
	}
	return p
}

// shotWidest keeps, per face, the largest ratio of a text's width in
// Chromium to its width in the Go font (texts over 20px only): how much
// slack the fallback font needed.
func shotWidest(side svgShotSidecar, r *svgShotResult, widest *[nFaces]float64) {
	rs, err := loadRules()
	if err != nil || len(r.Texts) != len(side.Texts) {
		return
	}
	for i, bt := range r.Texts {
		lt := side.Texts[i]
		if st, err := resolveStyle(rs, true, lt.Class); err == nil && lt.GoW > 20 {
			widest[st.face] = math.Max(widest[st.face], bt.Len/lt.GoW)
		}
	}
}

func quoteCut(s string) string {
	if r := []rune(s); len(r) > 60 {
		s = string(r[:59]) + "…"
	}
	return fmt.Sprintf("%q", s)
}

func fmtBox(b box) string {
	return fmt.Sprintf("[x %.1f–%.1f, y %.1f–%.1f]", b.x, b.right(), b.y, b.bottom())
}

// overflow says by how much a leaves b, on each side it does.
func overflow(a, b box) string {
	var s []string
	for _, o := range []struct {
		side string
		d    float64
	}{{"left", b.x - a.x}, {"right", a.right() - b.right()}, {"top", b.y - a.y}, {"bottom", a.bottom() - b.bottom()}} {
		if o.d > 0 {
			s = append(s, fmt.Sprintf("%.1fpx %s", o.d, o.side))
		}
	}
	return strings.Join(s, ", ")
}

// barCutGrey is the grey level above which a pixel of a bar's edge counts
// as hidden: the edge (#78909c, grey 138) drawn over half a pixel is about
// 196; under a label's plate (85% white) it would be about 246.
const barCutGrey = 225

// barCuts lists the activation bars whose left or right edge is hidden
// somewhere along its height in m (by a label's plate drawn over it, for
// one): a bar cut in two reads as two calls. Where a later bar lies on the
// edge (a nested call) it is not looked at, nor are dashed edges.
func barCuts(m image.Image, bars []svgShotBar) []string {
	b := m.Bounds()
	g := greys(m)
	grey := func(x, y int) float64 {
		if x < 0 || y < 0 || x >= b.Dx() || y >= b.Dy() {
			return 255
		}
		return g[y*b.Dx()+x]
	}
	covered := func(i int, x float64, y int) bool {
		for _, o := range bars[i+1:] {
			if x >= o.X-1.5 && x <= o.X+o.W+1.5 && float64(y) >= o.Y-1.5 && float64(y) <= o.Y+o.H+1.5 {
				return true
			}
		}
		return false
	}
	var out []string
	for i, bar := range bars {
		if bar.Dashed {
			continue
		}
		for _, ex := range []float64{bar.X, bar.X + bar.W} {
			x := int(math.Round(ex))
			cut, first := 0, -1
			for y := int(math.Ceil(bar.Y)) + 2; y < int(bar.Y+bar.H)-2; y++ {
				if math.Min(grey(x-1, y), grey(x, y)) > barCutGrey && !covered(i, ex, y) {
					if cut++; first < 0 {
						first = y
					}
				}
			}
			if cut > 0 {
				out = append(out, fmt.Sprintf("the bar at x %.1f, y %.1f–%.1f has its edge at x %.1f hidden on %d rows from y %d",
					bar.X, bar.Y, bar.Y+bar.H, ex, cut, first))
			}
		}
	}
	return out
}

// greys is m's luminance, 0 (black) to 255 (white), row by row.
func greys(m image.Image) []float64 {
	b := m.Bounds()
	g := make([]float64, 0, b.Dx()*b.Dy())
	lum := func(r, gr, bl float64) float64 { return 0.299*r + 0.587*gr + 0.114*bl }
	for y := b.Min.Y; y < b.Max.Y; y++ {
		switch m := m.(type) {
		case *image.RGBA: // opaque, as screenshots and criseq's PNGs are
			row := m.Pix[m.PixOffset(b.Min.X, y):]
			for x := range b.Dx() {
				g = append(g, lum(float64(row[4*x]), float64(row[4*x+1]), float64(row[4*x+2])))
			}
		case *image.NRGBA:
			row := m.Pix[m.PixOffset(b.Min.X, y):]
			for x := range b.Dx() {
				a := float64(row[4*x+3]) / 255 // on white
				g = append(g, lum(float64(row[4*x]), float64(row[4*x+1]), float64(row[4*x+2]))*a+255*(1-a))
			}
		default:
			for x := b.Min.X; x < b.Max.X; x++ {
				r, gr, bl, _ := m.At(x, y).RGBA()
				g = append(g, lum(float64(r), float64(gr), float64(bl))/257)
			}
		}
	}
	return g
}

// notBlank fails an image of one colour, or with almost nothing dark
// enough to be text or an arrow on it.
func notBlank(m image.Image) error {
	g := greys(m)
	if len(g) == 0 {
		return fmt.Errorf("empty image")
	}
	dark, other := 0, 0
	for _, v := range g {
		if v < 128 {
			dark++
		}
		if math.Abs(v-g[0]) > 8 {
			other++
		}
	}
	if other < len(g)/200 || dark < 200 {
		return fmt.Errorf("blank: %d of %d pixels differ from the corner's, %d are dark", other, len(g), dark)
	}
	return nil
}

// How a screenshot is compared with criseq's PNG of the same flow. The two
// differ by their fonts (Chromium falls back to DejaVu Sans, up to ~15%
// wider than the Go fonts of the PNG) and antialiasing, so the comparison is
// coarse: cells of shotCell×shotCell pixels, each the mean grey level of its
// pixels, "ink" when darker than shotInk (which the runtime box's fill, grey
// 246, and a lone lifeline are not); and the ink profiles of the columns and
// of the rows, which must line up unshifted.
//
// Calibrated on the 12 flows of ../testdata and the hostile flow, in
// Chromium 156 (Debian) with only the DejaVu and Liberation fonts installed
// (no Go, CJK or emoji font): MAD 1.6–2.4, IoU 0.76–0.83, column profile
// correlation ≥ 0.87, row ≥ 0.965, best offset 0,0 for all.
// TestSVGBrowserCompare shows what fails: a shift of 2px, a blank image,
// the drawing without its text or without its arrows.
const (
	shotCell     = 8
	shotInk      = 235.0
	shotMaxMAD   = 3.5  // mean |grey a − grey b| of the cells, 0–255
	shotMinIoU   = 0.70 // ink cells in both / ink cells in either
	shotMinCorrX = 0.80 // correlation of the column ink profiles, unshifted
	shotMinCorrY = 0.90 // correlation of the row ink profiles, unshifted
	shotMaxShift = 1    // px: the offset that best lines the profiles up
	shotSearch   = 32   // px: offsets tried, each way
)

// shotDiff is how two images of the same size differ.
type shotDiff struct {
	mad          float64 // mean absolute difference of the cells' grey levels, 0–255
	inkA, inkB   int     // ink cells of each
	both         int     // cells with ink in both
	corrX, corrY float64 // correlation of the column and row ink profiles, unshifted
	dx, dy       int     // offset of b against a that best lines up the profiles
}

// iou is the share of ink cells that have ink in both images (1 when
// neither has any).
func (d shotDiff) iou() float64 {
	u := d.inkA + d.inkB - d.both
	if u == 0 {
		return 1
	}
	return float64(d.both) / float64(u)
}

func (d shotDiff) String() string {
	return fmt.Sprintf("MAD %.2f, ink cells %d/%d, IoU %.3f, profile correlation x %.3f y %.3f, offset %d,%d",
		d.mad, d.inkA, d.inkB, d.iou(), d.corrX, d.corrY, d.dx, d.dy)
}

// check fails a difference larger than the thresholds.
func (d shotDiff) check() error {
	var bad []string
	if d.mad > shotMaxMAD {
		bad = append(bad, fmt.Sprintf("mean grey difference of %dpx cells %.2f > %.1f", shotCell, d.mad, shotMaxMAD))
	}
	if d.iou() < shotMinIoU {
		bad = append(bad, fmt.Sprintf("%.0f%% of the ink cells coincide (%d of %d and %d), want %.0f%%",
			100*d.iou(), d.both, d.inkA, d.inkB, 100*shotMinIoU))
	}
	if d.corrX < shotMinCorrX || d.corrY < shotMinCorrY {
		bad = append(bad, fmt.Sprintf("ink profiles correlate by %.3f (columns, want %.2f) and %.3f (rows, want %.2f)",
			d.corrX, shotMinCorrX, d.corrY, shotMinCorrY))
	}
	if abs(d.dx) > shotMaxShift || abs(d.dy) > shotMaxShift {
		bad = append(bad, fmt.Sprintf("the drawings line up best shifted by %d,%d px", d.dx, d.dy))
	}
	if len(bad) > 0 {
		return fmt.Errorf("%s", strings.Join(bad, "; "))
	}
	return nil
}

// compareShots compares two images of the same size, coarsely.
func compareShots(a, b image.Image) (shotDiff, error) {
	if a.Bounds().Size() != b.Bounds().Size() {
		return shotDiff{}, fmt.Errorf("sizes differ: %v and %v", a.Bounds().Size(), b.Bounds().Size())
	}
	ca, xa, ya := shotCells(a)
	cb, xb, yb := shotCells(b)
	var d shotDiff
	sum := 0.0
	for i := range ca {
		sum += math.Abs(ca[i] - cb[i])
		ia, ib := ca[i] < shotInk, cb[i] < shotInk
		if ia {
			d.inkA++
		}
		if ib {
			d.inkB++
		}
		if ia && ib {
			d.both++
		}
	}
	if len(ca) > 0 {
		d.mad = sum / float64(len(ca))
	}
	d.dx, d.corrX = lineUp(xa, xb)
	d.dy, d.corrY = lineUp(ya, yb)
	return d, nil
}

// shotCells reduces m to the mean grey level of each cell, row by row, and
// to its ink profiles: the darkness (255 − grey) summed over each column
// and over each row of pixels.
func shotCells(m image.Image) (cells, cols, rows []float64) {
	w, h := m.Bounds().Dx(), m.Bounds().Dy()
	g := greys(m)
	nx := (w + shotCell - 1) / shotCell
	cells = make([]float64, nx*((h+shotCell-1)/shotCell))
	n := make([]int, len(cells))
	cols, rows = make([]float64, w), make([]float64, h)
	for y := range h {
		for x := range w {
			v := g[y*w+x]
			i := y/shotCell*nx + x/shotCell
			cells[i] += v
			n[i]++
			cols[x] += 255 - v
			rows[y] += 255 - v
		}
	}
	for i := range cells {
		cells[i] /= float64(n[i])
	}
	return cells, cols, rows
}

// lineUp returns the offset s (within ±shotSearch) for which b[i+s] best
// matches a[i], by the correlation of the two profiles, and their
// correlation unshifted. Profiles without variation correlate 0.
func lineUp(a, b []float64) (best int, at0 float64) {
	corr := func(s int) float64 {
		var n, sa, sb, saa, sbb, sab float64
		for i := max(0, -s); i < len(a) && i+s < len(b); i++ {
			x, y := a[i], b[i+s]
			n++
			sa, sb, saa, sbb, sab = sa+x, sb+y, saa+x*x, sbb+y*y, sab+x*y
		}
		if n == 0 {
			return 0
		}
		va, vb := saa-sa*sa/n, sbb-sb*sb/n
		if va <= 1e-9 || vb <= 1e-9 {
			return 0
		}
		return (sab - sa*sb/n) / math.Sqrt(va*vb)
	}
	at0 = corr(0)
	best, top := 0, at0
	for s := 1; s <= shotSearch; s++ {
		for _, o := range []int{s, -s} {
			if c := corr(o); c > top+1e-9 {
				best, top = o, c
			}
		}
	}
	return best, at0
}

// shotImage decodes a PNG written by criseq.
func shotImage(t *testing.T, b []byte) image.Image {
	t.Helper()
	m, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// rasterize draws l as criseq's PNG does, at scale 1.
func rasterize(t *testing.T, l *drawing) image.Image {
	t.Helper()
	sc, err := newScene(l, 1)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := sc.encode(&b); err != nil {
		t.Fatal(err)
	}
	return shotImage(t, b.Bytes())
}

// shifted is m moved by dx, dy on white.
func shifted(m image.Image, dx, dy int) image.Image {
	out := image.NewRGBA(m.Bounds())
	draw.Draw(out, out.Bounds(), image.White, image.Point{}, draw.Src)
	draw.Draw(out, out.Bounds().Add(image.Pt(dx, dy)), m, m.Bounds().Min, draw.Src)
	return out
}

// halved is m at half its size, each pixel the mean of a 2×2 square.
func halved(m *image.RGBA) *image.RGBA {
	b := m.Bounds()
	out := image.NewRGBA(image.Rect(0, 0, b.Dx()/2, b.Dy()/2))
	for y := range b.Dy() / 2 {
		for x := range b.Dx() / 2 {
			for c := range 4 {
				s := 0
				for _, p := range [4]image.Point{{0, 0}, {1, 0}, {0, 1}, {1, 1}} {
					s += int(m.Pix[m.PixOffset(b.Min.X+2*x+p.X, b.Min.Y+2*y+p.Y)+c])
				}
				out.Pix[out.PixOffset(x, y)+c] = uint8((s + 2) / 4)
			}
		}
	}
	return out
}

// TestSVGBrowserCompare checks the comparison of screenshots with criseq's
// PNG without a browser: the same drawing rasterized differently passes,
// while a shifted, blank or stripped drawing fails.
func TestSVGBrowserCompare(t *testing.T) {
	flows := map[string]*flow.Flow{"start": startFlow(), "hostile": svgShotHostileFlow()}
	for _, f := range loadCapture(t, filepath.Join("..", "testdata", "kubelet-init", "capture.pcapng")) {
		flows["kubelet-init "+f.Kind.String()] = f
	}
	for name, f := range flows {
		t.Run(name, func(t *testing.T) {
			_, l := laidOut(t, f)
			var b1, b2 bytes.Buffer
			if err := pngWith(&b1, f, 1, Options{}); err != nil {
				t.Fatal(err)
			}
			if err := pngWith(&b2, f, 2, Options{}); err != nil {
				t.Fatal(err)
			}
			base := shotImage(t, b1.Bytes())

			// Without its text, or without its arrows (the elements of a call).
			noText := *l
			noText.layers[layerText] = nil
			noArrows := *l
			noArrows.layers[layerShapes] = nil
			for _, e := range l.layers[layerShapes] {
				if e.step == 0 {
					noArrows.layers[layerShapes] = append(noArrows.layers[layerShapes], e)
				}
			}
			if len(noArrows.layers[layerShapes]) == len(l.layers[layerShapes]) {
				t.Fatal("the drawing has no elements with a step: no arrows to take away")
			}
			blank := image.NewRGBA(base.Bounds())
			draw.Draw(blank, blank.Bounds(), image.White, image.Point{}, draw.Src)

			for _, c := range []struct {
				name string
				m    image.Image
				ok   bool
			}{
				{"itself", base, true},
				{"drawn at 2x and halved", halved(decodePNG(t, b2.Bytes())), true},
				{"shifted 2px down", shifted(base, 0, 2), false},
				{"shifted one row down", shifted(base, 0, 17), false},
				{"shifted 3px right", shifted(base, 3, 0), false},
				{"shifted 16px left", shifted(base, -16, 0), false},
				{"blank", blank, false},
				{"without text", rasterize(t, &noText), false},
				{"without arrows", rasterize(t, &noArrows), false},
			} {
				d, err := compareShots(c.m, base)
				if err != nil {
					t.Fatal(err)
				}
				err = d.check()
				t.Logf("%s: %s", c.name, d)
				if c.ok && err != nil {
					t.Errorf("%s: fails: %v", c.name, err)
				}
				if !c.ok && err == nil {
					t.Errorf("%s: passes (%s), want a failure", c.name, d)
				}
			}
			if _, err := compareShots(base, image.NewRGBA(image.Rect(0, 0, base.Bounds().Dx()+1, base.Bounds().Dy()))); err == nil {
				t.Error("images of different sizes compared without error")
			}
			if err := notBlank(base); err != nil {
				t.Errorf("criseq's PNG: %v", err)
			}
			if err := notBlank(blank); err == nil {
				t.Error("a white image is not blank")
			}
		})
	}
}

// TestSVGBrowserChecks checks, without a browser, what the tool test makes
// of measurements: texts out of their box or off the page, overlaps (but
// not between the lines of one text), sizes and errors.
func TestSVGBrowserChecks(t *testing.T) {
	side := svgShotSidecar{Width: 300, Height: 200, Texts: []svgShotText{
		{Block: 0, Text: "title"},
		{Block: 1, Text: "two", In: &svgShotBox{10, 40, 100, 40}},
		{Block: 1, Line: 1, Text: "lines", In: &svgShotBox{10, 40, 100, 40}},
		{Block: 2, Text: "label", In: &svgShotBox{150, 40, 100, 20}},
	}}
	good := func() *svgShotResult {
		return &svgShotResult{File: "x.svg", Root: "svg", Width: 300, Height: 200, AttrWidth: 300, AttrHeight: 200,
			PageWidth: 300, PageHeight: 200, Texts: []svgShotMeasure{
				{Text: "title", X: 20, Y: 5, W: 100, H: 19},
				{Text: "two", X: 10, Y: 40, W: 50, H: 15},
				{Text: "lines", X: 10, Y: 52, W: 60, H: 15},       // overlaps its own block's first line: allowed
				{Text: "label", X: 150.8, Y: 39.5, W: 100, H: 15}, // within the 1px tolerance
			}}
	}
	for _, c := range []struct {
		name   string
		change func(r *svgShotResult)
		want   string // "" for no problem
	}{
		{"good", func(*svgShotResult) {}, ""},
		{"out of its box", func(r *svgShotResult) { r.Texts[3].X = 153 }, `"label" (line 0 of text 2, class "") leaves its box by 3.0px right`},
		{"off the page", func(r *svgShotResult) { r.Texts[0].X = 210 }, `"title" (line 0 of text 0, class "") leaves the page by 10.0px right`},
		{"overlap", func(r *svgShotResult) { r.Texts[0].Y = 30 }, `texts overlap by 40.0x9.0 px: "title"`},
		{"size", func(r *svgShotResult) { r.Width = 320 }, "rendered size 320x200, the layout's is 300x200"},
		{"page size", func(r *svgShotResult) { r.PageHeight = 250 }, "page size 300x250"},
		{"console", func(r *svgShotResult) { r.ConsoleErrors = []string{"boom"} }, "console error: boom"},
		{"fetch", func(r *svgShotResult) { r.Blocked = []string{"http://x/"} }, "the SVG made the browser fetch http://x/"},
		{"not SVG", func(r *svgShotResult) { r.Root, r.ParseError = "html", "error on line 3" }, "did not read x.svg as SVG"},
		{"text count", func(r *svgShotResult) { r.Texts = r.Texts[:3] }, "Chromium found 3 <text> elements, the layout wrote 4"},
		{"text", func(r *svgShotResult) { r.Texts[1].Text = "tw" }, `<text> 1 reads "tw" in Chromium, the layout wrote "two"`},
	} {
		r := good()
		c.change(r)
		p := shotProblems(side, r)
		switch {
		case c.want == "" && len(p) > 0:
			t.Errorf("%s: problems %q, want none", c.name, p)
		case c.want != "" && (len(p) != 1 || !strings.Contains(p[0], c.want)):
			t.Errorf("%s: problems %q, want one with %q", c.name, p, c.want)
		}
	}
}
