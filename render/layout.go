package render

import (
	"math"
	"slices"
	"sync"
	"time"
)

// Layout sizes, in pixels.
const (
	fontSize     = 13.0
	lineH        = 17.0 // distance between baselines of 13px text
	margin       = 20.0
	hdrPadX      = 14.0
	hdrPadY      = 8.0
	hdrMinW      = 100.0
	hdrMaxText   = 220.0 // participant names wrap past this
	colGap       = 30.0  // least space between two header boxes
	boxPad       = 12.0  // runtime box around its headers
	labelPad     = 14.0  // arrow label to the arrow's ends
	labelMax     = 420.0 // arrow labels wrap past this
	actW         = 10.0  // activation bar
	actNest      = 5.0   // offset of a nested activation bar
	headLen      = 9.0   // arrowhead
	headHalf     = 4.0
	gutterPad    = 10.0
	gutterSize   = 11.0
	titleSize    = 16.0
	subtitleSize = 12.0
	smallSize    = 12.0
)

type elemKind int

const (
	eRect elemKind = iota
	eLine
	ePolygon
	ePolyline
	eText
)

// Layers, drawn in this order; within a layer, elements keep their order.
// Label plates hide the lifelines behind a label but lie under the
// activation bars, so that a label crossing a bar does not cut it.
const (
	layerBack   = iota // background, runtime box
	layerLines         // lifelines, phase separators
	layerPlates        // backgrounds of arrow labels, break bands
	layerBars          // activation bars, outer ones first
	layerShapes        // headers, arrows, phase chips
	layerNotes
	layerText
	nLayers
)

// box is an axis-aligned rectangle.
type box struct{ x, y, w, h float64 }

func (b box) right() float64  { return b.x + b.w }
func (b box) bottom() float64 { return b.y + b.h }

// textBlock is one or more lines of text, with the measured width of its
// widest line.
type textBlock struct {
	x, y   float64 // anchor of the first line's baseline
	anchor string  // "start", "middle" or "end"
	lines  []string
	w      float64
	size   float64
	class  string
	tip    string // <title> tooltip
	in     *box   // the area the text must stay inside, if any
}

// bounds is the text's extent: width as measured, height from the first
// line's ascent to the last line's descent.
func (t *textBlock) bounds() box {
	x := t.x
	switch t.anchor {
	case "middle":
		x -= t.w / 2
	case "end":
		x -= t.w
	}
	top := t.y - 0.8*t.size
	bottom := t.y + float64(len(t.lines)-1)*lineStep(t.size) + 0.25*t.size
	return box{x, top, t.w, bottom - top}
}

func lineStep(size float64) float64 { return math.Round(size * lineH / fontSize) }

type elem struct {
	layer int
	kind  elemKind
	class string
	r     box       // eRect
	rx    float64   // eRect corner radius
	pts   []float64 // eLine (x1 y1 x2 y2), ePolygon, ePolyline
	text  *textBlock
	step  int // 1 + the index of the call an arrow belongs to; 0 for none
	ev    int // 1 + the index of the event an arrow shows; 0 for none
}

// hit is the area of one call (its arrows and labels), or of one event,
// which the HTML viewer makes clickable; plain SVG and PNG do not draw it.
type hit struct {
	step int // index of the call
	ev   int // 1 + the index of the event (in the flow's Events); 0 for a call
	r    box
	tip  string
}

// drawing is a laid out diagram: its size and its elements, styled by the
// classes of svgStyle. SVG and PNG both draw it, so the two cannot drift.
type drawing struct {
	title  string
	w, h   float64
	layers [nLayers][]elem
	texts  []*textBlock // every text, for checks
	hits   []hit        // one per call, for the HTML viewer only
	// withHits: hits are laid out (diagram.hits).
	withHits bool
}

// drawings are reused: a diagram's elements are most of what laying it
// out allocates, and render writes thousands in one run.
var drawings sync.Pool

func newDrawing(title string, withHits bool) *drawing {
	l, _ := drawings.Get().(*drawing)
	if l == nil {
		l = &drawing{}
	}
	l.title, l.withHits = title, withHits
	return l
}

// release hands l back for the next layout; l must not be used after.
func (l *drawing) release() {
	for i := range l.layers {
		clear(l.layers[i])
		l.layers[i] = l.layers[i][:0]
	}
	clear(l.texts)
	clear(l.hits)
	*l = drawing{layers: l.layers, texts: l.texts[:0], hits: l.hits[:0]}
	drawings.Put(l)
}

