package ebpf

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// benchMode is one way of running the benchmark's workloads: without
// criseq, or attached through one of the attachments.
type benchMode struct {
	name string
	via  attachment // 0: not attached
}

// benchModes are the modes this kernel and architecture can run.
func benchModes(b *testing.B) []benchMode {
	modes := []benchMode{{"off", 0}, {"perf", perfTracepoints}}
	spec, err := loadTrace()
	if err != nil {
		b.Fatal(err)
	}
	if rawBuilt(spec) {
		modes = append(modes, benchMode{"raw", rawTracepoints})
	} else {
		b.Logf("no raw tracepoint programs for this machine: perf tracepoints only")
	}
	return modes
}

// BenchmarkAttachOverhead measures what attaching costs, with real peers,
// for each attachment side by side with criseq off, in interleaved rounds.
// The traced process is a grpc-go CRI client and its server another
// process, the tracer in this one. It runs a fixed workload whatever b.N
// (use -benchtime=1x):
//
//   - latency of a small unary call (Version), in rounds of 1,000 calls
//     (10,000 calls per mode): p50, p99;
//   - CPU per captured MB: this process's CPU (the tracer's user space)
//     plus the time the kernel spent in criseq's BPF programs, over calls
//     answered with 4 MiB each (raw tracepoints: with their runs on every
//     other process's syscalls meanwhile);
//   - the cost to processes that are not traced: the CPU time of getppid(2)
//     (no criseq program of its own), write(2) of a byte to /dev/null,
//     read(2) of a byte from /dev/zero; and the CPU time of real programs: dd (read and
//     write), find (stat, getdents, open, close), and a Go HTTP server
//     under wrk (CPU of both per request, requests per second; skipped
//     without wrk). Per-call costs and CPU times are CPU time, not wall
//     time, which on a busy machine counts other processes' turns.
func BenchmarkAttachOverhead(b *testing.B) {
	needBPF(b)
	modes := benchModes(b)
	dir := b.TempDir()
	sock := filepath.Join(dir, "rt.sock")
	server := startChild(b, "")
	server.do("serve %s", sock)
	client := startChild(b, "")
	conn := client.do("dial %s rw", sock)[0]
	client.do("lat %s 2000", conn) // warm up
	fmt.Fprintf(os.Stderr, "load average at start: %s", loadavg())

	// each runs f once per mode, rounds times, interleaved, attached as the
	// mode says (the traced process is client).
	each := func(rounds int, f func(m benchMode)) {
		for range rounds {
			for _, m := range modes {
				var tr *tracing
				if m.via != 0 {
					tr = attach(b, &Tracer{PID: client.Pid, Socket: sock, via: m.via})
				}
				f(m)
				if tr != nil {
					tr.stop(b)
				}
			}
		}
	}
	results := map[string]map[string][]float64{} // metric → mode → samples
	add := func(metric string, m benchMode, v float64) {
		if results[metric] == nil {
			results[metric] = map[string][]float64{}
		}
		results[metric][m.name] = append(results[metric][m.name], v)
	}

	// Traced: latency of a unary call.
	each(10, func(m benchMode) {
		for _, s := range client.do("lat %s %d", conn, 1000) {
			n, _ := strconv.ParseInt(s, 10, 64)
			add("unary-µs", m, float64(n)/1e3)
		}
	})

	// Traced: CPU per captured MB.
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		b.Fatalf("enable BPF run-time stats: %v", err)
	}
	each(2, func(m benchMode) {
		if m.via == 0 {
			return
		}
		tr := attach(b, &Tracer{PID: client.Pid, Socket: sock, via: m.via})
		bpf0, cpu0 := bpfRuntime(tr.tr), selfCPU()
		for range 20 {
			client.do("big %s %d", conn, 4<<20)
		}
		time.Sleep(300 * time.Millisecond) // the last records read
		cpu, bpf := selfCPU()-cpu0, bpfRuntime(tr.tr)-bpf0
		st := tr.tr.Stats()
		tr.stop(b)
		mb := float64(st.Bytes) / (1 << 20)
		if st.LostBytes != 0 {
			b.Logf("%s: %d bytes lost", m.name, st.LostBytes)
		}
		add("user-ms/MB", m, float64(cpu.Microseconds())/1e3/mb)
		add("bpf-ms/MB", m, float64(bpf.Microseconds())/1e3/mb)
	})
	stats.Close() // run-time stats cost every program run: not below

	// Not traced: this process's syscalls, real programs.
	null, err := os.OpenFile("/dev/null", os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer null.Close()
	zero, err := os.Open("/dev/zero")
	if err != nil {
		b.Fatal(err)
	}
	defer zero.Close()
	one := make([]byte, 1)
	// perCall is the CPU time of a call: on a busy machine, the wall time
	// would count other processes' turns.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	perCall := func(f func()) float64 {
		const n = 100_000
		t0 := threadCPU()
		for range n {
			f()
		}
		return float64((threadCPU() - t0).Nanoseconds()) / n
	}
	web := startChild(b, "")
	addr := web.do("http")[0]
	wrk, werr := exec.LookPath("wrk")
	if werr != nil {
		b.Logf("no wrk: the HTTP server part is skipped (apt-get install wrk)")
	}
	perCall(func() { unix.Getppid() })
	each(7, func(m benchMode) {
		add("getppid-ns", m, perCall(func() { unix.Getppid() }))
		add("write-ns", m, perCall(func() { unix.Write(int(null.Fd()), one) }))
		add("read-ns", m, perCall(func() { unix.Read(int(zero.Fd()), one) }))
		add("dd-ms", m, cpuOf(b, "dd", "if=/dev/zero", "of=/dev/null", "bs=512", "count=100000", "status=none"))
		add("find-ms", m, cpuOf(b, "find", "/usr/share", "-xdev"))
		if werr == nil {
			cpu0 := procCPU(b, web.Pid)
			cmd := exec.Command(wrk, "-t1", "-c4", "-d1s", "http://"+addr+"/")
			out, err := cmd.Output()
			if err != nil {
				b.Fatalf("wrk: %v", err)
			}
			n := wrkRequests(b, out)
			cpu := procCPU(b, web.Pid) - cpu0 + cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
			add("http-µs/req", m, float64(cpu.Nanoseconds())/1e3/n)
			add("http-req/s", m, n)
		}
	})

	fmt.Fprintf(os.Stderr, "load average at end: %s", loadavg())
	fmt.Fprintf(os.Stderr, "%-14s", "metric")
	for _, m := range modes {
		fmt.Fprintf(os.Stderr, " %10s", m.name)
	}
	fmt.Fprintln(os.Stderr)
	row := func(name string, v func(s []float64) float64, metric string) {
		r := results[metric]
		if r == nil {
			return
		}
		fmt.Fprintf(os.Stderr, "%-14s", name)
		for _, m := range modes {
			if s := r[m.name]; len(s) > 0 {
				x := v(s)
				fmt.Fprintf(os.Stderr, " %10.3g", x)
				b.ReportMetric(x, name+"-"+m.name)
			} else {
				fmt.Fprintf(os.Stderr, " %10s", "-")
			}
		}
		fmt.Fprintln(os.Stderr)
	}
	row("p50-µs", quantile(0.5), "unary-µs")
	row("p99-µs", quantile(0.99), "unary-µs")
	for _, metric := range []string{"user-ms/MB", "bpf-ms/MB", "getppid-ns", "write-ns", "read-ns", "dd-ms", "find-ms", "http-µs/req", "http-req/s"} {
		row(metric, quantile(0.5), metric)
	}
}

