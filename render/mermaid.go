package render

import (
	"bytes"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/criseq/criseq/flow"
)

// MermaidLimit is the size Mermaid output stays under: Mermaid refuses
// diagrams of maxTextSize (50,000) characters or more by default.
const MermaidLimit = 50000

// Mermaid writes f as a Mermaid sequence diagram. Output stays under
// MermaidLimit bytes: if the diagram is longer, runs of identical consecutive
// calls are folded into one ("ContainerStatus(web) ×5"), and if it is still
// too long, the calls that do not fit are left out and a note says how many.
func Mermaid(w io.Writer, f *flow.Flow) error {
	d, err := newDiagram(f)
	if err != nil {
		return fmt.Errorf("render mmd: %w", err)
	}
	out := mermaidFit(d, MermaidLimit)
	if _, err := w.Write(out); err != nil {
		return fmt.Errorf("render mmd: %w", err)
	}
	return nil
}

// mermaidFit renders d in fewer than limit bytes if it can.
func mermaidFit(d *diagram, limit int) []byte {
	out := mermaidBytes(d, d.calls, 0)
	if len(out) < limit {
		return out
	}
	calls := folded(d.calls)
	out = mermaidBytes(d, calls, 0)
	if len(out) < limit {
		return out
	}
	// Keep the longest prefix of calls that fits with the truncation note.
	n := sort.Search(len(calls)+1, func(n int) bool {
		return len(mermaidBytes(d, calls[:n], len(calls)-n)) >= limit
	}) - 1
	if n < 0 {
		n = 0
	}
	return mermaidBytes(d, calls[:n], len(calls)-n)
}

func mermaidBytes(d *diagram, calls []call, omitted int) []byte {
	var b bytes.Buffer
	writeMermaid(&b, d, calls, omitted)
	return b.Bytes()
}

// phaseFill alternates behind the phases.
var phaseFill = [2]string{"rgba(236,239,241,0.55)", "rgba(255,248,225,0.55)"}

// critFill is behind the longest phase.
const critFill = "rgba(255,224,178,0.6)"

func writeMermaid(w *bytes.Buffer, d *diagram, calls []call, omitted int) {
	str := func(ss ...string) {
		for _, s := range ss {
			w.WriteString(s)
		}
	}
	str("sequenceDiagram\n")
	// Mermaid does not widen the diagram for its title: keep it short (the
	// client and the runtime are named by the participants and the box).
	str("    title ", mmdEsc(d.title), "\n")
	str("    participant ", d.parts[pClient].alias, " as ", mmdEsc(d.parts[pClient].name), "\n")
	// Mermaid takes the box's colour greedily up to the last ')' of the
	// line: the title's parentheses are escaped.
	boxTitle := strings.NewReplacer("(", "#40;", ")", "#41;").Replace(mmdEsc(d.boxTitle))
	str("    box rgb(245, 247, 250) ", boxTitle, "\n")
	for _, p := range d.parts[1:] {
		str("        participant ", p.alias, " as ", mmdEsc(p.name), "\n")
	}
	str("    end\n")

	client := d.parts[pClient].alias
	last := d.parts[len(d.parts)-1].alias
	inRect, nPhase := false, 0
	indent := "    "
	rs := rows(calls)
	away := apart(rs, len(calls))
	for _, r := range rs {
		c := &calls[r.call]
		to := d.parts[c.to].alias
		if r.reply {
			arrow := "-->>-"
			if c.failed {
				arrow = "--x-"
			}
			str(indent, to, arrow, client, ": ", mmdLines(c.replyLabel(away[r.call])), "\n")
			continue
		}
		if c.opens > 0 {
			ph := &d.phases[c.opens-1]
			if inRect {
				str("    end\n")
			}
			fill := phaseFill[nPhase%2]
			if ph.crit {
				fill = critFill
			}
			str("    rect ", fill, "\n")
			str("        Note over ", client, ",", last, ": ", mmdLines(ph.label()), "\n")
			inRect, indent = true, "        "
			nPhase++
		}
		// The start time, as in the SVG's gutter.
		req := mmdLines(fmtAt(c.at) + " · " + c.reqLabel())
		if !c.done {
			str(indent, client, "->>", to, ": ", req, "\n")
			str(indent, "Note over ", to, ": ", mmdLines(noReply), "\n")
			continue
		}
		str(indent, client, "->>+", to, ": ", req, "\n")
	}
	if inRect {
		str("    end\n")
	}
	if omitted > 0 {
		str("    Note over ", client, ",", last, ": ", mmdLines("… "+strconv.Itoa(omitted)+" more calls not shown (Mermaid size limit); see the SVG or PlantUML diagram"), "\n")
	}
	str("    Note over ", client, ",", last, ": ", mmdLines(d.note), "\n")
}

// mmdLineMax is the length, in runes, past which labels are broken into
// lines (at spaces only).
const mmdLineMax = 60

// mmdLines escapes s and breaks it into lines with <br>. Mermaid's own
// wrapping is not used: it cuts long words in the middle of entity codes.
func mmdLines(s string) string {
	var lines []string
	line, n := "", 0
	for _, word := range strings.Split(s, " ") {
		wn := utf8.RuneCountInString(word)
		if n > 0 && n+1+wn > mmdLineMax {
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
	lines = append(lines, line)
	for i := range lines {
		lines[i] = mmdEsc(lines[i])
	}
	return strings.Join(lines, "<br>")
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
