package ebpf

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Record kinds and directions, as in bpf/trace.c.
const (
	evData    = 0
	evConnect = 1
	evClose   = 2
	evExec    = 3

	dirOut = 0 // written by the traced process
	dirIn  = 1 // read by it

	chunkSize = 32768
	eventSize = 64

	// DefaultRingSize is the ring buffer between the kernel and criseq.
	DefaultRingSize = 8 << 20
	// ProgPrefix begins the name of every BPF program criseq loads.
	ProgPrefix = "cq_"
)

// Counters the kernel side keeps per CPU (enum counter in bpf/trace.c).
const (
	cDropEvents = iota
	cDropBytes
	cFaultBytes
	cCtrlLost
	cNoScratch
	cMax
)

// kernel is the loaded BPF side: maps and attached programs.
type kernel struct {
	maps  traceMaps
	coll  *ebpf.Collection         // the programs
	progs map[string]*ebpf.Program // by section
	links []link.Link
	via   attachment
}

// attachment is how the programs meet the syscalls.
type attachment int

const (
	// anyAttachment: perf tracepoints, else raw tracepoints.
	anyAttachment attachment = iota
	// perfTracepoints: a program per syscall on syscalls/sys_{enter,exit}_*;
	// the kernel builds a perf record of the arguments before each run.
	// Needs tracefs (to find them) and perf events.
	perfTracepoints
	// rawTracepoints: one program on sys_enter and one on sys_exit, run by
	// every syscall; no perf record is built (x86-64 and arm64). Costs more
	// than perfTracepoints to a node's usual mix of syscalls (a Go HTTP
	// server: twice as much), less to read/write only: the fallback.
	rawTracepoints
)

func (a attachment) String() string {
	switch a {
	case rawTracepoints:
		return "raw syscall tracepoints"
	case perfTracepoints:
		return "perf syscall tracepoints"
	}
	return "any"
}

// hint ends every error that keeps attach mode from working.
const hint = "; or record through criseq's relay instead: criseq record --swap SOCKET (needs a kubelet restart)"

// Check reports whether attach mode can work here (root, BTF, ring
// buffer, bpf_loop), with the fix in the error; it loads nothing that stays.
func Check() error { return preflight() }

// preflight checks what loading needs, so that the common failures get a
// clear message rather than a verifier log.
func preflight() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("attach: needs root (CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN to read other processes' sockets): run it with sudo%s", hint)
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		return fmt.Errorf("attach: this kernel has no BTF (/sys/kernel/btf/vmlinux): attach needs Linux 5.8 or later built with CONFIG_DEBUG_INFO_BTF=y%s", hint)
	}
	if err := features.HaveMapType(ebpf.RingBuf); err != nil {
		if errors.Is(err, unix.EPERM) {
			return notPermitted(err)
		}
		return fmt.Errorf("attach: this kernel has no BPF ring buffer (%v): attach needs Linux 5.8 or later%s", err, hint)
	}
	if err := features.HaveProgramHelper(ebpf.TracePoint, 181 /* bpf_loop */); err != nil {
		if errors.Is(err, unix.EPERM) {
			return notPermitted(err)
		}
		return fmt.Errorf("attach: this kernel lacks bpf_loop (%v): attach needs Linux 5.17 or later%s", err, hint)
	}
	return nil
}

func notPermitted(err error) error {
	return fmt.Errorf("attach: the kernel refused to load BPF programs (%v): criseq must run as root on the host, not in a container without CAP_BPF/CAP_SYS_ADMIN; check kernel.unprivileged_bpf_disabled and lockdown (cat /sys/kernel/security/lockdown)%s", err, hint)
}

// loadKernel loads the programs and maps and attaches the programs to the
// syscalls, via perf tracepoints if via allows and the kernel takes them,
// else via raw tracepoints. ringSize is the ring buffer's size in bytes (a
// power of two, at least a page); comm, if set, is the name whose new
// programs (exec) are traced too.
func loadKernel(ringSize int, comm string, via attachment, logf func(string, ...any)) (*kernel, error) {
	if err := preflight(); err != nil {
		return nil, err
	}
	spec, err := loadTrace()
	if err != nil {
		return nil, fmt.Errorf("attach: read BPF objects: %w", err)
	}
	spec.Maps["events"].MaxEntries = uint32(ringSize)
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		ncpu = runtime.NumCPU()
	}
	spec.Maps["scratch"].MaxEntries = uint32(ncpu)
	var name [16]byte
	copy(name[:15], comm)
	if err := spec.Variables["follow_comm"].Set(name); err != nil {
		return nil, fmt.Errorf("attach: %w", err)
	}
	if via == rawTracepoints && !rawBuilt(spec) {
		return nil, fmt.Errorf("attach: no raw tracepoint programs for this architecture%s", hint)
	}
	if via != rawTracepoints {
		k, err := attachVia(spec, perfTracepoints, logf)
		if err == nil || via == perfTracepoints || !rawBuilt(spec) {
			return k, err
		}
		logf("the perf syscall tracepoints cannot be used (%v); using the raw syscall tracepoints sys_enter and sys_exit instead (every process pays a little more per syscall)", err)
	}
	return attachVia(spec, rawTracepoints, logf)
}

// rawBuilt says whether the raw tracepoint programs fit this machine: the
// objects have them for x86-64 and arm64 kernels only.
func rawBuilt(spec *ebpf.CollectionSpec) bool {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return false
	}
	machine := unix.ByteSliceToString(u.Machine[:])
	return spec.Programs["cq_sys_enter"] != nil && (machine == "x86_64" || machine == "aarch64")
}

