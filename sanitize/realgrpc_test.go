package sanitize

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/metadata"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/criseq/criseq/capture"
	"github.com/criseq/criseq/decode"
)

// The secrets a pod start can carry, each unique so a find is certain.
var (
	secretUser     = "user-s3cr3t-name-7f1c"
	secretPassword = "pw-hunter2-s3cret-9a2e"
	secretAuth     = "YXV0aC1zM2NyZXQtYjY0LWJsb2I="
	secretIdentity = "idtok-s3cret-identity-4d8b"
	secretRegistry = "regtok-s3cret-registry-0c5f"
	secretServer   = "registry-s3cret-address.example:5000"
	secretEnv      = "env-s3cret-value-31d7"
	secretBigEnv   = "big-env-s3cret-tail-8e4a"
	secretInfo     = "info-s3cret-spec-value-62b0"
	secretBearer   = "bearer-s3cret-token-a93f"
	secretProxy    = "proxy-s3cret-basic-11de"
	allSecrets     = []string{secretUser, secretPassword, secretAuth, secretIdentity, secretRegistry, secretServer,
		secretEnv, secretBigEnv, secretInfo, secretBearer, secretProxy}
)

// secretRuntime is a CRI runtime whose verbose status answers hold the
// container spec, environment included, as containerd's do.
type secretRuntime struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	runtimeapi.UnimplementedImageServiceServer
}

func infoMap() map[string]string {
	return map[string]string{"info": `{"pid":4242,"config":{"envs":[{"key":"TOKEN","value":"` + secretInfo + `"}]}}`}
}

func (secretRuntime) Version(context.Context, *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return &runtimeapi.VersionResponse{RuntimeName: "secret-runtime", RuntimeVersion: "1.0", RuntimeApiVersion: "v1"}, nil
}
func (secretRuntime) Status(_ context.Context, r *runtimeapi.StatusRequest) (*runtimeapi.StatusResponse, error) {
	resp := &runtimeapi.StatusResponse{Status: &runtimeapi.RuntimeStatus{Conditions: []*runtimeapi.RuntimeCondition{{Type: "RuntimeReady", Status: true}}}}
	if r.Verbose {
		resp.Info = infoMap()
	}
	return resp, nil
}
func (secretRuntime) RunPodSandbox(_ context.Context, r *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
	return &runtimeapi.RunPodSandboxResponse{PodSandboxId: fmt.Sprintf("%064x", len(r.GetConfig().GetMetadata().GetName())+1)}, nil
}
func (secretRuntime) PodSandboxStatus(_ context.Context, r *runtimeapi.PodSandboxStatusRequest) (*runtimeapi.PodSandboxStatusResponse, error) {
	resp := &runtimeapi.PodSandboxStatusResponse{Status: &runtimeapi.PodSandboxStatus{Id: r.PodSandboxId, State: runtimeapi.PodSandboxState_SANDBOX_READY,
		Metadata: &runtimeapi.PodSandboxMetadata{Name: "web", Namespace: "default", Uid: "u-1"}}}
	if r.Verbose {
		resp.Info = infoMap()
	}
	return resp, nil
}
func (secretRuntime) ImageStatus(_ context.Context, r *runtimeapi.ImageStatusRequest) (*runtimeapi.ImageStatusResponse, error) {
	resp := &runtimeapi.ImageStatusResponse{}
	if r.Verbose {
		resp.Info = infoMap()
	}
	return resp, nil
}
func (secretRuntime) PullImage(_ context.Context, r *runtimeapi.PullImageRequest) (*runtimeapi.PullImageResponse, error) {
	if r.GetAuth().GetPassword() != secretPassword {
		return nil, fmt.Errorf("the runtime got password %q", r.GetAuth().GetPassword())
	}
	return &runtimeapi.PullImageResponse{ImageRef: "sha256:" + strings.Repeat("ab", 32)}, nil
}
func (secretRuntime) CreateContainer(_ context.Context, r *runtimeapi.CreateContainerRequest) (*runtimeapi.CreateContainerResponse, error) {
	return &runtimeapi.CreateContainerResponse{ContainerId: fmt.Sprintf("c%063x", len(r.GetConfig().GetEnvs()))}, nil
}
func (secretRuntime) StartContainer(context.Context, *runtimeapi.StartContainerRequest) (*runtimeapi.StartContainerResponse, error) {
	return &runtimeapi.StartContainerResponse{}, nil
}
func (secretRuntime) ContainerStatus(_ context.Context, r *runtimeapi.ContainerStatusRequest) (*runtimeapi.ContainerStatusResponse, error) {
	resp := &runtimeapi.ContainerStatusResponse{Status: &runtimeapi.ContainerStatus{Id: r.ContainerId, Metadata: &runtimeapi.ContainerMetadata{Name: "app"},
		State: runtimeapi.ContainerState_CONTAINER_RUNNING, Image: &runtimeapi.ImageSpec{Image: "app:1"}, ImageRef: "sha256:" + strings.Repeat("ab", 32)}}
	if r.Verbose {
		resp.Info = infoMap()
	}
	return resp, nil
}