func quantile(q float64) func([]float64) float64 {
	return func(s []float64) float64 {
		slices.Sort(s)
		return s[int(q*float64(len(s)-1))]
	}
}

// cpuOf runs a command and returns the CPU time it took, in ms.
func cpuOf(b *testing.B, name string, args ...string) float64 {
	cmd := exec.Command(name, args...)
	if err := cmd.Run(); err != nil {
		b.Fatalf("%s: %v", name, err)
	}
	return float64((cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Microseconds()) / 1e3
}

// procCPU is the CPU time process pid has used so far.
func procCPU(b *testing.B, pid int) time.Duration {
	s, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(s[bytes.LastIndexByte(s, ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64) // utime, stime: fields 14, 15
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

var wrkCount = regexp.MustCompile(`(\d+) requests in`)

func wrkRequests(b *testing.B, out []byte) float64 {
	m := wrkCount.FindSubmatch(out)
	if m == nil {
		b.Fatalf("wrk: no request count in %q", out)
	}
	n, _ := strconv.ParseFloat(string(m[1]), 64)
	return n
}

func loadavg() string {
	s, _ := os.ReadFile("/proc/loadavg")
	return string(s)
}

// bpfRuntime is the kernel time spent in the tracer's programs so far.
func bpfRuntime(t *Tracer) time.Duration {
	var d time.Duration
	for _, p := range t.k.progs {
		if st, err := p.Stats(); err == nil {
			d += st.Runtime
		}
	}
	return d
}

func threadCPU() time.Duration {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts)
	return time.Duration(ts.Nano())
}

func selfCPU() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