// hit adds a hit area, if the drawing keeps them; tip is called only then.
func (l *drawing) hit(h hit, tip func() string) {
	if l.withHits {
		h.tip = tip()
		l.hits = append(l.hits, h)
	}
}

// add appends e to its layer and returns its index there.
func (l *drawing) add(e elem) int {
	l.layers[e.layer] = append(l.layers[e.layer], e)
	return len(l.layers[e.layer]) - 1
}

// elems returns every element in drawing order.
func (l *drawing) elems() []elem {
	var all []elem
	for _, layer := range l.layers {
		all = append(all, layer...)
	}
	return all
}

func (l *drawing) rect(layer int, class string, b box, rx float64) int {
	return l.add(elem{layer: layer, kind: eRect, class: class, r: b, rx: rx})
}

func (l *drawing) line(layer int, class string, x1, y1, x2, y2 float64) int {
	return l.add(elem{layer: layer, kind: eLine, class: class, pts: []float64{x1, y1, x2, y2}})
}

func (l *drawing) text(t *textBlock) {
	l.texts = append(l.texts, t)
	l.add(elem{layer: layerText, kind: eText, text: t})
}

// layout places every element of d.
// Caps of the time-scaled space, so that one slow call or a long pause
// does not make pages of white.
const (
	maxGapPx  = 240.0
	maxCallPx = 480.0
)

// scaled is the height for d at scale pixels per second, at most max.
func scaled(scale float64, d time.Duration, max float64) float64 {
	if d <= 0 {
		return 0
	}
	return math.Min(d.Seconds()*scale, max)
}

