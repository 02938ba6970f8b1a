package render

import (
	"bytes"
	"encoding/xml"
	"io"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode"

	"github.com/criseq/criseq/flow"
)

// The three texts a user may publish must tell the same story: the same
// phases, arrows and labels in the same order, start times included. Each
// is read back from the output a user gets, not from render's internals.

// pumlStory reads the phases, arrows and notes of a PlantUML diagram:
// "phase …", "req PARTICIPANT +TIME label" (or "reqamb" for an ambiguous
// call's dashed grey arrow, "reqinf" for an inferred call's purple one),
// "ret PARTICIPANT label", "event PARTICIPANT +TIME label" (the runtime's
// events), "break TEXT" (a delay), "noreply PARTICIPANT text", "note text"
// (the closing note).
func pumlStory(t *testing.T, src string) []string {
	t.Helper()
	var out []string
	for _, line := range strings.Split(src, "\n") {
		if m := pumlDivider.FindStringSubmatch(line); m != nil {
			out = append(out, "phase "+pumlText(m[1]))
		} else if m := pumlReq.FindStringSubmatch(line); m != nil {
			kind := map[string]string{"": "req", "[#90A4AE]-": "reqamb", "[#7B1FA2]": "reqinf"}[m[1]]
			label := m[4]
			if c := map[string]string{"reqamb": "#78909C", "reqinf": "#7B1FA2"}[kind]; c != "" {
				var ok bool
				if label, ok = strings.CutPrefix(label, "<color:"+c+">"); !ok || !strings.HasSuffix(label, "</color>") {
					t.Errorf("PlantUML: %s arrow without its colour: %s", kind, line)
				}
				label = strings.TrimSuffix(label, "</color>")
			}
			out = append(out, kind+" "+m[2]+" "+pumlText(m[3])+" "+pumlText(label))
		} else if m := pumlEventLine.FindStringSubmatch(line); m != nil {
			out = append(out, "event "+m[1]+" "+pumlText(m[2])+" "+pumlText(m[3]))
		} else if m := pumlDelay.FindStringSubmatch(line); m != nil {
			out = append(out, "break "+breakText(pumlText(m[1])))
		} else if m := pumlRet.FindStringSubmatch(line); m != nil {
			out = append(out, "ret "+m[1]+" "+pumlText(m[2]))
		} else if m := pumlNote.FindStringSubmatch(line); m != nil {
			out = append(out, "note "+pumlText(strings.ReplaceAll(m[1], `\n`, " ")))
		} else if m := pumlNoReply.FindStringSubmatch(line); m != nil {
			out = append(out, "noreply "+m[1]+" "+pumlText(m[2]))
		}
	}
	return out
}

var (
	pumlDivider   = regexp.MustCompile(`^== (?:<color:#E65100>)?(.*?)(?:</color>)? ==$`)
	pumlReq       = regexp.MustCompile(`^Client -(|\[#90A4AE\]-|\[#7B1FA2\])> (\w+) : <color:#90A4AE><size:11>(.*?)</size></color>  (.*)$`)
	pumlEventLine = regexp.MustCompile(`^(\w+) -\[#00897B\]>> Client : <color:#90A4AE><size:11>(.*?)</size></color>  <color:#00796B>(.*)</color>$`)
	pumlDelay     = regexp.MustCompile(`^\.\.\.(.*)\.\.\.$`)
	pumlRet       = regexp.MustCompile(`^(\w+) -(?:\[#C62828\])?-> Client : (?:<color:#C62828>)?(.*?)(?:</color>)?$`)
	pumlNote      = regexp.MustCompile(`^note over Client, \w+(?: #FFF3E0)? : (.*)$`)
	pumlNoReply   = regexp.MustCompile(`^hnote over (\w+) #FFF3E0 : (.*)$`)
)

// pumlText undoes pumlEsc.
func pumlText(s string) string {
	s = pumlCodePoint.ReplaceAllStringFunc(s, func(m string) string {
		n, _ := strconv.ParseInt(m[3:len(m)-1], 16, 32)
		return string(rune(n))
	})
	return norm(strings.ReplaceAll(s, "\u200b", ""))
}

