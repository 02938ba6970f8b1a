package render

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"io"
	"math"

	"golang.org/x/image/font"
	"golang.org/x/image/font/opentype"
	"golang.org/x/image/font/sfnt"
	"golang.org/x/image/math/fixed"
	"golang.org/x/image/vector"

	"github.com/criseq/criseq/flow"
)

// maxScale bounds PNG's scale; 2 is what high-density screens need.
const maxScale = 4

// PNG writes f as a PNG image of the drawing SVG writes, rasterized here
// (antialiased, text in the Go fonts) without a browser. scale multiplies
// every length: 1 gives the SVG's size in pixels, 2 twice that for
// high-density screens. The image is drawn and compressed in bands of rows,
// so a flow of thousands of calls needs no full bitmap in memory.
func PNG(w io.Writer, f *flow.Flow, scale int) error { return pngWith(w, f, scale, Options{}) }

func pngWith(w io.Writer, f *flow.Flow, scale int, o Options) error {
	if scale < 1 || scale > maxScale {
		return fmt.Errorf("render png: scale %d, want 1 to %d", scale, maxScale)
	}
	d, err := newDiagram(f)
	if err != nil {
		return fmt.Errorf("render png: %w", err)
	}
	d.timeScale = o.TimeScale
	l, err := layout(d)
	if err != nil {
		return fmt.Errorf("render png: %w", err)
	}
	sc, err := newScene(l, scale)
	l.release()
	if err != nil {
		return fmt.Errorf("render png: %w", err)
	}
	if err := sc.encode(w); err != nil {
		return fmt.Errorf("render png: %w", err)
	}
	return nil
}

// pt is a point in device pixels.
type pt struct{ x, y float64 }

// shape is one thing to paint: polygons filled with one colour (non-zero
// winding), or a line of text. Shapes are painted in order.
type shape struct {
	bb    image.Rectangle
	col   color.NRGBA
	polys [][]pt
	run   *glyphRun
}

// glyphRun is a line of text placed glyph by glyph.
type glyphRun struct {
	face   font.Face
	runes  []rune // -1 for a rune drawn by standIn
	dots   []fixed.Point26_6
	colour image.Uniform
}

type faceKey struct {
	fc   face
	size float64
}

// scene is a drawing turned into device-pixel shapes.
type scene struct {
	w, h   int
	scale  float64
	shapes []shape
	rules  []cssRule
	styles map[string]style
	m      *fontMetrics
	faces  map[faceKey]font.Face
	buf    sfnt.Buffer
	mask   image.Alpha // coverage of the shape being painted
}

func newScene(l *drawing, scale int) (*scene, error) {
	rs, err := loadRules()
	if err != nil {
		return nil, err
	}
	m, err := loadMetrics()
	if err != nil {
		return nil, err
	}
	s := &scene{w: int(l.w) * scale, h: int(l.h) * scale, scale: float64(scale), rules: rs,
		styles: map[string]style{}, m: m, faces: map[faceKey]font.Face{}}
	if s.w <= 0 || s.h <= 0 || s.w > math.MaxInt32 || s.h > math.MaxInt32 {
		return nil, fmt.Errorf("image of %dx%d pixels, which PNG cannot hold", s.w, s.h)
	}
	for _, layer := range l.layers {
		for i := range layer {
			if err := s.add(&layer[i]); err != nil {
				return nil, err
			}
		}
	}
	return s, nil
}

// px maps a layout coordinate to device pixels, rounded to a tenth first as
// the SVG writes it.
func (s *scene) px(v float64) float64 { return math.Round(v*10) / 10 * s.scale }

func (s *scene) style(text bool, class string) (style, error) {
	key := class
	if text {
		key = "text " + class
	}
	if st, ok := s.styles[key]; ok {
		return st, nil
	}
	st, err := resolveStyle(s.rules, text, class)
	if err != nil {
		return style{}, err
	}
	s.styles[key] = st
	return st, nil
}

