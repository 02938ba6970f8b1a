package render

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/criseq/criseq/flow"
)

// MermaidLimit is the size Mermaid output stays under: Mermaid refuses
// diagrams of maxTextSize (50,000) characters or more by default.
const MermaidLimit = 50000

// Mermaid writes f as a Mermaid sequence diagram under MermaidLimit bytes:
// the first of MermaidParts when the flow needs several.
func Mermaid(w io.Writer, f *flow.Flow) error {
	parts, err := MermaidParts(f)
	if err != nil {
		return err
	}
	if _, err := w.Write(parts[0]); err != nil {
		return fmt.Errorf("render mmd: %w", err)
	}
	return nil
}

// MermaidParts writes f as Mermaid sequence diagrams of fewer than
// MermaidLimit bytes each: one if the flow fits, else first with runs of
// identical consecutive calls folded into one ("ContainerStatus(web) ×5"),
// and if it still does not fit, split in parts titled "(2/3)", each ending
// with a note that points to the next. PartExt names their files.
func MermaidParts(f *flow.Flow) ([][]byte, error) {
	d, err := newDiagram(f)
	if err != nil {
		return nil, fmt.Errorf("render mmd: %w", err)
	}
	return mermaidFit(d, MermaidLimit), nil
}

// PartExt is the file name ending of part k (from 0) of a diagram in
// format: Ext(format) for the first part, then "_2.mmd", "_3.mmd"…
func PartExt(format string, k int) string {
	if k == 0 {
		return Ext(format)
	}
	return "_" + strconv.Itoa(k+1) + Ext(format)
}

// mermaidFit renders d in parts of fewer than limit bytes each, if it can
// (a part holds at least one arrow).
func mermaidFit(d *diagram, limit int) [][]byte {
	calls := d.calls
	rs := d.rows(calls)
	if out := mermaidPage(d, calls, rs, 0, len(rs), 1, 1); len(out) < limit {
		return [][]byte{out}
	}
	calls = folded(d.calls)
	rs = d.rows(calls)
	if out := mermaidPage(d, calls, rs, 0, len(rs), 1, 1); len(out) < limit {
		return [][]byte{out}
	}
	// Split by an estimate of each row's bytes; if a part still comes out
	// too long, split finer.
	fixed := len(mermaidPage(d, calls, rs, 0, 0, 2, 2))
	away := apart(rs, len(calls))
	cost := make([]int, len(rs)) // the bytes of a row's lines, about
	for k, r := range rs {
		switch {
		case r.event():
			ev := &d.events[r.ev]
			cost[k] = 26 + len(mmdLines(fmtAt(ev.at)+" · "+ev.label))
		case r.reply:
			cost[k] = 26 + len(mmdLines(calls[r.call].replyLabel(away[r.call])))
		default:
			c := &calls[r.call]
			cost[k] = 26 + len(mmdLines(fmtAt(c.at)+" · "+c.reqText()))
			if c.opens > 0 {
				cost[k] += 80 + len(mmdLines(d.phases[c.opens-1].label()))
			}
			if c.inf {
				cost[k] += 60 // its rect
			}
		}
		if r.gap > 0 {
			cost[k] += 40 + len(mmdLines(breakLabel(r)))
		}
	}
	for budget := limit - fixed - 200; ; budget = budget * 3 / 4 {
		var cuts []int // start row of each part
		used := 0
		for k, r := range rs {
			switch {
			case k == 0:
				cuts = append(cuts, 0)
			case used+cost[k] > budget:
				// A reply stays with the request right before it: the
				// part ends before that request, unless it is the
				// part's only row.
				together := r.reply && rs[k-1].call == r.call && !rs[k-1].reply
				switch {
				case !together:
					cuts = append(cuts, k)
					used = 0
				case k-1 > cuts[len(cuts)-1]:
					cuts = append(cuts, k-1)
					used = cost[k-1]
				}
			}
			used += cost[k]
		}
		cuts = append(cuts, len(rs))
		var parts [][]byte
		fits := true
		for p := 0; p+1 < len(cuts); p++ {
			out := mermaidPage(d, calls, rs, cuts[p], cuts[p+1], p+1, len(cuts)-1)
			fits = fits && len(out) < limit
			parts = append(parts, out)
		}
		if fits || budget <= 0 {
			return parts
		}
	}
}

