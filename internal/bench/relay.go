package main

import (
	"context"

	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// bigResponse is the size of the large response the relay is timed with.
const bigResponse = 16 << 20

// criServer is a real grpc-go CRI runtime for the relay's timing: Version
// answers at once, ListContainers with about bigResponse bytes.
type criServer struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	big *runtimeapi.ListContainersResponse
}

func (s *criServer) Version(context.Context, *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return &runtimeapi.VersionResponse{Version: "0.1.0", RuntimeName: "bench", RuntimeVersion: "1.0.0", RuntimeApiVersion: "v1"}, nil
}

func (s *criServer) ListContainers(context.Context, *runtimeapi.ListContainersRequest) (*runtimeapi.ListContainersResponse, error) {
	return s.big, nil
}

func bigList() *runtimeapi.ListContainersResponse {
	resp := &runtimeapi.ListContainersResponse{}
	pad := strings.Repeat("x", 4000)
	for i := 0; ; i++ {
		resp.Containers = append(resp.Containers, &runtimeapi.Container{
			Id: fmt.Sprintf("%064x", i), PodSandboxId: fmt.Sprintf("%064x", i/2),
			Metadata:    &runtimeapi.ContainerMetadata{Name: fmt.Sprintf("container-%d", i)},
			Annotations: map[string]string{"pad": pad},
		})
		if len(resp.Containers)*4200 >= bigResponse {
			return resp
		}
	}
}