// push adds polys filled with col, if they cover anything.
func (s *scene) push(col color.NRGBA, polys ...[]pt) {
	minX, minY, maxX, maxY := math.Inf(1), math.Inf(1), math.Inf(-1), math.Inf(-1)
	n := 0
	for _, p := range polys {
		if len(p) < 3 {
			continue
		}
		polys[n] = p
		n++
		for _, q := range p {
			minX, maxX = math.Min(minX, q.x), math.Max(maxX, q.x)
			minY, maxY = math.Min(minY, q.y), math.Max(maxY, q.y)
		}
	}
	if n == 0 || col.A == 0 {
		return
	}
	bb := image.Rect(int(math.Floor(minX)), int(math.Floor(minY)), int(math.Ceil(maxX)), int(math.Ceil(maxY)))
	s.shapes = append(s.shapes, shape{bb: bb.Intersect(image.Rect(0, 0, s.w, s.h)), col: col, polys: polys[:n]})
}

func (s *scene) add(e *elem) error {
	if e.kind == eText {
		return s.addText(e.text)
	}
	st, err := s.style(false, e.class)
	if err != nil {
		return err
	}
	var path []pt
	closed := true
	switch e.kind {
	case eRect:
		if e.r.w <= 0 || e.r.h <= 0 {
			return nil // as in SVG, an empty rect is not drawn
		}
		path = roundRect(s.px(e.r.x), s.px(e.r.y), s.px(e.r.w), s.px(e.r.h), s.px(e.rx))
	case eLine, ePolygon, ePolyline:
		for k := 0; k+1 < len(e.pts); k += 2 {
			path = append(path, pt{s.px(e.pts[k]), s.px(e.pts[k+1])})
		}
		closed = e.kind == ePolygon
	}
	if e.kind != eLine {
		s.push(st.fill, path)
	}
	if st.stroke.A == 0 || st.strokeW <= 0 {
		return nil
	}
	hw := st.strokeW * s.scale / 2
	dash := make([]float64, 0, 2*len(st.dash))
	total := 0.0
	for _, d := range st.dash {
		dash = append(dash, d*s.scale)
		total += d
	}
	switch {
	case total > 0:
		if len(dash)%2 == 1 {
			dash = append(dash, dash...)
		}
		// One shape per dash, so that a band paints only the dashes it shows.
		for _, piece := range dashes(path, closed, dash) {
			s.push(st.stroke, strokeOpen(piece, hw))
		}
	case closed:
		s.push(st.stroke, strokeClosed(path, hw)...)
	default:
		s.push(st.stroke, strokeOpen(path, hw))
	}
	return nil
}

func (s *scene) face(fc face, size float64) (font.Face, error) {
	k := faceKey{fc, size}
	if f, ok := s.faces[k]; ok {
		return f, nil
	}
	f, err := opentype.NewFace(s.m.fonts[fc], &opentype.FaceOptions{Size: size, DPI: 72, Hinting: font.HintingNone})
	if err != nil {
		return nil, err
	}
	s.faces[k] = f
	return f, nil
}

