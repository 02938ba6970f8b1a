package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/criseq/criseq/internal/benchcap"
)

// usage is what one run of a process cost, from the kernel's accounting.
type usage struct {
	cpu, sys, wall time.Duration // cpu is user+sys
	maxRSS         int64         // bytes
}

// timed runs a command to the end, its output thrown away, and returns
// its whole-process figures, as measure gives them.
func timed(ctx context.Context, dir string, name string, args ...string) (usage, error) {
	self, err := os.Executable()
	if err != nil {
		return usage{}, err
	}
	res, err := os.CreateTemp("", "criseq-bench-*.json")
	if err != nil {
		return usage{}, err
	}
	res.Close()
	defer os.Remove(res.Name())
	cmd := exec.CommandContext(ctx, self, append([]string{"measure", res.Name(), "--", name}, args...)...)
	cmd.Dir = dir
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return usage{}, err
	}
	defer null.Close()
	var stderr strings.Builder
	cmd.Stdout, cmd.Stderr = null, &stderr
	if err := cmd.Run(); err != nil {
		return usage{}, fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	b, err := os.ReadFile(res.Name())
	if err != nil {
		return usage{}, err
	}
	var m measured
	if err := json.Unmarshal(b, &m); err != nil {
		return usage{}, fmt.Errorf("measure: %w", err)
	}
	return usage{cpu: m.CPU, sys: m.Sys, wall: m.Wall, maxRSS: m.MaxRSS}, nil
}

// job is one command measured against the capture.
type job struct {
	name   string
	args   []string // FILE and OUT are replaced
	runs   []usage
	target string
}

// run runs j once on file, writing into a new directory named after out.
// Removing the last run's thousands of files just before would charge
// the kernel's clean-up of them to this run (on this VM's ext4, 0.2 s of
// render's sys time became 1.2 s); they all go with the bench's
// temporary directory, at its end.
func (j *job) run(ctx context.Context, dir, bin, file, out string) (usage, error) {
	out, err := os.MkdirTemp(filepath.Dir(out), filepath.Base(out)+"-")
	if err != nil {
		return usage{}, err
	}
	args := slices.Clone(j.args)
	for i, a := range args {
		args[i] = strings.NewReplacer("FILE", file, "OUT", out).Replace(a)
	}
	return timed(ctx, dir, bin, args...)
}

func (j *job) median() usage {
	cpus := make([]usage, len(j.runs))
	copy(cpus, j.runs)
	slices.SortFunc(cpus, func(a, b usage) int { return int(a.cpu - b.cpu) })
	m := cpus[len(cpus)/2]
	for _, r := range j.runs {
		m.maxRSS = max(m.maxRSS, r.maxRSS) // the peak of all runs
	}
	return m
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// cachedCapture makes the large capture once per sources and size, in the
// user's cache directory.
func cachedCapture(root string, size int64, stderr io.Writer) (string, benchcap.Stats, error) {
	srcs := benchcap.MeasuredSources(root)
	h := sha256.New()
	fmt.Fprintf(h, "v%d %d", benchcap.Version, size)
	for _, s := range srcs {
		st, err := os.Stat(s)
		if err != nil {
			return "", benchcap.Stats{}, err
		}
		fmt.Fprintf(h, " %s %d %d", filepath.Base(filepath.Dir(s)), st.Size(), st.ModTime().UnixNano())
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "criseq-bench")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", benchcap.Stats{}, err
	}
	path := filepath.Join(dir, "large-"+hex.EncodeToString(h.Sum(nil))[:12]+".pcapng")
	// Captures of other sources or sizes are not kept.
	if old, _ := filepath.Glob(filepath.Join(dir, "large-*.pcapng")); len(old) > 0 {
		for _, o := range old {
			if o != path {
				os.Remove(o)
			}
		}
	}
	fmt.Fprintf(stderr, "bench: writing the large capture %s (%d sources)\n", path, len(srcs))
	// Written each time (a second or so): its stats are needed. The cache
	// keeps it for profiling between runs.
	tmp := path + ".tmp"
	st, err := benchcap.Write(tmp, srcs, size)
	if err != nil {
		return "", st, err
	}
	return path, st, os.Rename(tmp, path)
}

// protoDir finds cri-api's api.proto in the Go module cache, for tshark.
func protoDir(root string) (string, error) {
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "k8s.io/cri-api")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go list -m k8s.io/cri-api: %w", err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "pkg", "apis", "runtime", "v1")
	if _, err := os.Stat(filepath.Join(dir, "api.proto")); err != nil {
		return "", err
	}
	return dir, nil
}

