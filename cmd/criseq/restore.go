package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/criseq/criseq/capture"
)

const restoreUsage = `Usage: criseq restore [SOCKET]

Puts back a runtime socket that "criseq record --swap SOCKET" moved aside, when
that criseq could not do it itself: killed with SIGKILL, out of memory, or the
machine lost power. Until then SOCKET is criseq's dead relay socket, the
runtime's socket waits at SOCKET.criseq-orig, and the runtime is unreachable
for new connections.

It trades the two back in one atomic rename and removes the leftovers
(SOCKET.criseq-orig, SOCKET.criseq-orig.json). If the runtime restarted
meanwhile and recreated SOCKET, that socket is left alone and only the stale
moved-aside one is removed. It refuses while the criseq record that swapped
SOCKET still runs (stop that one: it puts the socket back itself). With
nothing to restore, it says so and succeeds. SOCKET defaults to
/run/containerd/containerd.sock.

Examples:
  sudo criseq restore
  sudo criseq restore /run/containerd/containerd.sock
  sudo criseq restore /var/run/crio/crio.sock
`

func runRestore(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("restore", restoreUsage, stderr)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	path := "/run/containerd/containerd.sock"
	switch len(pos) {
	case 0:
	case 1:
		path = pos[0]
	default:
		return fmt.Errorf("%w: restore takes one socket path (got %q)", errUsage, pos)
	}
	logf := func(format string, args ...any) {
		fmt.Fprintf(stdout, "criseq "+format+"\n", args...)
	}
	err = capture.RestoreStale(path, logf)
	switch {
	case errors.Is(err, capture.ErrNotSwapped):
		fmt.Fprintf(stdout, "criseq restore: nothing to restore: %s was not swapped (no %s)\n", path, capture.AsideName(path))
		return nil
	}
	return err
}
