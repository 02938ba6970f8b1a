package render

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/criseq/criseq/flow"
)

// PlantUML writes f as a PlantUML sequence diagram (one @startuml…@enduml).
// Labels are escaped so that no argument, result or error can end the
// diagram, start markup or call the preprocessor.
func PlantUML(w io.Writer, f *flow.Flow) error {
	d, err := newDiagram(f)
	if err != nil {
		return fmt.Errorf("render puml: %w", err)
	}
	bw := newWriter(w)
	writePlantUML(bw, d)
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("render puml: %w", err)
	}
	return nil
}

// pumlHeader is the fixed look: the palette of the SVG renderer.
const pumlHeader = `@startuml
skinparam shadowing false
skinparam defaultFontSize 13
skinparam maxMessageSize 420
skinparam sequenceMessageAlign center
skinparam roundCorner 8
skinparam ArrowColor #37474F
skinparam SequenceLifeLineBorderColor #90A4AE
skinparam ParticipantBorderColor #78909C
skinparam ParticipantBackgroundColor #FFFFFF
skinparam SequenceBoxBorderColor #B0BEC5
skinparam SequenceBoxBackgroundColor #F5F7FA
skinparam SequenceDividerBorderColor #B0BEC5
skinparam SequenceDividerBackgroundColor #ECEFF1
skinparam NoteBorderColor #D4C06A
skinparam NoteBackgroundColor #FFFDE7
`

func writePlantUML(w errWriter, d *diagram) {
	rs := d.rows(d.calls)
	away := apart(rs, len(d.calls))
	breaks := pumlBreaks(d, rs, away)
	pages := len(breaks) + 1
	page := func(n int) string {
		if pages == 1 {
			return ""
		}
		return " (" + strconv.Itoa(n) + "/" + strconv.Itoa(pages) + ")"
	}
	w.str(pumlHeader)
	w.str("title <b>", pumlEsc(d.title+page(1)), "</b>\\n<size:11><color:#546E7A>", pumlEsc(d.subtitle), "</color></size>\n\n")

	w.str("participant \"", pumlEsc(d.parts[pClient].name), "\" as ", d.parts[pClient].alias, " #CFD8DC\n")
	w.str("box \"", pumlEsc(d.boxTitle), "\" #F5F7FA\n")
	for _, p := range d.parts[1:] {
		w.str("  participant \"", pumlEsc(p.name), "\" as ", p.alias, "\n")
	}
	w.str("end box\n")

	client := d.parts[pClient].alias
	for k, r := range rs {
		if len(breaks) > 0 && breaks[0] == k {
			// Bars still open go on over the page break.
			w.str("\nnewpage ", pumlEsc(d.title+page(pages-len(breaks)+1)), "\n")
			breaks = breaks[1:]
		}
		if r.gap > 0 {
			// A delay: PlantUML draws the lifelines dotted, with the time.
			w.str("...", pumlEsc(strings.Trim(breakLabel(r), "… ")), "...\n")
		}
		if r.event() {
			// The runtime's event: an asynchronous arrow.
			ev := &d.events[r.ev]
			w.str(d.parts[pRuntime].alias, " -[", pumlEvent, "]>> ", client, " : <color:#90A4AE><size:11>", pumlEsc(fmtAt(ev.at)),
				"</size></color>  <color:", pumlEventText, ">", pumlEsc(ev.label), "</color>\n")
			continue
		}
		c := &d.calls[r.call]
		to := d.parts[c.to].alias
		if !r.reply {
			if c.opens > 0 {
				ph := &d.phases[c.opens-1]
				if ph.crit {
					w.str("\n== <color:#E65100>", pumlEsc(ph.label()), "</color> ==\n")
				} else {
					w.str("\n== ", pumlEsc(ph.label()), " ==\n")
				}
			}
			// The start time, as in the SVG's gutter.
			arrow, color := " -> ", ""
			switch {
			case c.amb: // dashed and grey
				arrow, color = " -[#90A4AE]-> ", "#78909C"
			case c.inf:
				arrow, color = " -[#7B1FA2]> ", "#7B1FA2"
			}
			label := pumlEsc(c.reqText())
			if color != "" {
				label = "<color:" + color + ">" + label + "</color>"
			}
			w.str(client, arrow, to, " : <color:#90A4AE><size:11>", pumlEsc(fmtAt(c.at)), "</size></color>  ", label, "\n")
			w.str("activate ", to)
			if c.crit {
				w.str(" #FFE0B2")
			}
			w.str("\n")
			if !c.done {
				// The call stays open: its activation bar runs to the end.
				w.str("hnote over ", to, " #FFF3E0 : ", pumlEsc(noReply), "\n")
			}
			continue
		}
		label := pumlEsc(c.replyLabel(away[r.call]))
		if c.failed {
			w.str(to, " -[#C62828]-> ", client, " : <color:#C62828>", label, "</color>\n")
		} else {
			w.str(to, " --> ", client, " : ", label, "\n")
		}
		w.str("deactivate ", to, "\n")
	}
	color := ""
	if !d.complete {
		color = " #FFF3E0"
	}
	// PlantUML does not wrap notes: the closing note is broken into lines.
	lines := wrapWords(d.note, pumlNoteRunes)
	for i := range lines {
		lines[i] = pumlEsc(lines[i])
	}
	w.str("\nnote over ", client, ", ", d.parts[len(d.parts)-1].alias, color, " : ", strings.Join(lines, "\\n"), "\n")
	w.str("@enduml\n")
}

