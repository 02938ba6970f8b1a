package capture

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// criServer is a small CRI runtime: real grpc-go, real cri-api services.
type criServer struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	containers int // how many containers ListContainers returns
}

func (s *criServer) Version(ctx context.Context, req *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return &runtimeapi.VersionResponse{Version: "0.1.0", RuntimeName: "criseq-test", RuntimeVersion: "1.0.0", RuntimeApiVersion: "v1"}, nil
}

func (s *criServer) RunPodSandbox(ctx context.Context, req *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
	return &runtimeapi.RunPodSandboxResponse{PodSandboxId: "sandbox-" + req.GetConfig().GetMetadata().GetName()}, nil
}

func (s *criServer) ListContainers(ctx context.Context, req *runtimeapi.ListContainersRequest) (*runtimeapi.ListContainersResponse, error) {
	resp := &runtimeapi.ListContainersResponse{}
	for i := range s.containers {
		resp.Containers = append(resp.Containers, &runtimeapi.Container{
			Id:           fmt.Sprintf("%064x", i),
			PodSandboxId: fmt.Sprintf("%064x", i/2),
			Metadata:     &runtimeapi.ContainerMetadata{Name: fmt.Sprintf("container-%d", i)},
			Image:        &runtimeapi.ImageSpec{Image: "registry.example/app:1.0"},
			ImageRef:     "sha256:" + strings.Repeat("ab", 32),
			State:        runtimeapi.ContainerState_CONTAINER_RUNNING,
			CreatedAt:    int64(1_700_000_000_000_000_000 + i),
			Labels:       map[string]string{"io.kubernetes.pod.name": fmt.Sprintf("pod-%d", i/2), "io.kubernetes.pod.namespace": "default"},
		})
	}
	return resp, nil
}

type imageServer struct {
	runtimeapi.UnimplementedImageServiceServer
}

func (imageServer) ImageStatus(ctx context.Context, req *runtimeapi.ImageStatusRequest) (*runtimeapi.ImageStatusResponse, error) {
	return &runtimeapi.ImageStatusResponse{Image: &runtimeapi.Image{Id: "sha256:" + strings.Repeat("cd", 32), RepoTags: []string{req.GetImage().GetImage()}, Size: 1 << 20}}, nil
}

func (imageServer) ListImages(ctx context.Context, req *runtimeapi.ListImagesRequest) (*runtimeapi.ListImagesResponse, error) {
	return &runtimeapi.ListImagesResponse{Images: []*runtimeapi.Image{{Id: "sha256:" + strings.Repeat("ef", 32), RepoTags: []string{"registry.example/app:1.0"}}}}, nil
}

// teeConn remembers every byte read and written. With drain set, Close
// half-closes and reads until the peer closes, so that bytes in flight when
// the client hung up are remembered too.
type teeConn struct {
	*net.UnixConn
	drain bool

	rmu, wmu   sync.Mutex
	recv, sent bytes.Buffer
	closeOnce  sync.Once
	closed     chan struct{}
}

func newTeeConn(c *net.UnixConn, drain bool) *teeConn {
	return &teeConn{UnixConn: c, drain: drain, closed: make(chan struct{})}
}

func (c *teeConn) Read(b []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	n, err := c.UnixConn.Read(b)
	c.recv.Write(b[:n])
	return n, err
}

func (c *teeConn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	n, err := c.UnixConn.Write(b)
	c.sent.Write(b[:n])
	return n, err
}

func (c *teeConn) Close() error {
	c.closeOnce.Do(func() {
		if c.drain {
			c.UnixConn.CloseWrite()
			c.UnixConn.SetReadDeadline(time.Now().Add(10 * time.Second))
			buf := make([]byte, 4096)
			for {
				if _, err := c.Read(buf); err != nil {
					break
				}
			}
		}
		c.UnixConn.Close()
		close(c.closed)
	})
	return nil
}

