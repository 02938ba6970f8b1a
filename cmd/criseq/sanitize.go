package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/criseq/criseq/capture"
	"github.com/criseq/criseq/internal/termtext"
	"github.com/criseq/criseq/sanitize"
)

const sanitizeUsage = `Usage: criseq sanitize [flags] IN OUT

Writes a copy of a capture (pcap or pcapng) that is safe to share, in a bug
report or as a CI artifact: every secret criseq redacts in its output is
replaced by "<redacted>" in the traffic itself: registry credentials of
PullImage (username, password, auth, identity and registry tokens),
container environment values, the runtime's verbose info maps, and
authorization headers. The messages, their gRPC framing and the HPACK header
blocks are encoded again around the new values, so criseq and Wireshark
decode the copy with the same calls, streams, timings and pod flows.

Nothing that cannot be rewritten is copied: a connection that is not HTTP/2
and a direction whose bytes were lost are cut where that is found; the
messages of methods that are not CRI (secrets unknown) are sent empty. Each
is said on stderr. Connections are written as criseq records them (TCP from
127.0.0.1:40000+N to 127.0.0.1:10010). OUT is created 0600 under a temporary
name and renamed into place when complete; IN may be OUT. IN - reads
standard input, OUT - writes standard output.

Examples:
  criseq sanitize cri.pcapng cri-shareable.pcapng
  criseq sanitize -q capture.pcap capture.pcap   # in place, quietly
  ssh node cat cri.pcapng | criseq sanitize - - > shareable.pcapng
`

func runSanitize(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("sanitize", sanitizeUsage, stderr)
	quiet := fs.Bool("q", false, "print only errors, not what was replaced or left out")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		fs.Usage()
		return fmt.Errorf("%w: sanitize takes IN and OUT, got %d arguments", errUsage, len(pos))
	}
	in, out := pos[0], pos[1]
	opts := sanitize.Options{}
	if !*quiet {
		opts.Log = func(format string, args ...any) {
			fmt.Fprintf(stderr, "criseq sanitize: %s\n", termtext.String(fmt.Sprintf(format, args...)))
		}
	}
	var st sanitize.Stats
	if out == capture.Stdin {
		if isTerminal(stdout) {
			return fmt.Errorf("%w: OUT - writes the capture to standard output, which is a terminal here: redirect it (> shareable.pcapng) or name a file", errUsage)
		}
		st, err = sanitize.Stream(in, stdout, opts)
	} else {
		st, err = sanitize.File(in, out, opts)
	}
	if err != nil && !errors.Is(err, sanitize.ErrPartial) {
		return err
	}
	if err != nil {
		fmt.Fprintf(stderr, "criseq: %s\n", termtext.String(err.Error()))
	}
	if !*quiet {
		fmt.Fprintf(stderr, "criseq sanitize: %d connections, %d messages (%d rewritten, %d sent empty), %d header fields redacted → %s\n",
			st.Conns, st.Messages, st.Rewritten, st.Blanked, st.HeaderFields, outName(out))
	}
	return nil
}

// outName is how an output is named in messages.
func outName(out string) string {
	if out == capture.Stdin {
		return "standard output"
	}
	return out
}
