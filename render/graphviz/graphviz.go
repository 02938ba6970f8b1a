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
	gvMu   sync.Mutex
	gv     *graphviz.Graphviz
	gvErr  error
	gvOnce sync.Once
)

func graphvizInstance(ctx context.Context) (*graphviz.Graphviz, error) {
	gvOnce.Do(func() {
		gvc.SetFontLoader(goFontFace)
		gv, gvErr = newGraphviz(ctx)
	})
	return gv, gvErr
}

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
)

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
	ft := goRegular
	if strings.Contains(strings.ToLower(f.Name()), "bold") {
		ft = goBoldTTF
	}
	return truetype.NewFace(ft, &truetype.Options{Size: f.Size() * job.Zoom(), Hinting: font.HintingNone}), nil
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
	defer graph.Close()
	var buf bytes.Buffer
	if err := g.Render(ctx, graph, f, &buf); err != nil {
		return fmt.Errorf("graphviz: %w", err)
	}
	_, err = w.Write(buf.Bytes())
	return err
}
