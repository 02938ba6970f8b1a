// Package graphviz lays out and draws Graphviz DOT text as SVG or PNG with
// github.com/goccy/go-graphviz (Graphviz compiled to WebAssembly, no cgo).
//
// In: DOT text. Out: SVG or PNG bytes. go-graphviz is used from its copy
// under third_party, which compiles and instantiates its WebAssembly on the
// first graph drawn rather than at program start (see
// third_party/go-graphviz/README.md).
package graphviz

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/criseq/criseq/third_party/go-graphviz"
	"github.com/criseq/criseq/third_party/go-graphviz/gvc"
	"github.com/golang/freetype/truetype"
	"golang.org/x/image/font"
	"golang.org/x/image/font/gofont/gobold"
	"golang.org/x/image/font/gofont/goregular"
)

// Graphviz runs in one WebAssembly instance, which is not safe for
// concurrent use: renders take turns.
var (
	gvMu  sync.Mutex
	gv    *graphviz.Graphviz
	gvErr error // the module cannot be used: every render fails with it
	// gvBase is the instance's memory when it was made.
	gvBase uint64
)

// reloadGrowth is how far the instance's memory may grow past gvBase
// before a new instance replaces it. WebAssembly memory never shrinks, and
// drawing a PNG leaks about 150 KB a graph inside it (see
// third_party/go-graphviz/README.md), SVG about 1.5 KB: a new instance
// every ~25 PNG graphs (~2,700 SVG graphs) bounds it, at no cost seen.
var reloadGrowth uint64 = 4 << 20

func graphvizInstance(ctx context.Context) (*graphviz.Graphviz, error) {
	if gv != nil || gvErr != nil {
		return gv, gvErr
	}
	gvc.SetFontLoader(goFontFace)
	gv, gvErr = newGraphviz(ctx)
	gvBase = graphviz.MemorySize()
	return gv, gvErr
}

// bound starts the module again once its memory has grown by
// reloadGrowth. The old Graphviz is dropped, not closed: closing it would
// call into the new instance with the old one's pointers.
func bound(ctx context.Context) {
	if gv == nil || graphviz.MemorySize() < gvBase+reloadGrowth {
		return
	}
	gv = nil
	if err := graphviz.Reload(ctx); err != nil {
		gvErr = err
		return
	}
	reloads++
}

// reloads counts the instances replaced, for tests.
var reloads int

// pngEngine is go-graphviz's PNG renderer with its curves stroked: v0.2.10
// fills every Bézier curve (edges came out as blobs or not at all) and
// strokes no filled shape (hence the graph's nodes are not filled).
type pngEngine struct{ *gvc.ImageRenderer }

func (e pngEngine) BezierCurve(ctx context.Context, job *gvc.Job, p []*gvc.PointFloat, _ bool) error {
	return e.ImageRenderer.BezierCurve(ctx, job, p, false)
}

func newGraphviz(ctx context.Context) (*graphviz.Graphviz, error) {
	render, err := gvc.NewRenderPlugin(ctx, "png", pngEngine{&gvc.ImageRenderer{DefaultRenderEngine: new(gvc.DefaultRenderEngine)}})
	if err != nil {
		return nil, err
	}
	device, err := gvc.PNGDevicePlugin(ctx)
	if err != nil {
		return nil, err
	}
	return graphviz.NewWithPlugins(ctx, render, device)
}

var (
	goFontsOnce          sync.Once
	goRegular, goBoldTTF *truetype.Font
	goFontsErr           error
	// goFaces keeps each face made: a face allocates its glyph cache
	// (hundreds of KB) when made, and go-graphviz asks for one per text span.
	// Only the render holding gvMu uses them.
	goFaces = map[goFaceKey]font.Face{}
)

// maxGoFaces bounds goFaces; criseq's graphs use four sizes.
const maxGoFaces = 64

type goFaceKey struct {
	bold bool
	size float64
}

// goFontFace draws the PNG's text with the Go fonts (bold for the bold
// Helvetica of the title) instead of fonts looked up on the system.
func goFontFace(_ context.Context, job *gvc.Job, f *gvc.TextFont) (font.Face, error) {
	goFontsOnce.Do(func() {
		goRegular, goFontsErr = truetype.Parse(goregular.TTF)
		if goFontsErr == nil {
			goBoldTTF, goFontsErr = truetype.Parse(gobold.TTF)
		}
	})
	if goFontsErr != nil {
		return nil, goFontsErr
	}
	k := goFaceKey{strings.Contains(strings.ToLower(f.Name()), "bold"), f.Size() * job.Zoom()}
	if face, ok := goFaces[k]; ok {
		return face, nil
	}
	ft := goRegular
	if k.bold {
		ft = goBoldTTF
	}
	face := truetype.NewFace(ft, &truetype.Options{Size: k.size, Hinting: font.HintingNone})
	if len(goFaces) >= maxGoFaces {
		clear(goFaces) // a DOT of many sizes (zoomed by its size attribute)
	}
	goFaces[k] = face
	return face, nil
}

// Render lays out dot and writes it as format, "svg" or "png".
func Render(w io.Writer, dot []byte, format string) error {
	var f graphviz.Format
	switch format {
	case "svg":
		f = graphviz.SVG
	case "png":
		f = graphviz.PNG
	default:
		return fmt.Errorf("graphviz: unknown format %q (svg or png)", format)
	}
	ctx := context.Background()
	gvMu.Lock()
	defer gvMu.Unlock()
	g, err := graphvizInstance(ctx)
	if err != nil {
		return fmt.Errorf("graphviz: %w", err)
	}
	graph, err := graphviz.ParseBytes(dot)
	if err != nil {
		return fmt.Errorf("graphviz: %w", err)
	}
	var buf bytes.Buffer
	err = g.Render(ctx, graph, f, &buf)
	graph.Close()
	bound(ctx)
	if err != nil {
		return fmt.Errorf("graphviz: %w", err)
	}
	_, err = w.Write(buf.Bytes())
	return err
}
