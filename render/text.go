package render

import (
	"fmt"
	"strings"
	"sync"
	"unicode/utf8"

	"golang.org/x/image/font"
	"golang.org/x/image/font/gofont/gobold"
	"golang.org/x/image/font/gofont/gomono"
	"golang.org/x/image/font/gofont/goregular"
	"golang.org/x/image/font/opentype"
	"golang.org/x/image/font/sfnt"
	"golang.org/x/image/math/fixed"
)

// face names one of the fonts text is measured with.
type face int

const (
	regular face = iota
	bold
	mono
	nFaces
)

// CSS font families the SVG asks for; the Go fonts come first since their
// metrics are the ones measured.
const (
	sansFamily = "Go, 'DejaVu Sans', Arial, sans-serif"
	monoFamily = "'Go Mono', 'DejaVu Sans Mono', monospace"
)

// widthSlack widens measured text so that a viewer without the Go fonts,
// which falls back to DejaVu Sans (up to 15% wider than Go Regular, 22% in
// bold) or Arial (narrower), does not overflow boxes either.
var widthSlack = [nFaces]float64{regular: 1.16, bold: 1.24, mono: 1.03}

// fontMetrics holds the advance width of each rune of each face, in ems.
type fontMetrics struct {
	fonts [nFaces]*sfnt.Font
	// ascii caches the advances of the Latin-1 runes; read-only once built.
	ascii [nFaces][256]float64
}

var (
	metricsOnce sync.Once
	metrics     *fontMetrics
	metricsErr  error
)

// loadMetrics parses the Go fonts once.
func loadMetrics() (*fontMetrics, error) {
	metricsOnce.Do(func() {
		m := &fontMetrics{}
		for i, ttf := range [nFaces][]byte{goregular.TTF, gobold.TTF, gomono.TTF} {
			f, err := opentype.Parse(ttf)
			if err != nil {
				metricsErr = fmt.Errorf("parse font %d: %w", i, err)
				return
			}
			m.fonts[i] = f
			var buf sfnt.Buffer
			for r := rune(0); r < 256; r++ {
				m.ascii[i][r] = advance(f, &buf, r)
			}
		}
		metrics = m
	})
	return metrics, metricsErr
}

// advance is r's advance width in ems; a rune the font lacks counts as one
// em (the width of a CJK or symbol glyph of a fallback font).
func advance(f *sfnt.Font, buf *sfnt.Buffer, r rune) float64 {
	upem := f.UnitsPerEm()
	idx, err := f.GlyphIndex(buf, r)
	if err != nil || idx == 0 {
		return 1
	}
	adv, err := f.GlyphAdvance(buf, idx, fixed.Int26_6(upem)<<6, font.HintingNone)
	if err != nil {
		return 1
	}
	return float64(adv) / 64 / float64(upem)
}

// measurer measures text for one rendering; it is not safe for concurrent
// use (each SVG call makes its own).
type measurer struct {
	m     *fontMetrics
	buf   sfnt.Buffer
	other [nFaces]map[rune]float64 // advances of runes past Latin-1
}

func newMeasurer() (*measurer, error) {
	m, err := loadMetrics()
	if err != nil {
		return nil, err
	}
	ms := &measurer{m: m}
	for i := range ms.other {
		ms.other[i] = map[rune]float64{}
	}
	return ms, nil
}

// width is the width of s in pixels, in face at size px, widened by
// widthSlack.
func (ms *measurer) width(fc face, size float64, s string) float64 {
	em := 0.0
	for _, r := range s {
		if r < 256 {
			em += ms.m.ascii[fc][r]
			continue
		}
		a, ok := ms.other[fc][r]
		if !ok {
			a = advance(ms.m.fonts[fc], &ms.buf, r)
			ms.other[fc][r] = a
		}
		em += a
	}
	return em * size * widthSlack[fc]
}

// wrap breaks s into lines no wider than max pixels, at spaces when it can
// and inside a word when one word alone is too wide.
func (ms *measurer) wrap(fc face, size float64, s string, max float64) []string {
	if s == "" {
		return []string{""}
	}
	if ms.width(fc, size, s) <= max {
		return []string{s}
	}
	var lines []string
	line := ""
	for _, word := range strings.Split(s, " ") {
		cand := word
		if line != "" {
			cand = line + " " + word
		}
		if ms.width(fc, size, cand) <= max {
			line = cand
			continue
		}
		if line != "" {
			lines = append(lines, line)
			line = ""
		}
		// The word alone: break it where it overflows.
		for ms.width(fc, size, word) > max {
			n, w := 0, 0.0
			for i, r := range word {
				w += ms.width(fc, size, string(r))
				if w > max && i > 0 {
					break
				}
				n = i + utf8.RuneLen(r)
			}
			lines = append(lines, word[:n])
			word = word[n:]
		}
		line = word
	}
	if line != "" || len(lines) == 0 {
		lines = append(lines, line)
	}
	return lines
}