func mmdStory(t *testing.T, src string) []string {
	t.Helper()
	var out []string
	inferred := false // in the tinted band of an inferred call
	for _, line := range strings.Split(src, "\n") {
		line = strings.TrimSpace(line)
		if m := mmdPhase.FindStringSubmatch(line); m != nil {
			switch {
			case strings.HasPrefix(m[1], "pod "):
				out = append(out, "note "+mmdText(m[1]))
			case strings.HasPrefix(m[1], "… "):
				out = append(out, "break "+breakText(mmdText(m[1])))
			default:
				out = append(out, "phase "+mmdText(m[1]))
			}
		} else if m := mmdNoReply.FindStringSubmatch(line); m != nil {
			out = append(out, "noreply "+m[1]+" "+mmdText(m[2]))
		} else if line == "rect "+inferredFill {
			inferred = true
		} else if line == "end" {
			inferred = false
		} else if m := mmdReq.FindStringSubmatch(line); m != nil {
			kind := "req"
			switch {
			case m[1] == "-->>":
				kind = "reqamb"
			case inferred:
				kind = "reqinf"
			}
			at, label, _ := strings.Cut(strings.ReplaceAll(m[3], "<br>", " "), " · ")
			out = append(out, kind+" "+m[2]+" "+mmdText(at)+" "+mmdText(label))
		} else if m := mmdEvent.FindStringSubmatch(line); m != nil {
			at, label, _ := strings.Cut(strings.ReplaceAll(m[2], "<br>", " "), " · ")
			out = append(out, "event "+m[1]+" "+mmdText(at)+" "+mmdText(label))
		} else if m := mmdRet.FindStringSubmatch(line); m != nil {
			out = append(out, "ret "+m[1]+" "+mmdText(m[2]))
		}
	}
	return out
}

var (
	mmdPhase   = regexp.MustCompile(`^Note over Client,\w+: (.*)$`)
	mmdNoReply = regexp.MustCompile(`^Note over (\w+): (.*)$`)
	mmdReq     = regexp.MustCompile(`^Client(->>|-->>)\+?(\w+): (.*)$`)
	mmdEvent   = regexp.MustCompile(`^(\w+)-\)Client: (.*)$`)
	mmdRet     = regexp.MustCompile(`^(\w+)--(?:>>|x)-Client: (.*)$`)
	mmdCode    = regexp.MustCompile(`#(\d+|lt|gt|amp|quot);`)
)

// mmdText undoes mmdEsc and mmdLines.
func mmdText(s string) string {
	s = strings.ReplaceAll(s, "<br>", " ")
	s = mmdCode.ReplaceAllStringFunc(s, func(m string) string {
		switch m {
		case "#lt;":
			return "<"
		case "#gt;":
			return ">"
		case "#amp;":
			return "&"
		case "#quot;":
			return `"`
		}
		n, _ := strconv.Atoi(m[1 : len(m)-1])
		return string(rune(n))
	})
	return norm(s)
}

// svgStory reads the same from the SVG's texts: phase chips ("pt"), request
// labels (no class) followed by their gutter time ("g"), reply labels ("r",
// "e"). A label wrapped on several lines is several <text> elements in a
// row. Participants are not named on SVG arrows; they are left out.
func svgStory(t *testing.T, src []byte) []string {
	t.Helper()
	type text struct {
		class, s string
		x, y     float64
	}
	var texts []text
	dec := xml.NewDecoder(bytes.NewReader(src))
	var cur *text
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			if tok.Name.Local == "text" {
				cur = &text{}
				for _, a := range tok.Attr {
					switch a.Name.Local {
					case "class":
						cur.class = a.Value
					case "x":
						cur.x, _ = strconv.ParseFloat(a.Value, 64)
					case "y":
						cur.y, _ = strconv.ParseFloat(a.Value, 64)
					}
				}
			}
		case xml.CharData:
			if cur != nil {
				cur.s += string(tok)
			}
		case xml.EndElement:
			if tok.Name.Local == "text" && cur != nil {
				if n := len(texts); n > 0 && texts[n-1].class == cur.class && texts[n-1].x == cur.x &&
					cur.y-texts[n-1].y == lineH {
					texts[n-1].s += " " + cur.s // the next line of a wrapped label
					texts[n-1].y = cur.y
				} else {
					texts = append(texts, *cur)
				}
				cur = nil
			}
		}
	}
	var out []string
	reqs := map[string]string{"": "req", "amt": "reqamb", "inft": "reqinf", "ev": "event"}
	for i := 0; i < len(texts); i++ {
		switch tx := texts[i]; {
		case strings.HasPrefix(tx.class, "pt"):
			out = append(out, "phase "+norm(tx.s))
		case reqs[tx.class] != "" && i+1 < len(texts) && texts[i+1].class == "g":
			out = append(out, reqs[tx.class]+" "+norm(texts[i+1].s)+" "+norm(tx.s))
			i++
		case tx.class == "bk":
			out = append(out, "break "+breakText(norm(tx.s)))
		case tx.class == "r" || tx.class == "e":
			out = append(out, "ret "+norm(tx.s))
		case tx.class == "":
			out = append(out, "note "+norm(tx.s))
		case tx.class == "nr":
			out = append(out, "noreply "+norm(tx.s))
		}
	}
	return out
}