// pumlNoteRunes is the length, in runes, past which the closing note is
// broken into lines (at spaces only).
const pumlNoteRunes = 100

// The colours of the runtime's events: the arrow's and its label's.
const (
	pumlEvent     = "#00897B"
	pumlEventText = "#00796B"
)

// PlantUML crops a PNG at 4,096 pixels (its PLANTUML_LIMIT_SIZE): a long
// flow goes on several pages ("newpage"), each one image, a
// "…_001.png" for the second. The page height is estimated from
// PlantUML's look at 13px: about 30px per one-line arrow, 16px per line
// more once a label wraps (maxMessageSize 420px, ~55 characters), 40px
// per phase divider; pumlPage leaves room for the title, headers, footers
// and the closing note.
const (
	pumlPage      = 3300.0
	pumlArrow     = 30.0
	pumlLine      = 16.0
	pumlLineRunes = 55
	pumlDividerH  = 40.0
)

// pumlBreaks returns the rows before which a new page starts: the first
// row, request or reply, that would not fit.
func pumlBreaks(d *diagram, rs []row, away []bool) []int {
	var out []int
	used := 0.0
	for k, r := range rs {
		var label string
		h := 0.0
		switch {
		case r.event():
			label = d.events[r.ev].label
		case r.reply:
			label = d.calls[r.call].replyLabel(away[r.call])
		default:
			c := &d.calls[r.call]
			label = c.reqText()
			if c.opens > 0 {
				h += pumlDividerH
			}
			if !c.done {
				h += pumlArrow // the no-reply note
			}
		}
		h += pumlArrow + pumlLine*float64((utf8.RuneCountInString(label)-1)/pumlLineRunes)
		if r.gap > 0 {
			h += pumlDividerH // the delay
		}
		if used+h > pumlPage && used > 0 {
			out = append(out, k)
			used = 0
		}
		used += h
	}
	return out
}

// pumlEsc escapes s for any PlantUML text position (quoted names, titles,
// message labels, dividers, notes). Characters that creole, the
// preprocessor or the sequence syntax give a meaning to are written as
// <U+XXXX> code points, as is the second of two equal markup characters
// ("--", "//", "**", "__", "==", ",,": creole markup). The &#NN; form is
// avoided on purpose: PlantUML feeds it to a regex replacement, where '\'
// and '$' make it fail.
func pumlEsc(s string) string {
	var b strings.Builder
	prev := rune(-1)
	for _, r := range s {
		esc := false
		switch r {
		case '\\', '<', '>', '&', '"', '%', '$', '~', '#', ';', '!', '*', '^', '|', '`', '[', ']', '{', '}', '@':
			esc = true
		default:
			esc = r == prev && strings.ContainsRune(pumlDoubled, r)
		}
		if esc {
			b.WriteString("<U+")
			h := strings.ToUpper(strconv.FormatInt(int64(r), 16))
			b.WriteString(strings.Repeat("0", 4-min(len(h), 4)))
			b.WriteString(h)
			b.WriteString(">")
			if r == '<' || r == '&' {
				// When PlantUML wraps a long label it decodes the text
				// again: a zero-width space keeps "<U+…>", "&#…;" and
				// "<&icon>" from forming.
				b.WriteString("<U+200B>")
			}
		} else {
			b.WriteRune(r)
		}
		prev = r
	}
	return b.String()
}

// pumlDoubled are the characters that creole gives a meaning to when doubled.
const pumlDoubled = "*/-_=~\"',^|+.:"
