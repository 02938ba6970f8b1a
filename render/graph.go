package render

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/criseq/criseq/flow"
	"github.com/criseq/criseq/render/graphviz"
)

// The ID-flow graph: calls as nodes, an edge for each ID or digest one call
// returned and a later call used (flow.Links), labelled with the value. The
// graph is written as DOT here and laid out and drawn by Graphviz, compiled
// to WebAssembly and run by go-graphviz (no Graphviz install, no cgo), in
// process (render/graphviz). Its copy under third_party loads the
// WebAssembly on the first graph drawn, so the other formats and commands
// pay nothing for it.

// Graph writes f's ID-flow graph as SVG.
func Graph(w io.Writer, f *flow.Flow) error { return renderGraph(w, f, "svg") }

// GraphPNG writes f's ID-flow graph as a PNG image.
func GraphPNG(w io.Writer, f *flow.Flow) error { return renderGraph(w, f, "png") }

// DrawGraphDOT lays out and draws DOT text written by GraphDOT in format
// ("graph": SVG, "graph-png": PNG), as Graph and GraphPNG do: a caller can
// hold a flow's small DOT text instead of the flow until its turn.
func DrawGraphDOT(w io.Writer, dot []byte, format string) error {
	var gv string
	switch format {
	case "graph":
		gv = "svg"
	case "graph-png":
		gv = "png"
	default:
		return fmt.Errorf("render graph: format %q is not an ID-flow graph", format)
	}
	if err := graphviz.Render(w, dot, gv); err != nil {
		return fmt.Errorf("render graph: %w", err)
	}
	return nil
}

// GraphDOT writes f's ID-flow graph as Graphviz DOT text.
func GraphDOT(w io.Writer, f *flow.Flow) error {
	src, err := graphDOT(f)
	if err != nil {
		return err
	}
	_, err = io.WriteString(w, src)
	return err
}

func renderGraph(w io.Writer, f *flow.Flow, format string) error {
	src, err := graphDOT(f)
	if err != nil {
		return err
	}
	if err := graphviz.Render(w, []byte(src), format); err != nil {
		return fmt.Errorf("render graph: %w", err)
	}
	return nil
}

// Kind colours: sandbox blue, image green, container orange.
var linkColor = map[string]string{
	flow.LinkSandbox:   "#2b6cb0",
	flow.LinkImage:     "#2f855a",
	flow.LinkContainer: "#c05621",
}

const (
	graphFont   = "Helvetica"
	graphBold   = "Helvetica-Bold"
	failedColor = "#c53030"
)

// graphNode is a node of the graph: one step, or several status calls with
// the same method and argument folded into one.
type graphNode struct {
	id     string
	method string
	arg    string
	detail string // duration, or the error
	failed bool
	n      int    // calls folded into it
	ext    bool   // an ID from outside the flow (External), not a call
	kind   string // ext only
}

type graphEdge struct {
	from, to string
	kind     string
	value    string
}

// isStatus reports whether a method only reads state (kubelet polls these
// while a pod starts); such calls are folded and shown only when linked.
func isStatus(method string) bool { return strings.HasSuffix(method, "Status") }

// idGraph is the graph before it is written as DOT.
type idGraph struct {
	d      *diagram
	nodes  []*graphNode
	edges  []graphEdge
	nodeOf []*graphNode // step index → its node, nil when left out
}

// newIDGraph picks the nodes and edges of f's graph.
func newIDGraph(f *flow.Flow) (*idGraph, error) {
	d, err := newDiagram(f)
	if err != nil {
		return nil, err
	}
	links, ext := flow.Links(f), flow.External(f)
	end := make([]bool, len(f.Steps))
	for _, l := range links {
		end[l.From], end[l.To] = true, true
	}
	for _, l := range ext {
		end[l.To] = true
	}

	// Nodes: every call that is not a status or polling call, every failed
	// call, and status calls that are linked, folded by method and argument.
	var nodes []*graphNode
	nodeOf := make([]*graphNode, len(f.Steps))
	folds := map[string]*graphNode{}
	for i := range f.Steps {
		s := &f.Steps[i]
		failed := s.Err != ""
		status := isStatus(s.Method) || flow.IsPolling(s.Method)
		if status && !failed && !end[i] {
			continue
		}
		arg := cut(clean(s.Arg), 60)
		if status && !failed {
			key := s.Method + "\x00" + arg
			if n := folds[key]; n != nil {
				n.n++
				nodeOf[i] = n
				continue
			}
		}
		n := &graphNode{
			id:     "s" + strconv.Itoa(i),
			method: cut(clean(s.Method), maxName),
			arg:    arg,
			failed: failed,
			n:      1,
		}
		c := d.calls[i]
		switch {
		case failed:
			n.detail = cut(c.result, 60)
		case !c.done:
			n.detail = "no reply"
		case c.hasDur && !status:
			n.detail = fmtDur(c.dur)
		}
		if status && !failed {
			folds[s.Method+"\x00"+arg] = n
		}
		nodes = append(nodes, n)
		nodeOf[i] = n
	}

	var edges []graphEdge
	seen := map[graphEdge]bool{}
	addEdge := func(e graphEdge) {
		if e.from != e.to && !seen[e] {
			seen[e] = true
			edges = append(edges, e)
		}
	}
	for _, l := range links {
		if a, b := nodeOf[l.From], nodeOf[l.To]; a != nil && b != nil {
			addEdge(graphEdge{a.id, b.id, l.Kind, l.Value})
		}
	}
	extNodes := map[string]*graphNode{}
	for _, l := range ext {
		b := nodeOf[l.To]
		if b == nil {
			continue
		}
		key := l.Kind + "\x00" + l.Value
		a := extNodes[key]
		if a == nil {
			a = &graphNode{id: "x" + strconv.Itoa(len(extNodes)), ext: true, kind: l.Kind, arg: l.Value}
			extNodes[key] = a
			nodes = append(nodes, a)
		}
		addEdge(graphEdge{a.id, b.id, l.Kind, ""})
	}
	return &idGraph{d: d, nodes: nodes, edges: edges, nodeOf: nodeOf}, nil
}

