package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/criseq/criseq/capture"
	"github.com/criseq/criseq/render"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestHelpHasExamples(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"help"}, &out, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "Examples:") {
		t.Errorf("criseq help has no examples:\n%s", out.String())
	}
	for _, c := range commands() {
		var stderr bytes.Buffer
		err := run(context.Background(), []string{c.name, "-h"}, &stderr, &stderr)
		if !errors.Is(err, flag.ErrHelp) {
			t.Errorf("%s -h: %v", c.name, err)
		}
		if !strings.Contains(stderr.String(), "Examples:") || !strings.Contains(stderr.String(), "Flags:") {
			t.Errorf("%s -h lacks examples or flags:\n%s", c.name, stderr.String())
		}
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{}, {"nope"}, {"calls"}, {"calls", "a", "b"}, {"render", "--format", "gif", "x"},
		{"record", "-w", "x.pcapng"}, {"record", "--listen", "/tmp/x.sock"},
		{"render", "--timescale", "-1", "x"}, {"render", "--timescale", "NaN", "x"}, {"watch", "-r", "x", "--timescale", "Inf"},
	} {
		var stderr bytes.Buffer
		err := run(context.Background(), args, &stderr, &stderr)
		if !errors.Is(err, errUsage) {
			t.Errorf("criseq %q: err = %v, want a usage error", args, err)
		}
	}
}

// TestBadFiles: damaged input gives an error naming the file, never a panic.
func TestBadFiles(t *testing.T) {
	dir := t.TempDir()
	text := filepath.Join(dir, "notes.txt")
	os.WriteFile(text, []byte("hello, this is not a capture\n"), 0o600)
	empty := filepath.Join(dir, "empty.pcapng")
	os.WriteFile(empty, nil, 0o600)
	for _, f := range []string{text, empty, filepath.Join(dir, "missing.pcap")} {
		for _, cmd := range []string{"calls", "render", "watch"} {
			var stdout, stderr bytes.Buffer
			args := []string{cmd, f}
			switch cmd {
			case "render":
				args = []string{cmd, "-o", filepath.Join(dir, "out"), f}
			case "watch":
				args = []string{cmd, "-r", f, "-o", filepath.Join(dir, "out")}
			}
			err := run(context.Background(), args, &stdout, &stderr)
			if err == nil || !strings.Contains(err.Error(), filepath.Base(f)) {
				t.Errorf("criseq %s %s: err = %v, want one naming the file", cmd, filepath.Base(f), err)
			}
		}
	}

	// A capture cut in the middle: the calls before the cut are still listed.
	whole, err := os.ReadFile(filepath.Join("..", "..", "testdata", "kubelet-pull", "capture.pcapng"))
	if err != nil {
		t.Fatal(err)
	}
	cut := filepath.Join(dir, "cut.pcapng")
	os.WriteFile(cut, whole[:len(whole)/2+7], 0o600)
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"calls", cut}, &stdout, &stderr); err != nil {
		t.Fatalf("calls on a truncated file: %v", err)
	}
	if !strings.Contains(stderr.String(), "cut.pcapng") || !strings.Contains(stderr.String(), "offset") {
		t.Errorf("truncation not reported with file and offset: %q", stderr.String())
	}
	if n := strings.Count(stdout.String(), "\n"); n < 10 {
		t.Errorf("only %d lines from the first half of the capture", n)
	}

	// render and watch -r draw what comes before the cut, the same
	// diagrams, and say where the file ends.
	drawn := map[string]string{}
	for _, args := range [][]string{
		{"render", "-o", filepath.Join(dir, "render"), cut},
		{"watch", "-r", cut, "-o", filepath.Join(dir, "watch")},
	} {
		var stdout, stderr bytes.Buffer
		if err := run(context.Background(), args, &stdout, &stderr); err != nil {
			t.Fatalf("%s on a truncated file: %v", args[0], err)
		}
		if !strings.Contains(stderr.String(), "cut.pcapng") || !strings.Contains(stderr.String(), "showing what was read") {
			t.Errorf("%s: truncation not reported: %q", args[0], stderr.String())
		}
		files, _ := filepath.Glob(filepath.Join(dir, args[0], "*.svg"))
		if len(files) == 0 {
			t.Fatalf("%s drew nothing from the first half of the capture", args[0])
		}
		var all []string
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, filepath.Base(f)+"\n"+string(b))
		}
		drawn[args[0]] = strings.Join(all, "\n")
	}
	if drawn["render"] != drawn["watch"] {
		t.Error("watch -r and render drew the truncated capture differently")
	}
}

