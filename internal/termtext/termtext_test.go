package termtext

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestString(t *testing.T) {
	for in, want := range map[string]string{
		"default":                  "default",
		"héllo wörld ✓ 日本":         "héllo wörld ✓ 日本",
		"ns\x1b]0;pwned\a":         `ns\x1b]0;pwned\a`,
		"a\rb\nc\td":               `a\rb\nc\td`,
		"evil\u202etxt.exe":        `evil\u202etxt.exe`,
		"bad\xff\xfeutf8":          `bad\xff\xfeutf8`,
		"back\\slash\x1b":          `back\\slash\x1b`,
		"back\\slash":              `back\slash`,
		"\u2066iso\u2069 \u200fx":  `\u2066iso\u2069 \u200fx`,
		"c1\u009b31m":              `c1\u009b31m`,
		"del\x7f":                  `del\x7f`,
		"nbsp\u00a0":               `nbsp\u00a0`,
		"replacement \ufffd stays": `replacement \ufffd stays`,
	} {
		got := String(in)
		if got != want {
			t.Errorf("String(%q) = %q, want %q", in, got, want)
		}
		for _, r := range got {
			if r < 0x20 || r == 0x7f || !strconv.IsPrint(r) {
				t.Errorf("String(%q) keeps %U", in, r)
			}
		}
		if !utf8.ValidString(got) {
			t.Errorf("String(%q) = %q is not UTF-8", in, got)
		}
	}
	if got := Lines("two\nlines\x1b"); got != "two\nlines\\x1b" {
		t.Errorf("Lines: %q", got)
	}
}

func TestJSON(t *testing.T) {
	in := map[string]string{"ns": "a\x1b\u009b\u202e\x7f\U000e0001b\xff", "ok": "plain ✓"}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	out := JSON(b)
	for _, r := range string(out) {
		if r < 0x20 || r == 0x7f || !strconv.IsPrint(r) {
			t.Errorf("JSON keeps %U in %s", r, out)
		}
	}
	var back map[string]string
	if err := json.Unmarshal(out, &back); err != nil {
		t.Fatalf("escaped JSON does not parse: %v\n%s", err, out)
	}
	var orig map[string]string
	json.Unmarshal(b, &orig)
	if back["ns"] != orig["ns"] || back["ok"] != "plain ✓" {
		t.Errorf("escaped JSON means %q, the original %q", back, orig)
	}
	if !strings.Contains(string(out), "plain ✓") {
		t.Errorf("printable text escaped: %s", out)
	}
	if plain := []byte(`{"a":"b"}`); &JSON(plain)[0] != &plain[0] {
		t.Error("clean JSON copied")
	}
}

func TestPlainASCII(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
	}{
		{"", 0}, {"abc", 3}, {"0123456789abcdef", 16}, {"0123456\x7f89", 7}, {"01234567\x7f", 8},
		{"0123456789é", 10}, {"~~~~~~~~~~~~~~~~\x80", 16}, {"\xff", 0}, {"a\x7e\x7e\x7e\x7e\x7e\x7e\x7e\x7e", 9},
	} {
		if got := plainASCII([]byte(tc.in)); got != tc.want {
			t.Errorf("plainASCII(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func TestJSONWriter(t *testing.T) {
	var b strings.Builder
	enc := json.NewEncoder(JSONWriter(&b))
	if err := enc.Encode(map[string]string{"a": "x\u202ey"}); err != nil {
		t.Fatal(err)
	}
	if got := b.String(); got != `{"a":"x\u202ey"}`+"\n" {
		t.Errorf("got %q", got)
	}
}
