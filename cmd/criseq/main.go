// Command criseq records the CRI traffic between kubelet and its container
// runtime and draws each pod start and stop as a sequence diagram.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/criseq/criseq/internal/termtext"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) && !errors.Is(err, errReported) {
			fmt.Fprintln(os.Stderr, "criseq:", termtext.Lines(err.Error()))
		}
		var ee *exitError
		switch {
		case errors.As(err, &ee):
			os.Exit(ee.code)
		case errors.Is(err, errUsage) || errors.Is(err, flag.ErrHelp):
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// errUsage marks a command line that could not be understood.
var errUsage = errors.New("usage")

// errReported is returned when the error was already printed.
var errReported = errors.New("error already reported")

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"record", "relay a CRI socket and record its traffic to a pcapng file", runRecord},
		{"calls", "list the CRI calls in a capture (a table, or JSON lines)", runCalls},
		{"render", "draw each pod start and stop in a capture as a sequence diagram", runRender},
		{"watch", "record, decode and draw live: a diagram the moment each pod flow completes", runWatch},
		{"diff", "compare two pod flows side by side: per-phase durations and the calls only one made", runDiff},
		{"sanitize", "copy a capture with every secret replaced, safe to share", runSanitize},
		{"restore", "put back a socket that criseq record --swap moved aside", runRestore},
		{"demo", "draw the diagrams of a bundled real capture (no root, no node)", runDemo},
	}
}

const mainUsage = `criseq shows what really happens when Kubernetes starts a pod: it records the
CRI calls between kubelet and the container runtime and draws each pod start
and stop as a sequence diagram.

Usage:
  criseq <command> [flags] [arguments]

Commands:
%s
Examples:
  criseq demo -o out                     # diagrams of a bundled real capture
  sudo criseq record --upstream /run/containerd/containerd.sock \
      --listen /run/criseq.sock -w cri.pcapng
  sudo criseq record --swap /run/containerd/containerd.sock -w cri.pcapng
                                         # take over the runtime's own socket
  criseq calls cri.pcapng                # every CRI call, one per line
  criseq render -o diagrams cri.pcapng   # one diagram per pod start/stop
  criseq sanitize cri.pcapng share.pcapng  # a copy without secrets

Run "criseq <command> -h" for a command's flags and examples.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		printUsage(stderr)
		return fmt.Errorf("%w: no command given", errUsage)
	}
	name := args[0]
	switch name {
	case "help", "-h", "-help", "--help":
		if len(args) > 1 {
			return run(ctx, []string{args[1], "-h"}, stdout, stderr)
		}
		printUsage(stdout)
		return nil
	case "version", "--version":
		fmt.Fprintln(stdout, "criseq", version)
		return nil
	}
	for _, c := range commands() {
		if c.name == name {
			return c.run(ctx, args[1:], stdout, stderr)
		}
	}
	printUsage(stderr)
	return fmt.Errorf("%w: unknown command %q", errUsage, name)
}

var version = "v0.1.0-dev"

func printUsage(w io.Writer) {
	list := ""
	for _, c := range commands() {
		list += fmt.Sprintf("  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, mainUsage, list)
}

// newFlags makes a subcommand's FlagSet whose -h prints usage with examples.
func newFlags(name, usage string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("criseq "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fmt.Fprintln(stderr, "\nFlags:")
		fs.PrintDefaults()
	}
	return fs
}

// parse parses flags, allowing them after the positional arguments too.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %v", errUsage, err)
		}
		rest := fs.Args()
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			// Everything after -- is an argument, even one that starts
			// with - (diff -- -@start -@stop).
			return append(pos, rest...), nil
		}
		args = rest
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}
