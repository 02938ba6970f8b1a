package flow

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/criseq/criseq/capture"
	"github.com/criseq/criseq/decode"
)

// flowsSig is flows as text, step by step, to compare two groupings.
func flowsSig(fs []*Flow) string {
	var b strings.Builder
	for _, f := range fs {
		fmt.Fprintf(&b, "%s %s %s %v %v %v %s %s\n", f.Kind, f.Pod, f.SandboxID, f.Start, f.End, f.Complete, f.Runtime, f.Client)
		for _, s := range f.Steps {
			fmt.Fprintf(&b, "  %s %s %s %s %v %s %v %+v\n", s.Method, s.Arg, s.Result, s.Err, s.Start, s.Phase, s.Duration, s.Attr)
		}
	}
	return b.String()
}

// A list answer is dropped once grouping learnt from it (Options.
// DropLists): with All, the flows of real captures are those grouped with
// every answer kept, step for step, and no list answer larger than what
// the output shows is left decoded; without DropLists, none is dropped.
func TestListAnswersDroppedOnceLearnt(t *testing.T) {
	lists := 0
	for _, name := range []string{"kubelet-burst", "kubelet-missing", "kubelet-warm", "crictl-lifecycle"} {
		for _, shown := range []int{0, 64} {
			kept := captureCalls(t, name)
			want := flowsSig(Group(kept, Options{All: true, ShownMessages: shown}))
			for _, c := range kept {
				for _, m := range c.Responses {
					if strings.HasPrefix(c.Name, "List") && m.Size > 0 && m.Proto == nil {
						t.Fatalf("%s: a %s answer dropped without DropLists", name, c.Name)
					}
				}
			}
			calls := captureCalls(t, name)
			if got := flowsSig(Group(calls, Options{All: true, DropLists: true, ShownMessages: shown})); got != want {
				t.Fatalf("%s, shown up to %d bytes: flows differ when list answers are dropped:\n%s\nwant\n%s", name, shown, got, want)
			}
			for i, c := range calls {
				for j, m := range c.Responses {
					list := strings.HasPrefix(c.Name, "List") && IsPolling(c.Name)
					switch {
					case list && m.Size > shown && m.Proto != nil:
						t.Fatalf("%s: %s answer of %d bytes still decoded", name, c.Name, m.Size)
					case (!list || m.Size <= shown) && (m.Proto == nil) != (kept[i].Responses[j].Proto == nil):
						t.Fatalf("%s: %s answer of %d bytes dropped", name, c.Name, m.Size)
					case list && m.Size > shown:
						lists++
					}
				}
			}
		}
	}
	if lists == 0 {
		t.Fatal("no list answer: the test proves nothing")
	}
	t.Logf("%d list answers dropped", lists)
}

// What a list answer says of containers is learnt before it is dropped
// (a real kubelet answer).
func TestListAnswerLearntBeforeDropped(t *testing.T) {
	for _, c := range captureCalls(t, "kubelet-burst") {
		r, ok := c.Response().(*runtimeapi.ListContainersResponse)
		if !ok || len(r.GetContainers()) == 0 {
			continue
		}
		ct := r.GetContainers()[0]
		g := NewGrouper(Options{All: true, DropLists: true})
		g.Add(c)
		if c.Responses[0].Proto != nil {
			t.Fatal("the answer is still decoded")
		}
		if g.containers[ct.GetId()].name != ct.GetMetadata().GetName() || g.containers[ct.GetId()].sandbox != ct.GetPodSandboxId() {
			t.Fatalf("container %s: name %q, sandbox %q learnt, want %q, %q", ct.GetId(), g.containers[ct.GetId()].name, g.containers[ct.GetId()].sandbox, ct.GetMetadata().GetName(), ct.GetPodSandboxId())
		}
		return
	}
	t.Fatal("no ListContainers answer listing a container")
}

// A list answer kept as it came (decode.Options.ListsAbove) is learnt
// from item by item: with All, the flows of real captures are those
// grouped from every answer decoded whole, step for step, and the answer
// is dropped once learnt.
func TestListAnswersLearntByItems(t *testing.T) {
	kept, learntItems := 0, 0
	for _, name := range []string{"kubelet-burst", "kubelet-missing", "kubelet-warm", "crictl-lifecycle"} {
		want := flowsSig(Group(captureCalls(t, name), Options{All: true}))
		src, err := capture.OpenFile(filepath.Join("..", "testdata", name, "capture.pcapng"))
		if err != nil {
			t.Fatal(err)
		}
		calls, _, err := decode.DecodeAll(src, decode.Options{Fields: ReadsFields, ListsAbove: 1})
		src.Close()
		if err != nil {
			t.Fatal(err)
		}
		var wire []*decode.Message
		for _, c := range calls {
			for i := range c.Responses {
				if m := &c.Responses[i]; m.Wire != nil {
					wire = append(wire, m)
				}
			}
		}
		kept += len(wire)
		for _, c := range calls {
			// What such an answer says of containers and pods is learnt.
			if len(c.Responses) == 0 || c.Responses[0].Wire == nil || !c.OK() {
				continue
			}
			w := c.Responses[0].Wire
			type learnt struct{ id, sandbox, name string }
			var want []learnt
			ct, sb := &runtimeapi.Container{}, &runtimeapi.PodSandbox{}
			if c.Name == "ListContainers" {
				w.Items(ct, func() { want = append(want, learnt{ct.GetId(), ct.GetPodSandboxId(), ct.GetMetadata().GetName()}) })
			} else {
				w.Items(sb, func() { want = append(want, learnt{sb.GetId(), "", sb.GetMetadata().GetName()}) })
			}
			g := NewGrouper(Options{All: true, DropLists: true})
			g.Add(c)
			for _, l := range want {
				got := learnt{l.id, g.containers[l.id].sandbox, g.containers[l.id].name}
				if c.Name == "ListPodSandbox" {
					got = learnt{l.id, "", g.pods[l.id].Name}
				}
				if got != l {
					t.Fatalf("%s: %s item %s: learnt %+v, want %+v", name, c.Name, l.id, got, l)
				}
			}
			if len(want) > 0 {
				learntItems++
			}
		}
		if got := flowsSig(Group(calls, Options{All: true, DropLists: true})); got != want {
			t.Fatalf("%s: flows differ when list answers are read item by item:\n%s\nwant\n%s", name, got, want)
		}
		for _, m := range wire {
			if m.Wire != nil {
				t.Fatalf("%s: a list answer kept after it was learnt", name)
			}
		}
	}
	if kept == 0 || learntItems == 0 {
		t.Fatal("no list answer kept as it came, or none listing anything: the test proves nothing")
	}
	t.Logf("%d list answers read item by item, %d of them checked item by item", kept, learntItems)
}
