package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestGraphvizLoadsOnFirstGraph: the criseq binary draws the ID-flow graph
// itself (no helper program), and loads Graphviz's WebAssembly only when it
// draws one: a command that draws none leaves no compilation cache, and
// nothing goes to $TMPDIR/go-graphviz either way.
func TestGraphvizLoadsOnFirstGraph(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds criseq")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "criseq")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cacheHome, tmp := filepath.Join(dir, "cache"), filepath.Join(dir, "tmp")
	os.Mkdir(tmp, 0o700)
	env := append(os.Environ(), "XDG_CACHE_HOME="+cacheHome, "TMPDIR="+tmp, "PATH=/nonexistent")
	capPath, _ := filepath.Abs(filepath.Join("..", "..", "testdata", "crictl-lifecycle", "capture.pcapng"))
	runBin := func(args ...string) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env, cmd.Dir = env, dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("criseq %v: %v\n%s", args, err, out)
		}
	}
	cache := filepath.Join(cacheHome, "criseq")
	runBin("calls", capPath)
	runBin("render", "-o", filepath.Join(dir, "out"), "--format", "svg,puml", capPath)
	if _, err := os.Stat(cache); !os.IsNotExist(err) {
		t.Errorf("calls and render without a graph made %s (%v): Graphviz was loaded", cache, err)
	}
	runBin("render", "-o", filepath.Join(dir, "out"), "--format", "graph,graph-png", capPath)
	for _, f := range []string{"default_hello-crictl_start.graph.svg", "default_hello-crictl_start.graph.png"} {
		if st, err := os.Stat(filepath.Join(dir, "out", f)); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
	st, err := os.Stat(cache)
	if err != nil {
		t.Errorf("drawing a graph kept no compilation cache in %s: %v", cache, err)
	} else if st.Mode().Perm()&0o077 != 0 {
		t.Errorf("%s has mode %v, want it private", cache, st.Mode().Perm())
	}
	if _, err := os.Stat(filepath.Join(tmp, "go-graphviz")); !os.IsNotExist(err) {
		t.Errorf("$TMPDIR/go-graphviz made (%v)", err)
	}
}
