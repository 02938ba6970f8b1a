package render

import (
	"bytes"
	"encoding/xml"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/criseq/criseq/capture"
	"github.com/criseq/criseq/decode"
	"github.com/criseq/criseq/flow"
)

// captureFlows decodes and groups one of the captures in ../testdata.
func captureFlows(t testing.TB, name string) []*flow.Flow {
	t.Helper()
	src, err := capture.OpenFile(filepath.Join("..", "testdata", name, "capture.pcapng"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	calls, _, err := decode.DecodeAll(src, decode.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return flow.Group(calls, flow.Options{})
}

var graphCaptures = []string{"kubelet-pull", "kubelet-warm", "kubelet-init", "kubelet-missing", "crictl-lifecycle"}

// gvDoc is the part of Graphviz's SVG the tests read: groups with a class
// ("node", "edge"), a title (the node's DOT name, or "a->b") and texts.
type gvDoc struct {
	Groups []gvGroup `xml:"g>g"`
}

type gvGroup struct {
	Class string   `xml:"class,attr"`
	Title string   `xml:"title"`
	Texts []string `xml:"text"`
	Inner []string `xml:"g>a>text"` // edge labels with a tooltip are inside a link
}

func (g gvGroup) text() string {
	return strings.Join(append(append([]string{}, g.Texts...), g.Inner...), "\n")
}

// TestGraphSVG: the SVG is well-formed XML with a node for each link end and
// an edge for each link, labelled with the value's short form.
func TestGraphSVG(t *testing.T) {
	for _, name := range graphCaptures {
		for _, f := range captureFlows(t, name) {
			t.Run(name+"/"+f.Kind.String(), func(t *testing.T) {
				out := render(t, "graph", f)
				dec := xml.NewDecoder(bytes.NewReader(out))
				for {
					if _, err := dec.Token(); err == io.EOF {
						break
					} else if err != nil {
						t.Fatalf("SVG is not well-formed: %v", err)
					}
				}
				var doc gvDoc
				if err := xml.Unmarshal(out, &doc); err != nil {
					t.Fatal(err)
				}
				nodes, edges := map[string]string{}, map[string]string{}
				for _, g := range doc.Groups {
					switch g.Class {
					case "node":
						nodes[g.Title] = g.text()
					case "edge":
						edges[g.Title] += g.text() + "\n"
					}
				}
				ig, err := newIDGraph(f)
				if err != nil {
					t.Fatal(err)
				}
				links := flow.Links(f)
				if f.Kind == flow.Start && len(links) == 0 {
					t.Error("a start flow without links")
				}
				for _, l := range links {
					a, b := ig.nodeOf[l.From], ig.nodeOf[l.To]
					if a == nil || b == nil {
						t.Errorf("link %+v: an end has no node", l)
						continue
					}
					for _, n := range []*graphNode{a, b} {
						if txt, ok := nodes[n.id]; !ok {
							t.Errorf("no node %s (%s)", n.id, n.method)
						} else if !strings.Contains(txt, n.method) {
							t.Errorf("node %s reads %q, want %s", n.id, txt, n.method)
						}
					}
					if a == b {
						continue
					}
					txt, ok := edges[a.id+"->"+b.id]
					if !ok {
						t.Errorf("no edge %s->%s for %s link %s", a.id, b.id, l.Kind, l.Value)
						continue
					}
					if !strings.Contains(txt, l.Kind) {
						t.Errorf("edge %s->%s reads %q, want kind %s", a.id, b.id, txt, l.Kind)
					}
					if short := flow.Short(l.Value); !strings.Contains(txt, short) && !strings.Contains(txt, cut(short, 60)) {
						t.Errorf("edge %s->%s reads %q, want %s", a.id, b.id, txt, short)
					}
				}
				if !strings.Contains(string(out), "containerd") {
					t.Error("the graph does not name the runtime")
				}
			})
		}
	}
}

// TestGraphKubeletPull checks the article's story on the real capture.
func TestGraphKubeletPull(t *testing.T) {
	f := captureFlows(t, "kubelet-pull")[0]
	out := string(render(t, "graph", f))
	for _, want := range []string{
		"RunPodSandbox", "default/hello&#45;criseq&#45;lab · 217ms", "PullImage", "CreateContainer", "StartContainer",
		"4a5feb5bbc09…", "sha256:f7ca4d3f94b8…", "a0350b2e21aa…", "PodSandboxStatus ×2",
		"default/hello&#45;criseq&#45;lab — pod start", "kubelet → containerd 1.6.20",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("graph lacks %q", want)
		}
	}
}

// TestGraphFailed: a failed call is a node with a red border, linked or not.
func TestGraphFailed(t *testing.T) {
	for _, f := range []*flow.Flow{failedPullFlow(), hostileFlow()} {
		g, err := graphDOT(f)
		if err != nil {
			t.Fatal(err)
		}
		out := string(render(t, "graph", f))
		for _, s := range f.Steps {
			if s.Err == "" {
				continue
			}
			if !strings.Contains(g, failedColor) {
				t.Errorf("no red border for the failed %s", s.Method)
			}
			if !strings.Contains(out, "failed: ") {
				t.Errorf("SVG does not say %s failed", s.Method)
			}
		}
	}
}

func TestGraphPNG(t *testing.T) {
	for _, name := range graphCaptures {
		for _, f := range captureFlows(t, name) {
			out := render(t, "graph-png", f)
			img, err := png.Decode(bytes.NewReader(out))
			if err != nil {
				t.Fatalf("%s %s: %v", name, f.Kind, err)
			}
			if b := img.Bounds(); b.Dx() < 100 || b.Dy() < 50 {
				t.Errorf("%s %s: image is %v", name, f.Kind, b)
			}
		}
	}
}

// TestGraphDeterministic: the same flow gives the same bytes, in both formats.
func TestGraphDeterministic(t *testing.T) {
	for _, name := range graphCaptures {
		for _, f := range captureFlows(t, name) {
			for _, format := range []string{"graph", "graph-png"} {
				if a, b := render(t, format, f), render(t, format, f); !bytes.Equal(a, b) {
					t.Errorf("%s %s %s: two renderings differ", name, f.Kind, format)
				}
			}
		}
	}
}

// TestGraphHostile: quotes, backslashes and DOT escapes in labels stay text.
func TestGraphHostile(t *testing.T) {
	f := hostileFlow()
	f.Steps[0].Arg = `a"b\nc\\d \G \N <x>&`
	out := render(t, "graph", f)
	if err := xml.Unmarshal(out, new(gvDoc)); err != nil {
		t.Fatalf("SVG is not well-formed: %v", err)
	}
}

// TestGraphFileNames: the graph's files do not collide with the diagram's.
func TestGraphFileNames(t *testing.T) {
	f := startFlow()
	for format, want := range map[string]string{
		"graph": "default_nginx_start.graph.svg", "graph-png": "default_nginx_start.graph.png",
	} {
		if got := "default_nginx_start" + Ext(format); got != want {
			t.Errorf("Ext(%s): %s, want %s", format, got, want)
		}
		if got := FileName(f, format); got != want {
			t.Errorf("FileName(%s): %s, want %s", format, got, want)
		}
	}
}

// TestGraphSamples writes the graphs of the captures to $RENDER_OUT, with
// the time each took.
func TestGraphSamples(t *testing.T) {
	dir := os.Getenv("RENDER_OUT")
	if dir == "" {
		t.Skip("RENDER_OUT not set")
	}
	for _, name := range graphCaptures {
		for _, f := range captureFlows(t, name) {
			for _, format := range []string{"graph", "graph-png"} {
				t0 := time.Now()
				out := render(t, format, f)
				t.Logf("%s %s %s: %v, %d bytes", name, f.Kind, format, time.Since(t0), len(out))
				if err := os.WriteFile(filepath.Join(dir, name+"_"+f.Kind.String()+Ext(format)), out, 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
}

// TestGraphMemoryFlat: drawing graphs does not grow memory. go-graphviz's
// bindings copied each graph's DOT text and drawing into the WebAssembly
// module's memory and never freed them; that memory, a Go slice here,
// never shrinks, so drawing a capture's 3,716 graphs took 132 MB. (The
// PNG graph still leaks, in go-graphviz's Go PNG renderer: see
// third_party/go-graphviz/README.md.)
func TestGraphMemoryFlat(t *testing.T) {
	f := captureFlows(t, "kubelet-pull")[0]
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	draw := func(n int) {
		for range n {
			if err := WriteWith(io.Discard, "graph", f, Options{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	draw(20) // the module loaded and its memory at its working size
	before := heap()
	const n = 300
	draw(n)
	after := heap()
	t.Logf("heap %d KB before %d more graphs, %d KB after", before>>10, n, after>>10)
	if after > before+1<<20 {
		t.Errorf("heap grew by %d KB over %d graphs: memory is leaked", (after-before)>>10, n)
	}
}
