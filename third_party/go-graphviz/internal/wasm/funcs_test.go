package wasm

import (
	"context"
	"testing"
)

// TestExportedFunctionKept: the module's malloc is looked up once and the
// same function comes back; while it runs, a lookup gets another one.
func TestExportedFunctionKept(t *testing.T) {
	m := module()
	a, b := m.ExportedFunction("malloc"), m.ExportedFunction("malloc")
	if a == nil || a != b {
		t.Fatalf("malloc looked up twice: %p and %p, want the same function", a, b)
	}
	if m.ExportedFunction("no such function") != nil {
		t.Error("a function the module does not export was found")
	}
	kept := a.(*keptFunc)
	kept.busy = true
	c := m.ExportedFunction("malloc")
	kept.busy = false
	if c == a {
		t.Fatal("a busy function was handed out again")
	}
	p, err := c.Call(context.Background(), 16)
	if err != nil || len(p) != 1 || p[0] == 0 {
		t.Fatalf("malloc through a new function: %v, %v", p, err)
	}
	if _, err := m.ExportedFunction("free").Call(context.Background(), p[0]); err != nil {
		t.Fatal(err)
	}
	if m.ExportedFunction("malloc") != a {
		t.Error("the kept function was not handed out once idle")
	}
}
