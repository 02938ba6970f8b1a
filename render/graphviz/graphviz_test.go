package graphviz

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/criseq/criseq/third_party/go-graphviz"
)

// podDOT is a graph the size of a pod's ID-flow graph: calls and the IDs
// they pass on.
func podDOT() []byte {
	var b strings.Builder
	b.WriteString("digraph pod {\n  rankdir=LR;\n  node [shape=box, fontname=\"Helvetica\"];\n")
	for i := range 24 {
		fmt.Fprintf(&b, "  c%d [label=\"CreateContainer %d\\n%064x\"];\n", i, i, i)
		fmt.Fprintf(&b, "  id%d [shape=ellipse, style=filled, fillcolor=\"#e8f0fe\", label=\"%012x\"];\n", i, i)
		fmt.Fprintf(&b, "  c%d -> id%d [label=\"returns\"];\n", i, i)
		if i > 0 {
			fmt.Fprintf(&b, "  id%d -> c%d [style=dashed];\n", i-1, i)
		}
	}
	b.WriteString("}\n")
	return []byte(b.String())
}

// TestReloadBoundsMemory draws PNG graphs, which leak inside the module,
// until the module has been started again twice: its memory must stay
// bounded, and the pictures drawn after each new start must be the same
// bytes as the first.
func TestReloadBoundsMemory(t *testing.T) {
	defer func(g uint64) { reloadGrowth = g }(reloadGrowth)
	reloadGrowth = 2 << 20
	dot := podDOT()
	draw := func(format string) []byte {
		t.Helper()
		var buf bytes.Buffer
		if err := Render(&buf, dot, format); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	firstPNG, firstSVG := draw("png"), draw("svg")
	if !bytes.HasPrefix(firstPNG, []byte("\x89PNG")) || !bytes.Contains(firstSVG, []byte("<svg")) {
		t.Fatalf("not a PNG and an SVG: %q, %q", firstPNG[:min(8, len(firstPNG))], firstSVG[:min(40, len(firstSVG))])
	}
	start := reloads
	var peak uint64
	for i := 0; reloads < start+2; i++ {
		if i == 400 {
			t.Fatalf("no new start of the module after %d PNG graphs (memory %d, started at %d): does drawing a PNG still leak? then bound() is not called", i, memorySize(), gvBase)
		}
		if got := draw("png"); !bytes.Equal(got, firstPNG) {
			t.Fatalf("PNG %d (after %d new starts) differs from the first", i, reloads-start)
		}
		peak = max(peak, memorySize())
	}
	if got := draw("svg"); !bytes.Equal(got, firstSVG) {
		t.Fatal("SVG after new starts differs from the first")
	}
	// One graph's working memory past the bound, at most.
	if limit := gvBase + reloadGrowth + 4<<20; peak > limit {
		t.Errorf("module memory peaked at %d, above %d", peak, limit)
	}
	t.Logf("%d new starts; module memory peaked at %.1f MiB, %.1f MiB at its start", reloads-start, float64(peak)/(1<<20), float64(gvBase)/(1<<20))
}

func memorySize() uint64 {
	gvMu.Lock()
	defer gvMu.Unlock()
	return graphviz.MemorySize()
}

// TestFontFacesKept draws the same PNG graph twice: the second must make
// no font face, since each face allocates its own glyph cache.
func TestFontFacesKept(t *testing.T) {
	dot := podDOT()
	var first, second bytes.Buffer
	if err := Render(&first, dot, "png"); err != nil {
		t.Fatal(err)
	}
	gvMu.Lock()
	made := len(goFaces)
	gvMu.Unlock()
	if made == 0 {
		t.Fatal("no font face kept after drawing a PNG with text")
	}
	if err := Render(&second, dot, "png"); err != nil {
		t.Fatal(err)
	}
	gvMu.Lock()
	again := len(goFaces)
	gvMu.Unlock()
	if again != made {
		t.Errorf("drawing the graph again made %d more font faces", again-made)
	}
	if !bytes.Equal(first.Bytes(), second.Bytes()) {
		t.Error("the second PNG, drawn with kept faces, differs from the first")
	}
}
