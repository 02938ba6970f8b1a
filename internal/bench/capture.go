package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/criseq/criseq/internal/benchcap"
)

// repoRoot finds the module's root from the working directory.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		dir = parent
	}
}

func runCapture(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("capture", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "", "file to write")
	size := fs.Int64("size", 64<<20, "about this many bytes")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" {
		return fmt.Errorf("capture: -o FILE is required")
	}
	root, err := repoRoot()
	if err != nil {
		return err
	}
	srcs := benchcap.MeasuredSources(root)
	t0 := time.Now()
	st, err := benchcap.Write(*out, srcs, *size)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: %.1f MB, %d rounds of %d captures (%s), %d connections, %d events, in %v\n",
		*out, float64(st.Bytes)/1e6, st.Rounds, len(srcs), names(srcs), st.Conns, st.Events, time.Since(t0).Round(time.Millisecond))
	return nil
}

func names(paths []string) string {
	var out []string
	for _, p := range paths {
		out = append(out, filepath.Base(filepath.Dir(p))+"/"+filepath.Base(p))
	}
	return strings.Join(out, ", ")
}
