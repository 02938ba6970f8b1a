package decode

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/criseq/criseq/capture"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// fakeRuntime is a CRI runtime with canned, request-dependent answers.
type fakeRuntime struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	containers int // size of ListContainers answers
}

func (fakeRuntime) Version(_ context.Context, r *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return &runtimeapi.VersionResponse{Version: r.Version, RuntimeName: "fake", RuntimeVersion: "1.0.0", RuntimeApiVersion: "v1"}, nil
}

func (fakeRuntime) RunPodSandbox(_ context.Context, r *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
	return &runtimeapi.RunPodSandboxResponse{PodSandboxId: "sb-" + r.GetConfig().GetMetadata().GetName()}, nil
}

// CreateContainer echoes the request in the ID: name, env count, size.
func (fakeRuntime) CreateContainer(_ context.Context, r *runtimeapi.CreateContainerRequest) (*runtimeapi.CreateContainerResponse, error) {
	return &runtimeapi.CreateContainerResponse{ContainerId: fmt.Sprintf("%s/%s/%d/%d", r.PodSandboxId, r.GetConfig().GetMetadata().GetName(), len(r.GetConfig().GetEnvs()), proto.Size(r))}, nil
}

func (fakeRuntime) ContainerStatus(_ context.Context, r *runtimeapi.ContainerStatusRequest) (*runtimeapi.ContainerStatusResponse, error) {
	if strings.HasPrefix(r.ContainerId, "missing") {
		return nil, status.Errorf(codes.NotFound, "container %q not found: 100%% gone\nreally", r.ContainerId)
	}
	return containerStatus(r.ContainerId, r.Verbose), nil
}

func (f fakeRuntime) ListContainers(_ context.Context, r *runtimeapi.ListContainersRequest) (*runtimeapi.ListContainersResponse, error) {
	return listContainers(f.containers), nil
}

func (fakeRuntime) ListPodSandbox(_ context.Context, r *runtimeapi.ListPodSandboxRequest) (*runtimeapi.ListPodSandboxResponse, error) {
	return listPodSandbox(20), nil
}

func (fakeRuntime) Status(_ context.Context, r *runtimeapi.StatusRequest) (*runtimeapi.StatusResponse, error) {
	return runtimeStatus(r.Verbose), nil
}

func (fakeRuntime) GetContainerEvents(r *runtimeapi.GetEventsRequest, s runtimeapi.RuntimeService_GetContainerEventsServer) error {
	for i := range 3 {
		if err := s.Send(&runtimeapi.ContainerEventResponse{ContainerId: fmt.Sprint("c", i), CreatedAt: int64(i + 1),
			ContainerEventType: runtimeapi.ContainerEventType(i)}); err != nil {
			return err
		}
	}
	return nil
}

type fakeImages struct {
	runtimeapi.UnimplementedImageServiceServer
}

func (fakeImages) PullImage(_ context.Context, r *runtimeapi.PullImageRequest) (*runtimeapi.PullImageResponse, error) {
	return &runtimeapi.PullImageResponse{ImageRef: "sha256:" + r.GetImage().GetImage() + ":" + r.GetAuth().GetUsername()}, nil
}

func (fakeImages) ImageStatus(_ context.Context, r *runtimeapi.ImageStatusRequest) (*runtimeapi.ImageStatusResponse, error) {
	resp := &runtimeapi.ImageStatusResponse{Image: &runtimeapi.Image{Id: "sha256:" + r.GetImage().GetImage(), Size: 12345,
		RepoTags: []string{r.GetImage().GetImage()}}}
	if r.Verbose {
		resp.Info = map[string]string{"info": `{"imageSpec":{"config":{"Env":["PASSWORD=hunter2"]}}}`}
	}
	return resp, nil
}

func (fakeImages) ImageFsInfo(context.Context, *runtimeapi.ImageFsInfoRequest) (*runtimeapi.ImageFsInfoResponse, error) {
	return &runtimeapi.ImageFsInfoResponse{ImageFilesystems: []*runtimeapi.FilesystemUsage{{
		Timestamp: 1700000000000000000, FsId: &runtimeapi.FilesystemIdentifier{Mountpoint: "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs"},
		UsedBytes: &runtimeapi.UInt64Value{Value: 123456789}, InodesUsed: &runtimeapi.UInt64Value{Value: 4321},
	}}}, nil
}

// Realistic answers, the size of a busy node's.

func labelsFor(i int) map[string]string {
	return map[string]string{
		"io.kubernetes.container.name": fmt.Sprint("container-", i),
		"io.kubernetes.pod.name":       fmt.Sprint("pod-", i/2),
		"io.kubernetes.pod.namespace":  "default",
		"io.kubernetes.pod.uid":        fmt.Sprintf("6f1b2c3d-4e5f-6a7b-8c9d-%012d", i/2),
	}
}

