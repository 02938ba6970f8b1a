package ebpf

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// BenchmarkAttachOverhead measures what attaching costs, with real peers:
// a grpc-go CRI client and server, each in its own process, the tracer in
// this one. It runs a fixed workload whatever b.N (use -benchtime=1x):
//
//   - latency of a small unary call (Version), attach on vs off, in
//     interleaved rounds of 1,000 calls (20,000 calls in all): p50, p99;
//   - CPU per captured MB: this process's CPU (the tracer's user space)
//     plus the time the kernel spent in criseq's BPF programs, over 40
//     calls answered with 4 MiB each;
//   - the cost to a process that is not traced: a write(2) of one byte to
//     /dev/null, and getppid(2), which criseq has no program on, attached vs not.
func BenchmarkAttachOverhead(b *testing.B) {
	needBPF(b)
	dir := b.TempDir()
	sock := filepath.Join(dir, "rt.sock")
	server := startChild(b, "")
	server.do("serve %s", sock)
	client := startChild(b, "")
	conn := client.do("dial %s rw", sock)[0]
	client.do("lat %s 2000", conn) // warm up

	const rounds, per = 10, 1000
	var on, off []time.Duration
	lat := func() []time.Duration {
		var d []time.Duration
		for _, s := range client.do("lat %s %d", conn, per) {
			n, _ := strconv.ParseInt(s, 10, 64)
			d = append(d, time.Duration(n))
		}
		return d
	}
	for range rounds {
		off = append(off, lat()...)
		tr := attach(b, &Tracer{PID: client.Pid, Socket: sock})
		on = append(on, lat()...)
		tr.stop(b)
	}
	p := func(d []time.Duration, q float64) float64 {
		slices.Sort(d)
		return float64(d[int(q*float64(len(d)-1))].Nanoseconds()) / 1e3
	}
	b.ReportMetric(p(off, 0.5), "p50-off-µs")
	b.ReportMetric(p(on, 0.5), "p50-on-µs")
	b.ReportMetric(p(off, 0.99), "p99-off-µs")
	b.ReportMetric(p(on, 0.99), "p99-on-µs")
	fmt.Fprintf(os.Stderr, "unary call latency over %d calls each: off p50 %.1fµs p99 %.1fµs; on p50 %.1fµs p99 %.1fµs\n",
		len(off), p(off, 0.5), p(off, 0.99), p(on, 0.5), p(on, 0.99))

	// CPU per captured MB.
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		b.Fatalf("enable BPF run-time stats: %v", err)
	}
	defer stats.Close()
	tr := attach(b, &Tracer{PID: client.Pid, Socket: sock})
	bpf0 := bpfRuntime(tr.tr)
	cpu0 := selfCPU()
	for range 40 {
		client.do("big %s %d", conn, 4<<20)
	}
	time.Sleep(300 * time.Millisecond) // the last records read
	cpu := selfCPU() - cpu0
	bpf := bpfRuntime(tr.tr) - bpf0
	st := tr.tr.Stats()
	tr.stop(b)
	mb := float64(st.Bytes) / (1 << 20)
	b.ReportMetric(float64(cpu.Microseconds())/1e3/mb, "user-ms/MB")
	b.ReportMetric(float64(bpf.Microseconds())/1e3/mb, "bpf-ms/MB")
	fmt.Fprintf(os.Stderr, "captured %.0f MB (lost %d bytes): criseq's process %v CPU (%.2f ms/MB), BPF programs %v (%.2f ms/MB)\n",
		mb, st.LostBytes, cpu.Round(time.Millisecond), float64(cpu.Microseconds())/1e3/mb, bpf.Round(time.Millisecond), float64(bpf.Microseconds())/1e3/mb)

	// A process that is not traced: this one, writing to /dev/null.
	null, err := os.OpenFile("/dev/null", os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer null.Close()
	one := []byte{1}
	perCall := func(f func()) time.Duration {
		const n = 200_000
		t0 := time.Now()
		for range n {
			f()
		}
		return time.Since(t0) / n
	}
	write := func() { unix.Write(int(null.Fd()), one) }
	getppid := func() { unix.Getppid() }
	perCall(write)
	var bare, traced, bareOther, tracedOther []time.Duration
	for range 5 {
		bare, bareOther = append(bare, perCall(write)), append(bareOther, perCall(getppid))
		tr := attach(b, &Tracer{PID: client.Pid, Socket: sock})
		traced, tracedOther = append(traced, perCall(write)), append(tracedOther, perCall(getppid))
		tr.stop(b)
	}
	med := func(d []time.Duration) time.Duration { slices.Sort(d); return d[len(d)/2] }
	b.ReportMetric(float64(med(bare).Nanoseconds()), "untraced-write-off-ns")
	b.ReportMetric(float64(med(traced).Nanoseconds()), "untraced-write-on-ns")
	b.ReportMetric(float64(med(bareOther).Nanoseconds()), "getppid-off-ns")
	b.ReportMetric(float64(med(tracedOther).Nanoseconds()), "getppid-on-ns")
	fmt.Fprintf(os.Stderr, "an untraced process (medians of 5 rounds of 200,000): write(2) of 1 byte %v without criseq, %v attached; getppid(2) (no criseq program) %v, %v\n",
		med(bare), med(traced), med(bareOther), med(tracedOther))
}

// bpfRuntime is the kernel time spent in the tracer's programs so far.
func bpfRuntime(t *Tracer) time.Duration {
	var d time.Duration
	progs, _ := programs(&t.k.objs.tracePrograms)
	for _, p := range progs {
		if st, err := p.Stats(); err == nil {
			d += st.Runtime
		}
	}
	return d
}

func selfCPU() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
