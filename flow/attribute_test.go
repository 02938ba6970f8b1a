package flow

import (
	"fmt"
	"math/rand"
	"sort"
	"testing"
	"time"

	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/criseq/criseq/decode"
)

// kubeletSim replays kubelet's pod workers starting pods at once: each pod
// worker is sequential (sandbox, then per container: image calls, create,
// start); pulls wait in one queue (serialized pulls); the two connections
// carry every pod's calls, interleaved. It knows which pod made each call,
// which the grouper must find out.
type kubeletSim struct {
	rng         *rand.Rand
	t0          time.Time
	annotations bool // kubelet 1.37 copies the pod's annotations into image specs
	traces      bool // kubelet tracing: a traceparent per pod sync
	calls       []*decode.Call
	truth       map[*decode.Call]string // image call → pod name
	queueFree   time.Time               // the pull queue is busy until then
	stream      uint32
	images      []string // the images pods use
}

type simPod struct {
	name       string
	containers []string
	images     []string
	always     []bool
}

func (k *kubeletSim) call(name string, at time.Time, dur time.Duration, req proto.Message, trace string) *decode.Call {
	svc := "runtime.v1.RuntimeService"
	conn := uint64(1)
	if name == "ImageStatus" || name == "PullImage" {
		svc, conn = "runtime.v1.ImageService", 2
	}
	k.stream += 2
	c := &decode.Call{Conn: conn, Stream: k.stream, Method: "/" + svc + "/" + name, Service: svc, Name: name, Known: true,
		Start: at, End: at.Add(dur), Status: 0}
	c.Requests = []decode.Message{{Proto: req}}
	if trace != "" {
		c.RequestHeaders = []hpack.HeaderField{{Name: "traceparent", Value: "00-" + trace + "-00f067aa0ba902b7-01"}}
	}
	k.calls = append(k.calls, c)
	return c
}

func (k *kubeletSim) ms(lo, hi int) time.Duration {
	return time.Duration(lo*1000+k.rng.Intn((hi-lo)*1000+1)) * time.Microsecond
}

// run starts p at time at and returns when its last call ended.
func (k *kubeletSim) run(p simPod, uid int, at time.Time) {
	md := &runtimeapi.PodSandboxMetadata{Namespace: "default", Name: p.name, Uid: fmt.Sprintf("uid-%d", uid)}
	ann := map[string]string{"kubernetes.io/config.seen": at.Format(time.RFC3339Nano), "kubernetes.io/config.source": "file"}
	cfg := &runtimeapi.PodSandboxConfig{Metadata: md, Annotations: ann}
	trace := ""
	if k.traces {
		trace = fmt.Sprintf("%032x", uid+1)
	}
	sid := fmt.Sprintf("%064x", uid+1)
	t := at
	step := func(name string, dur time.Duration, req proto.Message) *decode.Call {
		c := k.call(name, t, dur, req, trace)
		t = c.End.Add(k.ms(0, 3))
		return c
	}
	c := step("RunPodSandbox", k.ms(80, 300), &runtimeapi.RunPodSandboxRequest{Config: cfg})
	c.Responses = []decode.Message{{Proto: &runtimeapi.RunPodSandboxResponse{PodSandboxId: sid}}}
	c = step("PodSandboxStatus", k.ms(0, 2), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: sid})
	c.Responses = []decode.Message{{Proto: &runtimeapi.PodSandboxStatusResponse{}}}
	for i, name := range p.containers {
		img := p.images[i]
		spec := &runtimeapi.ImageSpec{Image: img}
		if k.annotations {
			spec.Annotations = ann
		}
		id := "sha256:" + fmt.Sprintf("%064x", len(img)*7919)
		status := func(s *runtimeapi.ImageSpec) {
			c := step("ImageStatus", k.ms(0, 4), &runtimeapi.ImageStatusRequest{Image: s})
			c.Responses = []decode.Message{{Proto: &runtimeapi.ImageStatusResponse{Image: &runtimeapi.Image{Id: id}}}}
			k.truth[c] = p.name
		}
		if p.always[i] {
			if k.queueFree.After(t) {
				t = k.queueFree
			}
			c := step("PullImage", k.ms(20, 200), &runtimeapi.PullImageRequest{Image: spec, SandboxConfig: cfg})
			c.Responses = []decode.Message{{Proto: &runtimeapi.PullImageResponse{ImageRef: id}}}
			k.truth[c] = p.name
			k.queueFree = c.End
			status(spec) // the size check after the pull
		} else {
			status(spec) // the pre-pull check
		}
		status(&runtimeapi.ImageSpec{Image: img}) // the image user lookup
		cid := fmt.Sprintf("%s-%s", sid[48:], name)
		c := step("CreateContainer", k.ms(10, 60), &runtimeapi.CreateContainerRequest{PodSandboxId: sid, SandboxConfig: cfg,
			Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: name},
				Image: &runtimeapi.ImageSpec{Image: id, UserSpecifiedImage: img}}})
		c.Responses = []decode.Message{{Proto: &runtimeapi.CreateContainerResponse{ContainerId: cid}}}
		c = step("StartContainer", k.ms(40, 250), &runtimeapi.StartContainerRequest{ContainerId: cid})
		c.Responses = []decode.Message{{Proto: &runtimeapi.StartContainerResponse{}}}
	}
}