// recordSecrets records a pod start between a real grpc-go client and
// server through criseq's relay (capture.Proxy) into a pcapng file: a
// PullImage with every credential, environment values (one of 100 KB, so
// its message spans many frames and relay reads), verbose status calls,
// authorization metadata and a 20 KB header (HEADERS + CONTINUATION), some
// calls gzip-compressed, over two connections.
func recordSecrets(t *testing.T) string {
	t.Helper()
	listen, file, stop := relayed(t, "secrets.pcapng", secretRuntime{}, secretRuntime{})

	for conn := range 2 {
		cc, err := grpc.NewClient("unix://"+listen, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		rt, img := runtimeapi.NewRuntimeServiceClient(cc), runtimeapi.NewImageServiceClient(cc)
		md := metadata.Pairs("authorization", "Bearer "+secretBearer, "proxy-authorization", "Basic "+secretProxy,
			"x-big", strings.Repeat("h", 20<<10))
		cctx := metadata.NewOutgoingContext(context.Background(), md)
		zip := grpc.UseCompressor(gzip.Name)
		must := func(_ any, err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		cfg := &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: fmt.Sprint("web-", conn), Namespace: "default", Uid: fmt.Sprint("u-", conn)}}
		must(rt.Version(cctx, &runtimeapi.VersionRequest{}))
		must(rt.Status(cctx, &runtimeapi.StatusRequest{Verbose: true}))
		sb, err := rt.RunPodSandbox(cctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
		must(sb, err)
		must(rt.PodSandboxStatus(cctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: sb.PodSandboxId, Verbose: true}))
		spec := &runtimeapi.ImageSpec{Image: "registry.example/app:1"}
		must(img.ImageStatus(cctx, &runtimeapi.ImageStatusRequest{Image: spec, Verbose: true}, zip))
		auth := &runtimeapi.AuthConfig{Username: secretUser, Password: secretPassword, Auth: secretAuth,
			ServerAddress: secretServer, IdentityToken: secretIdentity, RegistryToken: secretRegistry}
		var opts []grpc.CallOption
		if conn == 1 {
			opts = append(opts, zip)
		}
		pulled, err := img.PullImage(cctx, &runtimeapi.PullImageRequest{Image: spec, Auth: auth, SandboxConfig: cfg}, opts...)
		must(pulled, err)
		envs := []*runtimeapi.KeyValue{{Key: "TOKEN", Value: []byte(secretEnv)},
			{Key: "BIG", Value: []byte(strings.Repeat("v", 100<<10) + secretBigEnv)}}
		ct, err := rt.CreateContainer(cctx, &runtimeapi.CreateContainerRequest{PodSandboxId: sb.PodSandboxId, SandboxConfig: cfg,
			Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "app"}, Image: &runtimeapi.ImageSpec{Image: pulled.ImageRef, UserSpecifiedImage: spec.Image}, Envs: envs}}, opts...)
		must(ct, err)
		must(rt.StartContainer(cctx, &runtimeapi.StartContainerRequest{ContainerId: ct.ContainerId}))
		must(rt.ContainerStatus(cctx, &runtimeapi.ContainerStatusRequest{ContainerId: ct.ContainerId, Verbose: true}, zip))
		cc.Close()
	}
	stop()
	return file
}

