package wasm

// Not in go-graphviz: added by update.sh. The bindings look up an exported
// function for every call they make, and wazero makes a new one each time,
// with its own stack: drawing 3,716 graphs allocated 2.3 GB of stacks.
// Each function is looked up once and kept.

import (
	"context"
	"sync"

	"github.com/tetratelabs/wazero/api"
)

var (
	funcsMu sync.Mutex
	funcs   = map[string]*keptFunc{}
)

// keptFunc is an exported function kept for reuse. It is busy while it
// runs: a call made from inside it (through a host callback) gets a new
// one, as its stack is in use.
type keptFunc struct {
	api.Function
	busy bool
}

func (f *keptFunc) Call(ctx context.Context, params ...uint64) ([]uint64, error) {
	f.busy = true
	defer func() { f.busy = false }()
	return f.Function.Call(ctx, params...)
}

func (f *keptFunc) CallWithStack(ctx context.Context, stack []uint64) error {
	f.busy = true
	defer func() { f.busy = false }()
	return f.Function.CallWithStack(ctx, stack)
}

// exportedFunction is mod.ExportedFunction(name), kept while not busy.
func exportedFunction(mod api.Module, name string) api.Function {
	funcsMu.Lock()
	defer funcsMu.Unlock()
	if f := funcs[name]; f != nil && !f.busy {
		return f
	}
	fn := mod.ExportedFunction(name)
	if fn == nil {
		return nil
	}
	f := &keptFunc{Function: fn}
	if funcs[name] == nil {
		funcs[name] = f
	}
	return f
}
