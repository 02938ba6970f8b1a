package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/criseq/criseq/capture"
	"github.com/criseq/criseq/decode"
	"github.com/criseq/criseq/flow"
	"github.com/criseq/criseq/internal/termtext"
)

// loadFlows decodes and groups a capture file as a stream, so memory
// follows the open calls and flows, not the length of the capture. Unless
// fopts.All, the bodies of kubelet's polling calls are not unmarshalled:
// no flow shows them.
func loadFlows(path string, dopts decode.Options, fopts flow.Options, stderr io.Writer) (flows []*flow.Flow, calls int, err error) {
	src, err := capture.OpenFile(path)
	if err != nil {
		return nil, 0, err
	}
	defer src.Close()
	g := flow.NewGrouper(fopts)
	dopts.OnCall = func(c *decode.Call) {
		calls++
		flows = append(flows, g.Add(c)...)
	}
	dopts.OnStreamMessage = g.Event
	if !fopts.All {
		dopts.SkipBodies = flow.SkipBody
	}
	d := decode.New(dopts)
	for {
		var c capture.Chunk
		c, err = src.Next()
		if err != nil {
			break
		}
		d.Feed(c)
	}
	d.Close()
	flows = append(flows, g.Flush()...)
	flow.Sort(flows)
	report(path, d.Errors(), stderr)
	if errors.Is(err, io.EOF) {
		return flows, calls, nil
	}
	if calls == 0 {
		return nil, 0, err
	}
	fmt.Fprintf(stderr, "criseq: %s (showing what was read before it)\n", termtext.String(err.Error()))
	return flows, calls, nil
}

func report(path string, errs []*decode.ConnError, stderr io.Writer) {
	for _, e := range errs {
		fmt.Fprintf(stderr, "criseq: %s: %s\n", path, termtext.String(e.Error()))
	}
}