// breakText is the time of a break marker, and the wait it names: SVG and
// Mermaid write "… 6.9s: kubelet's clean-up …", PlantUML's delay
// "...6.9s: kubelet's clean-up...".
func breakText(s string) string { return strings.Trim(s, "… ") }

// norm drops spaces, where the formats wrap lines differently.
func norm(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) {
			return -1
		}
		return r
	}, s)
}

// dropParticipants removes the participant of "req RS …", "ret RS …" and
// "noreply RS …".
func dropParticipants(story []string) []string {
	out := make([]string, len(story))
	for i, s := range story {
		kind, rest, _ := strings.Cut(s, " ")
		if kind != "phase" && kind != "note" && kind != "break" {
			_, rest, _ = strings.Cut(rest, " ")
		}
		out[i] = kind + " " + rest
	}
	return out
}

func TestFormatsTellTheSameStory(t *testing.T) {
	type named struct {
		name string
		f    *flow.Flow
	}
	var all []named
	for _, c := range cases {
		all = append(all, named{c.name, c.flow()})
	}
	matches, err := filepath.Glob(filepath.Join("..", "testdata", "*", "capture.pcapng"))
	if err != nil || len(matches) == 0 {
		t.Fatalf("no testdata captures: %v", err)
	}
	for _, m := range matches {
		for _, f := range loadCapture(t, m) {
			all = append(all, named{filepath.Base(filepath.Dir(m)) + "/" + FileName(f, ""), f})
		}
	}
	overlapping := 0
	for _, n := range all {
		puml := pumlStory(t, string(render(t, "puml", n.f)))
		mmdOut := string(render(t, "mmd", n.f))
		mmd := mmdStory(t, mmdOut)
		svg := svgStory(t, render(t, "svg", n.f))
		if len(puml) < 2*len(n.f.Steps)-countOpen(n.f) {
			t.Errorf("%s: %d PlantUML arrows and phases for %d calls", n.name, len(puml), len(n.f.Steps))
		}
		notes, noReplies := 0, 0
		for _, s := range puml {
			notes += btoi(strings.HasPrefix(s, "note "))
			noReplies += btoi(strings.HasPrefix(s, "noreply "))
		}
		if notes != 1 || noReplies != countOpen(n.f) {
			t.Errorf("%s: PlantUML has %d closing notes and %d no-reply notes, want 1 and %d", n.name, notes, noReplies, countOpen(n.f))
		}
		if !mermaidWhole(t, n.f) {
			mmd = nil // folded or split to fit: checked by the Mermaid tests
		} else if !equal(puml, mmd) {
			t.Errorf("%s: PlantUML and Mermaid differ:\n%s", n.name, firstDiff(puml, mmd))
		}
		if p := dropParticipants(puml); !equal(p, svg) {
			t.Errorf("%s: PlantUML and SVG differ:\n%s", n.name, firstDiff(p, svg))
		}
		for i, s := range puml {
			if strings.HasPrefix(s, "ret ") && (i == 0 || !strings.HasPrefix(puml[i-1], "req ")) {
				overlapping++
				break
			}
		}
	}
	if overlapping < 3 {
		t.Errorf("only %d flows have a reply apart from its request; the overlap drawing is not exercised", overlapping)
	}
}

func countOpen(f *flow.Flow) int {
	n := 0
	for _, s := range f.Steps {
		if !s.Done && s.Err == "" {
			n++
		}
	}
	return n
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func firstDiff(a, b []string) string {
	for i := 0; i < len(a) || i < len(b); i++ {
		var x, y string
		if i < len(a) {
			x = a[i]
		}
		if i < len(b) {
			y = b[i]
		}
		if x != y {
			return "item " + strconv.Itoa(i) + ":\n  " + x + "\n  " + y
		}
	}
	return ""
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// mermaidWhole reports whether f's Mermaid diagram is one part, unfolded.
func mermaidWhole(t *testing.T, f *flow.Flow) bool {
	d, err := newDiagram(f)
	if err != nil {
		t.Fatal(err)
	}
	rs := rows(d.calls, d.events)
	return len(mermaidPage(d, d.calls, rs, 0, len(rs), 1, 1)) < MermaidLimit
}
