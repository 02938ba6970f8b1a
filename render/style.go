package render

import (
	"fmt"
	"image/color"
	"strconv"
	"strings"
	"sync"
)

// style is what svgStyle gives one element, resolved for the rasterizer, so
// that the PNG takes its palette from the SVG's stylesheet and not a copy.
type style struct {
	fill, stroke color.NRGBA // alpha 0: none
	strokeW      float64
	dash         []float64
	face         face // text only
	size         float64
}

// cssRule is one rule of svgStyle: "text.e{fill:#c62828}".
type cssRule struct {
	text    bool     // applies to <text> only
	classes []string // all of them must be on the element
	decls   [][2]string
}

var (
	rulesOnce sync.Once
	rules     []cssRule
	rulesErr  error
)

// parseStyle reads svgStyle, which holds only "selector{prop:value;...}"
// lines with type and class selectors.
func parseStyle(css string) ([]cssRule, error) {
	var out []cssRule
	for _, line := range strings.Split(css, "\n") {
		if line = strings.TrimSpace(line); line == "" {
			continue
		}
		sel, body, ok := strings.Cut(line, "{")
		if !ok || !strings.HasSuffix(body, "}") {
			return nil, fmt.Errorf("style: bad rule %q", line)
		}
		var r cssRule
		sel, r.text = strings.CutPrefix(sel, "text")
		if sel != "" {
			if !strings.HasPrefix(sel, ".") {
				return nil, fmt.Errorf("style: bad selector in %q", line)
			}
			r.classes = strings.Split(sel[1:], ".")
		}
		for _, d := range strings.Split(strings.TrimSuffix(body, "}"), ";") {
			p, v, ok := strings.Cut(d, ":")
			if !ok {
				return nil, fmt.Errorf("style: bad declaration %q", d)
			}
			r.decls = append(r.decls, [2]string{p, v})
		}
		out = append(out, r)
	}
	return out, nil
}

func loadRules() ([]cssRule, error) {
	rulesOnce.Do(func() { rules, rulesErr = parseStyle(svgStyle) })
	return rules, rulesErr
}

// resolveStyle applies, in order, the rules that match an element with the
// given classes; svgStyle lists more specific rules after the ones they
// override, so source order is the cascade. The starting values are SVG's
// defaults (black fill, no stroke), and text's come from the "text" rule.
func resolveStyle(rs []cssRule, text bool, class string) (style, error) {
	st := style{fill: color.NRGBA{A: 255}, strokeW: 1, size: fontSize}
	have := strings.Fields(class)
	opacity, isBold, isMono := 1.0, false, false
	for _, r := range rs {
		if r.text && !text || !hasAll(have, r.classes) {
			continue
		}
		for _, d := range r.decls {
			var err error
			switch p, v := d[0], d[1]; p {
			case "fill":
				st.fill, err = parseColor(v)
			case "stroke":
				st.stroke, err = parseColor(v)
			case "stroke-width":
				st.strokeW, err = strconv.ParseFloat(v, 64)
			case "fill-opacity":
				opacity, err = strconv.ParseFloat(v, 64)
			case "stroke-dasharray":
				st.dash = nil
				for _, f := range strings.Fields(v) {
					n, perr := strconv.ParseFloat(f, 64)
					if perr != nil || n < 0 {
						err = fmt.Errorf("bad dash %q", v)
					}
					st.dash = append(st.dash, n)
				}
			case "font-size":
				st.size, err = strconv.ParseFloat(strings.TrimSuffix(v, "px"), 64)
			case "font-weight":
				if v != "bold" {
					err = fmt.Errorf("font-weight %q", v)
				}
				isBold = true
			case "font-family":
				isMono = strings.HasPrefix(v, "'Go Mono'")
			default:
				err = fmt.Errorf("property %q not drawn", p)
			}
			if err != nil {
				return style{}, fmt.Errorf("style of %q: %w", class, err)
			}
		}
	}
	st.fill.A = uint8(float64(st.fill.A)*opacity + 0.5)
	switch {
	case isMono:
		st.face = mono // no bold mono is loaded
	case isBold:
		st.face = bold
	}
	return st, nil
}

func hasAll(have, want []string) bool {
	for _, w := range want {
		found := false
		for _, h := range have {
			found = found || h == w
		}
		if !found {
			return false
		}
	}
	return true
}

// parseColor reads "#rrggbb" or "none".
func parseColor(v string) (color.NRGBA, error) {
	if v == "none" {
		return color.NRGBA{}, nil
	}
	n, err := strconv.ParseUint(strings.TrimPrefix(v, "#"), 16, 32)
	if err != nil || len(v) != 7 || v[0] != '#' {
		return color.NRGBA{}, fmt.Errorf("colour %q", v)
	}
	return color.NRGBA{uint8(n >> 16), uint8(n >> 8), uint8(n), 255}, nil
}