func runTable(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("table", flag.ContinueOnError)
	fs.SetOutput(stderr)
	size := fs.Int64("size", 64<<20, "size of the large capture, bytes")
	runs := fs.Int("runs", 5, "runs of each criseq command, interleaved; the median counts")
	tsharkRuns := fs.Int("tshark-runs", 1, "runs of tshark (minutes each); 0: skip")
	calls := fs.Int("calls", 20000, "small unary calls per relay path and round")
	rounds := fs.Int("rounds", 3, "interleaved relay rounds; the best counts")
	if err := fs.Parse(args); err != nil {
		return err
	}
	load0 := loadavg()
	w, err := newWorkspace()
	if err != nil {
		return err
	}
	defer w.remove()
	root, tmp, bin, self := w.root, w.tmp, w.bin, w.self
	capPath, st, err := cachedCapture(root, *size, stderr)
	if err != nil {
		return err
	}
	fi, err := os.Stat(capPath)
	if err != nil {
		return err
	}
	mb := float64(fi.Size()) / 1e6
	out := filepath.Join(tmp, "out")
	jobs := []*job{
		{name: "calls", args: []string{"calls", "FILE"}},
		{name: "calls --json", args: []string{"calls", "--json", "FILE"}},
		{name: "render --format svg", args: []string{"render", "-o", "OUT", "--format", "svg", "FILE"}},
		{name: "render --all --format svg", args: []string{"render", "--all", "-o", "OUT", "--format", "svg", "FILE"}},
		{name: "diff (two pods)", args: []string{"diff", "FILE", "--pod", "default/warm-criseq-lab", "--pod", "default/hello-criseq-lab"}},
		{name: "watch -r --format svg", args: []string{"watch", "-r", "FILE", "-o", "OUT", "--format", "svg"}},
	}
	for r := range *runs + 1 { // the first round warms the page cache, not counted
		for _, j := range jobs {
			u, err := j.run(ctx, tmp, bin, capPath, out)
			if err != nil {
				return err
			}
			if r > 0 {
				j.runs = append(j.runs, u)
			}
		}
		fmt.Fprintf(stderr, "bench: round %d of %d\n", r, *runs)
	}
	// Captures of one real capture copied without its connections' ends:
	// crictl's (a connection per command), and kubelet's with the Evented
	// PLEG (a GetContainerEvents stream open in every copy).
	copied := []*copiedBench{
		{title: "Connections never closed", source: "crictl-lifecycle", what: "a connection per crictl command"},
		{title: "Event streams never closed", source: "kubelet-burst-containerd2", what: "kubelet with the Evented PLEG, its GetContainerEvents stream open in every copy; 20-pod bursts"},
		{title: "A busy node", source: "kubelet-burst-containerd2", busy: []string{"kubelet-burst-containerd2", "kubelet-missing"},
			what: "20-pod bursts and a pod whose image is missing, in turn, a copy starting every 10 s so that they overlap, each with IDs of its own"},
	}
	for _, cb := range copied {
		if err := cb.run(ctx, root, tmp, bin, out, *size); err != nil {
			return err
		}
	}

	var tshark *job
	if _, err := exec.LookPath("tshark"); err != nil || *tsharkRuns == 0 {
		fmt.Fprintf(stderr, "bench: tshark not run (%v): no ratios\n", err)
	} else if dir, err := protoDir(root); err != nil {
		fmt.Fprintf(stderr, "bench: cri-api's api.proto not found (%v): tshark not run\n", err)
	} else {
		tshark = &job{name: "tshark -T json, CRI protobuf"}
		for range *tsharkRuns {
			fmt.Fprintf(stderr, "bench: tshark (a few minutes)\n")
			u, err := timed(ctx, tmp, "tshark", "-r", capPath, "-d", "tcp.port==10010,http2",
				"-o", `uat:protobuf_search_paths:"`+dir+`","TRUE"`, "-o", "protobuf.pbf_as_hf:TRUE", "-o", "protobuf.preload_protos:TRUE", "-T", "json")
			if err != nil {
				return err
			}
			tshark.runs = append(tshark.runs, u)
		}
	}

	rb := &relayBench{calls: *calls, bigCalls: 10, rounds: *rounds, keep: filepath.Join(tmp, "relayed.pcapng")}
	relayErr := rb.start(ctx, self, bin)
	if relayErr == nil {
		relayErr = rb.run(ctx)
	}
	rb.stop()
	var attach *attachBench
	var attached []attachResult
	if os.Geteuid() == 0 {
		attach = &attachBench{calls: *calls, big: 25, parallel: 4}
		for range 3 {
			r, err := attach.run(ctx, self, bin, tmp)
			if err != nil {
				fmt.Fprintf(stderr, "bench: attach: %v\n", err)
				attach = nil
				break
			}
			attached = append(attached, r)
		}
	} else {
		fmt.Fprintf(stderr, "bench: not root: record --attach not measured\n")
	}
	var large *largeBench
	if relayErr == nil {
		large = &largeBench{answers: rb.bigCalls * rb.rounds, small: rb.calls * rb.rounds}
		if err := large.run(ctx, tmp, bin, rb.keep, out, *runs); err != nil {
			return err
		}
	}

	fmt.Fprintf(stdout, "Large capture: %.1f MB, %d copies of %d real kubelet captures (each cut in a StopContainer), one GetContainerEvents stream open throughout (%d events).\n",
		mb, st.Rounds, len(benchcap.MeasuredSources(root)), st.Events)
	fmt.Fprintf(stdout, "Load average: %s at the start, %s at the end; %d cores. CPU is user+sys of the whole process (sys: the kernel's part, for render and watch mostly creating their files), the median of %d runs; peak RSS the largest.\n\n",
		load0, loadavg(), nproc(), *runs)
	fmt.Fprintf(stdout, "| command | CPU s | of it sys | wall s | MB/s per CPU s | × tshark | peak RSS |\n|---|---:|---:|---:|---:|---:|---:|\n")
	if tshark != nil {
		m := tshark.median()
		fmt.Fprintf(stdout, "| %s | %.1f | %.1f | %.1f | %.2f | 1 | %d MiB |\n", tshark.name, m.cpu.Seconds(), m.sys.Seconds(), m.wall.Seconds(), mb/m.cpu.Seconds(), m.maxRSS>>20)
	}
	for _, j := range jobs {
		m := j.median()
		ratio := "—"
		if tshark != nil {
			ratio = fmt.Sprintf("%.0f×", tshark.median().cpu.Seconds()/m.cpu.Seconds())
		}
		fmt.Fprintf(stdout, "| criseq %s | %.2f | %.2f | %.2f | %.0f | %s | %d MiB |\n", j.name, m.cpu.Seconds(), m.sys.Seconds(), m.wall.Seconds(), mb/m.cpu.Seconds(), ratio, m.maxRSS>>20)
	}
	for _, cb := range copied {
		cb.print(stdout)
	}
	if large != nil {
		large.print(stdout)
	}
	fmt.Fprintf(stdout, "\nRelay: a small unary call (RuntimeService/Version, %d per path and round) and a %d MiB ListContainers response, real grpc-go client and server; the best of %d interleaved rounds.\n\n", rb.calls, bigResponse>>20, rb.rounds)
	if attach != nil {
		defer attach.print(stdout, attached)
	}
	if relayErr != nil {
		fmt.Fprintf(stdout, "(not measured: %v)\n", relayErr)
		return nil
	}
	if rb.recordRSS > 0 {
		fmt.Fprintf(stdout, "criseq record's peak RSS over the relay runs: %d MiB.\n\n", rb.recordRSS>>20)
	}
	direct := rb.paths[0].best
	fmt.Fprintf(stdout, "| path | p50 | p99 | added p50 | p50 / direct | p99 / direct | 16 MiB response | / direct | relay CPU |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, p := range rb.paths {
		fmt.Fprintf(stdout, "| %s | %s | %s | %s | %.2f | %.2f | %.1f ms | %.2f | %s |\n", p.name, us(p.best.p50), us(p.best.p99), us(p.best.p50-direct.p50),
			float64(p.best.p50)/float64(direct.p50), float64(p.best.p99)/float64(direct.p99),
			float64(p.best.big)/1e6, float64(p.best.big)/float64(direct.big), relayCPU(p))
	}
	return nil
}

