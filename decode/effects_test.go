package decode

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Calls that take an ID and answer nothing, caught midway, are named by
// what they did: cut a real kubelet capture at frame boundaries and count
// the StartContainer, RemoveContainer, StopPodSandbox and
// RemovePodSandbox calls named, with and without naming by effect.
func TestNamedByEffect(t *testing.T) {
	for _, name := range []string{"kubelet-warm", "kubelet-init"} {
		p := planCapture(t, readChunks(t, kubeletCapture(t, name)))
		p.name = name
		var with, without cutCounts
		for i, at := range p.bounds {
			if i%10 != 0 {
				continue
			}
			with.add(p.cutAt(t, at, Options{ListsUnary: true}))
			without.add(p.cutAt(t, at, Options{ListsUnary: true, noEffects: true}))
		}
		if with.wrong+without.wrong > 0 {
			t.Fatalf("%s: wrong calls: %d by effect, %d without", name, with.wrong, without.wrong)
		}
		idOnly := func(n cutCounts) int {
			k := 0
			for m, c := range n.unknownBy {
				for _, e := range []string{"StartContainer", "RemoveContainer", "StopPodSandbox", "RemovePodSandbox"} {
					if strings.HasSuffix(m, "/"+e) {
						k += c
					}
				}
			}
			return k
		}
		t.Logf("%s: ID-only calls left unknown: %d by effect, %d without", name, idOnly(with), idOnly(without))
		if idOnly(with) >= idOnly(without) {
			t.Errorf("%s: naming by effect left %d ID-only calls unknown, no fewer than the %d without it", name, idOnly(with), idOnly(without))
		}
	}
}

// The wire readers of naming by effect read what protobuf writes.
func TestEffectWireReaders(t *testing.T) {
	id := strings.Repeat("ab12", 16)
	req, _ := proto.Marshal(&runtimeapi.StartContainerRequest{ContainerId: id})
	if got := idOnly([][]byte{req}, [][]byte{{}}); got != id {
		t.Errorf("idOnly(StartContainerRequest) = %q", got)
	}
	stop, _ := proto.Marshal(&runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 30})
	if got := idOnly([][]byte{stop}, [][]byte{{}}); got != "" {
		t.Errorf("idOnly(StopContainerRequest with a timeout) = %q, want none", got)
	}
	if got := idOnly([][]byte{req}, [][]byte{{0x08, 0x01}}); got != "" {
		t.Errorf("idOnly with an answer = %q, want none", got)
	}
	list, _ := proto.Marshal(&runtimeapi.ListContainersResponse{Containers: []*runtimeapi.Container{
		{Id: id, PodSandboxId: strings.Repeat("cd34", 16), State: runtimeapi.ContainerState_CONTAINER_RUNNING,
			Labels: map[string]string{"a": "b"}, Metadata: &runtimeapi.ContainerMetadata{Name: "web"}},
		{Id: strings.Repeat("ef56", 16)}, // CREATED: the state is left out
	}})
	var got []string
	var states []int32
	eachField(list, 1, func(item []byte) {
		i, s := idAndState(item, 6)
		got, states = append(got, i), append(states, s)
	})
	if len(got) != 2 || got[0] != id || states[0] != 1 || got[1] != strings.Repeat("ef56", 16) || states[1] != 0 {
		t.Errorf("ListContainersResponse read as %q %v", got, states)
	}
	f, _ := proto.Marshal(&runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{State: &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING}}})
	empty, _ := proto.Marshal(&runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{}})
	if !filtered(f) || filtered(empty) || filtered(nil) {
		t.Errorf("filtered: %v %v %v", filtered(f), filtered(empty), filtered(nil))
	}
	if isID(strings.Repeat("AB12", 16)) || isID(id[:63]) || !isID(id) {
		t.Error("isID")
	}
}
