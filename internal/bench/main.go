// Command bench measures criseq against its peers on this machine and
// prints a table of ratios: each command on a large capture of real
// kubelet traffic against tshark's decode of the same file, and the
// relay's latency against socat and a direct connection (make bench).
//
//	go run ./internal/bench                 # the whole table
//	go run ./internal/bench capture -o F    # only write the large capture
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := "table"
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "table":
		return runTable(ctx, args, stdout, stderr)
	case "capture":
		return runCapture(args, stdout, stderr)
	case "relay":
		return runRelay(ctx, args, stdout, stderr)
	case "attach":
		return runAttach(ctx, args, stdout, stderr)
	case "cri-server":
		return runCRIServer(ctx, args)
	case "measure":
		return runMeasure(args)
	}
	return fmt.Errorf("unknown command %q (table, capture, relay, attach, cri-server, measure)", cmd)
}
