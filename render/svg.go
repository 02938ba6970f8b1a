package render

import (
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/criseq/criseq/flow"
)

// SVG writes f as a standalone SVG sequence diagram laid out here: a header
// and a footer box per participant, dashed lifelines, the runtime's services
// in a titled box, solid request arrows, dashed return arrows (red for
// errors), activation bars while a call is open, phase separators, each
// call's start time in a left gutter and the total time in a closing note.
// Text is measured with the Go fonts, which the SVG names first in its
// font-family; the fonts themselves are not embedded.
func SVG(w io.Writer, f *flow.Flow) error { return svgWith(w, f, Options{}) }

func svgWith(w io.Writer, f *flow.Flow, o Options) error {
	d, err := newDiagram(f)
	if err != nil {
		return fmt.Errorf("render svg: %w", err)
	}
	d.timeScale = o.TimeScale
	l, err := layout(d)
	if err != nil {
		return fmt.Errorf("render svg: %w", err)
	}
	bw := newWriter(w)
	l.write(bw)
	l.release()
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("render svg: %w", err)
	}
	return nil
}

// Palette.
const svgStyle = `
.bg{fill:#ffffff}
.rt{fill:#fafbfc;stroke:#b0bec5;stroke-width:1}
.ll{stroke:#90a4ae;stroke-width:1;stroke-dasharray:4 4}
.hd{fill:#ffffff;stroke:#78909c;stroke-width:1.2}
.hc{fill:#cfd8dc;stroke:#546e7a;stroke-width:1.2}
.act{fill:#eceff1;stroke:#78909c;stroke-width:1}
.actc{fill:#ffe0b2;stroke:#ef6c00;stroke-width:1}
.open{fill:#fff3e0;stroke:#fb8c00;stroke-dasharray:3 2}
.req{stroke:#37474f;stroke-width:1.3;fill:none}
.reqh{fill:#37474f;stroke:none}
.amb{stroke:#90a4ae;stroke-dasharray:4 3}
.reqh.amb{fill:#90a4ae;stroke:none}
.inf{stroke:#7b1fa2;stroke-dasharray:1.5 2.5}
.reqh.inf{fill:#7b1fa2;stroke:none}
.evl{stroke:#00897b;stroke-width:1.3;fill:none}
.evh{stroke:#00897b;stroke-width:1.3;fill:none}
.gap{fill:#ffffff}
.gapl{stroke:#b0bec5;stroke-width:1;stroke-dasharray:2 3}
.ret{stroke:#607d8b;stroke-width:1.2;stroke-dasharray:5 3;fill:none}
.reth{stroke:#607d8b;stroke-width:1.2;fill:none}
.err{stroke:#c62828}
.ph{stroke:#b0bec5;stroke-width:1}
.chip{fill:#eceff1;stroke:#b0bec5;stroke-width:1}
.ph.crit{stroke:#ffcc80}
.chip.crit{fill:#ffe0b2;stroke:#ef6c00}
.note{fill:#fffde7;stroke:#d4c06a;stroke-width:1}
.warn{fill:#fff3e0;stroke:#fb8c00;stroke-width:1}
.fold{fill:none;stroke:#d4c06a;stroke-width:1}
.plate{fill:#ffffff;fill-opacity:0.85}
.warn.fold{fill:none;stroke:#fb8c00}
text{font-family:Go,'DejaVu Sans',Arial,sans-serif;font-size:13px;fill:#263238}
text.t{font-size:16px;font-weight:bold}
text.st{font-size:12px;fill:#546e7a}
text.b{font-weight:bold}
text.bt{font-size:12px;font-weight:bold;fill:#546e7a}
text.r{fill:#455a64}
text.e{fill:#c62828}
text.g{font-family:'Go Mono','DejaVu Sans Mono',monospace;font-size:11px;fill:#90a4ae}
text.pt{font-size:12px;font-weight:bold;fill:#455a64}
text.pt.crit{fill:#e65100}
text.nr{font-size:12px;fill:#e65100}
text.amt{fill:#78909c}
text.inft{fill:#7b1fa2}
text.ev{fill:#00796b}
text.bk{font-size:12px;fill:#78909c}
`

// write serialises the layout.
func (l *drawing) write(w errWriter) {
	w.str(`<?xml version="1.0" encoding="UTF-8"?>`, "\n")
	l.writeSVG(w, false)
}

