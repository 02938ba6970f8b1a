package render

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestMain builds the criseq-graphviz helper the graph formats run, unless
// CRISEQ_GRAPHVIZ names one already.
func TestMain(m *testing.M) {
	if os.Getenv("CRISEQ_GRAPHVIZ") == "" {
		dir, err := os.MkdirTemp("", "criseq-graphviz-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		bin := filepath.Join(dir, "criseq-graphviz")
		cmd := exec.Command("go", "build", "-o", bin, "../cmd/criseq-graphviz")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "building criseq-graphviz for the graph tests:", err)
			os.Exit(1)
		}
		os.Setenv("CRISEQ_GRAPHVIZ", bin)
		code := m.Run()
		os.RemoveAll(dir)
		os.Exit(code)
	}
	os.Exit(m.Run())
}