// mermaidPage writes rows rs[from:to] of calls as part page of pages. A
// call whose request and reply fall in different parts is drawn without
// its activation, which Mermaid cannot carry over.
func mermaidPage(d *diagram, calls []call, rs []row, from, to, page, pages int) []byte {
	var b bytes.Buffer
	writeMermaid(&b, d, calls, rs, from, to, page, pages)
	return b.Bytes()
}

// phaseFill alternates behind the phases.
var phaseFill = [2]string{"rgba(236,239,241,0.55)", "rgba(255,248,225,0.55)"}

// critFill is behind the longest phase, inferredFill behind the request of
// a call whose method was inferred.
const (
	critFill     = "rgba(255,224,178,0.6)"
	inferredFill = "rgb(243, 229, 245)"
)

func writeMermaid(w *bytes.Buffer, d *diagram, calls []call, rs []row, from, to, page, pages int) {
	str := func(ss ...string) {
		for _, s := range ss {
			w.WriteString(s)
		}
	}
	title := d.title
	if pages > 1 {
		title += " (" + strconv.Itoa(page) + "/" + strconv.Itoa(pages) + ")"
	}
	str("sequenceDiagram\n")
	// Mermaid does not widen the diagram for its title: keep it short (the
	// client and the runtime are named by the participants and the box).
	str("    title ", mmdEsc(title), "\n")
	str("    participant ", d.parts[pClient].alias, " as ", mmdEsc(d.parts[pClient].name), "\n")
	// Mermaid takes the box's colour greedily up to the last ')' of the
	// line: the title's parentheses are escaped.
	boxTitle := mmdParens.Replace(mmdEsc(d.boxTitle))
	str("    box rgb(245, 247, 250) ", boxTitle, "\n")
	for _, p := range d.parts[1:] {
		str("        participant ", p.alias, " as ", mmdEsc(p.name), "\n")
	}
	str("    end\n")

	client := d.parts[pClient].alias
	last := d.parts[len(d.parts)-1].alias
	away := apart(rs, len(calls))
	reqAt, repAt := make([]int, len(calls)), make([]int, len(calls))
	phase := 0 // 1 + index of the phase in force
	for k, r := range rs {
		if r.event() {
			continue
		}
		if r.reply {
			repAt[r.call] = k
			continue
		}
		reqAt[r.call], repAt[r.call] = k, len(rs)
		if k < from && calls[r.call].opens > 0 {
			phase = calls[r.call].opens
		}
	}
	inRect := false
	indent := "    "
	openPhase := func(ph int, cont bool) {
		if inRect {
			str("    end\n")
		}
		fill := phaseFill[(ph-1)%2]
		if d.phases[ph-1].crit {
			fill = critFill
		}
		label := d.phases[ph-1].label()
		if cont {
			label += " (continued)"
		}
		str("    rect ", fill, "\n")
		str("        Note over ", client, ",", last, ": ", mmdLines(label), "\n")
		inRect, indent = true, "        "
	}
	if from < to && phase > 0 && (rs[from].event() || rs[from].reply || calls[rs[from].call].opens == 0) {
		openPhase(phase, true)
	}
	for k := from; k < to; k++ {
		r := rs[k]
		if r.gap > 0 {
			str(indent, "Note over ", client, ",", last, ": ", mmdLines(breakLabel(r)), "\n")
		}
		if r.event() {
			// The runtime's event: an asynchronous arrow.
			ev := &d.events[r.ev]
			str(indent, d.parts[pRuntime].alias, "-)", client, ": ", mmdLines(fmtAt(ev.at)+" · "+ev.label), "\n")
			continue
		}
		c := &calls[r.call]
		who := d.parts[c.to].alias
		if r.reply {
			arrow := "-->>"
			if c.failed {
				arrow = "--x"
			}
			if reqAt[r.call] >= from {
				arrow += "-" // its activation began in this part
			}
			// A reply whose request is in an earlier part names its call.
			str(indent, who, arrow, client, ": ", mmdLines(c.replyLabel(away[r.call] || reqAt[r.call] < from)), "\n")
			continue
		}
		if c.opens > 0 {
			openPhase(c.opens, false)
		}
		// The start time, as in the SVG's gutter.
		req := mmdLines(fmtAt(c.at) + " · " + c.reqText())
		arrow, in := "->>", indent
		if c.amb {
			arrow = "-->>" // dotted, as the SVG's dashed grey arrow
		}
		if c.inf {
			// Mermaid has no colour per arrow: a tinted band marks it.
			str(indent, "rect ", inferredFill, "\n")
			in += "    "
		}
		if !c.done {
			str(in, client, arrow, who, ": ", req, "\n")
			str(in, "Note over ", who, ": ", mmdLines(noReply), "\n")
		} else {
			if repAt[r.call] < to {
				arrow += "+" // its reply is in this part too
			}
			str(in, client, arrow, who, ": ", req, "\n")
		}
		if c.inf {
			str(indent, "end\n")
		}
	}
	if inRect {
		str("    end\n")
	}
	if page < pages {
		str("    Note over ", client, ",", last, ": ", mmdLines("continued in part "+strconv.Itoa(page+1)+" of "+strconv.Itoa(pages)), "\n")
		return
	}
	str("    Note over ", client, ",", last, ": ", mmdLines(d.note), "\n")
}

