package wasm

// Not in go-graphviz: added by update.sh so that a program linking this
// package pays for the WebAssembly (compiling and instantiating ~1.5 MB,
// about 1.5 s and 20 MB) only when it draws a graph.

import (
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/tetratelabs/wazero"
)

var (
	loadOnce sync.Once
	onLoad   []func()
	// lookupFuncMap is filled by Register_* at init, before the module
	// loads.
	lookupFuncMap = &LookupFuncMap{}
)

// OnLoad runs f once the module is loaded, before any other use of it.
func OnLoad(f func()) { onLoad = append(onLoad, f) }

// module loads the WebAssembly module on first use. Not safe for
// concurrent first use: callers serialise their use of graphviz.
func module() *WasmModule {
	if mod != nil {
		return mod
	}
	loadOnce.Do(func() {
		load()
		for _, f := range onLoad {
			f()
		}
	})
	return mod
}

// privateCache is wazero's compilation cache in a directory of this user's
// own (the user cache directory, 0700, checked to be theirs), or none: a
// shared directory such as /tmp/go-graphviz could hold compiled code
// another user put there.
func privateCache() wazero.CompilationCache {
	base, err := os.UserCacheDir()
	if err != nil {
		return nil
	}
	dir := filepath.Join(base, "criseq", "go-graphviz-v0.2.10")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil
	}
	st, err := os.Lstat(dir)
	if err != nil || !st.IsDir() || st.Mode().Perm()&0o077 != 0 {
		return nil
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); !ok || int(sys.Uid) != os.Geteuid() {
		return nil
	}
	cache, err := wazero.NewCompilationCacheWithDir(dir)
	if err != nil {
		return nil
	}
	return cache
}
