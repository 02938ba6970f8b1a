package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestSanitizeCommand: criseq sanitize on a capture recorded between real
// grpc-go peers writes a 0600 copy without the registry password and the
// environment value that render draws the same, and says what it did.
func TestSanitizeCommand(t *testing.T) {
	dir, upstream, _ := serveCRI(t)
	in := recordSession(t, dir, upstream, func(ctx context.Context, rt runtimeapi.RuntimeServiceClient, img runtimeapi.ImageServiceClient) {
		must := must(t)
		cfg := &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "nginx", Namespace: "default", Uid: "u-1"}}
		sb, err := rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
		must(sb, err)
		spec := &runtimeapi.ImageSpec{Image: "registry.local/nginx:1.25"}
		pulled, err := img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: spec, SandboxConfig: cfg,
			Auth: &runtimeapi.AuthConfig{Username: "user", Password: "hunter2-registry-password"}})
		must(pulled, err)
		ct, err := rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: sb.PodSandboxId, SandboxConfig: cfg,
			Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "web"},
				Envs: []*runtimeapi.KeyValue{{Key: "TOKEN", Value: []byte("env-secret-value")}}}})
		must(ct, err)
		must(rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: ct.ContainerId}))
	})
	out := filepath.Join(dir, "share.pcapng")
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"sanitize", in, out}, &stdout, &stderr); err != nil {
		t.Fatalf("sanitize: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "2 rewritten") || !strings.Contains(stderr.String(), out) {
		t.Errorf("sanitize said:\n%s", stderr.String())
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"hunter2-registry-password", "env-secret-value"} {
		if bytes.Contains(b, []byte(s)) {
			t.Errorf("%s still holds %q", out, s)
		}
	}
	if st, _ := os.Stat(out); st.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", out, st.Mode().Perm())
	}
	ra, rb := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	for _, c := range [][2]string{{in, ra}, {out, rb}} {
		if err := run(context.Background(), []string{"render", "-o", c[1], "--format", "puml,mmd,svg", c[0]}, &stdout, &stderr); err != nil {
			t.Fatal(err)
		}
	}
	a, bb := dirFiles(t, ra), dirFiles(t, rb)
	if len(a) != 3 || len(bb) != 3 {
		t.Fatalf("render wrote %d and %d files", len(a), len(bb))
	}
	for name, x := range a {
		if !bytes.Equal(x, bb[name]) {
			t.Errorf("%s differs drawn from the capture and from its sanitized copy:\n%s", name, firstDiff(x, bb[name]))
		}
	}

	if err := run(context.Background(), []string{"sanitize", in}, &stdout, &stderr); !errors.Is(err, errUsage) {
		t.Errorf("one argument: %v, want a usage error", err)
	}
	notCap := filepath.Join(dir, "x.txt")
	os.WriteFile(notCap, []byte("hello"), 0o644)
	if err := run(context.Background(), []string{"sanitize", notCap, out + "2"}, &stdout, &stderr); err == nil || !strings.Contains(err.Error(), notCap) {
		t.Errorf("not a capture: %v", err)
	}
}