// sectionPrefix marks the programs of each attachment.
var sectionPrefix = map[attachment]string{rawTracepoints: "raw_tracepoint/", perfTracepoints: "tracepoint/"}

// attachVia loads the maps and the programs of one attachment, and attaches
// them.
func attachVia(spec *ebpf.CollectionSpec, via attachment, logf func(string, ...any)) (_ *kernel, err error) {
	spec = spec.Copy()
	sections := map[string]string{}
	for name, p := range spec.Programs {
		if !strings.HasPrefix(p.SectionName, sectionPrefix[via]) {
			delete(spec.Programs, name)
			continue
		}
		sections[name] = p.SectionName
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		if errors.Is(err, unix.EPERM) {
			return nil, notPermitted(err)
		}
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("attach: the kernel's verifier rejected criseq's BPF program (kernel too old?): %+v%s", ve, hint)
		}
		return nil, fmt.Errorf("attach: load BPF programs: %w%s", err, hint)
	}
	k := &kernel{coll: coll, progs: map[string]*ebpf.Program{}, via: via}
	if err := coll.Assign(&k.maps); err != nil {
		coll.Close()
		return nil, fmt.Errorf("attach: %w", err)
	}
	defer func() {
		if err != nil {
			k.close()
		}
	}()
	for name, p := range coll.Programs {
		k.progs[sections[name]] = p
	}
	if via == perfTracepoints {
		unmount, err := tracefs(logf)
		if err != nil {
			return nil, err
		}
		// The tracefs mount is needed only to look up tracepoint IDs:
		// attached programs stay attached without it.
		defer unmount()
	}
	for sec, p := range k.progs {
		var l link.Link
		var err error
		if tp, ok := strings.CutPrefix(sec, "raw_tracepoint/"); ok {
			l, err = link.AttachRawTracepoint(link.RawTracepointOptions{Name: tp, Program: p})
		} else {
			group, tp, _ := strings.Cut(strings.TrimPrefix(sec, "tracepoint/"), "/")
			l, err = link.Tracepoint(group, tp, p, nil)
		}
		if err != nil {
			if errors.Is(err, unix.EPERM) {
				return nil, notPermitted(err)
			}
			return nil, fmt.Errorf("attach: %s: %w%s", sec, err, hint)
		}
		k.links = append(k.links, l)
	}
	return k, nil
}

func (k *kernel) close() error {
	err := k.detach()
	err = errors.Join(err, k.maps.Close())
	k.coll.Close()
	return err
}

// detach closes the links all at once: each perf event's close waits for
// a grace period of the kernel's (20 links: 1.3 s one after another here,
// 0.6 s at once).
func (k *kernel) detach() error {
	errs := make([]error, len(k.links))
	var wg sync.WaitGroup
	for i, l := range k.links {
		wg.Go(func() { errs[i] = l.Close() })
	}
	wg.Wait()
	k.links = nil
	return errors.Join(errs...)
}

// counters sums the per-CPU drop counters.
func (k *kernel) counters() [cMax]uint64 {
	var out [cMax]uint64
	for i := range uint32(cMax) {
		var per []uint64
		if err := k.maps.Counters.Lookup(i, &per); err != nil {
			continue
		}
		for _, v := range per {
			out[i] += v
		}
	}
	return out
}

// missed counts program runs the kernel skipped (another BPF program was
// running on that CPU): data that would then be lost without a trace.
func (k *kernel) missed() uint64 {
	var n uint64
	for _, p := range k.progs {
		if st, err := p.Stats(); err == nil {
			n += st.RecursionMisses
		}
	}
	return n
}

const tracefsPath = "/sys/kernel/tracing"

// tracefsSource names criseq's own tracefs mounts in /proc/self/mountinfo.
const tracefsSource = "criseq"

// tracefs makes sure tracefs is mounted (to look up tracepoint IDs) and
// returns what undoes it: if it was not mounted, criseq mounts it at
// /sys/kernel/tracing, says so, and unmounts it again.
func tracefs(logf func(string, ...any)) (func(), error) {
	mounted, ours := tracefsMounted()
	if mounted && !ours {
		return func() {}, nil
	}
	// Not mounted, or mounted by another criseq that will unmount its own:
	// stack a mount of our own, so that neither pulls it from the other.
	if err := unix.Mount(tracefsSource, tracefsPath, "tracefs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return nil, fmt.Errorf("attach: tracefs is not mounted and mounting it at %s failed: %w (mount it: mount -t tracefs nodev %s)%s", tracefsPath, err, tracefsPath, hint)
	}
	if !ours {
		logf("mounted tracefs at %s to find the syscall tracepoints; unmounting it once attached", tracefsPath)
	}
	return func() {
		if err := unix.Unmount(tracefsPath, 0); err != nil {
			logf("could not unmount the tracefs criseq mounted at %s: %v (umount %s)", tracefsPath, err, tracefsPath)
		}
	}, nil
}

// tracefsMounted reports whether a tracefs is mounted where the BPF library
// looks for it, and whether every such mount is criseq's.
func tracefsMounted() (mounted, ours bool) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false, false
	}
	defer f.Close()
	ours = true
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent maj:min root mountpoint opts ... - fstype source superopts
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		fields, tail := strings.Fields(pre), strings.Fields(post)
		if !ok || len(fields) < 5 || len(tail) < 2 {
			continue
		}
		isTracefs := tail[0] == "tracefs" || tail[0] == "debugfs" && fields[4] == "/sys/kernel/debug"
		if !isTracefs || fields[3] != "/" {
			continue
		}
		mounted = true
		if tail[1] != tracefsSource || fields[4] != tracefsPath {
			ours = false
		}
	}
	return mounted, mounted && ours
}
