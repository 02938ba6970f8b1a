package flow

import (
	"fmt"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// A list answer is dropped once grouping learnt from it (Options.
// DropLists): with All, the flows of real captures are those grouped with
// every answer kept, step for step, and no list answer larger than what
// the output shows is left decoded; without DropLists, none is dropped.
func TestListAnswersDroppedOnceLearnt(t *testing.T) {
	sig := func(fs []*Flow) string {
		var b strings.Builder
		for _, f := range fs {
			fmt.Fprintf(&b, "%s %s %s %v %v %v %s %s\n", f.Kind, f.Pod, f.SandboxID, f.Start, f.End, f.Complete, f.Runtime, f.Client)
			for _, s := range f.Steps {
				fmt.Fprintf(&b, "  %s %s %s %s %v %s %v %+v\n", s.Method, s.Arg, s.Result, s.Err, s.Start, s.Phase, s.Duration, s.Attr)
			}
		}
		return b.String()
	}
	lists := 0
	for _, name := range []string{"kubelet-burst", "kubelet-missing", "kubelet-warm", "crictl-lifecycle"} {
		for _, shown := range []int{0, 64} {
			kept := captureCalls(t, name)
			want := sig(Group(kept, Options{All: true, ShownMessages: shown}))
			for _, c := range kept {
				for _, m := range c.Responses {
					if strings.HasPrefix(c.Name, "List") && m.Size > 0 && m.Proto == nil {
						t.Fatalf("%s: a %s answer dropped without DropLists", name, c.Name)
					}
				}
			}
			calls := captureCalls(t, name)
			if got := sig(Group(calls, Options{All: true, DropLists: true, ShownMessages: shown})); got != want {
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
		if g.names[ct.GetId()] != ct.GetMetadata().GetName() || g.sandboxOf[ct.GetId()] != ct.GetPodSandboxId() {
			t.Fatalf("container %s: name %q, sandbox %q learnt, want %q, %q", ct.GetId(), g.names[ct.GetId()], g.sandboxOf[ct.GetId()], ct.GetMetadata().GetName(), ct.GetPodSandboxId())
		}
		return
	}
	t.Fatal("no ListContainers answer listing a container")
}
