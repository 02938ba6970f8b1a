package wasm

// Not in go-graphviz: added by update.sh. WebAssembly memory never
// shrinks, and the Go PNG renderer's calls into the module leak what its
// C getters copy (about 150 KB a graph): 3,716 PNG graphs took 735 MB.
// Reload starts a new instance of the compiled module, whose memory is
// back at its initial size; the old one is freed with everything it
// leaked.

import (
	"context"
	"fmt"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/experimental"
	"golang.org/x/sys/unix"
)

// loaded is what load made that a new instance is made from.
var loaded struct {
	runtime  wazero.Runtime
	compiled wazero.CompiledModule
}

// MemorySize is the size in bytes of the instance's memory, 0 before the
// module is loaded.
func MemorySize() uint64 {
	if mod == nil {
		return 0
	}
	return uint64(mod.mod.Memory().Size())
}

// Reload replaces a loaded instance with a new one. Everything made in the
// old one (graphs, contexts, plugins) must be dropped unused: its pointers
// mean nothing in the new one. After an error, the module is unusable.
func Reload(ctx context.Context) error {
	old := mod
	if old == nil {
		return nil
	}
	mod = nil
	funcsMu.Lock()
	clear(funcs)
	funcsMu.Unlock()
	if err := old.mod.Close(ctx); err != nil {
		return fmt.Errorf("close the graphviz module: %w", err)
	}
	fs := &WasmFileSystem{}
	m, err := loaded.runtime.InstantiateModule(withLinearMemory(ctx), loaded.compiled,
		wazero.NewModuleConfig().WithFSConfig(wazero.NewFSConfig().WithFSMount(fs, "/")).WithName("wasi"))
	if err != nil {
		return fmt.Errorf("start the graphviz module again: %w", err)
	}
	// Callbacks are keyed by their object's address, which the new
	// instance's allocations mostly repeat: registering again replaces
	// them.
	mod = &WasmModule{mod: m, fs: fs, lookupFuncMap: old.lookupFuncMap, callbackFuncMap: old.callbackFuncMap}
	for _, f := range onLoad {
		f()
	}
	return nil
}

// withLinearMemory makes the instances of the module keep their memory
// outside Go's heap, in an mmap'd reservation that grows in place: growing
// a Go slice copied it whole, the collector counted it, and a closed
// instance's memory waited for a collection to go. Unmapped, it goes at
// once.
func withLinearMemory(ctx context.Context) context.Context {
	return experimental.WithMemoryAllocator(ctx, experimental.MemoryAllocatorFunc(newLinearMemory))
}

// linearMemory is a reservation of max bytes, readable and writable up to
// its length; buf is nil when it is a Go slice instead (no reservation
// could be made).
type linearMemory struct {
	mapped []byte // the whole reservation
	buf    []byte // the Go slice used when mapped is nil
}

func newLinearMemory(capacity, max uint64) experimental.LinearMemory {
	if m, err := unix.Mmap(-1, 0, int(max), unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE); err == nil {
		return &linearMemory{mapped: m}
	}
	return &linearMemory{buf: make([]byte, 0, capacity)}
}

func (l *linearMemory) Reallocate(size uint64) []byte {
	if l.mapped == nil {
		if size > uint64(cap(l.buf)) {
			l.buf = append(l.buf[:cap(l.buf)], make([]byte, int(size)-cap(l.buf))...)
		}
		l.buf = l.buf[:size]
		return l.buf
	}
	if size > uint64(len(l.mapped)) {
		return nil
	}
	// Pages are committed as they are touched; mprotect only lets them be.
	if size > 0 {
		if err := unix.Mprotect(l.mapped[:pageUp(size)], unix.PROT_READ|unix.PROT_WRITE); err != nil {
			return nil
		}
	}
	return l.mapped[:size:size]
}

func (l *linearMemory) Free() {
	if l.mapped != nil {
		unix.Munmap(l.mapped)
		l.mapped = nil
	}
	l.buf = nil
}

func pageUp(n uint64) uint64 {
	p := uint64(unix.Getpagesize())
	return (n + p - 1) &^ (p - 1)
}