// criServer is a real grpc-go server of the CRI services, answering like a
// runtime would, so criseq record sits between two real gRPC peers.
type criServer struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	runtimeapi.UnimplementedImageServiceServer
	gotAuth string
}

func (s *criServer) Version(context.Context, *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return &runtimeapi.VersionResponse{RuntimeName: "testruntime", RuntimeVersion: "0.1", RuntimeApiVersion: "v1"}, nil
}
func (s *criServer) RunPodSandbox(_ context.Context, r *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
	return &runtimeapi.RunPodSandboxResponse{PodSandboxId: "5a9d1e0c0ffee0000000000000000000000000000000000000000000000000001"}, nil
}
func (s *criServer) PodSandboxStatus(_ context.Context, r *runtimeapi.PodSandboxStatusRequest) (*runtimeapi.PodSandboxStatusResponse, error) {
	return &runtimeapi.PodSandboxStatusResponse{Status: &runtimeapi.PodSandboxStatus{Id: r.PodSandboxId, State: runtimeapi.PodSandboxState_SANDBOX_READY}}, nil
}
func (s *criServer) ImageStatus(_ context.Context, r *runtimeapi.ImageStatusRequest) (*runtimeapi.ImageStatusResponse, error) {
	return &runtimeapi.ImageStatusResponse{}, nil
}
func (s *criServer) PullImage(_ context.Context, r *runtimeapi.PullImageRequest) (*runtimeapi.PullImageResponse, error) {
	s.gotAuth = r.GetAuth().GetPassword()
	if strings.Contains(r.Image.Image, "missing") {
		return nil, status.Error(codes.NotFound, "manifest unknown")
	}
	return &runtimeapi.PullImageResponse{ImageRef: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}, nil
}
func (s *criServer) CreateContainer(_ context.Context, r *runtimeapi.CreateContainerRequest) (*runtimeapi.CreateContainerResponse, error) {
	return &runtimeapi.CreateContainerResponse{ContainerId: "c0de" + strings.Repeat("0", 59) + "1"}, nil
}
func (s *criServer) StartContainer(context.Context, *runtimeapi.StartContainerRequest) (*runtimeapi.StartContainerResponse, error) {
	return &runtimeapi.StartContainerResponse{}, nil
}

// serveCRI starts a real grpc-go server of the CRI services on a unix socket
// in a fresh short directory (socket paths are limited to 108 bytes), and
// returns the directory and the socket.
func serveCRI(t *testing.T) (dir, sock string, cs *criServer) {
	t.Helper()
	cs = &criServer{}
	dir, sock = serveCRIWith(t, cs, cs)
	return dir, sock, cs
}

// serveCRIWith is serveCRI with the given service implementations.
func serveCRIWith(t *testing.T, rt runtimeapi.RuntimeServiceServer, img runtimeapi.ImageServiceServer) (dir, sock string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "criseq")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock = filepath.Join(dir, "rt.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(srv, rt)
	runtimeapi.RegisterImageServiceServer(srv, img)
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return dir, sock
}

// recordSession runs criseq record between a real grpc-go client and the
// server at upstream while drive makes its calls (then each of more, given
// the listen socket to make its own connections), and returns the capture
// file, checked to be 0600 with the listen socket removed.
func recordSession(t *testing.T, dir, upstream string,
	drive func(ctx context.Context, rt runtimeapi.RuntimeServiceClient, img runtimeapi.ImageServiceClient),
	more ...func(ctx context.Context, listen string)) string {
	t.Helper()
	listen, file := filepath.Join(dir, "proxy.sock"), filepath.Join(dir, "cri.pcapng")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var recErr bytes.Buffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"record", "-q", "--upstream", upstream, "--listen", listen, "-w", file}, &recErr, &recErr)
	}()
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(listen); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	conn, err := grpc.NewClient("unix://"+listen, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	drive(ctx, runtimeapi.NewRuntimeServiceClient(conn), runtimeapi.NewImageServiceClient(conn))
	conn.Close()
	for _, m := range more {
		m(ctx, listen)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("record: %v\n%s", err, recErr.String())
	}
	if st, err := os.Stat(file); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("capture file: %v, mode %v; want 0600", err, st.Mode().Perm())
	}
	if _, err := os.Stat(listen); !os.IsNotExist(err) {
		t.Errorf("listen socket left behind: %v", err)
	}
	checkTimeOrder(t, file)
	return file
}

