package main

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/criseq/criseq/decode"
	"github.com/criseq/criseq/flow"
)

// eventsServer is criServer with the runtime's event stream (kubelet's
// Evented PLEG): each container it creates or starts is announced on
// GetContainerEvents.
type eventsServer struct {
	*criServer
	events chan *runtimeapi.ContainerEventResponse
}

func (s *eventsServer) announce(typ runtimeapi.ContainerEventType, cid, sid, name string) {
	s.events <- &runtimeapi.ContainerEventResponse{ContainerId: cid, ContainerEventType: typ, CreatedAt: time.Now().UnixNano(),
		PodSandboxStatus:   &runtimeapi.PodSandboxStatus{Id: sid, Metadata: &runtimeapi.PodSandboxMetadata{Name: "evented", Namespace: "default", Uid: "u-ev"}},
		ContainersStatuses: []*runtimeapi.ContainerStatus{{Id: cid, Metadata: &runtimeapi.ContainerMetadata{Name: name}}}}
}

func (s *eventsServer) CreateContainer(ctx context.Context, r *runtimeapi.CreateContainerRequest) (*runtimeapi.CreateContainerResponse, error) {
	resp, err := s.criServer.CreateContainer(ctx, r)
	s.announce(runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT, resp.GetContainerId(), r.PodSandboxId, r.GetConfig().GetMetadata().GetName())
	return resp, err
}

func (s *eventsServer) StartContainer(ctx context.Context, r *runtimeapi.StartContainerRequest) (*runtimeapi.StartContainerResponse, error) {
	resp, err := s.criServer.StartContainer(ctx, r)
	s.announce(runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT, r.ContainerId, "5a9d1e0c0ffee0000000000000000000000000000000000000000000000000001", "web")
	return resp, err
}

func (s *eventsServer) GetContainerEvents(_ *runtimeapi.GetEventsRequest, stream runtimeapi.RuntimeService_GetContainerEventsServer) error {
	for {
		select {
		case e := <-s.events:
			if err := stream.Send(e); err != nil {
				return err
			}
		case <-stream.Context().Done():
			return nil
		}
	}
}

// TestEventsInFlows records a pod start between real grpc-go peers while
// the client listens to the runtime's event stream, as kubelet's Evented
// PLEG does: the events are in the pod's flow, in time order, between the
// calls that caused them, and the stream open to the end costs no memory
// per message.
func TestEventsInFlows(t *testing.T) {
	dir, err := os.MkdirTemp("", "criseq") // socket paths are limited to 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "rt.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	es := &eventsServer{criServer: &criServer{}, events: make(chan *runtimeapi.ContainerEventResponse, 16)}
	runtimeapi.RegisterRuntimeServiceServer(srv, es)
	runtimeapi.RegisterImageServiceServer(srv, es)
	go srv.Serve(l)
	t.Cleanup(srv.Stop)

	file := recordSession(t, dir, sock, func(ctx context.Context, rt runtimeapi.RuntimeServiceClient, img runtimeapi.ImageServiceClient) {
		must := must(t)
		sctx, stop := context.WithCancel(ctx)
		stream, err := rt.GetContainerEvents(sctx, &runtimeapi.GetEventsRequest{})
		must(stream, err)
		got := make(chan int)
		go func() {
			n := 0
			for {
				if _, err := stream.Recv(); err != nil {
					got <- n
					return
				}
				n++
			}
		}()
		cfg := &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "evented", Namespace: "default", Uid: "u-ev"}}
		sb, err := rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
		must(sb, err)
		ct, err := rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: sb.PodSandboxId, SandboxConfig: cfg,
			Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "web"}, Image: &runtimeapi.ImageSpec{Image: "registry.local/app:1"}}})
		must(ct, err)
		must(rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: ct.ContainerId}))
		time.Sleep(50 * time.Millisecond)
		stop()
		if n := <-got; n != 2 {
			t.Errorf("the client got %d events, want 2", n)
		}
	})
	flows, _, err := loadFlows(file, decode.Options{}, flow.Options{}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var start *flow.Flow
	for _, f := range flows {
		if f.Kind == flow.Start {
			start = f
		}
	}
	if start == nil {
		t.Fatal("no start flow")
	}
	if len(start.Events) != 2 {
		t.Fatalf("%d events in the flow, want 2: %+v", len(start.Events), start.Events)
	}
	for i, want := range []string{"CONTAINER_CREATED", "CONTAINER_STARTED"} {
		e := start.Events[i]
		if e.Type != want || e.Container != "web" {
			t.Errorf("event %d: %s %s, want %s web", i, e.Type, e.Container, want)
		}
		if e.Call == nil || e.Call.Name != "GetContainerEvents" {
			t.Errorf("event %d: not tied to the stream: %+v", i, e.Call)
		}
	}
	// Each event comes after the call that caused it began (the runtime
	// sends it while or after answering).
	for _, s := range start.Steps {
		for i, method := range []string{"CreateContainer", "StartContainer"} {
			if s.Method == method && start.Events[i].Time.Before(s.Start) {
				t.Errorf("%s at %s, before %s began at %s", start.Events[i].Type, start.Events[i].Time, method, s.Start)
			}
		}
	}
	if start.Events[1].Time.Before(start.Events[0].Time) {
		t.Error("events out of time order")
	}
}