// copiedBench runs each command once on copies of one real capture
// without its connections' ends (benchcap.WriteUnclosed).
type copiedBench struct {
	title, source, what string
	busy                []string // sources of benchcap.WriteBusy instead
	jobs                []*job
	st                  benchcap.Stats
	mb                  float64
}

func (cb *copiedBench) run(ctx context.Context, root, tmp, bin, out string, size int64) error {
	path := filepath.Join(tmp, "copied.pcapng")
	defer os.Remove(path)
	var err error
	if len(cb.busy) > 0 {
		var srcs []string
		for _, b := range cb.busy {
			srcs = append(srcs, filepath.Join(root, "testdata", b, "capture.pcapng"))
		}
		cb.st, err = benchcap.WriteBusy(path, srcs, size, 10*time.Second)
	} else {
		cb.st, err = benchcap.WriteUnclosed(path, filepath.Join(root, "testdata", cb.source, "capture.pcapng"), size)
	}
	if err != nil {
		return err
	}
	cb.mb = float64(cb.st.Bytes) / 1e6
	cb.jobs = []*job{
		{name: "calls", args: []string{"calls", "FILE"}},
		{name: "calls --json", args: []string{"calls", "--json", "FILE"}},
		{name: "render --format svg", args: []string{"render", "-o", "OUT", "--format", "svg", "FILE"}},
		{name: "diff (the capture with itself)", args: []string{"diff", "FILE", "FILE"}},
		{name: "watch -r --format svg", args: []string{"watch", "-r", "FILE", "-o", "OUT", "--format", "svg"}},
	}
	return runJobs(ctx, cb.jobs, 1, tmp, bin, path, out)
}

