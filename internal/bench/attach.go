package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// attachBench measures criseq record --attach (root only) tracing this
// process while it calls a real grpc-go CRI runtime: small calls, then
// 16 MiB answers, some at once. It reads the recorder's peak RSS while it
// runs, and what it says it recorded and lost.
type attachBench struct {
	calls, big, parallel int
	ring                 int // MiB; 0: criseq's default
}

// attachResult is what one attached run measured.
type attachResult struct {
	rss            int64 // peak RSS, bytes
	recorded, lost int64 // bytes, as criseq reports them
	wall           time.Duration
	cpu            time.Duration // criseq's, user and system, attaching included
}

func runAttach(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("attach", flag.ContinueOnError)
	fs.SetOutput(stderr)
	ab := attachBench{}
	fs.IntVar(&ab.calls, "calls", 20000, "small unary calls")
	fs.IntVar(&ab.big, "big", 25, "16 MiB responses")
	fs.IntVar(&ab.parallel, "parallel", 4, "16 MiB responses asked for at once")
	fs.IntVar(&ab.ring, "ring", 0, "criseq's --ring-size in MiB (0: its default)")
	runs := fs.Int("runs", 3, "runs")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("attach: record --attach needs root")
	}
	w, err := newWorkspace()
	if err != nil {
		return err
	}
	defer w.remove()
	tmp, bin, self := w.tmp, w.bin, w.self
	results := make([]attachResult, *runs)
	for i := range results {
		if results[i], err = ab.run(ctx, self, bin, tmp); err != nil {
			return err
		}
	}
	ab.print(stdout, results)
	return nil
}

// print writes a table of the runs.
func (ab *attachBench) print(w io.Writer, results []attachResult) {
	ring := "its default ring"
	if ab.ring != 0 {
		ring = fmt.Sprintf("--ring-size %d", ab.ring)
	}
	fmt.Fprintf(w, "\nAttached (criseq record --attach, %s) to a real grpc-go client calling a real grpc-go runtime: %d small calls (Version), then %d ListContainers answers of %d MiB, %d at a time.\n\n",
		ring, ab.calls, ab.big, bigResponse>>20, ab.parallel)
	fmt.Fprintf(w, "| run | peak RSS | CPU | recorded | lost | calls took |\n|---:|---:|---:|---:|---:|---:|\n")
	for i, r := range results {
		fmt.Fprintf(w, "| %d | %.1f MiB | %.2f s | %.1f MB | %.1f MB | %.2f s |\n", i+1, float64(r.rss)/(1<<20), r.cpu.Seconds(), float64(r.recorded)/1e6, float64(r.lost)/1e6, r.wall.Seconds())
	}
}

var (
	recordedRE = regexp.MustCompile(`: (\d+) bytes recorded`)
	lostRE     = regexp.MustCompile(`(\d+) bytes lost and marked as gaps`)
)

func (ab *attachBench) run(ctx context.Context, self, bin, tmp string) (attachResult, error) {
	var res attachResult
	dir, err := os.MkdirTemp(tmp, "attach-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	rb := &relayBench{dir: dir}
	defer rb.stop()
	upstream := filepath.Join(dir, "runtime.sock")
	if err := rb.spawn(ctx, upstream, self, "cri-server", "-listen", upstream); err != nil {
		return res, err
	}
	args := []string{"record", "--attach", "--pid", strconv.Itoa(os.Getpid()), "--socket", upstream, "-w", filepath.Join(dir, "att.pcapng")}
	if ab.ring != 0 {
		args = append(args, "--ring-size", strconv.Itoa(ab.ring))
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	pr, err := cmd.StderrPipe()
	if err != nil {
		return res, err
	}
	if err := cmd.Start(); err != nil {
		return res, err
	}
	lines := make(chan string, 64)
	var all strings.Builder
	var mu sync.Mutex
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			mu.Lock()
			all.WriteString(sc.Text() + "\n")
			mu.Unlock()
			select {
			case lines <- sc.Text():
			default:
			}
		}
		close(lines)
	}()
	defer func() {
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
	}()
	for ready := false; !ready; {
		select {
		case l, ok := <-lines:
			if !ok {
				cmd.Wait()
				return res, fmt.Errorf("criseq record --attach: %s", all.String())
			}
			ready = strings.Contains(l, "attached to process")
		case <-time.After(30 * time.Second):
			return res, fmt.Errorf("criseq record --attach did not attach in 30 s")
		}
	}
	cc, err := grpc.NewClient("unix://"+upstream, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		return res, err
	}
	defer cc.Close()
	rt := runtimeapi.NewRuntimeServiceClient(cc)
	t0 := time.Now()
	for range ab.calls {
		if _, err := rt.Version(ctx, &runtimeapi.VersionRequest{}); err != nil {
			return res, err
		}
	}
	for done := 0; done < ab.big; done += ab.parallel {
		var wg sync.WaitGroup
		errs := make(chan error, ab.parallel)
		for range min(ab.parallel, ab.big-done) {
			wg.Go(func() {
				if _, err := rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{}); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			return res, err
		}
	}
	res.wall = time.Since(t0)
	time.Sleep(500 * time.Millisecond) // the ring read to its end
	if res.rss, err = peakRSS(cmd.Process.Pid); err != nil {
		return res, err
	}
	res.cpu = groupCPU(cmd.Process.Pid)
	cmd.Process.Signal(syscall.SIGINT)
	for range lines {
	}
	cmd.Wait()
	mu.Lock()
	out := all.String()
	mu.Unlock()
	if m := recordedRE.FindStringSubmatch(out); m != nil {
		res.recorded, _ = strconv.ParseInt(m[1], 10, 64)
	} else {
		return res, fmt.Errorf("criseq record --attach said nothing of what it recorded:\n%s", out)
	}
	if m := lostRE.FindStringSubmatch(out); m != nil {
		res.lost, _ = strconv.ParseInt(m[1], 10, 64)
	}
	return res, nil
}
