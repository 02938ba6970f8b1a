package decode

import (
	"bytes"
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/criseq/criseq/capture"
	"google.golang.org/protobuf/reflect/protoreflect"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// clearMaps empties every map field of m, at any depth: what pruning
// should leave.
func clearMaps(m protoreflect.Message) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			m.Clear(fd)
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				clearMaps(l.Get(i).Message())
			}
		case fd.Message() != nil:
			clearMaps(v.Message())
		}
		return true
	})
}

func TestPruneMapsByteExact(t *testing.T) {
	full := &runtimeapi.ContainerStatusResponse{
		Status: &runtimeapi.ContainerStatus{
			Id:          "c1",
			Metadata:    &runtimeapi.ContainerMetadata{Name: "web", Attempt: 2},
			State:       runtimeapi.ContainerState_CONTAINER_RUNNING,
			Image:       &runtimeapi.ImageSpec{Image: "nginx", Annotations: map[string]string{"a": "b"}},
			Labels:      map[string]string{"io.kubernetes.pod.name": "web", "x": "y"},
			Annotations: map[string]string{"io.kubernetes.container.hash": "1234"},
			LogPath:     "/var/log/web.log",
			Mounts:      []*runtimeapi.Mount{{ContainerPath: "/data"}, {ContainerPath: "/etc"}},
		},
		Info: map[string]string{"info": `{"pid": 42}`},
	}
	raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(full)
	if err != nil {
		t.Fatal(err)
	}
	want := proto.Clone(full)
	clearMaps(want.ProtoReflect())
	wantRaw, err := proto.MarshalOptions{Deterministic: true}.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	var mp mapPruner
	got, ok := mp.prune(planFor(full.ProtoReflect().Descriptor()), raw)
	if !ok {
		t.Fatal("well-formed message reported malformed")
	}
	if !bytes.Equal(got, wantRaw) {
		t.Fatalf("pruned bytes\n got %x\nwant %x", got, wantRaw)
	}
	// The buffer is reused: a second message must not see the first.
	small := &runtimeapi.ContainerStatusResponse{Info: map[string]string{"k": "v"}, Status: &runtimeapi.ContainerStatus{Id: "c2"}}
	raw2, _ := proto.Marshal(small)
	got2, ok := mp.prune(planFor(small.ProtoReflect().Descriptor()), raw2)
	want2, _ := proto.Marshal(&runtimeapi.ContainerStatusResponse{Status: &runtimeapi.ContainerStatus{Id: "c2"}})
	if !ok || !bytes.Equal(got2, want2) {
		t.Fatalf("second message: got %x (ok %v), want %x", got2, ok, want2)
	}
}

func TestPruneMapsLeavesOthers(t *testing.T) {
	var mp mapPruner
	// A type without maps has no plan: its bytes are given back as they are.
	v := &runtimeapi.VersionResponse{Version: "0.1.0", RuntimeName: "containerd"}
	if p := planFor(v.ProtoReflect().Descriptor()); p != nil {
		t.Fatalf("VersionResponse has a prune plan: %+v", p)
	}
	// A message whose maps are empty comes back as the same slice.
	raw, _ := proto.Marshal(&runtimeapi.ContainerStatusResponse{Status: &runtimeapi.ContainerStatus{Id: "c1", LogPath: "/l"}})
	got, ok := mp.prune(planFor((&runtimeapi.ContainerStatusResponse{}).ProtoReflect().Descriptor()), raw)
	if !ok || &got[0] != &raw[0] || len(got) != len(raw) {
		t.Fatalf("unchanged message was copied or refused (ok %v)", ok)
	}
	// Malformed bytes are refused, so Unmarshal reports them.
	full, _ := proto.Marshal(&runtimeapi.ContainerStatusResponse{Status: &runtimeapi.ContainerStatus{Id: "c1", Labels: map[string]string{"a": "b"}}})
	plan := planFor((&runtimeapi.ContainerStatusResponse{}).ProtoReflect().Descriptor())
	for cut := 1; cut < len(full); cut++ {
		got, ok := mp.prune(plan, full[:cut])
		if err := proto.Unmarshal(full[:cut], &runtimeapi.ContainerStatusResponse{}); err != nil && ok {
			t.Errorf("cut at %d: Unmarshal fails (%v) but prune accepted it: %x", cut, err, got)
		}
	}
}

