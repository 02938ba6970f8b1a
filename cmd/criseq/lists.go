package main

import (
	"flag"
	"fmt"

	"github.com/criseq/criseq/capture"
	"github.com/criseq/criseq/capture/ebpf"
)

// listStreaming is the --cri-list-streaming flag: whether the clients of
// a capture may call KEP-5825's Stream* list methods, which read on the
// wire as their List* twins. It matters only for connections caught
// midway, whose :path may be unknown.
type listStreaming string

const listStreamingUsage = "whether the CRI clients may call the Stream* list methods (kubelet's CRIListStreaming gate): auto (what the capture says; record --attach notes kubelet's setting), off (they never do: a call caught midway that reads as both ListContainers and StreamContainers is ListContainers), on"

func (l *listStreaming) String() string {
	if *l == "" {
		return "auto"
	}
	return string(*l)
}

func (l *listStreaming) Set(v string) error {
	switch v {
	case "auto", "off", "on":
		*l = listStreaming(v)
		return nil
	}
	return fmt.Errorf("%q: give auto, off or on", v)
}

// unary reports whether the decoder may take the clients never to call
// the Stream* list methods (decode.Options.ListsUnary).
func (l listStreaming) unary(n capture.Notes) bool {
	switch l {
	case "off":
		return true
	case "on":
		return false
	}
	return n.NoListStreaming
}

func registerListStreaming(fs interface {
	Var(flag.Value, string, string)
}, l *listStreaming) {
	fs.Var(l, "cri-list-streaming", listStreamingUsage)
}

// attachNotes are the notes of a capture made by attaching.
func attachNotes(a ebpf.Attached) capture.Notes {
	return capture.Notes{NoListStreaming: a.Lists.Unary, Why: a.Lists.Why}
}