func annotationsFor(i int) map[string]string {
	return map[string]string{
		"io.kubernetes.container.hash":                     fmt.Sprintf("%08x", i*2654435761),
		"io.kubernetes.container.restartCount":             "0",
		"io.kubernetes.container.terminationMessagePath":   "/dev/termination-log",
		"io.kubernetes.container.terminationMessagePolicy": "File",
		"io.kubernetes.pod.terminationGracePeriod":         "30",
	}
}

func listContainers(n int) *runtimeapi.ListContainersResponse {
	resp := &runtimeapi.ListContainersResponse{}
	for i := range n {
		resp.Containers = append(resp.Containers, &runtimeapi.Container{
			Id:           fmt.Sprintf("%064x", i+1),
			PodSandboxId: fmt.Sprintf("%064x", 1<<40+i/2),
			Metadata:     &runtimeapi.ContainerMetadata{Name: fmt.Sprint("container-", i)},
			Image:        &runtimeapi.ImageSpec{Image: "sha256:" + fmt.Sprintf("%064x", i%7)},
			ImageRef:     "registry.k8s.io/pause@sha256:" + fmt.Sprintf("%064x", i%7),
			State:        runtimeapi.ContainerState_CONTAINER_RUNNING,
			CreatedAt:    1700000000000000000 + int64(i),
			Labels:       labelsFor(i),
			Annotations:  annotationsFor(i),
		})
	}
	return resp
}

func listPodSandbox(n int) *runtimeapi.ListPodSandboxResponse {
	resp := &runtimeapi.ListPodSandboxResponse{}
	for i := range n {
		resp.Items = append(resp.Items, &runtimeapi.PodSandbox{
			Id:             fmt.Sprintf("%064x", 1<<40+i),
			Metadata:       &runtimeapi.PodSandboxMetadata{Name: fmt.Sprint("pod-", i), Uid: fmt.Sprint("uid-", i), Namespace: "default"},
			State:          runtimeapi.PodSandboxState_SANDBOX_READY,
			CreatedAt:      1700000000000000000 + int64(i),
			Labels:         labelsFor(2 * i),
			Annotations:    map[string]string{"kubernetes.io/config.seen": "2026-05-01T12:00:00Z", "kubernetes.io/config.source": "file"},
			RuntimeHandler: "runc",
		})
	}
	return resp
}

func containerStatus(id string, verbose bool) *runtimeapi.ContainerStatusResponse {
	resp := &runtimeapi.ContainerStatusResponse{Status: &runtimeapi.ContainerStatus{
		Id: id, Metadata: &runtimeapi.ContainerMetadata{Name: "web"}, State: runtimeapi.ContainerState_CONTAINER_RUNNING,
		CreatedAt: 1, StartedAt: 2, Image: &runtimeapi.ImageSpec{Image: "nginx"}, ImageRef: "sha256:abc",
		Labels: labelsFor(1), Annotations: annotationsFor(1), LogPath: "/var/log/pods/x/web/0.log",
	}}
	if verbose {
		resp.Info = map[string]string{"info": `{"pid":42,"config":{"envs":[{"key":"TOKEN","value":"hunter2"}]}}`}
	}
	return resp
}

func runtimeStatus(verbose bool) *runtimeapi.StatusResponse {
	resp := &runtimeapi.StatusResponse{Status: &runtimeapi.RuntimeStatus{Conditions: []*runtimeapi.RuntimeCondition{
		{Type: "RuntimeReady", Status: true}, {Type: "NetworkReady", Status: true},
	}}}
	if verbose {
		resp.Info = map[string]string{"config": `{"containerd":{"snapshotter":"overlayfs"}}`, "golang": "go1.26"}
	}
	return resp
}

// recorder captures a client's connections as chunks, the way capture/
// sees them: writes as client→server, reads as server→client.
type recorder struct {
	mu     sync.Mutex
	chunks []capture.Chunk
	conns  uint64
}

type recConn struct {
	net.Conn
	r    *recorder
	id   uint64
	off  [2]int64
	once sync.Once
}

func (r *recorder) add(c *recConn, dir capture.Dir, kind capture.Kind, b []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.chunks = append(r.chunks, capture.Chunk{Conn: c.id, Dir: dir, Kind: kind, Time: time.Now(), Data: bytes.Clone(b), Offset: c.off[dir]})
	c.off[dir] += int64(len(b))
}

func (r *recorder) wrap(c net.Conn) net.Conn {
	r.mu.Lock()
	r.conns++
	rc := &recConn{Conn: c, r: r, id: r.conns}
	r.mu.Unlock()
	r.add(rc, c2s, capture.Open, nil)
	return rc
}

func (r *recorder) take() []capture.Chunk {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.chunks
}

