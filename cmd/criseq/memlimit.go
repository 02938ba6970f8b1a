package main

import (
	"os"
	"runtime/debug"
)

// memoryLimit is the Go heap's soft limit, unless GOMEMLIMIT says
// otherwise: on a node, criseq stays within 64 MiB of RSS (the binary and
// the runtime take the rest). The garbage collector only works harder
// near it; what a command keeps live is bounded by the command (open
// calls and flows), not by this.
const memoryLimit = 44 << 20

func init() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memoryLimit)
	}
}