// relayed starts a real grpc-go server of rt and img and criseq's relay
// (capture.Proxy) in front of it, recording into a pcapng file named
// name; stop ends both once the last bytes are recorded.
func relayed(t *testing.T, name string, rt runtimeapi.RuntimeServiceServer, img runtimeapi.ImageServiceServer) (listen, file string, stop func()) {
	t.Helper()
	dir, err := os.MkdirTemp("", "san")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	upstream := filepath.Join(dir, "rt.sock")
	listen, file = filepath.Join(dir, "relay.sock"), filepath.Join(dir, name)
	l, err := net.Listen("unix", upstream)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(srv, rt)
	runtimeapi.RegisterImageServiceServer(srv, img)
	go srv.Serve(l)

	f, err := capture.CreateFile(file)
	if err != nil {
		srv.Stop()
		t.Fatal(err)
	}
	p := &capture.Proxy{Upstream: upstream, Listen: listen, Recorder: capture.NewRecorder(capture.NewPcapngWriter(f), capture.RecorderOptions{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ready := make(chan struct{})
	p.Ready = func() { close(ready) }
	go func() { done <- p.Run(ctx) }()
	select {
	case <-ready:
	case err := <-done:
		srv.Stop()
		t.Fatalf("relay: %v", err)
	}
	return listen, file, func() {
		t.Helper()
		time.Sleep(50 * time.Millisecond)
		cancel()
		err := <-done
		srv.Stop()
		if err != nil {
			t.Fatalf("relay: %v", err)
		}
	}
}

// TestSanitizeRealSecrets: a capture of real grpc-go traffic carrying every
// kind of secret decodes, sanitized, to the same calls and flows and the
// same requests in tshark, and holds none of the secrets in any form.
func TestSanitizeRealSecrets(t *testing.T) {
	in := recordSecrets(t)
	// The test means something only if the secrets are in the capture.
	calls, _, _ := decodeFile(t, in, true)
	var all bytes.Buffer
	for _, c := range calls {
		for _, h := range c.RequestHeaders {
			all.WriteString(h.Value)
		}
		for _, m := range c.Requests {
			all.Write(m.Raw)
		}
		for _, m := range c.Responses {
			all.Write(m.Raw)
		}
	}
	compressed := 0
	for _, c := range calls {
		if c.Flags&decode.Compressed != 0 {
			compressed++
		}
	}
	for _, s := range allSecrets {
		if !bytes.Contains(all.Bytes(), []byte(s)) {
			t.Fatalf("the recorded capture does not hold secret %q", s)
		}
	}
	if compressed == 0 {
		t.Fatal("no compressed call recorded")
	}

	out, st, notes := sanitized(t, in)
	ncalls, flows := checkSanitized(t, in, out, allSecrets)
	t.Logf("%d calls (%d compressed), %d flows equal; %d messages, %d rewritten, %d sent empty; %d header fields redacted",
		ncalls, compressed, flows, st.Messages, st.Rewritten, st.Blanked, st.HeaderFields)
	if st.Blanked > 0 || st.DroppedConns > 0 || st.DroppedPartial > 0 {
		t.Errorf("stats %+v:\n%s", st, strings.Join(notes, "\n"))
	}
	if st.HeaderFields != 2*len(calls) {
		t.Errorf("%d header fields redacted, want 2 per call (authorization, proxy-authorization) of %d", st.HeaderFields, len(calls))
	}
}
