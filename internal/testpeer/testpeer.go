// Package testpeer decides what a test does when a real peer it needs
// (tshark, PlantUML, Node.js and Mermaid, Chromium, containerd, root) is
// missing: it skips, saying what is missing and how to get it, except in CI
// (CI=true in the environment), where a missing peer fails the test, so
// that a CI run never passes without having run its real-peer tests.
//
// In: the test and what it needs. Out: the peer's path, or a skip or failure.
// Used by tests only.
package testpeer

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"testing"
)

// InCI reports whether the tests run in CI: CI set to a true value
// ("true", "1"), as CI services do.
func InCI() bool {
	v, err := strconv.ParseBool(os.Getenv("CI"))
	return err == nil && v
}

// Missing stops the test because a peer is missing: a skip with the reason,
// or in CI a failure. The message names what is missing and how to get it.
func Missing(tb testing.TB, format string, args ...any) {
	tb.Helper()
	msg := fmt.Sprintf(format, args...)
	if InCI() {
		tb.Fatalf("real test peer missing, and CI=true: failing instead of skipping: %s", msg)
	}
	tb.Skipf("real test peer missing: %s", msg)
}

// Need returns the path of program name, or stops the test with hint
// (how to install it) when it is not on PATH.
func Need(tb testing.TB, name, hint string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Missing(tb, "%s not installed (%s)", name, hint)
	}
	return p
}

// NeedFile stops the test unless path exists; what says what it is.
func NeedFile(tb testing.TB, path, what, hint string) {
	tb.Helper()
	if _, err := os.Stat(path); err != nil {
		Missing(tb, "%s missing at %s (%s)", what, path, hint)
	}
}

// NeedRoot stops the test unless it runs as root; why says what needs it.
func NeedRoot(tb testing.TB, why string) {
	tb.Helper()
	if os.Geteuid() != 0 {
		Missing(tb, "needs root: %s", why)
	}
}