func must(t *testing.T) func(any, error) {
	return func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestRecordThenRender records a pod start between a real grpc-go CRI
// client and server with criseq record, then renders it.
func TestRecordThenRender(t *testing.T) {
	dir, upstream, cs := serveCRI(t)
	file := recordSession(t, dir, upstream, func(ctx context.Context, rt runtimeapi.RuntimeServiceClient, img runtimeapi.ImageServiceClient) {
		must := must(t)
		cfg := &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "nginx", Namespace: "default", Uid: "u-1"}}
		must(rt.Version(ctx, &runtimeapi.VersionRequest{}))
		sb, err := rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
		must(sb, err)
		must(rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: sb.PodSandboxId}))
		spec := &runtimeapi.ImageSpec{Image: "registry.local/nginx:1.25"}
		must(img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: spec}))
		pulled, err := img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: spec, SandboxConfig: cfg,
			Auth: &runtimeapi.AuthConfig{Username: "user", Password: "hunter2-registry-password"}})
		must(pulled, err)
		ct, err := rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: sb.PodSandboxId, SandboxConfig: cfg,
			Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "web"},
				Image: &runtimeapi.ImageSpec{Image: pulled.ImageRef, UserSpecifiedImage: spec.Image},
				Envs:  []*runtimeapi.KeyValue{{Key: "TOKEN", Value: []byte("env-secret-value")}}}})
		must(ct, err)
		must(rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: ct.ContainerId}))
	})
	if cs.gotAuth != "hunter2-registry-password" {
		t.Errorf("the runtime got password %q through the relay", cs.gotAuth)
	}

	var stdout, stderr bytes.Buffer
	out := filepath.Join(dir, "out")
	if err := run(context.Background(), []string{"render", "-o", out, file}, &stdout, &stderr); err != nil {
		t.Fatalf("render: %v\n%s", err, stderr.String())
	}
	pumlBytes, err := os.ReadFile(filepath.Join(out, "default_nginx_start.puml"))
	puml := string(pumlBytes)
	if err != nil {
		t.Fatalf("%v; render said:\n%s", err, stdout.String())
	}
	for _, want := range []string{"RunPodSandbox(default/nginx)", "sandbox 5a9d1e0c0ffe", "PullImage(registry.local/nginx:1.25)",
		"sha256:0123456789ab", "CreateContainer(web)", "container c0de00000000", "StartContainer(web)", "testruntime 0.1", "pod started in"} {
		if !strings.Contains(puml, want) {
			t.Errorf("diagram lacks %q:\n%s", want, puml)
		}
	}
	stdout.Reset()
	if err := run(context.Background(), []string{"calls", "--json", file}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"hunter2-registry-password", "env-secret-value"} {
		if strings.Contains(stdout.String(), secret) || strings.Contains(puml, secret) {
			t.Errorf("secret %q shown without --no-redact", secret)
		}
	}
	stdout.Reset()
	if err := run(context.Background(), []string{"calls", "--json", "--no-redact", file}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout.String(), "hunter2-registry-password") {
		t.Error("--no-redact does not show the registry password")
	}
}

// TestRenderSplitsLongMermaid records a pod start with 600 image pulls
// between real gRPC peers: its Mermaid diagram is too long for Mermaid's
// default limit even folded, so render writes it in parts, every call in
// one of them.
func TestRenderSplitsLongMermaid(t *testing.T) {
	dir, upstream, _ := serveCRI(t)
	const pulls = 600
	file := recordSession(t, dir, upstream, func(ctx context.Context, rt runtimeapi.RuntimeServiceClient, img runtimeapi.ImageServiceClient) {
		must := must(t)
		cfg := &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "many", Namespace: "default", Uid: "u-2"}}
		sb, err := rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
		must(sb, err)
		for i := range pulls {
			spec := &runtimeapi.ImageSpec{Image: fmt.Sprintf("registry.local/layer-%03d:1", i)}
			must(img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: spec, SandboxConfig: cfg}))
		}
		ct, err := rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: sb.PodSandboxId, SandboxConfig: cfg,
			Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "web"},
				Image: &runtimeapi.ImageSpec{Image: "registry.local/layer-000:1"}}})
		must(ct, err)
		must(rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: ct.ContainerId}))
	})
	var stdout, stderr bytes.Buffer
	out := filepath.Join(dir, "out")
	if err := run(context.Background(), []string{"render", "--format", "mmd", "-o", out, file}, &stdout, &stderr); err != nil {
		t.Fatalf("render: %v\n%s", err, stderr.String())
	}
	parts, err := filepath.Glob(filepath.Join(out, "default_many_start*.mmd"))
	if err != nil || len(parts) < 2 {
		t.Fatalf("parts %v (%v); render said:\n%s", parts, err, stdout.String())
	}
	var all strings.Builder
	for k := range parts {
		name := filepath.Join(out, "default_many_start"+render.PartExt("mmd", k))
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) >= render.MermaidLimit {
			t.Errorf("%s: %d bytes", name, len(b))
		}
		if !strings.Contains(stdout.String(), name) {
			t.Errorf("render did not name %s:\n%s", name, stdout.String())
		}
		all.Write(b)
	}
	for i := range pulls {
		if n := strings.Count(all.String(), fmt.Sprintf("PullImage(registry.local/layer-%03d:1)", i)); n != 1 {
			t.Errorf("PullImage of layer %d in %d parts", i, n)
		}
	}

	// Parts left by an earlier, longer drawing of the same flow go when it
	// is drawn again.
	var stale []string
	for k := len(parts); k < len(parts)+2; k++ {
		name := filepath.Join(out, "default_many_start"+render.PartExt("mmd", k))
		if err := os.WriteFile(name, []byte("stale"), 0o644); err != nil {
			t.Fatal(err)
		}
		stale = append(stale, name)
	}
	if err := run(context.Background(), []string{"render", "--format", "mmd", "-o", out, file}, &stdout, &stderr); err != nil {
		t.Fatalf("render again: %v\n%s", err, stderr.String())
	}
	for _, name := range stale {
		if _, err := os.Stat(name); !os.IsNotExist(err) {
			t.Errorf("%s left behind after drawing again (%v)", name, err)
		}
	}
	if _, err := os.Stat(parts[len(parts)-1]); err != nil {
		t.Errorf("last part gone after drawing again: %v", err)
	}
}

