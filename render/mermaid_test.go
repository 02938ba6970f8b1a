package render

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/criseq/criseq/flow"
)

// mmdStatement matches every line Mermaid output may have; the text after
// the first ": " (or after "title ", "as ", the box colour) is free text.
var mmdStatement = regexp.MustCompile(`^(` +
	`sequenceDiagram` +
	`|    title (?P<t1>.+)` +
	`|    participant Client as (?P<t2>.+)` +
	`|    box rgb\(245, 247, 250\) (?P<t3>.+)` +
	`|        participant (RS|IS|S\d+) as (?P<t4>.+)` +
	`|    end` +
	`|    rect rgba\([0-9,.]+\)` +
	`|(    )+rect rgb\(243, 229, 245\)` + // an inferred call
	`|(    )+end` +
	`|(    )+Note over (Client|RS|IS|S\d+)(,(Client|RS|IS|S\d+))?: (?P<t5>.+)` +
	`|(    )+Client-?->>\+?(RS|IS|S\d+): (?P<t6>.+)` +
	`|(    )+RS-\)Client: (?P<t8>.+)` + // the runtime's event

	`|(    )+(RS|IS|S\d+)(-->>-?|--x-?)Client: (?P<t7>.+)` +
	`)$`)

// mmdDecode undoes mmdEsc the way Mermaid does: "#59;" → ";", "#lt;" → "<".
var mmdEntity = regexp.MustCompile(`#(\d+|lt|gt|amp|quot);`)

func mmdDecode(s string) string {
	return mmdEntity.ReplaceAllStringFunc(s, func(e string) string {
		switch name := e[1 : len(e)-1]; name {
		case "lt":
			return "<"
		case "gt":
			return ">"
		case "amp":
			return "&"
		case "quot":
			return `"`
		default:
			n, _ := strconv.Atoi(name)
			return string(rune(n))
		}
	})
}

// mmdTexts checks that every line of out is a known statement and returns
// the free texts, decoded.
func mmdTexts(t *testing.T, out string) []string {
	t.Helper()
	var texts []string
	for i, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		m := mmdStatement.FindStringSubmatch(line)
		if m == nil {
			t.Errorf("line %d is no known statement: %q", i+1, line)
			continue
		}
		for j, name := range mmdStatement.SubexpNames() {
			if !strings.HasPrefix(name, "t") || m[j] == "" {
				continue
			}
			raw := strings.ReplaceAll(m[j], "<br>", "\n") // the line breaks of mmdLines
			// What Mermaid's lexer stops at, or treats as a comment,
			// directive, HTML or option, must not appear raw.
			if strings.ContainsAny(mmdEntity.ReplaceAllString(raw, ""), ";#%<>&\"{}\\`") {
				t.Errorf("line %d: unescaped character in %q", i+1, raw)
			}
			if strings.Contains(raw, "style") || strings.Contains(raw, "classDef") ||
				strings.HasPrefix(raw, "wrap:") || strings.HasPrefix(raw, "nowrap:") {
				t.Errorf("line %d: keyword left in %q", i+1, raw)
			}
			texts = append(texts, strings.ReplaceAll(mmdDecode(raw), "\n", " "))
		}
	}
	// rect … end blocks and box … end are balanced.
	open := 0
	for _, line := range strings.Split(out, "\n") {
		switch strings.TrimSpace(strings.SplitN(strings.TrimSpace(line), " ", 2)[0]) {
		case "rect", "box":
			open++
		case "end":
			open--
		}
		if open < 0 || open > 2 { // a phase's rect may hold an inferred call's
			t.Fatalf("unbalanced rect/box … end at %q", line)
		}
	}
	if open != 0 {
		t.Errorf("%d rect/box left open", open)
	}
	return texts
}

func TestMermaidSyntax(t *testing.T) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := string(render(t, "mmd", c.flow()))
			texts := mmdTexts(t, out)
			if len(texts) == 0 {
				t.Fatal("no texts")
			}
		})
	}
}

// TestMermaidHostile checks that hostile text comes back whole once decoded.
func TestMermaidHostile(t *testing.T) {
	out := string(render(t, "mmd", hostileFlow()))
	texts := strings.Join(mmdTexts(t, out), "\n")
	want := clean(hostile)
	if !strings.Contains(texts, "RunPodSandbox("+want+")") {
		t.Errorf("hostile request not shown whole; texts:\n%s", texts)
	}
	if !strings.Contains(texts, "✗ "+want+" · 1ms") {
		t.Error("hostile error not shown whole")
	}
	if !strings.Contains(texts, "(wrap:"+want) || !strings.Contains(texts, "nowrap:x · 1ms") {
		t.Error("wrap: prefix not kept as text")
	}
	if strings.Contains(out, "@enduml\n") || strings.Count(out, "\n    end\n") != 1+3 {
		t.Errorf("hostile text changed the structure:\n%s", out)
	}
}

