package render

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// decodePNG decodes b, failing the test if image/png cannot; an opaque
// RGB PNG decodes to an *image.RGBA.
func decodePNG(t testing.TB, b []byte) *image.RGBA {
	t.Helper()
	if !bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("not a PNG: % x", b[:min(len(b), 8)])
	}
	m, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("decode PNG: %v", err)
	}
	rgba, ok := m.(*image.RGBA)
	if !ok {
		t.Fatalf("PNG decodes to a %T, want an opaque RGB image", m)
	}
	return rgba
}

// near reports whether c is within d of #rrggbb on every channel.
func near(c color.RGBA, hex uint32, d int) bool {
	return abs(int(c.R)-int(hex>>16)) <= d && abs(int(c.G)-int(hex>>8&0xff)) <= d && abs(int(c.B)-int(hex&0xff)) <= d
}

// countPixels counts the pixels of m for which f holds.
func countPixels(m *image.RGBA, f func(color.RGBA) bool) int {
	n := 0
	b := m.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			if f(m.RGBAAt(x, y)) {
				n++
			}
		}
	}
	return n
}

func isWhite(c color.RGBA) bool { return near(c, 0xffffff, 0) }

// TestPNG checks each case at 1x and 2x: the SVG's size times the scale,
// opaque, a white background, something drawn, the same bytes twice.
func TestPNG(t *testing.T) {
	for _, c := range cases {
		doc := parseSVG(t, render(t, "svg", c.flow()))
		sw, _ := strconv.Atoi(doc.attrs["width"])
		sh, _ := strconv.Atoi(doc.attrs["height"])
		for scale, format := range map[int]string{1: "png", 2: "png2x"} {
			t.Run(c.name+"."+format, func(t *testing.T) {
				out := render(t, format, c.flow())
				if again := render(t, format, c.flow()); !bytes.Equal(out, again) {
					t.Fatal("two renderings of the same flow differ")
				}
				m := decodePNG(t, out)
				b := m.Bounds()
				if b.Min != (image.Point{}) || b.Dx() != sw*scale || b.Dy() != sh*scale {
					t.Fatalf("image %v, want %dx%d (the SVG's %dx%d times %d)", b, sw*scale, sh*scale, sw, sh, scale)
				}
				for _, p := range []image.Point{{0, 0}, {b.Max.X - 1, 0}, {0, b.Max.Y - 1}, {b.Max.X - 1, b.Max.Y - 1}} {
					if c := m.RGBAAt(p.X, p.Y); !isWhite(c) {
						t.Errorf("background at %v is %v, want white", p, c)
					}
				}
				if n := countPixels(m, func(c color.RGBA) bool { return c.A != 255 }); n > 0 {
					t.Errorf("%d pixels not opaque", n)
				}
				drawn := countPixels(m, func(c color.RGBA) bool { return !isWhite(c) })
				if all := b.Dx() * b.Dy(); drawn < all/20 || drawn > all*9/10 {
					t.Errorf("%d of %d pixels drawn", drawn, all)
				}
			})
		}
	}
}

// TestPNGErrorColour checks that failed calls are drawn red and others not.
func TestPNGErrorColour(t *testing.T) {
	red := func(c color.RGBA) bool { return near(c, 0xc62828, 24) }
	for _, format := range []string{"png", "png2x"} {
		if n := countPixels(decodePNG(t, render(t, format, failedPullFlow())), red); n < 300 {
			t.Errorf("failed-pull.%s: %d red pixels, want the error labels and arrows", format, n)
		}
		if n := countPixels(decodePNG(t, render(t, format, startFlow())), red); n > 0 {
			t.Errorf("start.%s: %d red pixels, want none", format, n)
		}
	}
}

// TestPNG2x checks that 2x is the 1x drawing with twice the detail: shrunk
// back by averaging 2×2 blocks, it differs from 1x only by antialiasing and
// font hinting.
func TestPNG2x(t *testing.T) {
	for _, c := range cases {
		m1 := decodePNG(t, render(t, "png", c.flow()))
		m2 := decodePNG(t, render(t, "png2x", c.flow()))
		b := m1.Bounds()
		diff := 0
		for y := 0; y < b.Dy(); y++ {
			for x := 0; x < b.Dx(); x++ {
				c1 := m1.RGBAAt(x, y)
				var r2, g2, b2 int
				for _, p := range []image.Point{{0, 0}, {1, 0}, {0, 1}, {1, 1}} {
					c := m2.RGBAAt(2*x+p.X, 2*y+p.Y)
					r2, g2, b2 = r2+int(c.R), g2+int(c.G), b2+int(c.B)
				}
				diff += abs(int(c1.R)-r2/4) + abs(int(c1.G)-g2/4) + abs(int(c1.B)-b2/4)
			}
		}
		mean := float64(diff) / float64(3*b.Dx()*b.Dy())
		t.Logf("%s: mean difference %.2f", c.name, mean)
		if mean > 1 {
			t.Errorf("%s: 2x shrunk differs from 1x by %.2f per channel on average", c.name, mean)
		}
	}
}

