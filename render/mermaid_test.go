package render

import (
	"fmt"
	"regexp"
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
	`|(    )+Note over (Client|RS|IS|S\d+)(,(Client|RS|IS|S\d+))?: (?P<t5>.+)` +
	`|(    )+Client->>\+?(RS|IS|S\d+): (?P<t6>.+)` +
	`|(    )+(RS|IS|S\d+)(-->>-|--x-)Client: (?P<t7>.+)` +
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
		if open < 0 || open > 1 {
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
	if n := len(mermaidBytes(d, d.calls, 0)); n < MermaidLimit {
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

func TestMermaidTruncate(t *testing.T) {
	// 3000 different calls: nothing folds, the tail is cut.
	f := startFlow()
	for i := 0; i < 3000; i++ {
		f.Steps = append(f.Steps, flow.Step{Service: "RuntimeService", Method: "ContainerStatus", Arg: fmt.Sprintf("web-%d", i),
			Result: "CONTAINER_RUNNING", Phase: "status", Start: t0.Add(2*time.Second + time.Duration(i)*time.Millisecond),
			Duration: time.Millisecond, Done: true})
	}
	out := string(render(t, "mmd", f))
	if len(out) >= MermaidLimit {
		t.Fatalf("output is %d bytes", len(out))
	}
	if len(out) < MermaidLimit-500 {
		t.Errorf("output is %d bytes: the cut left room for more calls", len(out))
	}
	texts := mmdTexts(t, out)
	all := strings.Join(texts, "\n")
	m := regexp.MustCompile(`… (\d+) more calls not shown \(Mermaid size limit\)`).FindStringSubmatch(all)
	if m == nil {
		t.Fatal("no truncation note")
	}
	shown := strings.Count(all, "ContainerStatus(web-")
	if n, _ := strconv.Atoi(m[1]); n+shown != 3000 {
		t.Errorf("%d shown + %d not shown != 3000", shown, n)
	}
	if last := texts[len(texts)-1]; !strings.HasPrefix(last, "pod started in") {
		t.Errorf("last text %q, want the total", last)
	}
}

func TestMermaidFitSmallLimit(t *testing.T) {
	// A limit smaller than the header alone still gives a valid diagram.
	d, _ := newDiagram(startFlow())
	out := string(mermaidFit(d, 100))
	mmdTexts(t, out)
	if !strings.Contains(out, "6 more calls not shown") {
		t.Errorf("no note for the 6 calls left out:\n%s", out)
	}
}