// runCRIServer serves the CRI runtime on a unix socket until killed: a
// process of its own, as containerd is.
func runCRIServer(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("cri-server", flag.ContinueOnError)
	sock := fs.String("listen", "", "unix socket to serve on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ln, err := net.Listen("unix", *sock)
	if err != nil {
		return err
	}
	srv := grpc.NewServer(grpc.MaxSendMsgSize(64 << 20))
	runtimeapi.RegisterRuntimeServiceServer(srv, &criServer{big: bigList()})
	go func() {
		<-ctx.Done()
		srv.Stop()
	}()
	return srv.Serve(ln)
}

// relayTimes are the figures of one path to the runtime.
type relayTimes struct {
	p50, p99 time.Duration // a Version call
	big      time.Duration // the median ListContainers of bigResponse bytes
}

// relayPath is one way to the runtime: direct, through socat, through
// criseq record.
type relayPath struct {
	name string
	sock string
	cc   *grpc.ClientConn
	best relayTimes
	pgid int           // the relay's process group; 0 for direct
	cpu  time.Duration // the relay's CPU over every round, read at stop
}

// relayBench times small unary calls and a large response on each path,
// in interleaved rounds, and keeps each path's best round.
type relayBench struct {
	calls, bigCalls, rounds int
	paths                   []*relayPath
	procs                   []*exec.Cmd
	dir                     string
	// extra relays to compare, "NAME=COMMAND ARGS" with {listen} and
	// {upstream} in ARGS.
	extra     []string
	record    *exec.Cmd // criseq record
	recordRSS int64     // its peak RSS, bytes, once stopped
	stopped   bool
	// keep, if set, is where stop moves the capture criseq record wrote.
	keep string
}

func (rb *relayBench) start(ctx context.Context, self, criseq string) error {
	dir, err := os.MkdirTemp("", "criseq-relay-")
	if err != nil {
		return err
	}
	rb.dir = dir
	upstream := filepath.Join(dir, "runtime.sock")
	if err := rb.spawn(ctx, upstream, self, "cri-server", "-listen", upstream); err != nil {
		return err
	}
	socat := filepath.Join(dir, "socat.sock")
	if err := rb.spawn(ctx, socat, "socat", "UNIX-LISTEN:"+socat+",fork", "UNIX-CONNECT:"+upstream); err != nil {
		return fmt.Errorf("socat: %w (apt-get install socat)", err)
	}
	socatCmd := rb.procs[len(rb.procs)-1]
	rec := filepath.Join(dir, "criseq.sock")
	if err := rb.spawn(ctx, rec, criseq, "record", "--upstream", upstream, "--listen", rec, "-w", filepath.Join(dir, "rec.pcapng")); err != nil {
		return err
	}
	rb.record = rb.procs[len(rb.procs)-1]
	type path struct {
		name, sock string
		pgid       int
	}
	paths := []path{{"direct", upstream, 0}, {"socat", socat, socatCmd.Process.Pid}, {"criseq record", rec, rb.record.Process.Pid}}
	for i, x := range rb.extra {
		name, command, ok := strings.Cut(x, "=")
		if !ok {
			return fmt.Errorf("-extra %q: want NAME=COMMAND ARGS", x)
		}
		sock := filepath.Join(dir, fmt.Sprintf("extra%d.sock", i))
		args := strings.Fields(strings.NewReplacer("{listen}", sock, "{upstream}", upstream).Replace(command))
		if err := rb.spawn(ctx, sock, args[0], args[1:]...); err != nil {
			return err
		}
		paths = append(paths, path{name, sock, rb.procs[len(rb.procs)-1].Process.Pid})
	}
	for _, p := range paths {
		cc, err := grpc.NewClient("unix://"+p.sock, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
		if err != nil {
			return err
		}
		rb.paths = append(rb.paths, &relayPath{name: p.name, sock: p.sock, cc: cc, pgid: p.pgid})
	}
	return nil
}

// spawn starts a process and waits for its socket to answer.
func (rb *relayBench) spawn(ctx context.Context, sock, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stderr = os.Stderr
	// A group of its own: an -extra relay run through a wrapper that
	// forks (timeout, say) is stopped with its children, not orphaned.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	if err := cmd.Start(); err != nil {
		return err
	}
	rb.procs = append(rb.procs, cmd)
	for range 500 {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("%s: %s does not answer", name, sock)
}

func (rb *relayBench) stop() {
	if rb.stopped {
		return
	}
	rb.stopped = true
	for _, p := range rb.paths {
		// Read while it runs: socat's child per connection is counted
		// only while it lives.
		if p.pgid != 0 {
			p.cpu = groupCPU(p.pgid)
		}
		p.cc.Close()
	}
	for i := len(rb.procs) - 1; i >= 0; i-- {
		p := rb.procs[i]
		if p == rb.record {
			// Read while it runs: its ru_maxrss would count the bench's.
			if rss, err := peakRSS(p.Process.Pid); err == nil {
				rb.recordRSS = rss
			}
		}
		pgid := -p.Process.Pid
		syscall.Kill(pgid, syscall.SIGINT)
		done := make(chan struct{})
		go func() { p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			syscall.Kill(pgid, syscall.SIGKILL)
			<-done
		}
		syscall.Kill(pgid, syscall.SIGKILL) // what it left behind
	}
	if rb.dir != "" {
		if rb.keep != "" {
			os.Rename(filepath.Join(rb.dir, "rec.pcapng"), rb.keep)
		}
		os.RemoveAll(rb.dir)
	}
}

// run measures every path rounds times, interleaved, keeping the best.
func (rb *relayBench) run(ctx context.Context) error {
	rt := func(p *relayPath) runtimeapi.RuntimeServiceClient { return runtimeapi.NewRuntimeServiceClient(p.cc) }
	for _, p := range rb.paths { // connect and warm up
		for range 500 {
			if _, err := rt(p).Version(ctx, &runtimeapi.VersionRequest{}); err != nil {
				return fmt.Errorf("%s: %w", p.name, err)
			}
		}
		if _, err := rt(p).ListContainers(ctx, &runtimeapi.ListContainersRequest{}); err != nil {
			return fmt.Errorf("%s: %w", p.name, err)
		}
	}
	// Each round makes rb.calls calls per path in blocks of 500, the paths
	// taking turns, so that a machine whose load drifts weighs on each
	// path alike.
	const block = 500
	lats := make([][]time.Duration, len(rb.paths))
	for round := range rb.rounds {
		for i := range lats {
			lats[i] = lats[i][:0]
		}
		for done := 0; done < rb.calls; done += block {
			for i, p := range rb.paths {
				c := rt(p)
				for range min(block, rb.calls-done) {
					t0 := time.Now()
					if _, err := c.Version(ctx, &runtimeapi.VersionRequest{}); err != nil {
						return fmt.Errorf("%s: %w", p.name, err)
					}
					lats[i] = append(lats[i], time.Since(t0))
				}
			}
		}
		bigs := make([][]time.Duration, len(rb.paths))
		for range rb.bigCalls {
			for i, p := range rb.paths {
				t0 := time.Now()
				if _, err := rt(p).ListContainers(ctx, &runtimeapi.ListContainersRequest{}); err != nil {
					return fmt.Errorf("%s: %w", p.name, err)
				}
				bigs[i] = append(bigs[i], time.Since(t0))
			}
		}
		for i, p := range rb.paths {
			lat := lats[i]
			slices.Sort(lat)
			slices.Sort(bigs[i])
			p50, p99, big := lat[len(lat)/2], lat[len(lat)*99/100], bigs[i][len(bigs[i])/2]
			if round == 0 || p50 < p.best.p50 {
				p.best.p50 = p50
			}
			if round == 0 || p99 < p.best.p99 {
				p.best.p99 = p99
			}
			if round == 0 || big < p.best.big {
				p.best.big = big
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}
