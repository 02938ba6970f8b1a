package render

import (
	"bytes"
	"context"
	"encoding/xml"
	"fmt"
	"image/png"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/criseq/criseq/flow"
	"github.com/criseq/criseq/internal/testpeer"
)

// pumlStatement matches every line PlantUML output may have; named groups
// are free text.
var pumlStatement = regexp.MustCompile(`^(` +
	`@startuml|@enduml|` +
	`skinparam \w+ [#\w]+|` +
	`title <b>(?P<t1>.*)</b>\\n<size:11><color:#546E7A>(?P<t2>.*)</color></size>|` +
	`participant "(?P<t3>[^"]*)" as Client #CFD8DC|` +
	`box "(?P<t4>[^"]*)" #F5F7FA|` +
	`  participant "(?P<t5>[^"]*)" as (RS|IS|S\d+)|` +
	`end box|` +
	`== (<color:#E65100>)?(?P<t6>.*?)(</color>)? ==|` +
	`Client -> (RS|IS|S\d+) : <color:#90A4AE><size:11>(?P<t12>[-+.0-9a-z]*)</size></color>  (?P<t7>.*)|` +
	`Client -\[#90A4AE\]-> (RS|IS|S\d+) : <color:#90A4AE><size:11>(?P<t14>[-+.0-9a-z]*)</size></color>  <color:#78909C>(?P<t15>.*)</color>|` +
	`Client -\[#7B1FA2\]> (RS|IS|S\d+) : <color:#90A4AE><size:11>(?P<t16>[-+.0-9a-z]*)</size></color>  <color:#7B1FA2>(?P<t17>.*)</color>|` +
	`RS -\[#00897B\]>> Client : <color:#90A4AE><size:11>(?P<t18>[-+.0-9a-z]*)</size></color>  <color:#00796B>(?P<t19>.*)</color>|` +
	`\.\.\.(?P<t20>[.0-9a-zµ]+(: .+?)?)\.\.\.|` +
	`(RS|IS|S\d+) --> Client : (?P<t8>.*)|` +
	`(RS|IS|S\d+) -\[#C62828\]-> Client : <color:#C62828>(?P<t9>.*)</color>|` +
	`(de)?activate (RS|IS|S\d+)|` +
	`activate (RS|IS|S\d+) #FFE0B2|` +
	`newpage (?P<t13>.*)|` +
	`hnote over (RS|IS|S\d+) #FFF3E0 : (?P<t10>.*)|` +
	`note over Client, (RS|IS|S\d+)( #FFF3E0)? : (?P<t11>.*)|` +
	`)$`)

var pumlCodePoint = regexp.MustCompile(`<U\+([0-9A-F]{4,6})>`)

func TestPlantUMLSyntax(t *testing.T) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := string(render(t, "puml", c.flow()))
			if !strings.HasPrefix(out, "@startuml\n") || !strings.HasSuffix(out, "\n@enduml\n") ||
				strings.Count(out, "@startuml") != 1 || strings.Count(out, "@enduml") != 1 {
				t.Errorf("not one @startuml … @enduml block")
			}
			for i, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
				m := pumlStatement.FindStringSubmatch(line)
				if m == nil {
					t.Errorf("line %d is no known statement: %q", i+1, line)
					continue
				}
				for j, name := range pumlStatement.SubexpNames() {
					if !strings.HasPrefix(name, "t") {
						continue
					}
					free := pumlCodePoint.ReplaceAllString(m[j], "")
					if name == "t11" {
						free = strings.ReplaceAll(free, `\n`, " ") // the closing note's line breaks
					}
					if strings.ContainsAny(free, "\\<>&\"%$~#;!*^|`[]{}@") {
						t.Errorf("line %d: unescaped character in %q", i+1, m[j])
					}
					for _, dbl := range []string{"--", "//", "**", "__", "==", ",,", "''", "~~", "\"\"", "^^"} {
						if strings.Contains(free, dbl) && strings.Contains(m[j], dbl) {
							t.Errorf("line %d: creole markup %q left in %q", i+1, dbl, m[j])
						}
					}
				}
			}
		})
	}
}

