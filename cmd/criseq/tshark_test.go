package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// TestTsharkAgrees checks, for every testdata capture, that real tshark
// decodes the same gRPC method paths as criseq, call for call.
func TestTsharkAgrees(t *testing.T) {
	if _, err := exec.LookPath("tshark"); err != nil {
		t.Skip("tshark not installed (apt-get install tshark); .ci/run installs it")
	}
	for _, capPath := range captures(t) {
		t.Run(filepath.Base(filepath.Dir(capPath)), func(t *testing.T) {
			want := tsharkPaths(t, capPath)
			got := criseqPaths(t, capPath)
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("criseq decodes %d calls, tshark %d request headers\n%s", len(got), len(want), countDiff(want, got))
			}
		})
	}
}

// tsharkPaths lists the :path of every request header block tshark decodes, sorted.
func tsharkPaths(t *testing.T, file string) []string {
	t.Helper()
	cmd := exec.Command("tshark", "-n", "-r", file, "-d", "tcp.port==10010,http2",
		"-Y", "http2.headers.path", "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=|", "-e", "http2.headers.path")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tshark: %v\n%s", err, stderr.String())
	}
	var paths []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		for _, p := range strings.Split(line, "|") {
			if p != "" {
				paths = append(paths, p)
			}
		}
	}
	sort.Strings(paths)
	return paths
}

func criseqPaths(t *testing.T, file string) []string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"calls", "--json", file}, &stdout, &stderr); err != nil {
		t.Fatalf("calls: %v\n%s", err, stderr.String())
	}
	var paths []string
	dec := json.NewDecoder(&stdout)
	for dec.More() {
		var c struct{ Method string }
		if err := dec.Decode(&c); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, c.Method)
	}
	sort.Strings(paths)
	return paths
}

func countDiff(want, got []string) string {
	n := map[string]int{}
	for _, p := range want {
		n[p]++
	}
	for _, p := range got {
		n[p]--
	}
	keys := make([]string, 0, len(n))
	for k, v := range n {
		if v != 0 {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString("  " + k + ": tshark−criseq = " + itoa(n[k]) + "\n")
	}
	return b.String()
}
