package main

import (
	"context"
	"flag"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/criseq/criseq/capture"
	"github.com/criseq/criseq/capture/ebpf"
)

// attachFlags are the flags of record --attach and watch --attach.
type attachFlags struct {
	on     bool
	pid    int
	socket string
	ring   int
}

func (a *attachFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&a.on, "attach", false, "record the running kubelet with eBPF: no restart, nothing reconfigured (root, Linux 5.17+ with BTF)")
	fs.IntVar(&a.pid, "pid", 0, "with --attach: the process to trace (default: the one named kubelet, followed across restarts)")
	fs.StringVar(&a.socket, "socket", "", "with --attach: the runtime's socket (default: from kubelet's flags or config, else "+ebpf.DefaultSocket+")")
	fs.IntVar(&a.ring, "ring-size", ebpf.DefaultRingSize>>20, "with --attach: kernel ring buffer in MiB (a power of two)")
}

// check refuses flags that do not go together.
func (a *attachFlags) check(set map[string]bool) error {
	if !a.on {
		for _, f := range []string{"pid", "socket", "ring-size"} {
			if set[f] {
				return fmt.Errorf("%w: --%s goes with --attach", errUsage, f)
			}
		}
		return nil
	}
	for _, f := range []string{"listen", "upstream", "swap", "r"} {
		if set[f] {
			return fmt.Errorf("%w: --attach records the running kubelet's own connections; it does not go with -%s", errUsage, f)
		}
	}
	if a.pid < 0 {
		return fmt.Errorf("%w: --pid %d is not a process id", errUsage, a.pid)
	}
	if a.ring <= 0 || a.ring&(a.ring-1) != 0 || a.ring > 1024 {
		return fmt.Errorf("%w: --ring-size %d: give a power of two of MiB, at most 1024", errUsage, a.ring)
	}
	return nil
}

// tracer makes the Tracer of these flags, recording into rec.
func (a *attachFlags) tracer(rec *capture.Recorder, logf func(string, ...any)) *ebpf.Tracer {
	return &ebpf.Tracer{PID: a.pid, Socket: a.socket, RingSize: a.ring << 20, Recorder: rec, Log: logf}
}

// attachedMessage says what is traced, once attached.
func attachedMessage(a ebpf.Attached, what string) string {
	pids := make([]string, len(a.PIDs))
	for i, p := range a.PIDs {
		pids[i] = fmt.Sprint(p)
	}
	lists := "List* and Stream* list calls caught midway may read alike"
	if a.Lists.Unary {
		lists = "list calls are unary"
	}
	return fmt.Sprintf("attached to process %s: its connections to %s (%d open now, recorded from here on; new ones from their first byte) %s; %s (%s); Ctrl-C to stop",
		strings.Join(pids, ", "), strings.Join(a.Sockets, ", "), a.Midway, what, lists, a.Lists.Why)
}

// reportTracer prints what was recorded and lost, and which syscalls carried it.
func reportTracer(tr *ebpf.Tracer, quiet bool, since time.Time, logf func(string, ...any)) {
	st := tr.Stats()
	lost := st.LostBytes > 0 || st.RingDrops > 0 || st.FaultBytes > 0 || st.Missed > 0
	if !quiet || lost {
		var sys []string
		for name, n := range st.Syscalls {
			sys = append(sys, fmt.Sprintf("%s %d", name, n))
		}
		sort.Strings(sys)
		logf("traced %d connections over %s: %d bytes recorded (by syscall, bytes: %s)", st.Conns, time.Since(since).Round(time.Millisecond), st.Bytes, strings.Join(sys, ", "))
	}
	if lost {
		logf("%d bytes lost and marked as gaps (ring buffer full %d times, %d bytes unreadable, %d chunks the writer could not take, %d program runs skipped by the kernel)",
			st.LostBytes, st.RingDrops, st.FaultBytes, st.RecorderDrop, st.Missed)
	}
}

// recordAttached is record --attach.
func recordAttached(ctx context.Context, a *attachFlags, out string, quiet bool, logf func(string, ...any)) error {
	tr := a.tracer(nil, logf)
	// Attached before the file is created: a refusal leaves an earlier
	// capture of the same name alone.
	at, err := tr.Attach()
	if err != nil {
		return fmt.Errorf("record: %w", err)
	}
	f, err := capture.CreateFile(out)
	if err != nil {
		tr.Close()
		return fmt.Errorf("record: %w", err)
	}
	start := time.Now()
	tr.Recorder = capture.NewRecorder(capture.NewPcapngWriterNotes(capture.NewWriteBehind(f), attachNotes(at)), attachRecorder(logf))
	if !quiet {
		logf("%s", attachedMessage(at, "recorded to "+out))
	}
	// Run closes the recorder, which flushes and closes the file.
	err = tr.Run(ctx)
	reportTracer(tr, quiet, start, logf)
	if err != nil {
		return fmt.Errorf("record: %w", err)
	}
	return nil
}

// attachRecorder's options: the kernel's ring holds what comes while the
// writer catches up, so the queue is small and a full one waits rather than
// drops.
func attachRecorder(logf func(string, ...any)) capture.RecorderOptions {
	return capture.RecorderOptions{Log: logf, MaxBytes: 2 << 20, Wait: true}
}
