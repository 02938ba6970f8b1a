package main

import (
	"os"
	"runtime/debug"
)

// memoryLimit is the Go heap's soft limit, unless GOMEMLIMIT says
// otherwise: on a node, criseq stays within 64 MiB of RSS (the binary and
// the runtime take the rest). What a command keeps live is bounded by the
// command (open calls and flows), not by this; below the limit, the
// collector runs at gcPercent (unless GOGC says otherwise), less often than
// Go's default: decoding allocates a lot and keeps little.
const (
	memoryLimit = 44 << 20
	gcPercent   = 300
)

// graphEngine is what the ID-flow graph's engine (Graphviz in
// WebAssembly, compiled by wazero) maps outside the Go heap: its compiled
// code (6 MiB) and its memory, which render/graphviz keeps within 4 MiB of
// where it starts. A command that draws graphs leaves it room, and 2 MiB
// more: with 10, drawing 3,716 PNG graphs peaked at 64.2 MiB of RSS.
const graphEngine = 12 << 20

// roomForGraphs lowers the heap's limit by graphEngine when formats hold
// an ID-flow graph, unless GOMEMLIMIT says otherwise.
func roomForGraphs(formats []string) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	for _, f := range formats {
		if isGraph(f) {
			debug.SetMemoryLimit(memoryLimit - graphEngine)
			return
		}
	}
}

func init() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memoryLimit)
	}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
}