// addText places each line of t like SVG's text-anchor does, on the width
// the font really draws (the layout's width has slack for fallback fonts).
func (s *scene) addText(t *textBlock) error {
	st, err := s.style(true, t.class)
	if err != nil {
		return err
	}
	size := st.size * s.scale
	f, err := s.face(st.face, size)
	if err != nil {
		return err
	}
	col := st.fill
	for k, line := range t.lines {
		if line == "" {
			continue
		}
		x, y := s.px(t.x), s.px(t.y+float64(k)*lineStep(t.size))
		run := &glyphRun{face: f, colour: image.Uniform{C: col}}
		type standIn struct {
			r rune
			i int
		}
		var missing []standIn // runes the font lacks, drawn apart
		adv := 0.0
		prev := rune(-1)
		for _, r := range line {
			if idx, err := s.m.fonts[st.face].GlyphIndex(&s.buf, r); err != nil || idx == 0 {
				// Measured as one em; drawn as a stand-in below.
				missing = append(missing, standIn{r, len(run.runes)})
				run.runes = append(run.runes, -1)
				run.dots = append(run.dots, fixed.Point26_6{X: fixed.Int26_6(math.Round(adv * 64))})
				adv += size
				prev = -1
				continue
			}
			if prev >= 0 {
				adv += float64(f.Kern(prev, r)) / 64
			}
			a, _ := f.GlyphAdvance(r)
			run.runes = append(run.runes, r)
			run.dots = append(run.dots, fixed.Point26_6{X: fixed.Int26_6(math.Round(adv * 64))})
			adv += float64(a) / 64
			prev = r
		}
		switch t.anchor {
		case "middle":
			x -= adv / 2
		case "end":
			x -= adv
		}
		ox, oy := fixed.Int26_6(math.Round(x*64)), fixed.Int26_6(math.Round(y*64))
		for i := range run.dots {
			run.dots[i].X += ox
			run.dots[i].Y = oy
		}
		bb := image.Rect(int(math.Floor(x-0.3*size)), int(math.Floor(y-1.2*size)),
			int(math.Ceil(x+adv+0.3*size)), int(math.Ceil(y+0.5*size)))
		s.shapes = append(s.shapes, shape{bb: bb.Intersect(image.Rect(0, 0, s.w, s.h)), run: run})
		for _, m := range missing {
			s.standIn(m.r, x+float64(run.dots[m.i].X-ox)/64, y, size, col)
		}
	}
	return nil
}

// standIn draws a rune the Go fonts lack in its one-em cell: "✗" (which
// failed calls' labels start with) as a cross, anything else as a box.
func (s *scene) standIn(r rune, x, y, em float64, col color.NRGBA) {
	if r == '✗' {
		a, b := pt{x + 0.22*em, y - 0.66*em}, pt{x + 0.78*em, y - 0.04*em}
		s.push(col, strokeOpen([]pt{a, b}, 0.06*em), strokeOpen([]pt{{a.x, b.y}, {b.x, a.y}}, 0.06*em))
		return
	}
	s.push(col, strokeClosed(roundRect(x+0.12*em, y-0.72*em, 0.76*em, 0.76*em, 0), 0.03*em)...)
}

// roundRect is the outline of a rectangle with elliptic corners, clockwise
// from the top left, with rx clamped as SVG does.
func roundRect(x, y, w, h, r float64) []pt {
	rx, ry := math.Min(r, w/2), math.Min(r, h/2)
	if rx <= 0 || ry <= 0 {
		return []pt{{x, y}, {x + w, y}, {x + w, y + h}, {x, y + h}}
	}
	n := max(2, int(math.Ceil(math.Sqrt(math.Max(rx, ry))*1.5)))
	p := make([]pt, 0, 4*(n+1))
	corner := func(cx, cy, from float64) {
		for i := 0; i <= n; i++ {
			a := from + float64(i)*math.Pi/2/float64(n)
			p = append(p, pt{cx + rx*math.Cos(a), cy + ry*math.Sin(a)})
		}
	}
	corner(x+w-rx, y+ry, -math.Pi/2)
	corner(x+w-rx, y+h-ry, 0)
	corner(x+rx, y+h-ry, math.Pi/2)
	corner(x+rx, y+ry, math.Pi)
	return p
}

// dedupe drops repeated points, which have no direction to offset along.
func dedupe(p []pt, closed bool) []pt {
	out := make([]pt, 0, len(p))
	for _, q := range p {
		if len(out) == 0 || math.Hypot(q.x-out[len(out)-1].x, q.y-out[len(out)-1].y) > 1e-6 {
			out = append(out, q)
		}
	}
	for closed && len(out) > 1 && math.Hypot(out[0].x-out[len(out)-1].x, out[0].y-out[len(out)-1].y) <= 1e-6 {
		out = out[:len(out)-1]
	}
	return out
}

// normal is the unit normal to the left of a→b.
func normal(a, b pt) pt {
	dx, dy := b.x-a.x, b.y-a.y
	l := math.Hypot(dx, dy)
	return pt{-dy / l, dx / l}
}