func layout(d *diagram) (*drawing, error) {
	ms, err := newMeasurer()
	if err != nil {
		return nil, err
	}
	l := newDrawing(d.title, d.hits)
	n := len(d.calls)
	l.layers[layerShapes] = slices.Grow(l.layers[layerShapes], 6*n+4*len(d.parts))
	l.layers[layerPlates] = slices.Grow(l.layers[layerPlates], 2*n)
	l.layers[layerText] = slices.Grow(l.layers[layerText], 3*n+2*len(d.parts)+8)
	l.texts = slices.Grow(l.texts, 3*n+2*len(d.parts)+8)
	bg := l.rect(layerBack, "bg", box{}, 0)
	maxX := 0.0
	grow := func(x float64) {
		if x > maxX {
			maxX = x
		}
	}
	widest := func(fc face, size float64, lines []string) float64 {
		w := 0.0
		for _, s := range lines {
			w = math.Max(w, ms.width(fc, size, s))
		}
		return math.Ceil(w)
	}

	// Participants: header widths and the common header height.
	np := len(d.parts)
	hdrLines := make([][]string, np)
	hw := make([]float64, np)
	nHdrLines := 1
	for i, p := range d.parts {
		hdrLines[i] = ms.wrap(bold, fontSize, p.name, hdrMaxText)
		hw[i] = math.Max(hdrMinW, widest(bold, fontSize, hdrLines[i])+2*hdrPadX)
		nHdrLines = max(nHdrLines, len(hdrLines[i]))
	}
	hdrH := float64(nHdrLines)*lineH + 2*hdrPadY

	// Calls: wrapped labels, the slot of each activation bar (calls open at
	// once on one lifeline stand side by side), and the room each
	// participant's lifeline needs from the client's.
	type callLayout struct {
		req, ret   []string
		reqW, retW float64
		depth      int
		xa         float64 // left edge of the activation bar
		bar        int     // index of the bar in layerBars
	}
	cls := make([]callLayout, len(d.calls))
	evs := make([]callLayout, len(d.events)) // req: an event's label
	rs := d.rows(d.calls)
	away := apart(rs, len(d.calls))
	need := make([]float64, np)
	busy := make([][]bool, np) // per lifeline, the bar slots in use
	gw := 0.0
	for _, r := range rs {
		if r.event() {
			ev, el := &d.events[r.ev], &evs[r.ev]
			el.req = ms.wrap(regular, fontSize, ev.label, labelMax)
			el.reqW = widest(regular, fontSize, el.req)
			need[pRuntime] = math.Max(need[pRuntime], el.reqW+2*labelPad+actW)
			gw = math.Max(gw, ms.width(mono, gutterSize, fmtAt(ev.at)))
			continue
		}
		c := &d.calls[r.call]
		cl := &cls[r.call]
		if r.reply {
			busy[c.to][cl.depth] = false
			continue
		}
		cl.req = ms.wrap(regular, fontSize, c.reqText(), labelMax)
		cl.reqW = widest(regular, fontSize, cl.req)
		if c.done {
			cl.ret = ms.wrap(regular, fontSize, c.replyLabel(away[r.call]), labelMax)
			cl.retW = widest(regular, fontSize, cl.ret)
		}
		slots := busy[c.to]
		for cl.depth < len(slots) && slots[cl.depth] {
			cl.depth++
		}
		if cl.depth == len(slots) {
			busy[c.to] = append(slots, true)
		} else {
			slots[cl.depth] = true
		}
		need[c.to] = math.Max(need[c.to], math.Max(cl.reqW, cl.retW)+2*labelPad+actW)
		gw = math.Max(gw, ms.width(mono, gutterSize, fmtAt(c.at)))
	}
	gw = math.Ceil(math.Max(gw+2*gutterPad, 44))

	// Columns, left to right: each as close to the previous as its header
	// and the labels of the calls it receives allow.
	x := make([]float64, np)
	x[0] = margin + gw + hw[0]/2
	for j := 1; j < np; j++ {
		x[j] = x[j-1] + hw[j-1]/2 + hw[j]/2 + colGap
		x[j] = math.Ceil(math.Max(x[j], x[0]+need[j]))
	}
	boxTitle := ms.wrap(bold, smallSize, d.boxTitle, math.Max(hdrMaxText, x[np-1]+hw[np-1]/2-x[1]+hw[1]/2))
	btW := widest(bold, smallSize, boxTitle)
	boxL := x[1] - hw[1]/2 - boxPad
	if short := btW + 2*boxPad - (x[np-1] + hw[np-1]/2 + boxPad - boxL); short > 0 {
		x[np-1] += math.Ceil(short)
	}
	boxR := x[np-1] + hw[np-1]/2 + boxPad
	cx := math.Round((x[0] + x[np-1]) / 2) // centre of the lifelines
	// A phase's chip is centred over the CRI lifelines and those its own
	// calls reach, not over every other service the runtime answered.
	phaseX := make([]float64, len(d.phases))
	for p := range phaseX {
		phaseX[p] = x[min(pImage, np-1)]
	}
	for _, c := range d.calls {
		if c.span > 0 && c.to < np {
			phaseX[c.span-1] = math.Max(phaseX[c.span-1], x[c.to])
		}
	}

	// Title.
	y := margin
	titleT := &textBlock{x: margin, y: y + 15, anchor: "start", lines: []string{d.title},
		w: widest(bold, titleSize, []string{d.title}), size: titleSize, class: "t"}
	l.text(titleT)
	subT := &textBlock{x: margin, y: y + 36, anchor: "start", lines: []string{d.subtitle},
		w: widest(regular, subtitleSize, []string{d.subtitle}), size: subtitleSize, class: "st"}
	l.text(subT)
	grow(margin + titleT.w)
	grow(margin + subT.w)
	y += 52

	// Runtime box title and headers.
	boxTop := y
	btH := float64(len(boxTitle)) * lineStep(smallSize)
	l.text(&textBlock{x: (boxL + boxR) / 2, y: boxTop + 16, anchor: "middle", lines: boxTitle,
		w: btW, size: smallSize, class: "bt", in: &box{boxL, boxTop, boxR - boxL, btH + 10}})
	hdrTop := boxTop + btH + 14
	header := func(top float64) {
		for i := range d.parts {
			b := box{x[i] - hw[i]/2, top, hw[i], hdrH}
			class := "hd"
			if i == pClient {
				class = "hc"
			}
			l.rect(layerShapes, class, b, 4)
			first := top + hdrPadY + 12 + float64(nHdrLines-len(hdrLines[i]))*lineH/2
			l.text(&textBlock{x: x[i], y: first, anchor: "middle", lines: hdrLines[i],
				w: widest(bold, fontSize, hdrLines[i]), size: fontSize, class: "b", in: &b})
		}
	}
	header(hdrTop)
	y = hdrTop + hdrH + 14

	var phaseLines []int // indexes in layerLines of the separators, whose ends are set last
	var gapLines []int   // indexes in layerShapes of the edges of break bands, idem
	var gapBands []int   // indexes in layerPlates of the break bands, whose widths are set last
	var opens []int      // indexes in layerBars of the bars of calls never answered, whose ends are set last
	var prevT time.Duration
	answered := 0                                           // calls open now that get a reply: time between rows is call time
	open := make([]int, np)                                 // calls open now, per lifeline
	brkX := math.Round((x[0] + x[min(pRuntime, np-1)]) / 2) // between the client and the runtime: no bar there
	for k, r := range rs {
		t := rowAt(d.calls, d.events, r)
		if r.gap > 0 {
			// A break: a white band across the lifelines, which only
			// the bars of calls still open cross, with the time.
			y += 4
			band := box{margin, y, 0, 24}
			gapBands = append(gapBands, l.rect(layerPlates, "gap", band, 0))
			gapLines = append(gapLines, l.line(layerShapes, "gapl", margin, y, 0, y),
				l.line(layerShapes, "gapl", margin, y+band.h, 0, y+band.h))
			bl := []string{breakLabel(r)}
			bw := widest(regular, smallSize, bl)
			tb := box{brkX - bw/2 - 4, y, bw + 8, band.h}
			l.text(&textBlock{x: brkX, y: y + 16, anchor: "middle", lines: bl, w: bw, size: smallSize, class: "bk", in: &tb})
			grow(tb.right())
			y += band.h + 8
		}
		if r.event() {
			if d.timeScale > 0 && k > 0 {
				y += scaled(d.timeScale, t-prevT, maxCallPx)
			}
			prevT = t
			y = l.eventArrow(&d.events[r.ev], evs[r.ev].req, evs[r.ev].reqW, x[0], x[pRuntime], open[pRuntime] > 0, y, gw, ms)
			continue
		}
		i := r.call
		c := &d.calls[i]
		cl := &cls[i]
		if !r.reply && c.opens > 0 {
			ph := &d.phases[c.opens-1]
			y += 6
			ly := y + 10
			lc, cc, tc := "ph", "chip", "pt"
			if ph.crit {
				lc, cc, tc = "ph crit", "chip crit", "pt crit"
			}
			phaseLines = append(phaseLines, l.line(layerLines, lc, margin, ly, 0, ly))
			pl := []string{ph.label()}
			pw := widest(bold, smallSize, pl)
			px := math.Max(math.Round((x[0]+phaseX[c.opens-1])/2), margin+pw/2+10) // centred, unless too wide for that
			// Bars of calls still open cross the separator: the chip keeps
			// left of them, so it hides none of their edges.
			for p := range open {
				if barL := x[p] - actW/2 - 4; open[p] > 0 && px+pw/2+10 > barL {
					px = math.Max(math.Min(px, math.Floor(barL-pw/2-10)), margin+pw/2+10)
				}
			}
			chip := box{px - pw/2 - 10, ly - 10, pw + 20, 20}
			l.rect(layerShapes, cc, chip, 10)
			l.text(&textBlock{x: px, y: ly + 4, anchor: "middle", lines: pl, w: pw,
				size: smallSize, class: tc, in: &chip})
			grow(chip.right())
			y = ly + 10 + 12
		}
		if d.timeScale > 0 && k > 0 {
			limit := maxGapPx
			if answered > 0 {
				limit = maxCallPx
			}
			y += scaled(d.timeScale, t-prevT, limit)
		}
		prevT = t

		xs := x[0]
		xa := x[c.to] - actW/2 + float64(min(cl.depth, 8))*actNest // activation bar's left edge
		span := box{xs + labelPad, y, xa - xs - 2*labelPad, 0}
		// The hit area of the call: its request and reply rows, as one
		// rectangle when nothing comes between them.
		hitTop := y - 2
		tip := func() string {
			if c.full != "" {
				return c.reqLabel() + " → " + c.full
			}
			return c.reqLabel() + " → " + c.retLabel()
		}

		if !r.reply {
			// Request.
			open[c.to]++
			ay := y + float64(len(cl.req))*lineH + 3
			span.h = ay - y
			reqSpan := span
			lcls, hcls, tcls := "req", "reqh", ""
			switch {
			case c.amb:
				lcls, hcls, tcls = "req amb", "reqh amb", "amt"
			case c.inf:
				lcls, hcls, tcls = "req inf", "reqh inf", "inft"
			}
			l.label(&textBlock{x: (xs + xa) / 2, y: y + 12, anchor: "middle", lines: cl.req, w: cl.reqW,
				size: fontSize, class: tcls, tip: c.reqTip(), in: &reqSpan})
			l.layers[layerShapes][l.line(layerShapes, lcls, xs, ay, xa-headLen+1, ay)].step = i + 1
			l.add(elem{layer: layerShapes, kind: ePolygon, class: hcls, step: i + 1,
				pts: []float64{xa, ay, xa - headLen, ay - headHalf, xa - headLen, ay + headHalf}})
			l.text(&textBlock{x: margin + gw - gutterPad, y: ay + 4, anchor: "end", lines: []string{fmtAt(c.at)},
				w: ms.width(mono, gutterSize, fmtAt(c.at)), size: gutterSize, class: "g",
				in: &box{margin, ay - 10, gw, 20}})
			// The bar is added at the request, so that a call's bar lies
			// under the bars and arrows of the calls made while it is open.
			bar := "act"
			switch {
			case !c.done:
				bar = "open"
			case c.crit:
				bar = "actc"
			}
			cl.xa, cl.bar = xa, l.rect(layerBars, bar, box{xa, ay, actW, 0}, 0)
			y = ay + 8
			if c.done {
				answered++
				if k+1 == len(rs) || rs[k+1].call != i {
					l.hit(hit{step: i, r: box{margin, hitTop, xa + actW + 4 - margin, ay + 6 - hitTop}}, tip)
				}
				continue
			}
			// No reply: a note by the lifeline, and the bar stays open.
			nl := []string{noReply}
			nw := widest(regular, smallSize, nl)
			nb := box{xa + actW + 6, y + 2, nw + 16, lineStep(smallSize) + 8}
			notePoly(l, "warn", nb)
			l.text(&textBlock{x: nb.x + 8, y: nb.y + 16, anchor: "start", lines: nl, w: nw,
				size: smallSize, class: "nr", in: &nb})
			grow(nb.right())
			opens = append(opens, cl.bar)
			y = nb.bottom() + 12
			l.hit(hit{step: i, r: box{margin, hitTop, nb.right() + 4 - margin, nb.bottom() + 4 - hitTop}},
				func() string { return c.reqLabel() + " — " + noReply })
			continue
		}

		// Reply, from the call's own bar.
		answered--
		open[c.to]--
		xa = cl.xa
		span.w = xa - xs - 2*labelPad
		ry := y + float64(len(cl.ret))*lineH + 3
		retSpan := span
		retSpan.h = ry - y
		tcls, lcls, hcls := "r", "ret", "reth"
		if c.failed {
			tcls, lcls, hcls = "e", "ret err", "reth err"
		}
		l.label(&textBlock{x: (xs + xa) / 2, y: y + 12, anchor: "middle", lines: cl.ret, w: cl.retW,
			size: fontSize, class: tcls, tip: c.full, in: &retSpan})
		l.layers[layerShapes][l.line(layerShapes, lcls, xa, ry, xs+1, ry)].step = i + 1
		l.add(elem{layer: layerShapes, kind: ePolyline, class: hcls, step: i + 1,
			pts: []float64{xs + headLen, ry - headHalf, xs + 1, ry, xs + headLen, ry + headHalf}})
		bar := &l.layers[layerBars][cl.bar].r
		bar.h = ry - bar.y
		if k > 0 && rs[k-1].call == i {
			// Right after its request: one area for both rows.
			hitTop = bar.y - float64(len(cl.req))*lineH - 3 - 2
		}
		l.hit(hit{step: i, r: box{margin, hitTop, xa + actW + 4 - margin, ry + 6 - hitTop}}, tip)
		y = ry + 12
	}

	// Closing note across the lifelines, wrapped to their width.
	y += 8
	nl := ms.wrap(regular, fontSize, d.note, math.Max(labelMax, x[np-1]-x[0]+8))
	nw := widest(regular, fontSize, nl)
	noteW := math.Max(nw+32, x[np-1]-x[0]+40)
	nx := math.Max(cx, margin+noteW/2)
	nb := box{nx - noteW/2, y, noteW, float64(len(nl))*lineH + 12}
	class := "note"
	if !d.complete {
		class = "warn"
	}
	notePoly(l, class, nb)
	l.text(&textBlock{x: nx, y: y + 19, anchor: "middle", lines: nl, w: nw, size: fontSize, in: &nb})
	grow(nb.right())
	y = nb.bottom() + 16

	// Footers, lifelines, open activations, the runtime box.
	ftrTop := y
	header(ftrTop)
	for i := range d.parts {
		l.line(layerLines, "ll", x[i], hdrTop+hdrH, x[i], ftrTop)
	}
	for _, i := range opens {
		r := &l.layers[layerBars][i].r
		r.h = nb.y - 4 - r.y // open until the capture's end: the closing note
	}
	boxBottom := ftrTop + hdrH + 10
	l.rect(layerBack, "rt", box{boxL, boxTop, boxR - boxL, boxBottom - boxTop}, 10)
	grow(boxR)

	l.w = math.Ceil(maxX + margin)
	l.h = math.Ceil(boxBottom + margin)
	for _, i := range phaseLines {
		l.layers[layerLines][i].pts[2] = l.w - margin
	}
	for _, i := range gapLines {
		l.layers[layerShapes][i].pts[2] = l.w - margin
	}
	for _, i := range gapBands {
		l.layers[layerPlates][i].r.w = l.w - 2*margin
	}
	l.layers[layerBack][bg].r = box{0, 0, l.w, l.h}
	return l, nil
}