// burst builds n pods started within spread of each other.
func (k *kubeletSim) burst(n int, spread time.Duration) {
	type start struct {
		p  simPod
		at time.Time
	}
	var starts []start
	for i := range n {
		p := simPod{name: fmt.Sprintf("burst-%02d", i)}
		for c := range 1 + k.rng.Intn(2) {
			p.containers = append(p.containers, fmt.Sprintf("c%d", c))
			p.images = append(p.images, k.images[k.rng.Intn(len(k.images))])
			p.always = append(p.always, k.rng.Intn(2) == 0)
		}
		starts = append(starts, start{p, k.t0.Add(time.Duration(k.rng.Int63n(int64(spread))))})
	}
	// Pulls queue in the order pods reach them: run pods in start order.
	sort.Slice(starts, func(i, j int) bool { return starts[i].at.Before(starts[j].at) })
	for i, s := range starts {
		k.run(s.p, i, s.at)
	}
	// The decoder hands calls over as they end.
	sort.SliceStable(k.calls, func(i, j int) bool { return k.calls[i].End.Before(k.calls[j].End) })
}

// TestImageCallsAttributedLikeKubelet starts bursts of pods with kubelet's
// sequential model and checks that every image call is drawn in its own
// pod's diagram: attributed to it alone, or marked ambiguous with its pod
// among the candidates; never to another pod alone.
func TestImageCallsAttributedLikeKubelet(t *testing.T) {
	seeds := 40
	if testing.Short() {
		seeds = 10
	}
	three := []string{"registry.local/app:1", "registry.local/tool:2", "busybox"}
	one := []string{"registry.local/app:1"}
	for _, tc := range []struct {
		name                string
		annotations, traces bool
		images              []string
		spread              time.Duration
	}{
		{"kubelet 1.37 with tracing", true, true, three, 200 * time.Millisecond},
		{"kubelet 1.37", true, false, three, 200 * time.Millisecond},
		{"no annotations, no tracing", false, false, three, 200 * time.Millisecond},
		{"kubelet 1.37, one image, pods within 50ms", true, false, one, 10 * time.Millisecond},
		{"no annotations, one image, pods within 50ms", false, false, one, 10 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var exact, ambiguous, total int
			for seed := range seeds {
				k := &kubeletSim{rng: rand.New(rand.NewSource(int64(seed))), t0: time.Unix(1700000000, 0),
					annotations: tc.annotations, traces: tc.traces, truth: map[*decode.Call]string{}, images: tc.images}
				k.burst(4+seed%17, time.Duration(1+seed%5)*tc.spread)
				flows := Group(k.calls, Options{})
				where := map[*decode.Call][]Step{}
				in := map[*decode.Call][]string{}
				for _, f := range flows {
					for _, s := range f.Steps {
						if _, ok := k.truth[s.Call]; ok {
							where[s.Call] = append(where[s.Call], s)
							in[s.Call] = append(in[s.Call], f.Pod.Name)
						}
					}
				}
				for c, pod := range k.truth {
					total++
					steps := where[c]
					if len(steps) == 0 {
						t.Errorf("seed %d: %s of %s at %s is in no diagram", seed, c.Name, pod, c.Start.Sub(k.t0))
						continue
					}
					mine := false
					for _, p := range in[c] {
						mine = mine || p == pod
					}
					if !mine {
						t.Errorf("seed %d: %s of %s at %s drawn in %v (%s)", seed, c.Name, pod, c.Start.Sub(k.t0), in[c], steps[0].Attr.By)
						continue
					}
					if len(steps) == 1 && steps[0].Attr.By != ByAmbiguous {
						exact++
						continue
					}
					ambiguous++
					for _, s := range steps {
						if s.Attr.By != ByAmbiguous || len(s.Attr.Candidates) != len(steps) {
							t.Errorf("seed %d: %s of %s in %d diagrams, attributed %q with candidates %v", seed, c.Name, pod, len(steps), s.Attr.By, s.Attr.Candidates)
						}
					}
				}
			}
			t.Logf("%d image calls: %d attributed to their pod alone, %d ambiguous (their pod among the candidates)", total, exact, ambiguous)
			if tc.traces && ambiguous > 0 {
				t.Errorf("with tracing, %d calls were ambiguous", ambiguous)
			}
		})
	}
}

func BenchmarkAttributeBurst(b *testing.B) {
	for b.Loop() {
		k := &kubeletSim{rng: rand.New(rand.NewSource(7)), t0: time.Unix(1700000000, 0), truth: map[*decode.Call]string{}, images: []string{"app:1"}}
		k.burst(12, 600*time.Millisecond)
		Group(k.calls, Options{})
	}
}