// TestRenderWriteError checks that a diagram that cannot be written stops
// render with an error naming the file, after the flows before it were
// reported, and that nothing is written after render returns.
func TestRenderWriteError(t *testing.T) {
	out := t.TempDir()
	// The stop flow's SVG cannot be created: a directory has its name.
	blocked := filepath.Join(out, "default_hello-criseq-lab_stop.svg")
	if err := os.Mkdir(blocked, 0o755); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"render", "-o", out, "--format", "svg,png", filepath.Join("..", "..", "testdata", "kubelet-pull", "capture.pcapng")}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), blocked) {
		t.Fatalf("render: %v, want an error naming %s", err, blocked)
	}
	if !strings.Contains(stdout.String(), "default_hello-criseq-lab_start.svg") || strings.Contains(stdout.String(), "_stop.png") {
		t.Errorf("render reported:\n%s\nwant the start flow and not the stop flow", stdout.String())
	}
	// Nothing goes on writing: the directory does not change after render returned.
	before, _ := os.ReadDir(out)
	time.Sleep(200 * time.Millisecond)
	if after, _ := os.ReadDir(out); len(after) != len(before) {
		t.Errorf("%d files before, %d after render returned", len(before), len(after))
	}
}

// TestOtherTraffic: a capture of a node holds more than CRI. TCP
// connections that are not HTTP/2 are skipped with one line saying so, the
// CRI calls come out as without them, and a flood of undecodable
// connections caught midway is reported in a bounded number of lines.
func TestOtherTraffic(t *testing.T) {
	orig := filepath.Join("..", "..", "testdata", "kubelet-warm", "capture.pcapng")
	src, err := capture.OpenFile(orig)
	if err != nil {
		t.Fatal(err)
	}
	var chunks []capture.Chunk
	var maxConn uint64
	var lastOpen time.Time
	for {
		c, err := src.Next()
		if err != nil {
			break
		}
		c.Data = bytes.Clone(c.Data)
		chunks = append(chunks, c)
		maxConn = max(maxConn, c.Conn)
		if c.Kind == capture.Open {
			lastOpen = c.Time
		}
	}
	src.Close()
	// After kubelet's connections opened (so they keep their numbers):
	// HTTP/1.1 exchanges seen from their handshake, and connections caught
	// midway carrying bytes that are no HTTP/2.
	req, resp := realHTTPExchange(t)
	const nHTTP, nJunk = 300, 60
	var other []capture.Chunk
	for i := range nHTTP + nJunk {
		id := maxConn + 1 + uint64(i)
		at := lastOpen.Add(time.Duration(i+1) * 7 * time.Millisecond)
		q, r, midway := req, resp, false
		if i >= nHTTP {
			q, r, midway = bytes.Repeat([]byte{0xff, 0xee, 0xdd}, 200), bytes.Repeat([]byte{0x17, 0x03, 0x03}, 100), true
		}
		other = append(other,
			capture.Chunk{Conn: id, Kind: capture.Open, Time: at, Midway: midway},
			capture.Chunk{Conn: id, Dir: capture.ClientToServer, Kind: capture.Data, Time: at.Add(time.Millisecond), Data: q},
			capture.Chunk{Conn: id, Dir: capture.ServerToClient, Kind: capture.Data, Time: at.Add(2 * time.Millisecond), Data: r},
			capture.Chunk{Conn: id, Dir: capture.ClientToServer, Kind: capture.Close, Time: at.Add(3 * time.Millisecond), Offset: int64(len(q))},
			capture.Chunk{Conn: id, Dir: capture.ServerToClient, Kind: capture.Close, Time: at.Add(3 * time.Millisecond), Offset: int64(len(r))})
	}
	all := append(chunks, other...)
	slices.SortStableFunc(all, func(a, b capture.Chunk) int { return a.Time.Compare(b.Time) })
	mixed := filepath.Join(t.TempDir(), "node.pcapng")
	f, err := capture.CreateFile(mixed)
	if err != nil {
		t.Fatal(err)
	}
	w := capture.NewPcapngWriter(f)
	for _, c := range all {
		if err := w.Write(c); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	var want, got, wantErr, gotErr bytes.Buffer
	if err := run(context.Background(), []string{"calls", orig}, &want, &wantErr); err != nil {
		t.Fatal(err)
	}
	if err := run(context.Background(), []string{"calls", mixed}, &got, &gotErr); err != nil {
		t.Fatal(err)
	}
	if got.String() != want.String() {
		t.Errorf("calls differ with other traffic in the capture:\n%s\nwant:\n%s", got.String(), want.String())
	}
	lines := strings.Split(strings.TrimSpace(gotErr.String()), "\n")
	t.Logf("%d lines on stderr: %s ... %s", len(lines), lines[0], lines[len(lines)-1])
	if n := strings.Count(gotErr.String(), fmt.Sprintf("%d TCP connections skipped: not HTTP/2 in clear text", nHTTP)); n != 1 {
		t.Errorf("the %d HTTP/1.1 connections are not reported once as skipped:\n%s", nHTTP, gotErr.String())
	}
	if len(lines) > maxReported+2 || !strings.Contains(lines[len(lines)-1], "more connection errors") {
		t.Errorf("%d lines on stderr, want at most %d, the last a count of the rest", len(lines), maxReported+2)
	}
}

// realHTTPExchange makes one health probe between a real net/http client
// and server over loopback and returns the bytes each side sent.
func realHTTPExchange(t *testing.T) (req, resp []byte) {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	defer srv.Close()
	var mu sync.Mutex
	var sent, got bytes.Buffer
	tr := &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &recordingConn{Conn: c, mu: &mu, sent: &sent, got: &got}, nil
	}}
	defer tr.CloseIdleConnections()
	r, err := (&http.Client{Transport: tr}).Get(srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(r.Body)
	r.Body.Close()
	mu.Lock()
	defer mu.Unlock()
	if string(body) != "ok" || !bytes.HasPrefix(sent.Bytes(), []byte("GET /healthz HTTP/1.1")) || !bytes.HasPrefix(got.Bytes(), []byte("HTTP/1.1 200")) {
		t.Fatalf("probe: body %q, sent %q, got %q", body, sent.Bytes(), got.Bytes())
	}
	return bytes.Clone(sent.Bytes()), bytes.Clone(got.Bytes())
}

// recordingConn keeps what a connection wrote and read. The transport
// writes on a goroutine of its own, which may not have returned when the
// response is in: bytes are kept before they are written.
type recordingConn struct {
	net.Conn
	mu        *sync.Mutex
	sent, got *bytes.Buffer
}

func (c *recordingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.sent.Write(p)
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.got.Write(p[:n])
	c.mu.Unlock()
	return n, err
}

// A format given twice is drawn once: one file, named once.
func TestFormatGivenTwice(t *testing.T) {
	out := t.TempDir()
	var stdout bytes.Buffer
	capPath := filepath.Join("..", "..", "testdata", "kubelet-init", "capture.pcapng")
	if err := run(context.Background(), []string{"render", "-o", out, "--format", "svg,puml,svg", capPath}, &stdout, io.Discard); err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		if n := strings.Count(line, ".svg"); n != 1 {
			t.Errorf("%d SVGs named on a line, want 1: %s", n, line)
		}
	}
	if ents, _ := os.ReadDir(out); len(ents) != 4 {
		t.Errorf("%d files, want 4 (two flows, svg and puml)", len(ents))
	}
}