func TestPNGErrors(t *testing.T) {
	for _, scale := range []int{0, -1, maxScale + 1} {
		err := PNG(&bytes.Buffer{}, startFlow(), scale)
		if err == nil || !strings.HasPrefix(err.Error(), "render png: ") {
			t.Errorf("scale %d: error %v", scale, err)
		}
	}
	if err := PNG(&bytes.Buffer{}, nil, 1); err == nil || err.Error() != "render png: nil flow" {
		t.Errorf("nil flow: error %v", err)
	}
	if err := PNG(failWriter{}, startFlow(), 2); err == nil || !strings.HasPrefix(err.Error(), "render png: ") {
		t.Errorf("failing writer: error %v", err)
	}
}

// TestPNGStyles checks that the rasterizer understands every class the
// layouts use, and draws text at the size the layout measured it.
func TestPNGStyles(t *testing.T) {
	rs, err := loadRules()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		_, l := laidOut(t, c.flow())
		for _, e := range l.elems() {
			if e.kind == eText {
				st, err := resolveStyle(rs, true, e.text.class)
				if err != nil {
					t.Fatal(err)
				}
				if st.size != e.text.size {
					t.Errorf("text class %q is %gpx in the style, %gpx in the layout", e.text.class, st.size, e.text.size)
				}
				continue
			}
			if _, err := resolveStyle(rs, false, e.class); err != nil {
				t.Fatal(err)
			}
		}
	}
	st, err := resolveStyle(rs, false, "ret err")
	if err != nil {
		t.Fatal(err)
	}
	if st.stroke != (color.NRGBA{0xc6, 0x28, 0x28, 0xff}) || st.fill.A != 0 || st.strokeW != 1.2 || len(st.dash) != 2 {
		t.Errorf("ret err: %+v", st)
	}
	if st, _ := resolveStyle(rs, true, "g"); st.face != mono || st.size != 11 {
		t.Errorf("text.g: %+v", st)
	}
	other, err := parseStyle(".x{filter:blur(2px)}")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := resolveStyle(other, false, "x"); err == nil {
		t.Error("a property the rasterizer would ignore is not an error")
	}
}

// TestPNGConcurrent renders from several goroutines at once (for -race).
func TestPNGConcurrent(t *testing.T) {
	want := render(t, "png", failedPullFlow())
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			var b bytes.Buffer
			if err := PNG(&b, failedPullFlow(), 1); err != nil {
				t.Error(err)
			} else if !bytes.Equal(b.Bytes(), want) {
				t.Error("concurrent rendering differs")
			}
		})
	}
	wg.Wait()
}

// TestPNGBig renders a flow far taller than a band.
func TestPNGBig(t *testing.T) {
	m := decodePNG(t, render(t, "png", bigFlow(150)))
	if h := m.Bounds().Dy(); h < 50*bandH {
		t.Fatalf("image is %d pixels tall", h)
	}
	// Every band has a lifeline, the kubelet's: no band is left blank.
	for y := 0; y < m.Bounds().Dy()-bandH; y += bandH {
		n := 0
		for dy := range bandH {
			for x := range m.Bounds().Dx() {
				if !isWhite(m.RGBAAt(x, y+dy)) {
					n++
				}
			}
		}
		if n == 0 {
			t.Errorf("band at y=%d is blank", y)
		}
	}
}

// BenchmarkPNG renders a flow of 1,000 calls at 1x and 2x.
func BenchmarkPNG(b *testing.B) {
	f := bigFlow(1000)
	for _, scale := range []int{1, 2} {
		b.Run(strconv.Itoa(scale)+"x", func(b *testing.B) {
			var buf bytes.Buffer
			b.ReportAllocs()
			for b.Loop() {
				buf.Reset()
				if err := PNG(&buf, f, scale); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(buf.Len())/1e6, "MB/op")
		})
	}
}

// BenchmarkPNGCaptures draws every flow of three real captures as PNG:
// many small diagrams, as render draws them, where BenchmarkPNG is one
// large one.
func BenchmarkPNGCaptures(b *testing.B) {
	flows := capturesFlows(b, "kubelet-burst-containerd2", "kubelet-pull", "kubelet-missing")
	var buf bytes.Buffer
	n := 0
	b.ReportAllocs()
	for b.Loop() {
		n = 0
		for _, f := range flows {
			buf.Reset()
			if err := PNG(&buf, f, 1); err != nil {
				b.Fatal(err)
			}
			n += buf.Len()
		}
	}
	b.ReportMetric(float64(len(flows)), "diagrams/op")
	b.ReportMetric(float64(n)/1e6, "MB/op")
}
