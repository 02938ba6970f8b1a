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

func init() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memoryLimit)
	}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
}