// Write records before writing, so a request never follows its answer.
func (c *recConn) Write(b []byte) (int, error) {
	c.r.add(c, c2s, capture.Data, b)
	return c.Conn.Write(b)
}

func (c *recConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.r.add(c, s2c, capture.Data, b[:n])
	}
	return n, err
}

func (c *recConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.r.add(c, c2s, capture.Close, nil)
		c.r.add(c, s2c, capture.Close, nil)
	})
	return err
}

// criPeers starts a real grpc-go CRI server on a unix socket and returns a
// real client connection whose bytes rec records.
func criPeers(t testing.TB, rt fakeRuntime) (*grpc.ClientConn, *recorder) {
	sock := filepath.Join(t.TempDir(), "cri.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.MaxRecvMsgSize(16<<20), grpc.MaxSendMsgSize(16<<20))
	runtimeapi.RegisterRuntimeServiceServer(srv, rt)
	runtimeapi.RegisterImageServiceServer(srv, fakeImages{})
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)

	rec := &recorder{}
	cc, err := grpc.NewClient("passthrough:///cri",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20), grpc.MaxCallSendMsgSize(16<<20)),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, "unix", sock)
			if err != nil {
				return nil, err
			}
			return rec.wrap(c), nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	return cc, rec
}

// sent is what the client sent and got for one call.
type sent struct {
	name      string
	req, resp proto.Message
	resps     []proto.Message
	code      codes.Code
	msg       string
}

