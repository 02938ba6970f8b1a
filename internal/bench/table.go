package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// buildCriseq builds the criseq binary of this tree into dir as make build
// does (static, no cgo): the binary a user installs. A cgo build also maps
// the C library, about 2.5 MB more of peak RSS.
func buildCriseq(root, dir string) (string, error) {
	bin := filepath.Join(dir, "criseq")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "./cmd/criseq")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/criseq: %v\n%s", err, out)
	}
	return bin, nil
}

// workspace is what a bench run needs: a temporary directory, the criseq
// binary of this tree built into it, and the bench's own binary (its
// CRI server).
type workspace struct{ root, tmp, bin, self string }

func newWorkspace() (*workspace, error) {
	w := &workspace{}
	var err error
	if w.root, err = repoRoot(); err != nil {
		return nil, err
	}
	if w.self, err = os.Executable(); err != nil {
		return nil, err
	}
	if w.tmp, err = os.MkdirTemp("", "criseq-bench-"); err != nil {
		return nil, err
	}
	if w.bin, err = buildCriseq(w.root, w.tmp); err != nil {
		w.remove()
		return nil, err
	}
	return w, nil
}

func (w *workspace) remove() { os.RemoveAll(w.tmp) }

func runRelay(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("relay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	calls := fs.Int("calls", 20000, "small unary calls per path and round")
	bigCalls := fs.Int("big", 10, "16 MiB responses per path and round")
	rounds := fs.Int("rounds", 3, "interleaved rounds; the best counts")
	var extra stringList
	fs.Var(&extra, "extra", "another relay to compare: NAME=COMMAND ARGS, with {listen} and {upstream} in ARGS (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	w, err := newWorkspace()
	if err != nil {
		return err
	}
	defer w.remove()
	bin, self := w.bin, w.self
	rb := &relayBench{calls: *calls, bigCalls: *bigCalls, rounds: *rounds, extra: extra}
	defer rb.stop()
	if err := rb.start(ctx, self, bin); err != nil {
		return err
	}
	if err := rb.run(ctx); err != nil {
		return err
	}
	rb.stop() // reads each relay's CPU
	printRelay(stdout, rb)
	return nil
}

func printRelay(w io.Writer, rb *relayBench) {
	direct := rb.paths[0].best
	fmt.Fprintf(w, "%-14s %10s %10s %14s %10s %10s %10s\n", "path", "p50", "p99", "16MiB resp", "p50/direct", "p99/direct", "relay CPU")
	for _, p := range rb.paths {
		fmt.Fprintf(w, "%-14s %10s %10s %14s %10.2f %10.2f %10s\n", p.name, us(p.best.p50), us(p.best.p99), p.best.big.Round(100*time.Microsecond),
			float64(p.best.p50)/float64(direct.p50), float64(p.best.p99)/float64(direct.p99), relayCPU(p))
	}
}

type stringList []string

func (l *stringList) String() string     { return fmt.Sprint(*l) }
func (l *stringList) Set(s string) error { *l = append(*l, s); return nil }

// relayCPU is a relay's CPU over every round, in seconds.
func relayCPU(p *relayPath) string {
	if p.pgid == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f s", p.cpu.Seconds())
}

func us(d time.Duration) string { return fmt.Sprintf("%.0fµs", float64(d)/1e3) }
