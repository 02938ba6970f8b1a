package ebpf

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/criseq/criseq/capture"
)

// The real peers of these tests: a grpc-go CRI runtime in the test process
// and a grpc-go CRI client in a child process (the test binary run again),
// driven over its stdin, so that the traced process is not the tracer's.

const childEnv = "CRISEQ_EBPF_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(childMain(os.Stdin, os.Stdout))
	}
	os.Exit(m.Run())
}

// criServer is a small CRI runtime. Version answers with a runtime version
// of as many bytes as the request's version says (for large messages).
type criServer struct {
	runtimeapi.UnimplementedRuntimeServiceServer
}

func (criServer) Version(ctx context.Context, req *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	n, _ := strconv.Atoi(req.Version)
	return &runtimeapi.VersionResponse{Version: "0.1.0", RuntimeName: "criseq-test", RuntimeVersion: pattern(n), RuntimeApiVersion: "v1"}, nil
}

func (criServer) RunPodSandbox(ctx context.Context, req *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
	return &runtimeapi.RunPodSandboxResponse{PodSandboxId: "sandbox-" + req.GetConfig().GetMetadata().GetName()}, nil
}

func (criServer) ListContainers(ctx context.Context, req *runtimeapi.ListContainersRequest) (*runtimeapi.ListContainersResponse, error) {
	return &runtimeapi.ListContainersResponse{Containers: []*runtimeapi.Container{{Id: strings.Repeat("c0", 32), Metadata: &runtimeapi.ContainerMetadata{Name: "web"}}}}, nil
}

type imageServer struct {
	runtimeapi.UnimplementedImageServiceServer
}

func (imageServer) ImageStatus(ctx context.Context, req *runtimeapi.ImageStatusRequest) (*runtimeapi.ImageStatusResponse, error) {
	return &runtimeapi.ImageStatusResponse{Image: &runtimeapi.Image{Id: "sha256:" + strings.Repeat("cd", 32), RepoTags: []string{req.GetImage().GetImage()}}}, nil
}

// pattern is n bytes that are not all alike, so shifted copies differ.
func pattern(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = 'a' + byte((i*7+i/251)%26)
	}
	return string(b)
}

const maxMsg = 64 << 20