// bytes returns what was sent and received, once the connection is closed.
func (c *teeConn) bytes(t *testing.T) (sent, recv []byte) {
	t.Helper()
	select {
	case <-c.closed:
	case <-time.After(10 * time.Second):
		t.Fatal("tee'd connection never closed")
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return bytes.Clone(c.sent.Bytes()), bytes.Clone(c.recv.Bytes())
}

// teeListener tees every accepted connection.
type teeListener struct {
	*net.UnixListener
	mu    sync.Mutex
	conns []*teeConn
}

func (l *teeListener) Accept() (net.Conn, error) {
	c, err := l.UnixListener.AcceptUnix()
	if err != nil {
		return nil, err
	}
	tc := newTeeConn(c, false)
	l.mu.Lock()
	l.conns = append(l.conns, tc)
	l.mu.Unlock()
	return tc, nil
}

func (l *teeListener) accepted() []*teeConn {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*teeConn(nil), l.conns...)
}

// startCRIServer serves the runtime and image services on dir/upstream.sock.
func startCRIServer(t testing.TB, dir string, containers int) (string, *teeListener) {
	t.Helper()
	sock := filepath.Join(dir, "upstream.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	tl := &teeListener{UnixListener: ln}
	srv := grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(srv, &criServer{containers: containers})
	runtimeapi.RegisterImageServiceServer(srv, imageServer{})
	go srv.Serve(tl)
	t.Cleanup(srv.Stop)
	return sock, tl
}

// criClient is a grpc-go client whose connections are tee'd.
type criClient struct {
	conn    *grpc.ClientConn
	runtime runtimeapi.RuntimeServiceClient
	image   runtimeapi.ImageServiceClient
	mu      sync.Mutex
	tees    []*teeConn
}

func newCRIClient(t testing.TB, sock string) *criClient {
	t.Helper()
	c := &criClient{}
	dial := func(ctx context.Context, _ string) (net.Conn, error) {
		var d net.Dialer
		nc, err := d.DialContext(ctx, "unix", sock)
		if err != nil {
			return nil, err
		}
		tc := newTeeConn(nc.(*net.UnixConn), true)
		c.mu.Lock()
		c.tees = append(c.tees, tc)
		c.mu.Unlock()
		return tc, nil
	}
	conn, err := grpc.NewClient("unix://"+sock,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(dial))
	if err != nil {
		t.Fatal(err)
	}
	c.conn = conn
	c.runtime = runtimeapi.NewRuntimeServiceClient(conn)
	c.image = runtimeapi.NewImageServiceClient(conn)
	return c
}

func (c *criClient) close() {
	c.conn.Close()
}

func (c *criClient) connections() []*teeConn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*teeConn(nil), c.tees...)
}

// callAll makes one call of each kind and returns the method paths called.
func (c *criClient) callAll(ctx context.Context, name string) ([]string, error) {
	v, err := c.runtime.Version(ctx, &runtimeapi.VersionRequest{Version: "v1"})
	if err != nil {
		return nil, fmt.Errorf("Version: %w", err)
	}
	if v.RuntimeName != "criseq-test" {
		return nil, fmt.Errorf("Version: runtime name %q", v.RuntimeName)
	}
	r, err := c.runtime.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "default", Uid: "uid-" + name}}})
	if err != nil {
		return nil, fmt.Errorf("RunPodSandbox: %w", err)
	}
	if r.PodSandboxId != "sandbox-"+name {
		return nil, fmt.Errorf("RunPodSandbox: id %q", r.PodSandboxId)
	}
	if _, err := c.runtime.ListContainers(ctx, &runtimeapi.ListContainersRequest{}); err != nil {
		return nil, fmt.Errorf("ListContainers: %w", err)
	}
	im, err := c.image.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: "registry.example/" + name}})
	if err != nil {
		return nil, fmt.Errorf("ImageStatus: %w", err)
	}
	if im.Image.RepoTags[0] != "registry.example/"+name {
		return nil, fmt.Errorf("ImageStatus: tags %v", im.Image.RepoTags)
	}
	return []string{
		"/runtime.v1.RuntimeService/Version",
		"/runtime.v1.RuntimeService/RunPodSandbox",
		"/runtime.v1.RuntimeService/ListContainers",
		"/runtime.v1.ImageService/ImageStatus",
	}, nil
}

