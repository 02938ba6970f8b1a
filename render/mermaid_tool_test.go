package render

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/criseq/criseq/internal/testpeer"
)

// mermaidCheck is the npm project that runs the real Mermaid in headless
// Chromium (see mermaid-check/check.mjs).
const mermaidCheck = "mermaid-check"

// mermaidResult is one line of check.mjs --json.
type mermaidResult struct {
	File    string   `json:"file"`
	OK      bool     `json:"ok"`
	Error   string   `json:"error"`
	Type    string   `json:"type"`
	Texts   []string `json:"texts"`
	Clipped []string `json:"clipped"`
}

// TestMermaidTool parses and renders every case, and every diagram of the
// repo's recorded scenarios (../testdata/*/diagrams), with the real Mermaid in
// headless Chromium, failing on any error, and checks that hostile text is
// drawn as text. Set MERMAID_SHOTS=DIR to keep a PNG of each diagram.
func TestMermaidTool(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: Mermaid (headless Chromium) not run")
	}
	const deps = "run lab/test-deps.sh as root"
	node, err := exec.LookPath("node")
	if err != nil {
		testpeer.Missing(t, "node not installed (Node.js 20 or later with npm, then %s): Mermaid output not checked with the real Mermaid", deps)
	}
	for _, m := range []string{"mermaid", "playwright-core"} {
		if _, err := os.Stat(filepath.Join(mermaidCheck, "node_modules", m, "package.json")); err != nil {
			testpeer.Missing(t, "render/%s/node_modules/%s missing (%s, or npm ci there): Mermaid output not checked with the real Mermaid", mermaidCheck, m, deps)
		}
	}
	chromium := os.Getenv("CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if _, err := os.Stat(chromium); err != nil {
		testpeer.Missing(t, "%s missing (%s, or apt-get install -y chromium): Mermaid output not checked with the real Mermaid", chromium, deps)
	}

	dir := t.TempDir()
	var files []string
	for _, c := range cases {
		p := filepath.Join(dir, c.name+".mmd")
		if err := os.WriteFile(p, render(t, "mmd", c.flow()), 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, p)
	}
	// A flow in parts: each must be a diagram of its own, with the calls
	// open across a part's edge drawn without activations.
	parts, err := MermaidParts(splitFlow())
	if err != nil {
		t.Fatal(err)
	}
	if len(parts) < 2 {
		t.Errorf("split flow in %d part", len(parts))
	}
	for k, p := range parts {
		name := filepath.Join(dir, "split"+PartExt("mmd", k))
		if err := os.WriteFile(name, p, 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, name)
	}
	recorded, err := filepath.Glob(filepath.Join("..", "testdata", "*", "diagrams", "*.mmd"))
	if err != nil {
		t.Fatal(err)
	}
	if len(recorded) == 0 {
		t.Error("no ../testdata/*/diagrams/*.mmd found")
	}
	files = append(files, recorded...)

	args := []string{filepath.Join(mermaidCheck, "check.mjs"), "--json"}
	if shots := os.Getenv("MERMAID_SHOTS"); shots != "" {
		args = append(args, "--out", shots)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, append(args, files...)...)
	cmd.Env = append(os.Environ(), "CHROMIUM="+chromium)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	t.Logf("%s", strings.TrimSpace(stderr.String()))

	results := map[string]mermaidResult{}
	sc := bufio.NewScanner(&stdout)
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		var r mermaidResult
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("check.mjs printed %q: %v", sc.Text(), err)
		}
		results[r.File] = r
	}
	if len(results) == 0 {
		t.Fatalf("check.mjs: %v, no result\n%s", runErr, stderr.String())
	}
	failed := false
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".mmd")
		if !strings.HasPrefix(f, dir) {
			name = filepath.Base(filepath.Dir(filepath.Dir(f))) + "/" + name
		}
		t.Run(name, func(t *testing.T) {
			r, ok := results[f]
			switch {
			case !ok:
				t.Fatalf("check.mjs gave no result for %s", f)
			case !r.OK:
				t.Fatalf("Mermaid failed on %s: %s", f, r.Error)
			case len(r.Texts) == 0:
				t.Fatalf("Mermaid drew no text for %s", f)
			}
			// Cut-off text depends on the fonts installed: told, not failed.
			for _, c := range r.Clipped {
				t.Logf("text cut off at the diagram's edge: %s", c)
			}
			if name != "hostile" {
				return
			}
			// Every escape is undone when drawn and nothing is read as
			// Mermaid syntax, HTML or a directive.
			texts := strings.Join(r.Texts, "\n")
			for _, want := range []string{`q"uo'te <b>&amp;</b> </text><script>x</script>`, ";semi #hash -->arrow",
				`%%{init: {"theme":"dark"}}%% style x fill:#f00; classDef a`, `**bold** //it// --strike-- __u__ ~~w~~ ""m""`,
				`[[http://x]] <U+0041> &#60; #lt; \n back\slash $var %date()`, "!include x {{ }} ``c`` == | ^^ ,,",
				"(wrap:q", "nowrap:x · 1ms", "no reply (capture ended)"} {
				if !strings.Contains(texts, want) {
					t.Errorf("Mermaid did not draw %q literally; drew:\n%s", want, texts)
				}
			}
		})
		failed = failed || !results[f].OK
	}
	if runErr != nil && !failed {
		t.Errorf("check.mjs: %v\n%s", runErr, stderr.String())
	}
}