// startServer serves the CRI services on dir/runtime.sock.
func startServer(t testing.TB, dir string) string {
	t.Helper()
	sock := filepath.Join(dir, "runtime.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.MaxSendMsgSize(maxMsg), grpc.MaxRecvMsgSize(maxMsg))
	runtimeapi.RegisterRuntimeServiceServer(srv, criServer{})
	runtimeapi.RegisterImageServiceServer(srv, imageServer{})
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return sock
}

// startRelay runs criseq's relay from dir/relay.sock to sock, recording
// into the returned sink; stop ends it and waits.
func startRelay(t testing.TB, dir, sock string) (listen string, sink *memSink, stop func()) {
	t.Helper()
	listen = filepath.Join(dir, "relay.sock")
	sink = &memSink{}
	ready := make(chan struct{})
	p := &capture.Proxy{Upstream: sock, Listen: listen, Recorder: capture.NewRecorder(sink, capture.RecorderOptions{}),
		Ready: func() { close(ready) }, Drain: 100 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("relay: %v", err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("relay: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return listen, sink, stop
}

// memSink keeps chunks in memory (a capture.Sink), taking delay over each
// as a slow disk would.
type memSink struct {
	mu     sync.Mutex
	chunks []capture.Chunk
	delay  time.Duration
}

func (s *memSink) Write(c capture.Chunk) error {
	time.Sleep(s.delay)
	s.mu.Lock()
	defer s.mu.Unlock()
	c.Data = append([]byte(nil), c.Data...)
	s.chunks = append(s.chunks, c)
	return nil
}

func (s *memSink) Close() error { return nil }

func (s *memSink) all() []capture.Chunk {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]capture.Chunk(nil), s.chunks...)
}

// child is a CRI client process driven line by line.
type child struct {
	t     testing.TB
	cmd   *exec.Cmd
	in    io.WriteCloser
	out   *bufio.Scanner
	Pid   int
	errMu sync.Mutex
}

// startChild runs the test binary as a CRI client; exe, if set, is the path
// to run it by (its name becomes the process's name).
func startChild(t testing.TB, exe string) *child {
	t.Helper()
	if exe == "" {
		exe = os.Args[0]
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{t: t, cmd: cmd, in: in, out: bufio.NewScanner(out), Pid: cmd.Process.Pid}
	c.out.Buffer(nil, 16<<20)
	t.Cleanup(func() { c.stop() })
	return c
}

// do sends one command and returns the reply's words after "ok".
func (c *child) do(format string, args ...any) []string {
	c.t.Helper()
	if _, err := fmt.Fprintf(c.in, format+"\n", args...); err != nil {
		c.t.Fatalf("child: %v", err)
	}
	if !c.out.Scan() {
		c.t.Fatalf("child: no reply to %q: %v", fmt.Sprintf(format, args...), c.out.Err())
	}
	f := strings.Fields(c.out.Text())
	if len(f) == 0 || f[0] != "ok" {
		c.t.Fatalf("child: %q: %s", fmt.Sprintf(format, args...), c.out.Text())
	}
	return f[1:]
}

func (c *child) stop() {
	if c.cmd.ProcessState != nil {
		return
	}
	fmt.Fprintln(c.in, "exit")
	c.in.Close()
	done := make(chan struct{})
	go func() { c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		c.cmd.Process.Kill()
		<-done
	}
}

// childMain is the client: commands on in, one reply line each on out.
//
//	dial SOCK MODE      a new connection; MODE is the syscalls it uses:
//	                    rw (write/read), vec (writev/readv), msg
//	                    (sendmsg/recvmsg), to (sendto/recvfrom)
//	calls I N           N unary calls on connection I, one after another
//	big I SIZE          a Version call answered with SIZE bytes
//	streams I N         N calls at once on connection I
//	attach SOCK VIA     traces this process's connections to SOCK, attached
//	                    via VIA (an attachment); the reply: the attachment
//	                    used, then its BPF programs' IDs
//	noperf attach ...   the same, with perf_event_open denied
//	serve SOCK          serves the CRI services on SOCK
//	lat I N             N small calls on I, one after another: their latencies
//	http                serves HTTP on a free local port: its address
//	close I             closes connection I
//	exit
func childMain(in io.Reader, out io.Writer) int {
	var conns []*grpc.ClientConn
	sc := bufio.NewScanner(in)
	ctx := context.Background()
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		arg := func(i int) int {
			if i >= len(f) {
				return 0
			}
			n, _ := strconv.Atoi(f[i])
			return n
		}
		var err error
		reply := ""
		switch f[0] {
		case "exit":
			return 0
		case "dial":
			var cc *grpc.ClientConn
			cc, err = dial(f[1], f[2])
			if err == nil {
				// Connect now: the first call opens the connection.
				_, err = runtimeapi.NewRuntimeServiceClient(cc).Version(ctx, &runtimeapi.VersionRequest{Version: "1"})
				conns = append(conns, cc)
				reply = fmt.Sprint(len(conns) - 1)
			}
		case "calls":
			err = unary(ctx, conns[arg(1)], arg(2))
		case "big":
			var v *runtimeapi.VersionResponse
			v, err = runtimeapi.NewRuntimeServiceClient(conns[arg(1)]).Version(ctx, &runtimeapi.VersionRequest{Version: f[2]}, grpc.MaxCallRecvMsgSize(maxMsg))
			if err == nil && len(v.RuntimeVersion) != arg(2) {
				err = fmt.Errorf("got %d bytes", len(v.RuntimeVersion))
			}
		case "streams":
			var wg sync.WaitGroup
			errs := make([]error, arg(2))
			for i := range arg(2) {
				wg.Go(func() { errs[i] = unary(ctx, conns[arg(1)], 1) })
			}
			wg.Wait()
			err = errors.Join(errs...)
		case "noperf":
			// Denies perf_event_open to this process from now on, then
			// runs the rest of the line.
			if err = denyPerfEvents(); err == nil {
				f = f[1:]
			}
			if err != nil || len(f) == 0 || f[0] != "attach" {
				err = errors.Join(err, errors.New("noperf: want noperf attach SOCK VIA"))
				break
			}
			fallthrough
		case "attach":
			// A tracer on this very process, until killed.
			tr := &Tracer{PID: os.Getpid(), Socket: f[1], via: attachment(arg(2)), Recorder: capture.NewRecorder(&memSink{}, capture.RecorderOptions{})}
			ready := make(chan error, 1)
			tr.Ready = func(Attached) { ready <- nil }
			go func() { ready <- tr.Run(ctx) }()
			if err = <-ready; err == nil {
				reply = fmt.Sprint(int(tr.k.via), " ")
				for _, p := range tr.k.progs {
					if info, ierr := p.Info(); ierr == nil {
						if id, ok := info.ID(); ok {
							reply += fmt.Sprint(id, " ")
						}
					}
				}
			}
		case "serve":
			// A CRI runtime in this process, on SOCK.
			var ln net.Listener
			if ln, err = net.Listen("unix", f[1]); err == nil {
				srv := grpc.NewServer(grpc.MaxSendMsgSize(maxMsg), grpc.MaxRecvMsgSize(maxMsg))
				runtimeapi.RegisterRuntimeServiceServer(srv, criServer{})
				runtimeapi.RegisterImageServiceServer(srv, imageServer{})
				go srv.Serve(ln)
			}
		case "http":
			// A plain HTTP server, for load that criseq does not trace.
			var ln net.Listener
			if ln, err = net.Listen("tcp", "127.0.0.1:0"); err == nil {
				body := []byte(pattern(512))
				go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) }))
				reply = ln.Addr().String()
			}
		case "lat":
			// N Version calls one after another; the reply lists each one's
			// latency in nanoseconds.
			rt := runtimeapi.NewRuntimeServiceClient(conns[arg(1)])
			lat := make([]string, 0, arg(2))
			for range arg(2) {
				t0 := time.Now()
				if _, err = rt.Version(ctx, &runtimeapi.VersionRequest{Version: "16"}); err != nil {
					break
				}
				lat = append(lat, strconv.FormatInt(int64(time.Since(t0)), 10))
			}
			reply = strings.Join(lat, " ")
		case "close":
			err = conns[arg(1)].Close()
		default:
			err = fmt.Errorf("unknown command %q", f[0])
		}
		if err != nil {
			fmt.Fprintf(out, "error %v\n", err)
			continue
		}
		fmt.Fprintf(out, "ok %s\n", reply)
	}
	return 0
}

