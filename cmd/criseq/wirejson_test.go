package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCallsJSONFromWire: calls --json writes the messages from their wire
// bytes, decoding them only to what labels read; its lines are byte for
// byte those written from the messages decoded whole, on every testdata
// capture and the shared kubelet 1.37 one (when present), redacted and
// not, and with --hide-polling.
func TestCallsJSONFromWire(t *testing.T) {
	files := append(captures(t), "demo.pcapng")
	shared := filepath.Join("..", "..", "..", "shared", "captures", "kubelet-1.37-two-containers.pcap")
	if _, err := os.Stat(shared); err == nil {
		files = append(files, shared)
	} else {
		t.Logf("%s: %v (not compared)", shared, err)
	}
	var wrote, declined int
	onWireJSON = func(ok bool) {
		if ok {
			wrote++
		} else {
			declined++
		}
	}
	defer func() { onWireJSON, jsonFromWire = nil, true }()
	out := func(args []string, wire bool) string {
		jsonFromWire = wire
		var stdout, stderr bytes.Buffer
		if err := run(context.Background(), args, &stdout, &stderr); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		return stdout.String() + "\nstderr:\n" + stderr.String()
	}
	for _, f := range files {
		for _, extra := range [][]string{nil, {"--no-redact"}, {"--hide-polling"}} {
			args := append(append([]string{"calls", "--json"}, extra...), f)
			got, want := out(args, true), out(args, false)
			if got == want {
				continue
			}
			g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
			for i := range min(len(g), len(w)) {
				if g[i] != w[i] {
					t.Fatalf("%v: line %d:\n got %s\nwant %s", args, i+1, g[i], w[i])
				}
			}
			t.Fatalf("%v: %d lines, want %d", args, len(g), len(w))
		}
	}
	if wrote == 0 || declined > wrote/100 {
		t.Errorf("%d messages written from the wire, %d declined: the wire path is not taken", wrote, declined)
	}
	t.Logf("%d messages written from the wire, %d declined", wrote, declined)
}