// TestSkipResponseMapsCaptures decodes every real capture with and without
// SkipResponseMaps: every message must be the same but for the response
// maps, which must be gone.
func TestSkipResponseMapsCaptures(t *testing.T) {
	for _, path := range kubeletCaptures(t) {
		t.Run(captureName(path), func(t *testing.T) {
			chunks := readChunks(t, path)
			decodeWith := func(skip bool) (calls []*Call, events []Message) {
				d := New(Options{SkipResponseMaps: skip,
					OnCall:          func(c *Call) { calls = append(calls, c) },
					OnStreamMessage: func(_ *Call, m Message) { events = append(events, m) },
				})
				for _, c := range chunks {
					d.Feed(c)
				}
				d.Close()
				return calls, events
			}
			full, fullEv := decodeWith(false)
			lean, leanEv := decodeWith(true)
			if len(full) != len(lean) || len(fullEv) != len(leanEv) {
				t.Fatalf("%d calls and %d events with maps, %d and %d without", len(full), len(fullEv), len(lean), len(leanEv))
			}
			withMaps := 0
			check := func(what string, dir capture.Dir, a, b Message) {
				t.Helper()
				if (a.Proto == nil) != (b.Proto == nil) || a.Size != b.Size || a.Err != b.Err {
					t.Fatalf("%s: %+v against %+v", what, a, b)
				}
				if a.Proto == nil {
					return
				}
				want := proto.Clone(a.Proto)
				if dir == s2c {
					clearMaps(want.ProtoReflect())
					if !proto.Equal(want, a.Proto) {
						withMaps++
					}
				}
				if !proto.Equal(want, b.Proto) {
					t.Fatalf("%s: got %v, want %v", what, b.Proto, want)
				}
			}
			for i := range full {
				a, b := full[i], lean[i]
				if a.Method != b.Method || a.Stream != b.Stream || len(a.Requests) != len(b.Requests) || len(a.Responses) != len(b.Responses) {
					t.Fatalf("call %d: %s %d against %s %d", i, a.Method, a.Stream, b.Method, b.Stream)
				}
				for j := range a.Requests {
					check(fmt.Sprintf("call %d %s request %d", i, a.Method, j), c2s, a.Requests[j], b.Requests[j])
				}
				for j := range a.Responses {
					check(fmt.Sprintf("call %d %s response %d", i, a.Method, j), s2c, a.Responses[j], b.Responses[j])
				}
			}
			for i := range fullEv {
				check(fmt.Sprintf("event %d", i), s2c, fullEv[i], leanEv[i])
			}
			t.Logf("%d calls, %d events; %d responses lost maps", len(full), len(fullEv), withMaps)
			if withMaps == 0 {
				t.Error("no response had a map: the test proves nothing on this capture")
			}
		})
	}
}