// runJobs runs each job on file, in turn, rounds times.
func runJobs(ctx context.Context, jobs []*job, rounds int, tmp, bin, file, out string) error {
	for range rounds {
		for _, j := range jobs {
			u, err := j.run(ctx, tmp, bin, file, out)
			if err != nil {
				return err
			}
			j.runs = append(j.runs, u)
		}
	}
	return nil
}

// printJobs prints a table of jobs on mb megabytes.
func printJobs(stdout io.Writer, jobs []*job, mb float64) {
	fmt.Fprintf(stdout, "| command | CPU s | MB/s per CPU s | peak RSS |\n|---|---:|---:|---:|\n")
	for _, j := range jobs {
		m := j.median()
		fmt.Fprintf(stdout, "| criseq %s | %.2f | %.0f | %d MiB |\n", j.name, m.cpu.Seconds(), mb/m.cpu.Seconds(), m.maxRSS>>20)
	}
}

func (cb *copiedBench) print(stdout io.Writer) {
	src := "testdata/" + cb.source
	if len(cb.busy) > 0 {
		src = "testdata/" + strings.Join(cb.busy, " and testdata/")
	}
	fmt.Fprintf(stdout, "\n%s: %.1f MB, %d copies of %s (%s), %d connections none of which is seen to close; one run each.\n\n",
		cb.title, cb.mb, cb.st.Rounds, src, cb.what, cb.st.Conns)
	printJobs(stdout, cb.jobs, cb.mb)
}

func nproc() int { return runtime.NumCPU() }

// largeBench runs calls and the commands that show or rewrite message
// bodies on what criseq record wrote during the relay runs: 16 MiB
// ListContainers answers among small calls, real grpc-go peers (no pod
// starts, so nothing to draw).
type largeBench struct {
	answers, small int
	jobs           []*job
	mb             float64
}

func (lb *largeBench) run(ctx context.Context, tmp, bin, path, out string, runs int) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	defer os.Remove(path)
	lb.mb = float64(fi.Size()) / 1e6
	lb.jobs = []*job{
		{name: "calls", args: []string{"calls", "FILE"}},
		{name: "calls --json", args: []string{"calls", "--json", "FILE"}},
		{name: "sanitize", args: []string{"sanitize", "FILE", "OUT/sanitized.pcapng"}},
	}
	return runJobs(ctx, lb.jobs, max((runs+1)/2, 1), tmp, bin, path, out)
}

func (lb *largeBench) print(stdout io.Writer) {
	runs := "one run"
	if n := len(lb.jobs[0].runs); n > 1 {
		runs = fmt.Sprintf("the median of %d runs, peak RSS the largest", n)
	}
	fmt.Fprintf(stdout, "\nLarge messages: %.1f MB that criseq record wrote during the relay runs below: %d ListContainers answers of 16 MiB among %d small calls; %s.\n\n",
		lb.mb, lb.answers, lb.small, runs)
	printJobs(stdout, lb.jobs, lb.mb)
}