// TestPlantUMLTool renders every case with the real PlantUML, failing on
// any syntax or rendering error, and checks that hostile text is drawn as
// text.
func TestPlantUMLTool(t *testing.T) {
	bin, err := exec.LookPath("plantuml")
	if err != nil {
		testpeer.Missing(t, "plantuml not installed (apt-get install -y plantuml): PlantUML output not checked with the real tool")
	}
	if testing.Short() {
		t.Skip("-short: PlantUML (Java) not run")
	}
	dir := t.TempDir()
	var files []string
	for _, c := range cases {
		p := filepath.Join(dir, c.name+".puml")
		if err := os.WriteFile(p, render(t, "puml", c.flow()), 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, p)
	}
	// And the diagrams committed with the recorded scenarios, copied so
	// that PlantUML's SVGs do not land beside them.
	committed, _ := filepath.Glob(filepath.Join("..", "testdata", "*", "diagrams", "*.puml"))
	if len(committed) == 0 {
		t.Fatal("no committed diagrams under ../testdata/*/diagrams")
	}
	var copies []string
	for _, src := range committed {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.Base(filepath.Dir(filepath.Dir(src)))+"_"+filepath.Base(src))
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		files, copies = append(files, p), append(copies, p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// One JVM for every file. PlantUML exits 0 on most errors and draws the
	// error into the image instead: its output is checked too.
	cmd := exec.CommandContext(ctx, bin, append([]string{"-tsvg", "-charset", "UTF-8", "-failfast2"}, files...)...)
	cmd.Env = append(os.Environ(), "JAVA_TOOL_OPTIONS=-Djava.awt.headless=true")
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("plantuml: %v\n%s", err, stderr.String())
	}
	if s := strings.TrimSpace(filterJavaNoise(stderr.String())); s != "" {
		t.Errorf("plantuml printed:\n%s", s)
	}
	for _, p := range copies {
		t.Run(filepath.Base(p), func(t *testing.T) {
			texts := plantUMLTexts(t, strings.TrimSuffix(p, ".puml")+".svg")
			if !strings.Contains(texts, "pod st") && !strings.Contains(texts, "pod restart") {
				t.Errorf("PlantUML's drawing lacks the closing note (pod started/restarted/stopped in):\n%s", texts)
			}
		})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			texts := plantUMLTexts(t, filepath.Join(dir, c.name+".svg"))
			if c.name != "hostile" {
				return
			}
			// The hostile text is drawn literally: no date for %date(), no
			// "A" for <U+0041>, no "<" for &#60;, no bold for **bold**.
			texts = strings.ReplaceAll(texts, "\u200b", "")
			for _, want := range []string{"%date()", "<U+0041>", "&#60;", "#lt;", "**bold**", "//it//", "--strike--",
				"@enduml", "@startuml", "$var", "!include", "</text><script>x</script>", "[[http://x]]", `\n`, `back\slash`} {
				if !strings.Contains(texts, want) {
					t.Errorf("PlantUML did not draw %q literally", want)
				}
			}
		})
	}
}

// plantUMLTexts reads the texts of an SVG PlantUML drew, failing if it
// drew an error instead of the diagram.
func plantUMLTexts(t *testing.T, path string) string {
	t.Helper()
	svg, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("plantuml wrote no SVG: %v", err)
	}
	texts := svgTexts(t, svg)
	for _, bad := range []string{"Syntax Error", "An error has occured", "Exception", "cannot parse"} {
		if strings.Contains(texts, bad) {
			t.Fatalf("PlantUML drew an error: %q in\n%s", bad, texts)
		}
	}
	return texts
}

// filterJavaNoise drops the JVM's notice about JAVA_TOOL_OPTIONS.
func filterJavaNoise(s string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(l, "Picked up JAVA_TOOL_OPTIONS") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// svgTexts returns the character data of every <text> of an SVG, joined by
// spaces.
func svgTexts(t *testing.T, svg []byte) string {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(svg))
	var out []string
	in := false
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("PlantUML's SVG: %v", err)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			in = tok.Name.Local == "text"
		case xml.CharData:
			if in {
				out = append(out, string(tok))
			}
		case xml.EndElement:
			in = false
		}
	}
	return strings.Join(out, " ")
}

// TestPlantUMLPages renders long flows with the real PlantUML to PNG, which
// it crops at 4,096 pixels: criseq splits them into pages, and no page may
// be cut.
func TestPlantUMLPages(t *testing.T) {
	bin, err := exec.LookPath("plantuml")
	if err != nil {
		testpeer.Missing(t, "plantuml not installed (apt-get install -y plantuml): PlantUML pages not checked with the real tool")
	}
	if testing.Short() {
		t.Skip("-short: PlantUML (Java) not run")
	}
	wordy := bigFlow(120)
	for i := range wordy.Steps {
		s := &wordy.Steps[i]
		s.Arg = strings.Repeat("a long argument with many words ", 1+i%6)
		if i%3 == 0 {
			s.Err = "Unknown: " + strings.Repeat("an error message that goes on and on ", 1+i%5)
		}
	}
	flows := map[string]*flow.Flow{"big": bigFlow(300), "wordy": wordy}
	dir := t.TempDir()
	var files []string
	for name, f := range flows {
		p := filepath.Join(dir, name+".puml")
		if err := os.WriteFile(p, render(t, "puml", f), 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"-tpng", "-charset", "UTF-8", "-failfast2"}, files...)...)
	cmd.Env = append(os.Environ(), "JAVA_TOOL_OPTIONS=-Djava.awt.headless=true")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("plantuml: %v\n%s", err, out)
	}
	for name, f := range flows {
		src := string(render(t, "puml", f))
		pages := strings.Count(src, "\nnewpage ") + 1
		if pages < 2 {
			t.Errorf("%s: %d calls on one page", name, len(f.Steps))
		}
		for i := 0; i < pages; i++ {
			p := filepath.Join(dir, name+".png")
			if i > 0 {
				p = filepath.Join(dir, fmt.Sprintf("%s_%03d.png", name, i))
			}
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatalf("%s: page %d of %d: %v", name, i+1, pages, err)
			}
			cfg, err := png.DecodeConfig(bytes.NewReader(b))
			if err != nil {
				t.Fatalf("%s: page %d: %v", name, i+1, err)
			}
			t.Logf("%s: page %d of %d: %d×%d px", name, i+1, pages, cfg.Width, cfg.Height)
			if cfg.Height >= 4096 {
				t.Errorf("%s: page %d is %d px high: PlantUML cut it", name, i+1, cfg.Height)
			}
		}
		if _, err := os.Stat(filepath.Join(dir, fmt.Sprintf("%s_%03d.png", name, pages))); err == nil {
			t.Errorf("%s: PlantUML drew more pages than the %d criseq made", name, pages)
		}
	}
}
