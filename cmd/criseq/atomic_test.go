package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
)

// TestDiagramsReplacedWhole: while render draws the same capture into a
// directory again and again, a reader never finds a diagram shorter or
// other than whole; no temporary file is left, and the files have the
// usual mode.
func TestDiagramsReplacedWhole(t *testing.T) {
	out := t.TempDir()
	capPath := filepath.Join("..", "..", "testdata", "kubelet-init", "capture.pcapng")
	args := []string{"render", "-o", out, "--format", "svg,puml,mmd,html", capPath}
	if err := run(context.Background(), args, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	want := map[string][]byte{}
	ents, _ := os.ReadDir(out)
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(out, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		want[e.Name()] = b
	}
	if len(want) < 7 {
		t.Fatalf("render wrote %d files", len(want))
	}

	var stop atomic.Bool
	var reads, torn atomic.Int64
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				for name, w := range want {
					b, err := os.ReadFile(filepath.Join(out, name))
					reads.Add(1)
					if err != nil || !bytes.Equal(b, w) {
						if torn.Add(1) == 1 {
							t.Errorf("%s read as %d bytes (err %v), the whole file is %d", name, len(b), err, len(w))
						}
					}
				}
			}
		}()
	}
	for range 20 {
		if err := run(context.Background(), args, io.Discard, io.Discard); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	t.Logf("%d reads during 20 rewrites, %d torn", reads.Load(), torn.Load())

	old := syscall.Umask(0o022)
	syscall.Umask(old)
	ents, _ = os.ReadDir(out)
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".tmp") || strings.HasPrefix(e.Name(), ".") {
			t.Errorf("left behind: %s", e.Name())
		}
		info, _ := e.Info()
		if m := info.Mode().Perm(); m != 0o644&^os.FileMode(old) {
			t.Errorf("%s has mode %v, want 0644 less the umask %03o", e.Name(), m, old)
		}
	}
}
