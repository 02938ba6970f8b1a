package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Names a hostile pod spec (or a hostile runtime) could carry: a terminal
// title and bell, a colour and clear-screen, a carriage return that hides
// what came before, bidi controls that reorder a line, C1 CSI, DEL.
const (
	hostileNS        = "ns\x1b]0;pwned\a"
	hostilePod       = "web\rOK \u202eexe.txt"
	hostileContainer = "app\x1b[31mred\u2066\x7f"
	hostileMessage   = "manifest \x1b[2J unknown\u009b31m\u202e"
)

// hostileServer answers like criServer, with a hostile error message.
type hostileServer struct{ *criServer }

func (h hostileServer) PullImage(context.Context, *runtimeapi.PullImageRequest) (*runtimeapi.PullImageResponse, error) {
	return nil, status.Error(codes.NotFound, hostileMessage)
}

func (h hostileServer) StopContainer(context.Context, *runtimeapi.StopContainerRequest) (*runtimeapi.StopContainerResponse, error) {
	return &runtimeapi.StopContainerResponse{}, nil
}
func (h hostileServer) StopPodSandbox(context.Context, *runtimeapi.StopPodSandboxRequest) (*runtimeapi.StopPodSandboxResponse, error) {
	return &runtimeapi.StopPodSandboxResponse{}, nil
}
func (h hostileServer) RemoveContainer(context.Context, *runtimeapi.RemoveContainerRequest) (*runtimeapi.RemoveContainerResponse, error) {
	return &runtimeapi.RemoveContainerResponse{}, nil
}
func (h hostileServer) RemovePodSandbox(context.Context, *runtimeapi.RemovePodSandboxRequest) (*runtimeapi.RemovePodSandboxResponse, error) {
	return &runtimeapi.RemovePodSandboxResponse{}, nil
}

// rawCodec sends bytes as they are: a real grpc-go client carrying a
// message protobuf-go would refuse to marshal (strings that are not UTF-8).
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	if b, ok := v.([]byte); ok {
		return b, nil
	}
	return proto.Marshal(v.(proto.Message))
}
func (rawCodec) Unmarshal(data []byte, v any) error {
	if b, ok := v.(*[]byte); ok {
		*b = append((*b)[:0], data...)
		return nil
	}
	return proto.Unmarshal(data, v.(proto.Message))
}
func (rawCodec) Name() string { return "proto" }

// hostileCapture records a real grpc-go client starting and stopping a pod
// whose namespace, name and container name hold terminal controls, a pull
// failing with a hostile message, a request whose names are not UTF-8 and
// a call to a method path that is not UTF-8.
func hostileCapture(t *testing.T) string {
	cs := &criServer{}
	h := hostileServer{cs}
	dir, upstream := serveCRIWith(t, h, h)
	return recordSession(t, dir, upstream, func(ctx context.Context, rt runtimeapi.RuntimeServiceClient, img runtimeapi.ImageServiceClient) {
		must := must(t)
		cfg := &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: hostilePod, Namespace: hostileNS, Uid: "u-\x1b"}}
		sb, err := rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
		must(sb, err)
		must(rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: sb.PodSandboxId}))
		spec := &runtimeapi.ImageSpec{Image: "registry.local/\x1b[5mblink:1"}
		if _, err := img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: spec, SandboxConfig: cfg}); status.Code(err) != codes.NotFound {
			t.Fatalf("PullImage: %v", err)
		}
		ct, err := rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: sb.PodSandboxId, SandboxConfig: cfg,
			Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: hostileContainer}, Image: spec}})
		must(ct, err)
		must(rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: ct.ContainerId}))
		must(rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: ct.ContainerId}))
		must(rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb.PodSandboxId}))
		must(rt.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: ct.ContainerId}))
		must(rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb.PodSandboxId}))
	}, func(ctx context.Context, listen string) {
		// A second connection: names that are not UTF-8, and a method
		// path that is not either; the runtime refuses both.
		conn, err := grpc.NewClient("unix://"+listen, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		var md []byte
		md = protowire.AppendTag(md, 1, protowire.BytesType)
		md = protowire.AppendString(md, "bad\xff\xfe\x1b")
		md = protowire.AppendTag(md, 3, protowire.BytesType)
		md = protowire.AppendString(md, "ns\xc0\x1b")
		var cfgb []byte
		cfgb = protowire.AppendTag(cfgb, 1, protowire.BytesType)
		cfgb = protowire.AppendBytes(cfgb, md)
		var req []byte
		req = protowire.AppendTag(req, 1, protowire.BytesType)
		req = protowire.AppendBytes(req, cfgb)
		var resp []byte
		err = conn.Invoke(ctx, "/runtime.v1.RuntimeService/RunPodSandbox", req, &resp, grpc.ForceCodec(rawCodec{}))
		if status.Code(err) == codes.OK {
			t.Errorf("the runtime took a RunPodSandbox whose names are not UTF-8")
		}
		err = conn.Invoke(ctx, "/runtime.v1.RuntimeService/Ver\xffsion\u202e", &runtimeapi.VersionRequest{}, &runtimeapi.VersionResponse{})
		if status.Code(err) != codes.Unimplemented {
			t.Errorf("a method path that is not UTF-8: %v", err)
		}
	})
}