// graphDOT is f's ID-flow graph in Graphviz's DOT language.
func graphDOT(f *flow.Flow) (string, error) {
	g, err := newIDGraph(f)
	if err != nil {
		return "", err
	}
	d, nodes, edges := g.d, g.nodes, g.edges
	var b strings.Builder
	b.WriteString("digraph criseq {\n")
	title := dotEscape(d.title) + `\n` + dotEscape(d.subtitle)
	fmt.Fprintf(&b, "\tgraph [rankdir=LR, label=%s, labelloc=t, fontname=%q, fontsize=14, nodesep=0.35, ranksep=0.7, pad=0.25, bgcolor=white];\n",
		dotQuote(title), graphBold)
	fmt.Fprintf(&b, "\tnode [shape=box, style=rounded, color=\"#4a5568\", penwidth=1.2, fontname=%q, fontsize=11, margin=\"0.18,0.08\"];\n", graphFont)
	fmt.Fprintf(&b, "\tedge [fontname=%q, fontsize=9, arrowsize=0.7, penwidth=1.3];\n", graphFont)
	for _, n := range nodes {
		var attrs []string
		if n.ext {
			what := n.kind
			v := flow.Short(n.arg)
			if n.kind == flow.LinkImage {
				what = "image"
			}
			attrs = append(attrs, "label="+dotQuote(what+`\n`+dotEscape(cut(clean(v), 60))),
				"style=\"rounded,dashed\"", `color="#a0aec0"`,
				"fontcolor="+dotQuote(linkColor[n.kind]), "fontsize=10", "tooltip="+dotQuote(dotEscape(cut(clean(n.arg), maxLabel))))
		} else {
			head := n.method
			if n.n > 1 {
				head += " ×" + strconv.Itoa(n.n)
			}
			label := dotEscape(head)
			var sub []string
			if n.arg != "" {
				sub = append(sub, n.arg)
			}
			if n.detail != "" && !n.failed {
				sub = append(sub, n.detail)
			}
			if len(sub) > 0 {
				label += `\n` + dotEscape(strings.Join(sub, " · "))
			}
			if n.failed {
				label += `\n` + dotEscape("failed: "+n.detail)
			}
			attrs = append(attrs, "label="+dotQuote(label))
			if n.failed {
				attrs = append(attrs, "color="+dotQuote(failedColor), "penwidth=2.5", "fontcolor="+dotQuote(failedColor))
			} else if n.n > 1 || isStatus(n.method) {
				attrs = append(attrs, `color="#a0aec0"`, `fontcolor="#4a5568"`, "fontsize=10")
			}
		}
		fmt.Fprintf(&b, "\t%s [%s];\n", n.id, strings.Join(attrs, ", "))
	}
	for _, e := range edges {
		color := dotQuote(linkColor[e.kind])
		attrs := []string{"color=" + color, "fontcolor=" + color}
		if e.value != "" {
			label := e.kind + `\n` + dotEscape(cut(clean(flow.Short(e.value)), 60))
			attrs = append(attrs, "label="+dotQuote(label), "tooltip="+dotQuote(dotEscape(cut(clean(e.value), maxLabel))))
		} else {
			attrs = append(attrs, "style=dashed")
		}
		fmt.Fprintf(&b, "\t%s -> %s [%s];\n", e.from, e.to, strings.Join(attrs, ", "))
	}
	b.WriteString("}\n")
	return b.String(), nil
}

// dotEscaper escapes backslashes and quotes: built once, as building it
// costs more than using it.
var dotEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`)

// dotEscape escapes text for a DOT string whose "\n" sequences are already
// written: backslashes and quotes.
func dotEscape(s string) string { return dotEscaper.Replace(s) }

// dotQuote quotes an already escaped DOT string.
func dotQuote(s string) string { return `"` + s + `"` }
