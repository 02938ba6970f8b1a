package main

import (
	"io"
	"os"
	"strings"
	"testing"
)

// BenchmarkCommand runs one criseq command line in process, given in
// CRISEQ_BENCH_ARGS (e.g. "calls --json big.pcapng"), so that it can be
// profiled: go test -run '^$' -bench Command -cpuprofile cpu.out
// ./cmd/criseq. make bench times whole processes instead.
func BenchmarkCommand(b *testing.B) {
	args := strings.Fields(os.Getenv("CRISEQ_BENCH_ARGS"))
	if len(args) == 0 {
		b.Skip("set CRISEQ_BENCH_ARGS to a command line, e.g. \"calls big.pcapng\"")
	}
	if len(args) > 0 {
		if st, err := os.Stat(args[len(args)-1]); err == nil {
			b.SetBytes(st.Size())
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := run(b.Context(), args, io.Discard, io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}
