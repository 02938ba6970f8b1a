package ebpf

// The BPF objects are generated and committed, so that building criseq needs
// no clang. "make generate" (clang, llvm and libbpf-dev) rebuilds them.
//go:generate go tool bpf2go -tags linux -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu -I/usr/include/aarch64-linux-gnu" -target bpfel -type event trace bpf/trace.c