func TestMermaidFold(t *testing.T) {
	// 3000 identical status calls: folded into one.
	f := startFlow()
	for i := 0; i < 3000; i++ {
		f.Steps = append(f.Steps, flow.Step{Service: "RuntimeService", Method: "ContainerStatus", Arg: "web",
			Result: "CONTAINER_RUNNING", Phase: "status", Start: t0.Add(2*time.Second + time.Duration(i)*time.Millisecond),
			Duration: time.Millisecond, Done: true})
	}
	d, _ := newDiagram(f)
	if n := len(mermaidPage(d, d.calls, rows(d.calls, d.events), 0, 2*len(d.calls), 1, 1)); n < MermaidLimit {
		t.Fatalf("unfolded output is only %d bytes; the test needs more", n)
	}
	out := string(render(t, "mmd", f))
	if len(out) >= MermaidLimit {
		t.Fatalf("output is %d bytes", len(out))
	}
	texts := strings.Join(mmdTexts(t, out), "\n")
	for _, want := range []string{"ContainerStatus(web) ×3000", "CONTAINER_RUNNING · ×3000, 3.00s total", "RunPodSandbox(default/nginx)", "pod started in"} {
		if !strings.Contains(texts, want) {
			t.Errorf("folded output lacks %q", want)
		}
	}
	if strings.Contains(texts, "not shown") {
		t.Error("folded output was truncated too")
	}
}

func TestMermaidSplit(t *testing.T) {
	// 3000 different calls: nothing folds, the flow is split in parts.
	f := startFlow()
	for i := 0; i < 3000; i++ {
		f.Steps = append(f.Steps, flow.Step{Service: "RuntimeService", Method: "ContainerStatus", Arg: fmt.Sprintf("web-%d", i),
			Result: "CONTAINER_RUNNING", Phase: "status", Start: t0.Add(2*time.Second + time.Duration(i)*time.Millisecond),
			Duration: time.Millisecond, Done: true})
	}
	parts, err := MermaidParts(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(parts) < 2 {
		t.Fatalf("%d part", len(parts))
	}
	var all []string
	for k, p := range parts {
		out := string(p)
		if len(out) >= MermaidLimit {
			t.Errorf("part %d is %d bytes", k+1, len(out))
		}
		if k+1 < len(parts) && len(out) < MermaidLimit*3/4 {
			t.Errorf("part %d is %d bytes: the split left room for more calls", k+1, len(out))
		}
		texts := mmdTexts(t, out)
		title := fmt.Sprintf("default/nginx — pod start (%d/%d)", k+1, len(parts))
		if !strings.Contains(out, "title "+title+"\n") {
			t.Errorf("part %d lacks the title %q", k+1, title)
		}
		last := texts[len(texts)-1]
		if k+1 < len(parts) {
			if want := fmt.Sprintf("continued in part %d of %d", k+2, len(parts)); last != want {
				t.Errorf("part %d ends with %q, want %q", k+1, last, want)
			}
		} else if !strings.HasPrefix(last, "pod started in") {
			t.Errorf("last text %q, want the total", last)
		}
		if k > 0 && !strings.Contains(out, "Note over Client,IS: status (continued)") {
			t.Errorf("part %d does not say which phase it continues", k+1)
		}
		all = append(all, texts...)
	}
	joined := strings.Join(all, "\n")
	for i := 0; i < 3000; i++ {
		if n := strings.Count(joined, fmt.Sprintf("ContainerStatus(web-%d)\n", i)); n != 1 {
			t.Fatalf("ContainerStatus(web-%d) drawn %d times", i, n)
		}
	}
	if ext := PartExt("mmd", 2); ext != "_3.mmd" {
		t.Errorf("PartExt(mmd, 2) = %q", ext)
	}
}

func TestMermaidFitSmallLimit(t *testing.T) {
	// A limit smaller than the header alone still gives valid diagrams,
	// one call each (a reply is not parted from the request right before
	// it), that together draw every call.
	d, _ := newDiagram(stopFlow())
	parts := mermaidFit(d, 100)
	if len(parts) != len(d.calls) {
		t.Errorf("%d parts, want one per call (%d)", len(parts), len(d.calls))
	}
	var all []string
	for _, p := range parts {
		all = append(all, mmdTexts(t, string(p))...)
	}
	for _, c := range d.calls {
		if !slices.ContainsFunc(all, func(s string) bool { return strings.HasSuffix(s, " · "+c.reqLabel()) }) {
			t.Errorf("%s not drawn", c.reqLabel())
		}
	}
}

// splitFlow is too long for one Mermaid diagram even folded, with calls
// that stay open across many others, so that parts begin and end inside
// open calls.
func splitFlow() *flow.Flow {
	f := startFlow()
	for i := 0; i < 900; i++ {
		s := flow.Step{Service: "RuntimeService", Method: "ContainerStatus", Arg: fmt.Sprintf("web-%d", i),
			Result: "CONTAINER_RUNNING", Phase: []string{"status", "start web"}[i/300%2],
			Start: t0.Add(2*time.Second + time.Duration(i)*time.Millisecond), Duration: 500 * time.Microsecond, Done: true}
		if i%10 == 0 {
			s.Method, s.Duration = "StartContainer", 15*time.Millisecond
		}
		if i%97 == 0 {
			s.Err = "DeadlineExceeded: context deadline exceeded"
		}
		f.Steps = append(f.Steps, s)
	}
	return f
}