// eventArrow draws one of the runtime's events at y: an asynchronous arrow
// (open head) from the runtime's lifeline, or its bars' edge when a call is
// open on it, to the client's, with its label above and its time in the
// gutter. It returns the next row's y.
func (l *drawing) eventArrow(ev *event, lines []string, w, xs, xr float64, busy bool, y, gw float64, ms *measurer) float64 {
	if busy {
		xr -= actW / 2
	}
	ay := y + float64(len(lines))*lineH + 3
	span := box{xs + labelPad, y, xr - xs - 2*labelPad, ay - y}
	tip := ""
	if ev.tip != "" {
		tip = ev.label + " — " + ev.tip
	}
	l.label(&textBlock{x: (xs + xr) / 2, y: y + 12, anchor: "middle", lines: lines, w: w,
		size: fontSize, class: "ev", tip: tip, in: &span})
	l.layers[layerShapes][l.line(layerShapes, "evl", xr, ay, xs+1, ay)].ev = ev.n + 1
	l.add(elem{layer: layerShapes, kind: ePolyline, class: "evh", ev: ev.n + 1,
		pts: []float64{xs + headLen, ay - headHalf, xs + 1, ay, xs + headLen, ay + headHalf}})
	at := fmtAt(ev.at)
	l.text(&textBlock{x: margin + gw - gutterPad, y: ay + 4, anchor: "end", lines: []string{at},
		w: ms.width(mono, gutterSize, at), size: gutterSize, class: "g", in: &box{margin, ay - 10, gw, 20}})
	if tip == "" {
		tip = ev.label
	}
	l.hit(hit{ev: ev.n + 1, r: box{margin, y - 2, xr + 4 - margin, ay + 6 - (y - 2)}}, func() string { return tip })
	return ay + 12
}

// label adds an arrow label on a plate that hides the lines behind it.
// The plate is as wide as the text in Go Regular (without widthSlack), so
// that it hides lines between words but shows no edge of its own when a
// wider fallback font draws the text.
func (l *drawing) label(t *textBlock) {
	b := t.bounds()
	w := b.w / widthSlack[regular]
	l.rect(layerPlates, "plate", box{b.x + (b.w-w)/2 - 2, b.y, w + 4, b.h}, 2)
	l.text(t)
}

// notePoly draws a note: a box with a folded top-right corner.
func notePoly(l *drawing, class string, b box) {
	const f = 8
	l.add(elem{layer: layerNotes, kind: ePolygon, class: class, pts: []float64{
		b.x, b.y, b.right() - f, b.y, b.right(), b.y + f, b.right(), b.bottom(), b.x, b.bottom()}})
	l.add(elem{layer: layerNotes, kind: ePolyline, class: class + " fold", pts: []float64{
		b.right() - f, b.y, b.right() - f, b.y + f, b.right(), b.y + f}})
}
