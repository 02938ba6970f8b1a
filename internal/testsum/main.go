// Command testsum reads `go test -json` on stdin and prints what a person
// needs from a test run: one line per package, the full output of every
// failed test, and every skipped test with its reason, so that a skip is
// never silent. It exits 1 if anything failed or nothing ran.
//
//	go test -json ./... | go run ./internal/testsum
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

type event struct {
	Action  string
	Package string
	Test    string
	Output  string
	Elapsed float64
}

type key struct{ pkg, test string }

func main() {
	os.Exit(run(os.Stdin, os.Stdout))
}

func run(in io.Reader, out io.Writer) int {
	outputs := map[key][]string{}
	var skips, fails []key
	var passed, events int
	failed := false
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			// Not JSON: a build error printed by go itself.
			fmt.Fprintln(out, sc.Text())
			failed = true
			continue
		}
		events++
		k := key{e.Package, e.Test}
		switch e.Action {
		case "output", "build-output":
			outputs[k] = append(outputs[k], e.Output)
		case "skip":
			if e.Test != "" {
				skips = append(skips, k)
			} else {
				fmt.Fprintf(out, "?   \t%s\t[no test files]\n", e.Package)
			}
		case "fail", "build-fail":
			failed = true
			if e.Test != "" {
				fails = append(fails, k)
				continue
			}
			// The package's own output: build errors, a panic outside
			// tests; go test's FAIL summary lines are printed here anyway.
			for _, l := range outputs[k] {
				if l != "FAIL\n" && !strings.HasPrefix(l, "FAIL\t") {
					fmt.Fprint(out, l)
				}
			}
			if e.Package != "" {
				fmt.Fprintf(out, "FAIL\t%s\t%.3fs\n", e.Package, e.Elapsed)
			}
		case "pass":
			if e.Test != "" {
				passed++
				continue
			}
			fmt.Fprintf(out, "ok  \t%s\t%.3fs\n", e.Package, e.Elapsed)
		}
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintf(out, "testsum: reading go test -json: %v\n", err)
		return 1
	}
	for _, k := range fails {
		fmt.Fprintf(out, "\n--- FAIL: %s (%s)\n", k.test, k.pkg)
		fmt.Fprint(out, strings.Join(outputs[k], ""))
	}
	if len(skips) > 0 {
		sort.Slice(skips, func(i, j int) bool {
			return skips[i].pkg < skips[j].pkg || skips[i].pkg == skips[j].pkg && skips[i].test < skips[j].test
		})
		fmt.Fprintf(out, "\n%d tests skipped:\n", len(skips))
		for _, k := range skips {
			fmt.Fprintf(out, "SKIP %s %s: %s\n", strings.TrimPrefix(k.pkg, "github.com/criseq/criseq/"), k.test, reason(outputs[k]))
		}
	}
	fmt.Fprintf(out, "\n%d passed, %d skipped, %d failed\n", passed, len(skips), len(fails))
	if failed || events == 0 {
		return 1
	}
	return 0
}

// reason is a skipped test's message: its output without go test's own
// === and --- lines.
func reason(lines []string) string {
	var r []string
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "=== ") || strings.HasPrefix(t, "--- ") {
			continue
		}
		r = append(r, t)
	}
	if len(r) == 0 {
		return "(no reason given)"
	}
	return strings.Join(r, " / ")
}