// memSink keeps chunks in memory. If block is set, Write waits on it.
type memSink struct {
	block   chan struct{}
	mu      sync.Mutex
	chunks  []Chunk
	closed  bool
	blocked chan struct{} // closed when the first Write starts waiting
	once    sync.Once
}

func (s *memSink) Write(c Chunk) error {
	if s.block != nil {
		s.once.Do(func() { close(s.blocked) })
		<-s.block
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c.Data = bytes.Clone(c.Data) // a relay reuses its buffer after Write
	s.chunks = append(s.chunks, c)
	return nil
}

func (s *memSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

func (s *memSink) all() []Chunk {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Chunk(nil), s.chunks...)
}

// startProxy runs a Proxy until the test ends or stop is called.
func startProxy(t testing.TB, p *Proxy) (stop func() error) {
	t.Helper()
	ready := make(chan struct{})
	p.Ready = func() { close(ready) }
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	select {
	case <-ready:
	case err := <-errc:
		cancel()
		t.Fatalf("proxy did not start: %v", err)
	}
	var once sync.Once
	var runErr error
	stop = func() error {
		once.Do(func() {
			cancel()
			runErr = <-errc
		})
		return runErr
	}
	t.Cleanup(func() { stop() })
	return stop
}

// stream is one direction of one recorded connection.
type stream struct {
	data   []byte // Data concatenated; gaps left out
	pieces []piece
	gaps   int // chunks with Gap != 0
	opened bool
	closed bool
}

// streams reassembles recorded chunks and checks that offsets add up.
func streams(t testing.TB, chunks []Chunk) map[uint64]*[2]stream {
	t.Helper()
	out := make(map[uint64]*[2]stream)
	next := make(map[[2]uint64]int64)
	for _, c := range chunks {
		s := out[c.Conn]
		if s == nil {
			s = new([2]stream)
			out[c.Conn] = s
		}
		st := &s[c.Dir]
		k := [2]uint64{c.Conn, uint64(c.Dir)}
		switch c.Kind {
		case Open:
			if s[0].opened {
				t.Errorf("conn %d opened twice", c.Conn)
			}
			s[0].opened = true
			continue
		case Close:
			if st.closed {
				t.Errorf("conn %d %v closed twice", c.Conn, c.Dir)
			}
			st.closed = true
		}
		if st.closed && c.Kind == Data {
			t.Errorf("conn %d %v: data after close", c.Conn, c.Dir)
		}
		if c.Gap != 0 {
			st.gaps++
		}
		want := next[k] + int64(max(c.Gap, 0))
		if c.Offset != want {
			t.Errorf("conn %d %v: chunk at offset %d, want %d (gap %d)", c.Conn, c.Dir, c.Offset, want, c.Gap)
		}
		st.data = append(st.data, c.Data...)
		if len(c.Data) > 0 {
			st.pieces = append(st.pieces, piece{c.Offset, c.Data})
		}
		next[k] = c.Offset + int64(len(c.Data))
	}
	return out
}

type piece struct {
	off  int64
	data []byte
}

type pair struct{ sent, recv string }

func sortedPairs(ps []pair) []pair {
	sort.Slice(ps, func(i, j int) bool {
		if ps[i].sent != ps[j].sent {
			return ps[i].sent < ps[j].sent
		}
		return ps[i].recv < ps[j].recv
	})
	return ps
}

func writeFile(t testing.TB, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// readAll drains a Source; it fails the test on anything but io.EOF.
func readAll(t testing.TB, src Source) []Chunk {
	t.Helper()
	chunks, err := readUntilErr(src)
	if err != io.EOF {
		t.Fatalf("read: %v", err)
	}
	return chunks
}

func readUntilErr(src Source) ([]Chunk, error) {
	var out []Chunk
	for {
		c, err := src.Next()
		if err != nil {
			return out, err
		}
		c.Data = bytes.Clone(c.Data)
		out = append(out, c)
	}
}

func isFormatError(err error) bool {
	var fe *FormatError
	return errors.As(err, &fe)
}
