package graphviz

// Not in go-graphviz: added by update.sh (see internal/wasm/reload.go).

import (
	"context"

	"github.com/criseq/criseq/third_party/go-graphviz/internal/wasm"
)

// MemorySize is the size in bytes of the WebAssembly module's memory, 0
// before it is loaded.
func MemorySize() uint64 { return wasm.MemorySize() }

// Reload starts the module again with its memory at its initial size.
// Every Graphviz, graph and plugin made before must be dropped unused.
func Reload(ctx context.Context) error { return wasm.Reload(ctx) }
