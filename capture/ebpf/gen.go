package ebpf

// The BPF objects are generated and committed, so that building criseq needs
// no clang. "make generate" (clang, llvm and libbpf-dev) rebuilds them: for
// x86-64 and arm64, with the raw tracepoint programs, which read syscall
// arguments from each architecture's registers; for other architectures,
// the perf tracepoint programs only.
//go:generate go tool bpf2go -tags linux -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu -I/usr/include/aarch64-linux-gnu" -target amd64,arm64 -type event trace bpf/trace.c
//go:generate go tool bpf2go -tags linux,!386,!amd64,!arm64 -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu -I/usr/include/aarch64-linux-gnu" -target bpfel -type event trace bpf/trace.c