// join appends the offset corner(s) at c between segments with normals a
// and b, h away: a miter, or a bevel past SVG's default miter limit of 4.
func join(out []pt, c, a, b pt, h float64) []pt {
	dot := 1 + a.x*b.x + a.y*b.y
	if dot > 2.0/16 { // miter ratio sqrt(2/dot) ≤ 4
		return append(out, pt{c.x + h*(a.x+b.x)/dot, c.y + h*(a.y+b.y)/dot})
	}
	return append(out, pt{c.x + h*a.x, c.y + h*a.y}, pt{c.x + h*b.x, c.y + h*b.y})
}

// strokeOpen is the outline of an open path stroked hw on each side, with
// butt caps and miter joins.
func strokeOpen(p []pt, hw float64) []pt {
	p = dedupe(p, false)
	if len(p) < 2 {
		return nil
	}
	n := len(p)
	ns := make([]pt, n-1)
	for i := range ns {
		ns[i] = normal(p[i], p[i+1])
	}
	left := []pt{{p[0].x + hw*ns[0].x, p[0].y + hw*ns[0].y}}
	right := []pt{{p[0].x - hw*ns[0].x, p[0].y - hw*ns[0].y}}
	for i := 1; i < n-1; i++ {
		left = join(left, p[i], ns[i-1], ns[i], hw)
		right = join(right, p[i], ns[i-1], ns[i], -hw)
	}
	e := ns[n-2]
	left = append(left, pt{p[n-1].x + hw*e.x, p[n-1].y + hw*e.y})
	right = append(right, pt{p[n-1].x - hw*e.x, p[n-1].y - hw*e.y})
	for i := len(right) - 1; i >= 0; i-- {
		left = append(left, right[i])
	}
	return left
}

// strokeClosed is the ring a closed path stroked hw on each side covers:
// the outer and the inner outline, wound opposite ways.
func strokeClosed(p []pt, hw float64) [][]pt {
	p = dedupe(p, true)
	n := len(p)
	if n < 2 {
		return nil
	}
	ns := make([]pt, n)
	for i := range ns {
		ns[i] = normal(p[i], p[(i+1)%n])
	}
	var left, right []pt
	for i := range p {
		left = join(left, p[i], ns[(i+n-1)%n], ns[i], hw)
		right = join(right, p[i], ns[(i+n-1)%n], ns[i], -hw)
	}
	for i, j := 0, len(right)-1; i < j; i, j = i+1, j-1 {
		right[i], right[j] = right[j], right[i]
	}
	return [][]pt{left, right}
}

// dashes cuts a path into the pieces a dash array (of even length, in
// pixels) draws, starting with a dash at the path's start as SVG does.
func dashes(p []pt, closed bool, dash []float64) [][]pt {
	if closed && len(p) > 0 {
		p = append(p[:len(p):len(p)], p[0])
	}
	var out [][]pt
	if len(p) < 2 {
		return nil
	}
	i, rem, on := 0, dash[0], true
	cur := []pt{p[0]}
	for k := 0; k+1 < len(p); k++ {
		a, b := p[k], p[k+1]
		l := math.Hypot(b.x-a.x, b.y-a.y)
		pos := 0.0
		for l-pos > rem {
			pos += rem
			q := pt{a.x + (b.x-a.x)*pos/l, a.y + (b.y-a.y)*pos/l}
			if on {
				out = append(out, append(cur, q))
				cur = nil
			} else {
				cur = []pt{q}
			}
			on = !on
			i = (i + 1) % len(dash)
			rem = dash[i]
		}
		rem -= l - pos
		if on {
			cur = append(cur, b)
		}
	}
	if on && len(cur) > 1 {
		out = append(out, cur)
	}
	return out
}

// bandH is the height, in device pixels, of the strip drawn at a time.
const bandH = 128

