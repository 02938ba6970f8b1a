package flow

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/criseq/criseq/decode"
)

// TestPullNamesTheNewSandbox: kubelet makes a pod's sandbox again (same
// pod UID, next attempt) after the first one was stopped; the PullImage
// that carries the pod's sandbox config is for the new sandbox's start,
// not the old one's.
func TestPullNamesTheNewSandbox(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	var calls []*decode.Call
	stream := uint32(1)
	call := func(name string, at, dur time.Duration, req, resp proto.Message) {
		svc, conn := "runtime.v1.RuntimeService", uint64(1)
		if name == "ImageStatus" || name == "PullImage" {
			svc, conn = "runtime.v1.ImageService", 2
		}
		stream += 2
		c := &decode.Call{Conn: conn, Stream: stream, Method: "/" + svc + "/" + name, Service: svc, Name: name, Known: true,
			Start: t0.Add(at), End: t0.Add(at + dur), Requests: []decode.Message{{Proto: req}}}
		if resp != nil {
			c.Responses = []decode.Message{{Proto: resp}}
		}
		calls = append(calls, c)
	}
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	md := func(attempt uint32) *runtimeapi.PodSandboxMetadata {
		return &runtimeapi.PodSandboxMetadata{Namespace: "default", Name: "web", Uid: "uid-1", Attempt: attempt}
	}
	image := &runtimeapi.ImageSpec{Image: "registry.example/web:1"}
	start := func(at time.Duration, attempt uint32, sid, cid string) {
		cfg := &runtimeapi.PodSandboxConfig{Metadata: md(attempt)}
		call("RunPodSandbox", at, ms(100), &runtimeapi.RunPodSandboxRequest{Config: cfg}, &runtimeapi.RunPodSandboxResponse{PodSandboxId: sid})
		call("ImageStatus", at+ms(110), ms(1), &runtimeapi.ImageStatusRequest{Image: image}, &runtimeapi.ImageStatusResponse{})
		call("PullImage", at+ms(120), ms(300), &runtimeapi.PullImageRequest{Image: image, SandboxConfig: cfg}, &runtimeapi.PullImageResponse{ImageRef: "sha256:aa"})
		call("ImageStatus", at+ms(430), ms(1), &runtimeapi.ImageStatusRequest{Image: image}, &runtimeapi.ImageStatusResponse{Image: &runtimeapi.Image{Id: "sha256:aa"}})
		call("CreateContainer", at+ms(440), ms(20), &runtimeapi.CreateContainerRequest{PodSandboxId: sid, Config: &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: "web"}, Image: image}, SandboxConfig: cfg}, &runtimeapi.CreateContainerResponse{ContainerId: cid})
		call("StartContainer", at+ms(470), ms(50), &runtimeapi.StartContainerRequest{ContainerId: cid}, nil)
	}
	start(0, 0, "s1", "c1")
	call("StopContainer", ms(5000), ms(100), &runtimeapi.StopContainerRequest{ContainerId: "c1"}, nil)
	call("StopPodSandbox", ms(5200), ms(100), &runtimeapi.StopPodSandboxRequest{PodSandboxId: "s1"}, nil)
	start(ms(6000), 1, "s2", "c2")

	flows := Group(calls, Options{})
	var pulls []string
	for _, f := range flows {
		for _, s := range f.Steps {
			if s.Method == "PullImage" {
				pulls = append(pulls, f.SandboxID+"@"+s.Start.Sub(t0).String()+" by "+s.Attr.By)
			}
		}
	}
	want := []string{"s1@120ms by " + BySandboxConfig, "s2@6.12s by " + BySandboxConfig}
	if len(pulls) != 2 || pulls[0] != want[0] || pulls[1] != want[1] {
		t.Errorf("pulls in flows: %q, want %q", pulls, want)
	}
}
