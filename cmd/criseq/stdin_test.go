package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// withStdin runs f with standard input reading the file at path (a pipe
// or a file: criseq reads either as a stream).
func withStdin(t *testing.T, path string, f func()) {
	t.Helper()
	in, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	old := os.Stdin
	os.Stdin = in
	defer func() { os.Stdin = old }()
	f()
}

// TestReadsStandardInput: every command that reads a capture reads it from
// standard input given "-", as it reads the file: the same calls, diagrams,
// comparison and sanitized bytes (sanitize's OUT "-" is standard output).
func TestReadsStandardInput(t *testing.T) {
	capPath := filepath.Join("..", "..", "testdata", "kubelet-warm", "capture.pcapng")
	dir := t.TempDir()
	runOut := func(args ...string) string {
		t.Helper()
		var stdout, stderr bytes.Buffer
		if err := run(context.Background(), args, &stdout, &stderr); err != nil {
			t.Fatalf("criseq %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
		}
		return stdout.String()
	}
	fromStdin := func(args ...string) (out string) {
		t.Helper()
		withStdin(t, capPath, func() { out = runOut(args...) })
		return out
	}
	sameDir := func(a, b string, rename map[string]string) {
		t.Helper()
		want, got := readDir(t, a), readDir(t, b)
		if len(want) == 0 || len(want) != len(got) {
			t.Fatalf("%d files from the file, %d from standard input", len(want), len(got))
		}
		for name, w := range want {
			g, ok := got[name]
			if r, renamed := rename[name]; renamed {
				g, ok = got[r]
			}
			if !ok {
				t.Errorf("%s: not written from standard input", name)
			} else if !bytes.Equal(w.data, g.data) && rename[name] == "" {
				t.Errorf("%s differs read from standard input", name)
			}
		}
	}

	for _, args := range [][]string{{"calls", "F"}, {"calls", "--json", "F"}, {"diff", "--", "F@start", "F@stop"}} {
		with := func(f string) []string {
			var a []string
			for _, x := range args {
				a = append(a, strings.Replace(x, "F", f, 1))
				if x == "--" {
					a[len(a)-1] = x
				}
			}
			return a
		}
		want := runOut(with(capPath)...)
		got := fromStdin(with("-")...)
		if args[0] == "diff" {
			// Both sides read standard input once; it is named "-".
			got = strings.ReplaceAll(got, ", - (", ", "+capPath+" (")
		}
		if got != want {
			t.Errorf("criseq %s: from standard input:\n%s\nfrom the file:\n%s", strings.Join(args, " "), got, want)
		}
	}

	r1, r2 := filepath.Join(dir, "r1"), filepath.Join(dir, "r2")
	runOut("render", "-o", r1, "--format", "svg,mmd,html", capPath)
	fromStdin("render", "-o", r2, "--format", "svg,mmd,html", "-")
	sameDir(r1, r2, map[string]string{"capture.html": "stdin.html"})

	w1, w2 := filepath.Join(dir, "w1"), filepath.Join(dir, "w2")
	runOut("watch", "-r", capPath, "-o", w1, "--format", "svg")
	fromStdin("watch", "-r", "-", "-o", w2, "--format", "svg")
	sameDir(w1, w2, nil)

	s1, s2 := filepath.Join(dir, "s1.pcapng"), filepath.Join(dir, "s2.pcapng")
	runOut("sanitize", "-q", capPath, s1)
	fromStdin("sanitize", "-q", "-", s2)
	toStdout := runOut("sanitize", "-q", capPath, "-")
	want, err := os.ReadFile(s1)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(s2); !bytes.Equal(got, want) {
		t.Error("sanitize - OUT: not the bytes sanitize FILE OUT writes")
	}
	if !bytes.Equal([]byte(toStdout), want) {
		t.Errorf("sanitize FILE -: %d bytes, not the %d bytes sanitize FILE OUT writes", len(toStdout), len(want))
	}
}

// TestStandardInputTerminal: "-" with a terminal for standard input (or
// sanitize's standard output) is refused with what to do, not a wait for
// bytes that never come.
func TestStandardInputTerminal(t *testing.T) {
	// A pseudo-terminal's master side is a terminal, whether or not the
	// test has one.
	tty, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal to test with: %v", err)
	}
	defer tty.Close()
	old := os.Stdin
	os.Stdin = tty
	defer func() { os.Stdin = old }()
	err = run(context.Background(), []string{"calls", "-"}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "terminal") || !strings.Contains(err.Error(), "pipe") {
		t.Errorf("calls - from a terminal: %v, want it refused saying to pipe a capture in", err)
	}
	capPath := filepath.Join("..", "..", "testdata", "kubelet-warm", "capture.pcapng")
	err = run(context.Background(), []string{"sanitize", capPath, "-"}, tty, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "terminal") {
		t.Errorf("sanitize FILE - to a terminal: %v, want it refused", err)
	}
	// /dev/null is a character device, not a terminal: an empty input.
	null, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	os.Stdin = null
	err = run(context.Background(), []string{"calls", "-"}, io.Discard, io.Discard)
	if err == nil || strings.Contains(err.Error(), "terminal") {
		t.Errorf("calls - < /dev/null: %v, want the error of an empty capture", err)
	}
}