func TestRealGRPC(t *testing.T) {
	cc, rec := criPeers(t, fakeRuntime{containers: 3000})
	rt := runtimeapi.NewRuntimeServiceClient(cc)
	img := runtimeapi.NewImageServiceClient(cc)
	ctx := context.Background()
	var (
		mu    sync.Mutex
		calls []sent
	)
	do := func(name string, req proto.Message, f func() (proto.Message, error)) {
		resp, err := f()
		s := sent{name: name, req: req, resp: resp, code: status.Code(err), msg: status.Convert(err).Message()}
		if err != nil && s.code != codes.NotFound && s.code != codes.Unimplemented {
			t.Errorf("%s: %v", name, err)
		}
		mu.Lock()
		calls = append(calls, s)
		mu.Unlock()
	}
	gz := grpc.UseCompressor(gzip.Name)

	version := &runtimeapi.VersionRequest{Version: "v1"}
	do("Version", version, func() (proto.Message, error) { return rt.Version(ctx, version) })
	run := runReq("web")
	do("RunPodSandbox", run, func() (proto.Message, error) { return rt.RunPodSandbox(ctx, run) })
	// More than 1 MiB, compressed and not.
	big := &runtimeapi.CreateContainerRequest{PodSandboxId: "sb-web", Config: &runtimeapi.ContainerConfig{
		Metadata:    &runtimeapi.ContainerMetadata{Name: "big"},
		Envs:        []*runtimeapi.KeyValue{{Key: "PASSWORD", Value: []byte("hunter2")}, {Key: "HOME", Value: []byte("/root")}},
		Annotations: map[string]string{"blob": strings.Repeat("0123456789abcdef", 80000)},
	}}
	do("CreateContainer", big, func() (proto.Message, error) { return rt.CreateContainer(ctx, big) })
	bigGz := proto.Clone(big).(*runtimeapi.CreateContainerRequest)
	bigGz.Config.Metadata.Name = "big-gzip"
	do("CreateContainer", bigGz, func() (proto.Message, error) { return rt.CreateContainer(ctx, bigGz, gz) })
	pull := &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "private/app:1"},
		Auth: &runtimeapi.AuthConfig{Username: "alice", Password: "s3cret", ServerAddress: "registry.example", RegistryToken: "tok"}}
	do("PullImage", pull, func() (proto.Message, error) { return img.PullImage(ctx, pull) })
	istat := &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: "private/app:1"}, Verbose: true}
	do("ImageStatus", istat, func() (proto.Message, error) { return img.ImageStatus(ctx, istat) })
	missing := &runtimeapi.ContainerStatusRequest{ContainerId: "missing-1"}
	do("ContainerStatus", missing, func() (proto.Message, error) { return rt.ContainerStatus(ctx, missing) })
	rc := &runtimeapi.RuntimeConfigRequest{}
	do("RuntimeConfig", rc, func() (proto.Message, error) { return rt.RuntimeConfig(ctx, rc) })
	list := &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{State: &runtimeapi.ContainerStateValue{}}}
	do("ListContainers", list, func() (proto.Message, error) { return rt.ListContainers(ctx, list) })
	listGz := &runtimeapi.ListContainersRequest{}
	do("ListContainers", listGz, func() (proto.Message, error) { return rt.ListContainers(ctx, listGz, gz) })
	// Server streaming.
	events := &runtimeapi.GetEventsRequest{}
	{
		st, err := rt.GetContainerEvents(ctx, events)
		if err != nil {
			t.Fatal(err)
		}
		s := sent{name: "GetContainerEvents", req: events}
		for {
			e, err := st.Recv()
			if err != nil {
				break
			}
			s.resps = append(s.resps, e)
		}
		calls = append(calls, s)
	}
	// Concurrent calls, interleaved on the connection.
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			req := &runtimeapi.ContainerStatusRequest{ContainerId: fmt.Sprint("c-", i), Verbose: i%2 == 0}
			opts := []grpc.CallOption{}
			if i%3 == 0 {
				opts = append(opts, gz)
			}
			do("ContainerStatus", req, func() (proto.Message, error) { return rt.ContainerStatus(ctx, req, opts...) })
		})
	}
	wg.Wait()
	cc.Close()

	chunks := rec.take()
	for _, noRedact := range []bool{true, false} {
		got, errs := decodeChunks(Options{NoRedact: noRedact}, chunks)
		if len(errs) > 0 {
			t.Fatalf("errors %v", errs)
		}
		if len(got) != len(calls) {
			t.Fatalf("decoded %d calls, made %d", len(got), len(calls))
		}
		// Match decoded calls to made ones by method and request.
		byReq := map[string]*sent{}
		for i := range calls {
			b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(calls[i].req)
			byReq[calls[i].name+string(b)] = &calls[i]
		}
		sawGzip, sawBig := false, false
		for _, c := range got {
			if !c.Known || c.Service == "" || len(c.Requests) != 1 || c.Flags&^(Compressed|TrailersOnly) != 0 || len(c.Errors) > 0 || c.End.Before(c.Start) {
				t.Errorf("call: %s", summary(c))
				continue
			}
			req := c.Request()
			if !noRedact && c.Name == "PullImage" {
				a := req.(*runtimeapi.PullImageRequest).Auth
				if a.Username != Redacted || a.Password != Redacted || a.ServerAddress != Redacted || a.RegistryToken != Redacted || a.Auth != "" {
					t.Errorf("auth not redacted: %v", a)
				}
				req = pull
			}
			if !noRedact && c.Name == "CreateContainer" {
				cfg := req.(*runtimeapi.CreateContainerRequest).Config
				if string(cfg.Envs[0].Value) != Redacted || string(cfg.Envs[1].Value) != Redacted {
					t.Errorf("envs not redacted: %v", cfg.Envs)
				}
				req = big
				if cfg.Metadata.Name == "big-gzip" {
					req = bigGz
				}
			}
			b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(req)
			want := byReq[c.Name+string(b)]
			if want == nil {
				t.Errorf("no call made like %s", summary(c))
				continue
			}
			if c.Status != int(want.code) || c.Message != want.msg {
				t.Errorf("%s: status %d %q, want %d %q", c.Name, c.Status, c.Message, want.code, want.msg)
			}
			wantResps := want.resps
			if want.resp != nil && want.code == codes.OK {
				wantResps = []proto.Message{want.resp}
			}
			if len(c.Responses) != len(wantResps) {
				t.Errorf("%s: %d responses, want %d", c.Name, len(c.Responses), len(wantResps))
				continue
			}
			for i, r := range wantResps {
				gotR := c.Responses[i].Proto
				if !noRedact {
					switch m := gotR.(type) {
					case *runtimeapi.ImageStatusResponse:
						if m.Info["info"] != Redacted {
							t.Errorf("image info not redacted: %v", m.Info)
						}
						continue
					case *runtimeapi.ContainerStatusResponse:
						if len(m.Info) > 0 {
							if m.Info["info"] != Redacted {
								t.Errorf("status info not redacted: %v", m.Info)
							}
							continue
						}
					}
				}
				if !proto.Equal(gotR, r) {
					t.Errorf("%s: response %d differs", c.Name, i)
				}
			}
			for _, m := range append(c.Requests, c.Responses...) {
				if (m.Raw != nil) != noRedact {
					t.Errorf("%s: raw %d bytes with noRedact=%v", c.Name, len(m.Raw), noRedact)
				}
				sawGzip = sawGzip || m.Compressed
				sawBig = sawBig || m.Size > 1<<20
			}
			if c.Name == "RuntimeConfig" && c.Status != int(codes.Unimplemented) {
				t.Errorf("RuntimeConfig status %d", c.Status)
			}
		}
		if !sawGzip || !sawBig {
			t.Errorf("gzip seen %v, >1 MiB seen %v", sawGzip, sawBig)
		}
	}
	// Byte by byte decodes the same.
	want := summaries(decodeChunks(Options{}, chunks))
	if got := summaries(decodeChunks(Options{}, rechunk(chunks, 97))); got != want {
		t.Errorf("re-chunked decode differs")
	}
}
