#!/usr/bin/env bash
# Copies github.com/goccy/go-graphviz at the version pinned below from the
# Go module cache (go mod download) into this directory, as the package
# github.com/criseq/criseq/third_party/go-graphviz, with one change: its
# WebAssembly is compiled and instantiated on first use instead of in
# package init functions (which every program linking it ran at start,
# writing a compilation cache to $TMPDIR/go-graphviz). See README.md.
set -euo pipefail
cd "$(dirname "$0")"
VERSION=v0.2.10
MOD=github.com/goccy/go-graphviz
NEW=github.com/criseq/criseq/third_party/go-graphviz
src=$(go mod download -json "$MOD@$VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -d "$src" ] || { echo "update.sh: $MOD@$VERSION not downloaded" >&2; exit 1; }

find . -mindepth 1 -maxdepth 1 ! -name update.sh ! -name README.md ! -name '*.go.in' -exec rm -rf {} +
for f in LICENSE alias.go graphviz.go option.go; do cp "$src/$f" .; done
mkdir -p cdt cgraph gvc internal/wasm
cp "$src"/cdt/*.go cdt/
cp "$src"/cgraph/*.go cgraph/
cp "$src"/gvc/*.go gvc/
cp "$src"/internal/wasm/bind.go "$src"/internal/wasm/ext.go "$src"/internal/wasm/graphviz.wasm internal/wasm/
rm -f ./*_test.go ./*/*_test.go
chmod -R u+w .

# Import paths (and the go:linkname directives naming them).
grep -rl "$MOD" --include='*.go' . | xargs sed -i "s#$MOD#$NEW#g"

# internal/wasm: the module is loaded by load(), run once by module().
w=internal/wasm/bind.go
sed -i 's/^func init() {$/func load() {/' "$w"
sed -i -E 's/(^|[^.[:alnum:]_])mod\.lookupFuncMap/\1lookupFuncMap/g' "$w"
sed -i -E 's/lookupFuncMap: +&LookupFuncMap\{\},/lookupFuncMap: lookupFuncMap,/' "$w"
sed -i -E '/^func load\(\) \{$/,/^}$/!s/(^|[^.[:alnum:]_])mod\.([A-Za-z])/\1module().\2/g' "$w" internal/wasm/ext.go
# The compilation cache: not $TMPDIR/go-graphviz, which another user could
# have made; a directory of the user's own, or none.
sed -i 's/^func getCompilationCache() wazero.CompilationCache {$/func getCompilationCache() wazero.CompilationCache { return privateCache() }\nfunc getCompilationCacheTmp() wazero.CompilationCache {/' "$w"
cp lazy.go.in internal/wasm/lazy.go

# cgraph: its graph descriptors are filled in when the module loads.
c=cgraph/init.go
sed -i -E 's/^\t(Directed|StrictDirected|UnDirected|StrictUnDirected) +\*Desc$/\t\1 = \&Desc{}/' "$c"
sed -i -E 's/^\t(Directed|StrictDirected|UnDirected|StrictUnDirected) = toDesc\((.*)\)$/\t*\1 = *toDesc(\2)/' "$c"
sed -i 's/^func init() {$/func init() { wasm.OnLoad(loadGlobals) }\n\nfunc loadGlobals() {/' "$c"
# gvc: registering the render callbacks touches no WebAssembly any more.

# Each exported function is looked up once (funcs.go.in).
cp funcs.go.in internal/wasm/funcs.go
cp funcs_test.go.in internal/wasm/funcs_test.go
cp reload_test.go.in internal/wasm/reload_test.go
sed -i 's/^\treturn m\.mod\.ExportedFunction(name)$/\treturn exportedFunction(m.mod, name)/' "$w"
grep -q 'return exportedFunction(m.mod, name)' "$w" || { echo "update.sh: the function cache no longer applies" >&2; exit 1; }

# Drawing a graph frees what it copied into the module (leaks.go.in).
cp leaks.go.in internal/wasm/leaks.go
perl -0pi -e 's/\tvar \(\n\t\ts +string\n\t\trenderedLen uint\n\t\)\n\tif _, err := c\.gvc\.RenderData\(ctx, toGraphWasm\(g\), format, &s, &renderedLen\); err != nil \{\n\t\treturn err\n\t\}\n\tif _, err := w\.Write\(\[\]byte\(s\)\); err != nil \{\n\t\treturn err\n\t\}\n\treturn nil\n/\treturn c.gvc.RenderDataTo(ctx, toGraphWasm(g), format, w)\n/' gvc/gvc.go
sed -i 's/wasm\.MemRead(context\.Background(), string(bytes))/wasm.MemReadFree(context.Background(), string(bytes))/' cgraph/cgraph.go
grep -q 'RenderDataTo' gvc/gvc.go && grep -q 'MemReadFree' cgraph/cgraph.go || { echo "update.sh: the leak fixes no longer apply" >&2; exit 1; }
# A new instance can be made, its memory back at its start (reload.go.in).
cp reload.go.in internal/wasm/reload.go
cp memory.go.in memory.go
perl -0pi -e 's/(\tcompiled, err := r\.CompileModule\(ctx, wasmFile\)\n\tif err != nil \{\n\t\tpanic\(err\)\n\t\}\n)/$1\tloaded.runtime, loaded.compiled = r, compiled\n/' "$w"
sed -i '/^func load() {$/,/^}$/s/^\tctx := context.Background()$/\tctx := withLinearMemory(context.Background())/' "$w"
grep -q 'ctx := withLinearMemory(context.Background())' "$w" && grep -q 'loaded.runtime, loaded.compiled = r, compiled' "$w" || { echo "update.sh: the reload no longer applies" >&2; exit 1; }
gofmt -l . | xargs -r gofmt -w
echo "update.sh: $MOD@$VERSION copied into $(pwd)"
