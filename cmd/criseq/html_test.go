package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRenderHTML: --format html writes one viewer per capture, named after
// it, with every flow, next to the other formats' one file per flow.
func TestRenderHTML(t *testing.T) {
	capPath := filepath.Join("..", "..", "testdata", "kubelet-pull", "capture.pcapng")
	out := t.TempDir()
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"render", "-o", out, "--format", "svg,html", capPath}, &stdout, &stderr); err != nil {
		t.Fatalf("render: %v\n%s", err, stderr.String())
	}
	files, _ := filepath.Glob(filepath.Join(out, "*"))
	var names []string
	for _, f := range files {
		names = append(names, filepath.Base(f))
	}
	want := "capture.html default_hello-criseq-lab_start.svg default_hello-criseq-lab_stop.svg"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("files %q, want %q", got, want)
	}
	if !strings.Contains(stdout.String(), filepath.Join(out, "capture.html")) {
		t.Errorf("output does not name the viewer:\n%s", stdout.String())
	}
	b, err := os.ReadFile(filepath.Join(out, "capture.html"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"<!DOCTYPE html>", "default/hello-criseq-lab — pod start", "default/hello-criseq-lab — pod stop",
		`id="criseq-data"`, "RunPodSandbox", "RemovePodSandbox"} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("capture.html lacks %q", want)
		}
	}

	// html alone: the flows are listed, then the viewer.
	stdout.Reset()
	out = t.TempDir()
	if err := run(context.Background(), []string{"demo", "-o", out, "--format", "html"}, &stdout, &stderr); err != nil {
		t.Fatalf("demo: %v\n%s", err, stderr.String())
	}
	files, _ = filepath.Glob(filepath.Join(out, "*"))
	if len(files) != 1 || filepath.Base(files[0]) != "demo.html" {
		t.Errorf("demo --format html wrote %q, want demo.html", files)
	}
	if lines := strings.Split(strings.TrimSpace(stdout.String()), "\n"); len(lines) < 2 || !strings.Contains(lines[len(lines)-1], "demo.html") {
		t.Errorf("demo printed:\n%s", stdout.String())
	}
}
