package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/criseq/criseq/capture"
	"github.com/criseq/criseq/internal/testpeer"
)

// TestTsharkAgrees checks, for every testdata capture, that real tshark
// decodes the same gRPC requests as criseq: per connection, the same
// streams with the same method paths, in the same order.
func TestTsharkAgrees(t *testing.T) {
	testpeer.Need(t, "tshark", "apt-get install tshark; .ci/run installs it")
	for _, capPath := range captures(t) {
		t.Run(filepath.Base(filepath.Dir(capPath)), func(t *testing.T) {
			want := testpeer.TsharkRequests(t, capPath, capture.ServerPort)
			got := criseqRequests(t, capPath)
			compareRequests(t, want, got)
		})
	}
}

// compareRequests fails on any difference between two per-connection
// request lists (want: tshark's).
func compareRequests(t *testing.T, want, got map[string][]testpeer.Request) {
	t.Helper()
	n := 0
	for conn, w := range want {
		n += len(w)
		g := got[conn]
		if !slices.Equal(g, w) {
			t.Errorf("connection %s: criseq decodes %d requests, tshark %d; first difference:\n%s", conn, len(g), len(w), firstRequestDiff(w, g))
		}
	}
	for conn, g := range got {
		if _, ok := want[conn]; !ok {
			t.Errorf("connection %s: criseq decodes %d requests, tshark none", conn, len(g))
		}
	}
	if n == 0 {
		t.Error("tshark found no requests at all")
	}
}

func firstRequestDiff(want, got []testpeer.Request) string {
	for i := range max(len(want), len(got)) {
		var w, g string
		if i < len(want) {
			w = want[i].String()
		}
		if i < len(got) {
			g = got[i].String()
		}
		if w != g {
			return "  #" + itoa(i+1) + ": tshark " + w + ", criseq " + g
		}
	}
	return ""
}

// criseqRequests lists the calls `criseq calls --json` prints, per
// connection (named by the client's address in the file) in start order.
func criseqRequests(t *testing.T, file string) map[string][]testpeer.Request {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"calls", "--json", file}, &stdout, &stderr); err != nil {
		t.Fatalf("calls: %v\n%s", err, stderr.String())
	}
	type call struct {
		Time     time.Time
		Conn     uint64
		Stream   uint32
		Method   string
		Response json.RawMessage // a server stream's message, not a call
	}
	var calls []call
	dec := json.NewDecoder(&stdout)
	for dec.More() {
		var c call
		if err := dec.Decode(&c); err != nil {
			t.Fatal(err)
		}
		if c.Response == nil {
			calls = append(calls, c)
		}
	}
	slices.SortStableFunc(calls, func(a, b call) int { return a.Time.Compare(b.Time) })
	clients := connClients(t, file)
	got := map[string][]testpeer.Request{}
	for _, c := range calls {
		cl := clients[c.Conn]
		got[cl] = append(got[cl], testpeer.Request{Stream: c.Stream, Path: c.Method})
	}
	return got
}

// connClients maps criseq's connection numbers to the client addresses
// the file gives them.
func connClients(t *testing.T, file string) map[uint64]string {
	t.Helper()
	src, err := capture.OpenFile(file)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	m := map[uint64]string{}
	for {
		c, err := src.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if c.Kind == capture.Open {
			m[c.Conn] = src.Conn(c.Conn).Client
		}
	}
	return m
}
