package main

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// captures lists the testdata cases: each folder with a capture file.
func captures(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, pat := range []string{"*/capture.pcapng", "*/capture.pcap"} {
		m, err := filepath.Glob(filepath.Join("..", "..", "testdata", pat))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m...)
	}
	sort.Strings(out)
	if len(out) == 0 {
		t.Fatal("no testdata cases found under testdata/*/capture.pcap[ng]")
	}
	return out
}

// TestGolden runs calls and render on every testdata case and compares the
// output with the golden files next to the capture: the diagrams and the
// flows as JSON.
func TestGolden(t *testing.T) {
	for _, capPath := range captures(t) {
		dir := filepath.Dir(capPath)
		t.Run(filepath.Base(dir), func(t *testing.T) {
			// A case committed before its goldens (they come with -update).
			if _, err := os.Stat(filepath.Join(dir, "calls.golden")); err != nil && !*update {
				t.Skipf("%s has no golden files yet (go test ./cmd/criseq -update writes them)", dir)
			}
			var stdout, stderr bytes.Buffer
			if err := run(context.Background(), []string{"calls", capPath}, &stdout, &stderr); err != nil {
				t.Fatalf("calls: %v\n%s", err, stderr.String())
			}
			golden(t, filepath.Join(dir, "calls.golden"), stdout.Bytes())

			stdout.Reset()
			if err := run(context.Background(), []string{"calls", "--json", capPath}, &stdout, &stderr); err != nil {
				t.Fatalf("calls --json: %v", err)
			}
			golden(t, filepath.Join(dir, "calls.jsonl.golden"), stdout.Bytes())

			out := t.TempDir()
			stdout.Reset()
			if err := run(context.Background(), []string{"render", "-o", out, "--format", "svg,puml,mmd,json", capPath}, &stdout, &stderr); err != nil {
				t.Fatalf("render: %v\n%s", err, stderr.String())
			}
			golden(t, filepath.Join(dir, "render.golden"), []byte(strings.ReplaceAll(stdout.String(), out, "OUT")))
			files, _ := filepath.Glob(filepath.Join(out, "*"))
			want, _ := filepath.Glob(filepath.Join(dir, "diagrams", "*"))
			if !*update && len(files) != len(want) {
				t.Errorf("render wrote %d files, golden has %d (run go test ./cmd/criseq -update)", len(files), len(want))
			}
			if *update {
				os.RemoveAll(filepath.Join(dir, "diagrams"))
			}
			for _, f := range files {
				b, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				golden(t, filepath.Join(dir, "diagrams", filepath.Base(f)), b)
			}
		})
	}
}

func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./cmd/criseq -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the output (run go test ./cmd/criseq -update if the change is right)\n%s", path, firstDiff(want, got))
	}
}

func firstDiff(want, got []byte) string {
	wl := strings.Split(string(want), "\n")
	gl := strings.Split(string(got), "\n")
	for i := 0; i < len(wl) || i < len(gl); i++ {
		var w, g string
		if i < len(wl) {
			w = wl[i]
		}
		if i < len(gl) {
			g = gl[i]
		}
		if w != g {
			return "line " + itoa(i+1) + ":\n  want: " + w + "\n  got:  " + g
		}
	}
	return ""
}

func itoa(i int) string { return strconv.Itoa(i) }