// encode paints the scene band by band, each band into the PNG stream as
// soon as it is done.
func (s *scene) encode(w io.Writer) error {
	nb := (s.h + bandH - 1) / bandH
	buckets := make([][]int32, nb)
	for i := range s.shapes {
		bb := s.shapes[i].bb
		if bb.Empty() {
			continue
		}
		for b := bb.Min.Y / bandH; b <= (bb.Max.Y-1)/bandH; b++ {
			buckets[b] = append(buckets[b], int32(i))
		}
	}
	bufs := pngPool.Get().(*pngBufs)
	defer func() {
		// Not kept: the writers' destinations (nor bytes of this image).
		bufs.w.Reset(nil)
		bufs.idat.Reset(nil)
		pngPool.Put(bufs)
	}()
	enc, err := newPNGEncoder(w, s.w, s.h, bufs)
	if err != nil {
		return err
	}
	if n := 4 * s.w * bandH; cap(bufs.pix) < n {
		bufs.pix = make([]byte, n)
	}
	band := &image.RGBA{Pix: bufs.pix[:4*s.w*bandH], Stride: 4 * s.w, Rect: image.Rect(0, 0, s.w, bandH)}
	z := &bufs.z
	for b := range nb {
		y0 := b * bandH
		band.Rect = image.Rect(0, y0, s.w, min(y0+bandH, s.h))
		for i := range band.Pix {
			band.Pix[i] = 0xff
		}
		for _, i := range buckets[b] {
			s.paint(band, z, &s.shapes[i])
		}
		if err := enc.rows(band); err != nil {
			return err
		}
	}
	return enc.close()
}

// paint draws sh onto the part of the image dst holds.
func (s *scene) paint(dst *image.RGBA, z *vector.Rasterizer, sh *shape) {
	clip := sh.bb.Intersect(dst.Rect)
	if clip.Empty() {
		return
	}
	if r := sh.run; r != nil {
		for i, c := range r.runes {
			if c < 0 {
				continue
			}
			dr, mask, mp, _, ok := r.face.Glyph(r.dots[i], c)
			if ok && dr.Overlaps(dst.Rect) {
				draw.DrawMask(dst, dr, &r.colour, image.Point{}, mask, mp, draw.Over)
			}
		}
		return
	}
	w, h := clip.Dx(), clip.Dy()
	z.Reset(w, h)
	ox, oy := float64(clip.Min.X), float64(clip.Min.Y)
	for _, p := range sh.polys {
		z.MoveTo(float32(p[0].x-ox), float32(p[0].y-oy))
		for _, q := range p[1:] {
			z.LineTo(float32(q.x-ox), float32(q.y-oy))
		}
		z.ClosePath()
	}
	// Rasterize to a coverage mask and blend here: x/image/vector blends
	// every pixel with divisions, and most pixels of a large shape are
	// either untouched or fully covered.
	if cap(s.mask.Pix) < w*h {
		s.mask.Pix = make([]uint8, w*h)
	}
	s.mask.Pix, s.mask.Stride, s.mask.Rect = s.mask.Pix[:w*h], w, image.Rect(0, 0, w, h)
	z.DrawOp = draw.Src
	z.Draw(&s.mask, s.mask.Rect, image.Opaque, image.Point{})
	c := sh.col
	sa := uint32(c.A) * 0x101
	sr, sg, sb := uint32(c.R)*sa/0xff, uint32(c.G)*sa/0xff, uint32(c.B)*sa/0xff // premultiplied, 16 bits
	for y := range h {
		row := dst.Pix[dst.PixOffset(clip.Min.X, clip.Min.Y+y):]
		for x, m := range s.mask.Pix[y*w : y*w+w] {
			i := 4 * x
			switch {
			case m == 0:
			case m == 0xff && c.A == 0xff:
				row[i], row[i+1], row[i+2], row[i+3] = c.R, c.G, c.B, 0xff
			default:
				ma := uint32(m) * 0x101
				a := 0xffff - sa*ma/0xffff
				row[i] = uint8((uint32(row[i])*0x101*a + sr*ma) / 0xffff >> 8)
				row[i+1] = uint8((uint32(row[i+1])*0x101*a + sg*ma) / 0xffff >> 8)
				row[i+2] = uint8((uint32(row[i+2])*0x101*a + sb*ma) / 0xffff >> 8)
				row[i+3] = uint8((uint32(row[i+3])*0x101*a + sa*ma) / 0xffff >> 8)
			}
		}
	}
}
