package wasm

import (
	"bytes"
	"context"
	"testing"
)

// TestLinearMemoryGrowsInPlace: the mmap'd memory keeps its bytes and its
// address as it grows, refuses to grow past its reservation, and the Go
// slice used when no reservation can be made keeps its bytes too.
func TestLinearMemoryGrowsInPlace(t *testing.T) {
	const page = 64 << 10 // a WebAssembly page
	mapped := newLinearMemory(page, 16*page).(*linearMemory)
	defer mapped.Free()
	if mapped.mapped == nil {
		t.Fatal("no reservation made (mmap failed): the Go-slice fallback is in use")
	}
	for name, l := range map[string]*linearMemory{"mmap": mapped, "slice": {buf: make([]byte, 0, page)}} {
		b := l.Reallocate(page)
		if len(b) != page {
			t.Fatalf("%s: %d bytes, want %d", name, len(b), page)
		}
		want := bytes.Repeat([]byte("criseq"), 1000)
		copy(b[100:], want)
		b = l.Reallocate(8 * page)
		if len(b) != 8*page || !bytes.Equal(b[100:100+len(want)], want) {
			t.Fatalf("%s: growing to %d bytes lost what was written", name, 8*page)
		}
		b[len(b)-1] = 1 // writable to its end
	}
	first := &mapped.Reallocate(page)[0]
	if &mapped.Reallocate(16 * page)[0] != first {
		t.Error("the mmap'd memory moved as it grew")
	}
	if mapped.Reallocate(17*page) != nil {
		t.Error("grew past its reservation")
	}
}

// TestReloadStartsAgain: after Reload the module answers again, from a
// memory back at its initial size.
func TestReloadStartsAgain(t *testing.T) {
	ctx := context.Background()
	m := module()
	start := MemorySize()
	p, err := m.ExportedFunction("malloc").Call(ctx, 8<<20) // grows the memory
	if err != nil || p[0] == 0 {
		t.Fatalf("malloc: %v, %v", p, err)
	}
	if MemorySize() <= start {
		t.Fatalf("memory %d after an 8 MiB malloc, %d before", MemorySize(), start)
	}
	if err := Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if got := MemorySize(); got != start {
		t.Errorf("memory %d after Reload, want %d as at the start", got, start)
	}
	if p, err := module().ExportedFunction("malloc").Call(ctx, 16); err != nil || p[0] == 0 {
		t.Fatalf("malloc after Reload: %v, %v", p, err)
	}
}