// writeSVG writes the <svg> element. inline is for the HTML viewer: no
// <style> (the page has it, scoped to svg.sq) nor <title> (a tooltip over
// the whole drawing), data-step="N" on the arrows of call N, and on top a
// transparent rectangle per call (class "hit") that takes the clicks.
func (l *drawing) writeSVG(w errWriter, inline bool) {
	w.str(`<svg xmlns="http://www.w3.org/2000/svg" width="`, num(l.w), `" height="`, num(l.h),
		`" viewBox="0 0 `, num(l.w), " ", num(l.h), `" font-family="`, sansFamily, `" font-size="13"`)
	if inline {
		w.str(` class="sq" role="img" aria-label="`, xmlEsc(l.title), `">`, "\n")
	} else {
		w.str(">\n")
		w.str("<title>", xmlEsc(l.title), "</title>\n")
		w.str("<style>", svgStyle, "</style>\n")
	}
	for _, layer := range l.layers {
		for i := range layer {
			l.writeElem(w, &layer[i], inline)
		}
	}
	if inline {
		for _, h := range l.hits {
			if h.ev > 0 {
				w.str(`<rect class="hit" data-event="`, strconv.Itoa(h.ev-1), `"`)
			} else {
				w.str(`<rect class="hit" data-step="`, strconv.Itoa(h.step), `"`)
			}
			w.attr("x", h.r.x)
			w.attr("y", h.r.y)
			w.attr("width", h.r.w)
			w.attr("height", h.r.h)
			w.str(` rx="3"><title>`, xmlEsc(h.tip), "</title></rect>\n")
		}
	}
	w.str("</svg>\n")
}

// stepAttr writes ` data-step="N"` for an arrow of call N, and
// ` data-event="N"` for the arrow of event N, in inline SVG.
func (w errWriter) stepAttr(e *elem, inline bool) {
	switch {
	case !inline:
	case e.step > 0:
		w.str(` data-step="`, strconv.Itoa(e.step-1), `"`)
	case e.ev > 0:
		w.str(` data-event="`, strconv.Itoa(e.ev-1), `"`)
	}
}

func (l *drawing) writeElem(w errWriter, e *elem, inline bool) {
	switch e.kind {
	case eRect:
		w.str(`<rect class="`, e.class, `"`)
		w.stepAttr(e, inline)
		w.attr("x", e.r.x)
		w.attr("y", e.r.y)
		w.attr("width", e.r.w)
		w.attr("height", e.r.h)
		if e.rx > 0 {
			w.attr("rx", e.rx)
		}
		w.str("/>\n")
	case eLine:
		w.str(`<line class="`, e.class, `"`)
		w.stepAttr(e, inline)
		w.attr("x1", e.pts[0])
		w.attr("y1", e.pts[1])
		w.attr("x2", e.pts[2])
		w.attr("y2", e.pts[3])
		w.str("/>\n")
	case ePolygon, ePolyline:
		tag := "polygon"
		if e.kind == ePolyline {
			tag = "polyline"
		}
		w.str("<", tag, ` class="`, e.class, `"`)
		w.stepAttr(e, inline)
		w.str(` points="`)
		for k := 0; k < len(e.pts); k += 2 {
			if k > 0 {
				w.WriteByte(' ')
			}
			w.num(e.pts[k])
			w.WriteByte(',')
			w.num(e.pts[k+1])
		}
		w.str(`"/>`, "\n")
	case eText:
		t := e.text
		group := t.tip != ""
		if group {
			w.str("<g><title>", xmlEsc(t.tip), "</title>")
		}
		for k, s := range t.lines {
			w.str(`<text`)
			if t.class != "" {
				w.str(` class="`, t.class, `"`)
			}
			w.attr("x", t.x)
			w.attr("y", t.y+float64(k)*lineStep(t.size))
			if t.anchor != "start" {
				w.str(` text-anchor="`, t.anchor, `"`)
			}
			w.str(">", xmlEsc(s), "</text>")
			if !group {
				w.WriteByte('\n')
			}
		}
		if group {
			w.str("</g>\n")
		}
	}
}

// num formats a coordinate with at most one decimal.
func num(v float64) string { return string(appendNum(nil, v)) }

// appendNum appends v rounded to one decimal: "12", "12.5", "-3.2".
func appendNum(b []byte, v float64) []byte {
	t := int64(math.Round(v * 10))
	if t < 0 {
		b = append(b, '-')
		t = -t
	}
	b = strconv.AppendInt(b, t/10, 10)
	if t%10 != 0 {
		b = append(b, '.', byte('0'+t%10))
	}
	return b
}

func (w errWriter) num(v float64) { w.Write(appendNum(w.AvailableBuffer(), v)) }

// attr writes ` name="v"`.
func (w errWriter) attr(name string, v float64) {
	w.str(" ", name, `="`)
	w.num(v)
	w.WriteByte('"')
}

// xmlEsc escapes s for XML text and attribute values; characters XML does
// not allow become U+FFFD.
func xmlEsc(s string) string {
	if !strings.ContainsAny(s, "<>&'\"\t\n\r") && isXMLSafe(s) {
		return s
	}
	var b strings.Builder
	xml.EscapeText(&b, []byte(s))
	return b.String()
}

func isXMLSafe(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0xFFFE || r == 0xFFFF || (r >= 0xD800 && r <= 0xDFFF) {
			return false
		}
	}
	return true
}