// mmdLineMax is the length, in runes, past which labels are broken into
// lines (at spaces only).
const mmdLineMax = 60

// mmdLines escapes s and breaks it into lines with <br>. Mermaid's own
// wrapping is not used: it cuts long words in the middle of entity codes.
func mmdLines(s string) string {
	lines := wrapWords(s, mmdLineMax)
	for i := range lines {
		lines[i] = mmdEsc(lines[i])
	}
	return strings.Join(lines, "<br>")
}

// wrapWords breaks s into lines of at most max runes, at spaces only (a
// longer word is a line of its own).
func wrapWords(s string, max int) []string {
	var lines []string
	line, n := "", 0
	for _, word := range strings.Split(s, " ") {
		wn := utf8.RuneCountInString(word)
		if n > 0 && n+1+wn > max {
			lines = append(lines, line)
			line, n = "", 0
		}
		if n > 0 {
			line += " "
			n++
		}
		line += word
		n += wn
	}
	return append(lines, line)
}

// mmdEsc escapes s for Mermaid text (message, note, title, alias, box):
// characters that end a statement or start a comment, a directive, an
// entity or HTML are written as Mermaid entity codes (#59; for ';', #35; for
// '#', #lt; for '<', …), which Mermaid decodes when it draws the text.
func mmdEsc(s string) string {
	var b strings.Builder
	for i, r := range s {
		switch r {
		case ';':
			b.WriteString("#59;")
		case '#':
			b.WriteString("#35;")
		case '%':
			b.WriteString("#37;")
		case '<':
			b.WriteString("#lt;")
		case '>':
			b.WriteString("#gt;")
		case '&':
			b.WriteString("#amp;")
		case '"':
			b.WriteString("#quot;")
		case '\\':
			b.WriteString("#92;")
		case '`':
			b.WriteString("#96;")
		case '{':
			b.WriteString("#123;")
		case '}':
			b.WriteString("#125;")
		case ':':
			// ":wrap:" and ":nowrap:" at a label's start are options.
			if strings.HasSuffix(s[:i], "wrap") {
				b.WriteString("#58;")
			} else {
				b.WriteRune(r)
			}
		case 's', 'c':
			// Mermaid strips the ';' of "style…:…#…;" and "classDef…:…#…;"
			// before it decodes entities: break those words.
			if strings.HasPrefix(s[i:], "style") || strings.HasPrefix(s[i:], "classDef") {
				b.WriteString("#" + strconv.Itoa(int(r)) + ";")
			} else {
				b.WriteRune(r)
			}
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// mmdParens escapes parentheses as Mermaid entities.
var mmdParens = strings.NewReplacer("(", "#40;", ")", "#41;")