// unary makes n calls of three kinds on two services.
func unary(ctx context.Context, cc *grpc.ClientConn, n int) error {
	rt, im := runtimeapi.NewRuntimeServiceClient(cc), runtimeapi.NewImageServiceClient(cc)
	for i := range n {
		var err error
		switch i % 3 {
		case 0:
			_, err = rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: fmt.Sprint("pod-", i), Namespace: "default"}}})
		case 1:
			_, err = im.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: "registry.example/app:1"}})
		default:
			_, err = rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func dial(sock, mode string) (*grpc.ClientConn, error) {
	d := func(ctx context.Context, _ string) (net.Conn, error) {
		var nd net.Dialer
		c, err := nd.DialContext(ctx, "unix", sock)
		if err != nil || mode == "rw" {
			return c, err
		}
		uc := c.(*net.UnixConn)
		rc, err := uc.SyscallConn()
		if err != nil {
			return nil, err
		}
		return &sysConn{UnixConn: uc, rc: rc, mode: mode}, nil
	}
	return grpc.NewClient("passthrough:///cri", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(d), grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMsg), grpc.MaxCallSendMsgSize(maxMsg)))
}

// sysConn does its I/O with the syscalls its mode names.
type sysConn struct {
	*net.UnixConn
	rc   syscall.RawConn
	mode string
}

func (c *sysConn) Read(b []byte) (n int, err error) {
	if len(b) == 0 {
		return 0, nil
	}
	rerr := c.rc.Read(func(fd uintptr) bool {
		switch c.mode {
		case "vec":
			h := (len(b) + 1) / 2
			n, err = unix.Readv(int(fd), [][]byte{b[:h], b[h:]})
		case "msg":
			n, _, _, _, err = unix.Recvmsg(int(fd), b, nil, 0)
		default:
			n, _, err = unix.Recvfrom(int(fd), b, 0)
		}
		return err != unix.EAGAIN
	})
	if rerr != nil {
		return 0, rerr
	}
	if err == nil && n == 0 {
		return 0, io.EOF
	}
	return n, err
}

func (c *sysConn) Write(b []byte) (int, error) {
	done := 0
	for done < len(b) {
		var n int
		var err error
		p := b[done:]
		werr := c.rc.Write(func(fd uintptr) bool {
			switch c.mode {
			case "vec":
				h := (len(p) + 1) / 2
				n, err = unix.Writev(int(fd), [][]byte{p[:h], p[h:]})
			case "msg":
				n, err = unix.SendmsgN(int(fd), p, nil, nil, 0)
			default:
				r, _, e := unix.Syscall6(unix.SYS_SENDTO, fd, uintptr(unsafePointer(p)), uintptr(len(p)), 0, 0, 0)
				n = int(r)
				if e != 0 {
					n, err = 0, e
				}
			}
			return err != unix.EAGAIN
		})
		if werr != nil {
			return done, werr
		}
		if err != nil {
			return done, err
		}
		done += n
	}
	return done, nil
}

// denyPerfEvents makes perf_event_open fail with EACCES for this process
// (every thread) from now on, with a seccomp filter.
func denyPerfEvents() error {
	prog, err := bpf.Assemble([]bpf.Instruction{
		bpf.LoadAbsolute{Off: 0, Size: 4}, // seccomp_data.nr
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(unix.SYS_PERF_EVENT_OPEN), SkipFalse: 1},
		bpf.RetConstant{Val: unix.SECCOMP_RET_ERRNO | uint32(unix.EACCES)},
		bpf.RetConstant{Val: unix.SECCOMP_RET_ALLOW},
	})
	if err != nil {
		return err
	}
	filter := make([]unix.SockFilter, len(prog))
	for i, in := range prog {
		filter[i] = unix.SockFilter{Code: in.Op, Jt: in.Jt, Jf: in.Jf, K: in.K}
	}
	fprog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("no_new_privs: %w", err)
	}
	if _, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&fprog))); errno != 0 {
		return fmt.Errorf("seccomp: %w", errno)
	}
	return nil
}
