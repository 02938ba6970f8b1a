package render

import (
	"fmt"
	"io"
	"strconv"
	"strings"

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
	w.str(pumlHeader)
	w.str("title <b>", pumlEsc(d.title), "</b>\\n<size:11><color:#546E7A>", pumlEsc(d.subtitle), "</color></size>\n\n")

	w.str("participant \"", pumlEsc(d.parts[pClient].name), "\" as ", d.parts[pClient].alias, " #CFD8DC\n")
	w.str("box \"", pumlEsc(d.boxTitle), "\" #F5F7FA\n")
	for _, p := range d.parts[1:] {
		w.str("  participant \"", pumlEsc(p.name), "\" as ", p.alias, "\n")
	}
	w.str("end box\n")

	client := d.parts[pClient].alias
	rs := rows(d.calls)
	away := apart(rs, len(d.calls))
	for _, r := range rs {
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
			w.str(client, " -> ", to, " : <color:#90A4AE><size:11>", pumlEsc(fmtAt(c.at)), "</size></color>  ", pumlEsc(c.reqLabel()), "\n")
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
	w.str("\nnote over ", client, ", ", d.parts[len(d.parts)-1].alias, color, " : ", pumlEsc(d.note), "\n")
	w.str("@enduml\n")
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