// checkTerminalSafe fails if out holds anything a terminal would act on:
// control characters but newline, DEL, C1, bidi or other format
// characters, bytes that are not UTF-8.
func checkTerminalSafe(t *testing.T, what string, out []byte) {
	t.Helper()
	for i := 0; i < len(out); {
		r, n := utf8.DecodeRune(out[i:])
		if r == utf8.RuneError && n == 1 || r != '\n' && !strconv.IsPrint(r) {
			lo, hi := max(0, i-40), min(len(out), i+40)
			t.Errorf("%s prints %q at byte %d: …%q…", what, out[i:i+n], i, out[lo:hi])
			return
		}
		i += n
	}
}

// TestHostileStrings: names and messages from the wire reach the terminal
// escaped (visible, Go %q style) through calls, calls --json, render's
// summary lines, watch's lines, diff in every format and the errors.
func TestHostileStrings(t *testing.T) {
	file := hostileCapture(t)
	out := t.TempDir()
	for _, args := range [][]string{
		{"calls", file},
		{"calls", "--json", file},
		{"calls", "--json", "--no-redact", file},
		{"render", "-o", filepath.Join(out, "r"), "--format", "puml,mmd,svg", file},
		{"watch", "-r", file, "-o", filepath.Join(out, "w"), "--format", "puml"},
		{"diff", file + "@start", file + "@stop"},
		{"diff", "--format", "md", file + "@start", file + "@stop"},
		{"diff", "--json", file + "@start", file + "@stop"},
		{"diff", file + ":nope", file},
	} {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), args, &stdout, &stderr)
		name := strings.Join(args[:min(2, len(args))], " ")
		if err != nil && args[0] != "diff" {
			t.Fatalf("%s: %v\n%s", name, err, stderr.String())
		}
		checkTerminalSafe(t, name+" (stdout)", stdout.Bytes())
		checkTerminalSafe(t, name+" (stderr)", stderr.Bytes())
		if err != nil {
			checkTerminalSafe(t, name+" (error)", []byte(err.Error()))
		}
		all := stdout.String() + stderr.String()
		if err != nil {
			all += err.Error()
		}
		// The names are there, escaped, not dropped.
		want := []string{`ns\x1b]0;pwned\a/web\rOK \u202eexe.txt`}
		switch args[0] {
		case "calls":
			want = append(want, `\x1b[31mred\u2066\x7f`, `Ver\xffsion\u202e`)
			if args[1] == "--json" {
				want = []string{`ns\u001b]0;pwned\u0007`, `\u009b31m\u202e`, `\u007f`}
			}
		case "diff":
			if args[1] == "--json" {
				want = []string{`ns\u001b]0;pwned\u0007/web\rOK \u202eexe.txt`}
			}
		}
		for _, w := range want {
			if !strings.Contains(all, w) {
				t.Errorf("%s: output lacks %s:\n%s", name, w, all)
			}
		}
	}
	var stdout bytes.Buffer
	run(context.Background(), []string{"calls", file}, &stdout, &stdout)
	if !strings.Contains(stdout.String(), `manifest \x1b[2J unknown\u009b31m\u202e`) {
		t.Errorf("calls does not show the runtime's error message escaped:\n%s", stdout.String())
	}
}
