package ebpf

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"

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
	DefaultRingSize = 16 << 20
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
	objs  traceObjects
	links []link.Link
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

// loadKernel loads the programs and maps and attaches the programs to their
// syscall tracepoints. ringSize is the ring buffer's size in bytes (a power
// of two, at least a page); comm, if set, is the name whose new programs
// (exec) are traced too.
func loadKernel(ringSize int, comm string, logf func(string, ...any)) (k *kernel, err error) {
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
	k = &kernel{}
	if err := spec.LoadAndAssign(&k.objs, nil); err != nil {
		if errors.Is(err, unix.EPERM) {
			return nil, notPermitted(err)
		}
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("attach: the kernel's verifier rejected criseq's BPF program (kernel too old?): %+v%s", ve, hint)
		}
		return nil, fmt.Errorf("attach: load BPF programs: %w%s", err, hint)
	}
	defer func() {
		if err != nil {
			k.close()
		}
	}()

	unmount, err := tracefs(logf)
	if err != nil {
		return nil, err
	}
	// The tracefs mount is needed only to look up tracepoint IDs: attached
	// programs stay attached without it.
	defer unmount()
	progs, err := programs(&k.objs.tracePrograms)
	if err != nil {
		return nil, err
	}
	for sec, p := range progs {
		group, tp, _ := strings.Cut(strings.TrimPrefix(sec, "tracepoint/"), "/")
		l, err := link.Tracepoint(group, tp, p, nil)
		if err != nil {
			if errors.Is(err, unix.EPERM) {
				return nil, notPermitted(err)
			}
			return nil, fmt.Errorf("attach: tracepoint %s/%s: %w%s", group, tp, err, hint)
		}
		k.links = append(k.links, l)
	}
	return k, nil
}

// programs maps each program to its section (tracepoint/GROUP/NAME).
func programs(p *tracePrograms) (map[string]*ebpf.Program, error) {
	spec, err := loadTrace()
	if err != nil {
		return nil, err
	}
	all := map[string]*ebpf.Program{
		"cq_close_in": p.CqCloseIn, "cq_connect_in": p.CqConnectIn, "cq_connect_out": p.CqConnectOut,
		"cq_exec": p.CqExec, "cq_read_in": p.CqReadIn, "cq_read_out": p.CqReadOut,
		"cq_readv_in": p.CqReadvIn, "cq_readv_out": p.CqReadvOut, "cq_recvfrom_in": p.CqRecvfromIn,
		"cq_recvfrom_out": p.CqRecvfromOut, "cq_recvmsg_in": p.CqRecvmsgIn, "cq_recvmsg_out": p.CqRecvmsgOut,
		"cq_sendmsg_in": p.CqSendmsgIn, "cq_sendmsg_out": p.CqSendmsgOut, "cq_sendto_in": p.CqSendtoIn,
		"cq_sendto_out": p.CqSendtoOut, "cq_write_in": p.CqWriteIn, "cq_write_out": p.CqWriteOut,
		"cq_writev_in": p.CqWritevIn, "cq_writev_out": p.CqWritevOut,
	}
	out := map[string]*ebpf.Program{}
	for name, ps := range spec.Programs {
		p := all[name]
		if p == nil {
			return nil, fmt.Errorf("attach: program %s not loaded", name)
		}
		out[ps.SectionName] = p
	}
	return out, nil
}

func (k *kernel) close() error {
	var errs []error
	for _, l := range k.links {
		errs = append(errs, l.Close())
	}
	k.links = nil
	errs = append(errs, k.objs.Close())
	return errors.Join(errs...)
}

// counters sums the per-CPU drop counters.
func (k *kernel) counters() [cMax]uint64 {
	var out [cMax]uint64
	for i := range uint32(cMax) {
		var per []uint64
		if err := k.objs.Counters.Lookup(i, &per); err != nil {
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
	for _, p := range []*ebpf.Program{k.objs.CqWriteIn, k.objs.CqWriteOut, k.objs.CqReadIn, k.objs.CqReadOut,
		k.objs.CqWritevIn, k.objs.CqWritevOut, k.objs.CqReadvIn, k.objs.CqReadvOut,
		k.objs.CqSendmsgIn, k.objs.CqSendmsgOut, k.objs.CqRecvmsgIn, k.objs.CqRecvmsgOut,
		k.objs.CqSendtoIn, k.objs.CqSendtoOut, k.objs.CqRecvfromIn, k.objs.CqRecvfromOut} {
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
