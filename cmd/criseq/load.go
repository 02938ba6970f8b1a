package main

import (
	"fmt"
	"io"

	"github.com/criseq/criseq/capture"
	"github.com/criseq/criseq/decode"
	"github.com/criseq/criseq/flow"
)

// loaded is a capture file decoded and grouped.
type loaded struct {
	calls []*decode.Call
	flows []*flow.Flow
}

// load decodes a capture file; connection-level problems are reported on
// stderr, naming the file, and decoding goes on with the other connections.
func load(path string, dopts decode.Options, fopts flow.Options, stderr io.Writer) (*loaded, error) {
	src, err := capture.OpenFile(path)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	calls, connErrs, err := decode.DecodeAll(src, dopts)
	for _, e := range connErrs {
		fmt.Fprintf(stderr, "criseq: %s: %v\n", path, e)
	}
	if err != nil {
		if len(calls) == 0 {
			return nil, err
		}
		// A truncated file: keep what was read before the damage.
		fmt.Fprintf(stderr, "criseq: %v (showing the %d calls read before it)\n", err, len(calls))
	}
	return &loaded{calls: calls, flows: flow.Group(calls, fopts)}, nil
}
