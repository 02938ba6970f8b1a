// Package termtext makes text from a capture safe to print on a terminal
// or in a log. Namespaces, pod and container names, method paths, error
// messages and runtime versions come from the wire: an ESC sequence there
// could rewrite the terminal, a CR hide a line, a bidi control reorder
// it. Such characters are shown escaped the way Go's %q shows them (\x1b,
// \a, \r, \u202e, \xff for a byte that is not UTF-8), visible and harmless,
// while clean text passes unchanged.
//
// In: strings, or JSON encoded by encoding/json. Out: the same with every
// non-printable rune escaped.
package termtext

import (
	"encoding/binary"
	"io"
	"os"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// clean reports whether s needs no escaping: printable ASCII only, or
// printable runes (strconv.IsPrint) and no backslash-escapes to mark.
func clean(s string, newlines bool) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == 0x7f {
			if c == '\n' && newlines {
				continue
			}
			return false
		}
		if c >= utf8.RuneSelf {
			return cleanUTF8(s[i:], newlines)
		}
	}
	return true
}

func cleanUTF8(s string, newlines bool) bool {
	for _, r := range s {
		if r == '\n' && newlines {
			continue
		}
		if r == utf8.RuneError || !strconv.IsPrint(r) {
			// RuneError: a bad byte, or U+FFFD itself, which is
			// printable and is then escaped as \ufffd for clarity.
			return false
		}
	}
	return true
}

// String returns s with every rune strconv.IsPrint rejects (control
// characters, bidi and other format characters, spaces other than ' ')
// and every byte that is not UTF-8 written as a Go escape; backslashes are
// doubled then, so the result reads back unambiguously.
func String(s string) string {
	if clean(s, false) {
		return s
	}
	return escape(s, false)
}

// Clean reports whether String(s) is s itself.
func Clean(s string) bool { return clean(s, false) }

// Lines is String for a message of several lines: newlines are kept.
func Lines(s string) string {
	if clean(s, true) {
		return s
	}
	return escape(s, true)
}

func escape(s string, newlines bool) string {
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			b.WriteString(`\x`)
			b.WriteByte(hex[s[i]>>4])
			b.WriteByte(hex[s[i]&15])
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n' && newlines:
			b.WriteByte('\n')
		case r != utf8.RuneError && strconv.IsPrint(r):
			b.WriteString(s[i : i+n])
		default:
			q := strconv.QuoteRuneToASCII(r) // '\x1b', '\u202e'
			b.WriteString(q[1 : len(q)-1])
		}
		i += n
	}
	return b.String()
}

const hex = "0123456789abcdef"

// JSON escapes, inside the strings of JSON that encoding/json wrote, the
// runes it leaves raw although a terminal may act on them: DEL, C1
// controls, bidi and other format characters (as \uXXXX, so the JSON means
// the same). encoding/json already escapes the C0 controls, U+2028 and
// U+2029, and replaces bytes that are not UTF-8.
func JSON(b []byte) []byte {
	i := plainASCII(b)
	if i == len(b) {
		return b
	}
	out := make([]byte, 0, len(b)+16)
	out = append(out, b[:i]...)
	for i < len(b) {
		// Runs of plain ASCII are copied whole: a line with one "…" is
		// otherwise read rune by rune from there on.
		if j := plainASCII(b[i:]); j > 0 {
			out = append(out, b[i:i+j]...)
			i += j
			continue
		}
		r, n := utf8.DecodeRune(b[i:])
		if strconv.IsPrint(r) && r != utf8.RuneError {
			out = append(out, b[i:i+n]...)
			i += n
			continue
		}
		if r >= 0x10000 {
			r1, r2 := surrogates(r)
			out = appendU(appendU(out, r1), r2)
		} else {
			out = appendU(out, r)
		}
		i += n
	}
	return out
}

// plainASCII is the length of b's prefix of ASCII other than DEL, read
// eight bytes at a time: JSON output is mostly that.
func plainASCII(b []byte) int {
	i := 0
	for ; i+8 <= len(b); i += 8 {
		x := binary.LittleEndian.Uint64(b[i:])
		// A byte >= 0x80 sets its high bit in x; a byte of 0x7f, and no
		// other below 0x80, sets it in x+0x01…01, without a carry.
		if (x|(x+0x0101010101010101))&0x8080808080808080 != 0 {
			break
		}
	}
	for i < len(b) && b[i] != 0x7f && b[i] < utf8.RuneSelf {
		i++
	}
	return i
}

// JSONWriter writes to w what is written to it with JSON applied. Each
// Write must hold whole runes, as json.Encoder's do (one value each).
func JSONWriter(w io.Writer) io.Writer { return jsonWriter{w} }

type jsonWriter struct{ w io.Writer }

func (j jsonWriter) Write(p []byte) (int, error) {
	if _, err := j.w.Write(JSON(p)); err != nil {
		return 0, err
	}
	return len(p), nil
}

func appendU(b []byte, r rune) []byte {
	return append(b, '\\', 'u', hex[r>>12&15], hex[r>>8&15], hex[r>>4&15], hex[r&15])
}

func surrogates(r rune) (rune, rune) {
	r -= 0x10000
	return 0xd800 + (r>>10)&0x3ff, 0xdc00 + r&0x3ff
}

// IsTerminal says whether f is a terminal (not merely a character device
// such as /dev/null).
func IsTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