// TestRequestHeaderKept decodes every real capture keeping only some
// request header fields: each call keeps exactly those of its full list,
// in order, and nothing else changes.
func TestRequestHeaderKept(t *testing.T) {
	keep := func(name string) bool { return name == "user-agent" || name == "grpc-timeout" }
	for _, path := range kubeletCaptures(t) {
		t.Run(captureName(path), func(t *testing.T) {
			chunks := readChunks(t, path)
			decodeWith := func(o Options) (calls []*Call) {
				o.OnCall = func(c *Call) { calls = append(calls, c) }
				d := New(o)
				for _, c := range chunks {
					d.Feed(c)
				}
				d.Close()
				return calls
			}
			full, lean := decodeWith(Options{}), decodeWith(Options{RequestHeader: keep})
			if len(full) != len(lean) {
				t.Fatalf("%d calls with every header, %d with some", len(full), len(lean))
			}
			kept := 0
			for i, a := range full {
				b := lean[i]
				var want []string
				for _, h := range a.RequestHeaders {
					if keep(h.Name) {
						want = append(want, h.String())
					}
				}
				var got []string
				for _, h := range b.RequestHeaders {
					got = append(got, h.String())
				}
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("call %d %s: kept %q, want %q", i, a.Method, got, want)
				}
				kept += len(got)
				if a.Method != b.Method || a.Status != b.Status || len(a.Responses) != len(b.Responses) || fmt.Sprint(a.ResponseHeaders) != fmt.Sprint(b.ResponseHeaders) {
					t.Fatalf("call %d: %s %d against %s %d", i, a.Method, a.Status, b.Method, b.Status)
				}
			}
			if kept == 0 {
				t.Error("no call had the fields kept: the test proves nothing on this capture")
			}
		})
	}
}

// TestFieldsKeepsListed: a request pruned to some fields decodes to
// the request with those fields (and the scalars beside them) and no other,
// and a type not listed is left as it is, byte for byte.
func TestFieldsKeepsListed(t *testing.T) {
	full := &runtimeapi.CreateContainerRequest{
		PodSandboxId: "sb1",
		Config: &runtimeapi.ContainerConfig{
			Metadata:    &runtimeapi.ContainerMetadata{Name: "web", Attempt: 2},
			Image:       &runtimeapi.ImageSpec{Image: "nginx:1.25", Annotations: map[string]string{"a": "b"}},
			Command:     []string{"/bin/sh"},
			Envs:        []*runtimeapi.KeyValue{{Key: "PASSWORD", Value: []byte("hunter2")}},
			Labels:      map[string]string{"app": "web"},
			Annotations: map[string]string{"x": "y"},
			Tty:         true,
			LogPath:     "web/0.log",
		},
		SandboxConfig: &runtimeapi.PodSandboxConfig{
			Metadata:    &runtimeapi.PodSandboxMetadata{Name: "web-1", Namespace: "default", Uid: "u1"},
			Hostname:    "web-1",
			Annotations: map[string]string{"k": "v"},
			DnsConfig:   &runtimeapi.DNSConfig{Servers: []string{"10.0.0.10"}},
		},
	}
	want := &runtimeapi.CreateContainerRequest{
		PodSandboxId: "sb1",
		Config: &runtimeapi.ContainerConfig{
			Metadata: full.Config.Metadata,
			Image:    full.Config.Image,
			Tty:      true,
		},
		SandboxConfig: &runtimeapi.PodSandboxConfig{Metadata: full.SandboxConfig.Metadata},
	}
	b, err := proto.Marshal(full)
	if err != nil {
		t.Fatal(err)
	}
	fields := map[protoreflect.FullName][]string{
		"runtime.v1.CreateContainerRequest": {"pod_sandbox_id", "config.metadata", "config.image", "sandbox_config.metadata"},
	}
	var fp fieldPruner
	got := &runtimeapi.CreateContainerRequest{}
	pb, listed := fp.prune(full.ProtoReflect().Descriptor(), fields, b)
	if !listed {
		t.Fatal("a type listed was not said to be")
	}
	if err := proto.Unmarshal(pb, got); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got, want) {
		t.Errorf("pruned to\n%v\nwant\n%v", got, want)
	}
	other := &runtimeapi.RunPodSandboxRequest{Config: full.SandboxConfig}
	ob, err := proto.Marshal(other)
	if err != nil {
		t.Fatal(err)
	}
	if out, listed := fp.prune(other.ProtoReflect().Descriptor(), fields, ob); listed || !bytes.Equal(out, ob) {
		t.Errorf("a type not listed changed: %x, want %x", out, ob)
	}
}
