package flow_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/criseq/criseq/capture"
	"github.com/criseq/criseq/decode"
	"github.com/criseq/criseq/flow"
)

// captured decodes and groups a capture of testdata.
func captured(t *testing.T, name string) []*flow.Flow {
	t.Helper()
	src, err := capture.OpenFile(filepath.Join("..", "testdata", name, "capture.pcapng"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	calls, _, err := decode.DecodeAll(src, decode.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return flow.Group(calls, flow.Options{})
}

// linkText is "From→To kind" with the steps' methods, e.g.
// "RunPodSandbox→CreateContainer sandbox".
func linkText(f *flow.Flow, l flow.Link) string {
	return fmt.Sprintf("%s→%s %s", f.Steps[l.From].Method, f.Steps[l.To].Method, l.Kind)
}

func dumpLinks(t *testing.T, f *flow.Flow, ls []flow.Link) {
	t.Helper()
	for _, l := range ls {
		t.Logf("%s %s: %d %s → %d %s  %s %s", f.Pod, f.Kind, l.From, f.Steps[l.From].Method, l.To, f.Steps[l.To].Method, l.Kind, l.Value)
	}
}

func TestLinksKubeletPull(t *testing.T) {
	var start *flow.Flow
	for _, f := range captured(t, "kubelet-pull") {
		if f.Kind == flow.Start {
			start = f
		}
	}
	if start == nil {
		t.Fatal("no start flow")
	}
	ls := flow.Links(start)
	dumpLinks(t, start, ls)
	got := map[string]flow.Link{}
	for _, l := range ls {
		if l.From >= l.To || l.From < 0 || l.To >= len(start.Steps) {
			t.Errorf("link %+v: bad step indexes", l)
		}
		got[linkText(start, l)] = l
	}
	for _, want := range []struct{ text, value string }{
		{"RunPodSandbox→CreateContainer sandbox", "4a5feb5bbc090890c2fcec3b9c18538ec23c84cff43ea1a35ede9123cc9c9d8b"},
		{"PullImage→CreateContainer image", "sha256:f7ca4d3f94b84c2092eabe0523628eef260d85d87ed4111c34e871c96d8e549b"},
		{"CreateContainer→StartContainer container", "a0350b2e21aaffde4ba6bbdba27dc7f05758c80273bbb0f668df006863bd2f60"},
		{"RunPodSandbox→PodSandboxStatus sandbox", "4a5feb5bbc090890c2fcec3b9c18538ec23c84cff43ea1a35ede9123cc9c9d8b"},
		{"CreateContainer→ContainerStatus container", "a0350b2e21aaffde4ba6bbdba27dc7f05758c80273bbb0f668df006863bd2f60"},
	} {
		l, ok := got[want.text]
		if !ok {
			t.Errorf("no link %s", want.text)
			continue
		}
		if l.Value != want.value {
			t.Errorf("%s: value %s, want %s", want.text, l.Value, want.value)
		}
	}
	// Both PodSandboxStatus calls link back to RunPodSandbox, none to another
	// status call; the ImageStatus calls after the pull do not steal the
	// image's link from PullImage.
	n := 0
	for _, l := range ls {
		from, to := start.Steps[l.From].Method, start.Steps[l.To].Method
		if strings.HasSuffix(from, "Status") {
			t.Errorf("link from a status call: %s", linkText(start, l))
		}
		if to == "PodSandboxStatus" {
			n++
		}
	}
	if n != 2 {
		t.Errorf("%d links to PodSandboxStatus, want 2", n)
	}
}

// TestLinksWarm: an image already present is introduced by ImageStatus.
func TestLinksWarm(t *testing.T) {
	for _, f := range captured(t, "kubelet-warm") {
		if f.Kind != flow.Start {
			continue
		}
		found := false
		for _, l := range flow.Links(f) {
			found = found || linkText(f, l) == "ImageStatus→CreateContainer image" && strings.HasPrefix(l.Value, "sha256:f9aefb57d729")
		}
		if !found {
			t.Error("no ImageStatus→CreateContainer image link")
		}
	}
}

// TestLinksCrictl: crictl creates the container from the image name it pulled.
func TestLinksCrictl(t *testing.T) {
	for _, f := range captured(t, "crictl-lifecycle") {
		if f.Kind != flow.Start {
			continue
		}
		var got []string
		for _, l := range flow.Links(f) {
			got = append(got, linkText(f, l)+" "+l.Value)
		}
		want := []string{
			"RunPodSandbox→CreateContainer sandbox 9d2ed65c232272b08d30765f92ddf0b479629bf5b97b4268a6923ce7cdf5c38d",
			"PullImage→CreateContainer image 127.0.0.1:5000/criseq/app:1",
			"CreateContainer→StartContainer container ff2cf3ccdbc0024e5d5d23ff9f6b7fc6b081905ac806fdf2ddcb72895589a638",
			"CreateContainer→ContainerStatus container ff2cf3ccdbc0024e5d5d23ff9f6b7fc6b081905ac806fdf2ddcb72895589a638",
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("links:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
}

func TestLinksNil(t *testing.T) {
	if ls := flow.Links(nil); ls != nil {
		t.Errorf("Links(nil) = %v", ls)
	}
	if ls := flow.Links(&flow.Flow{Steps: []flow.Step{{Method: "X"}}}); ls != nil {
		t.Errorf("Links of a step without a call = %v", ls)
	}
}

// TestInheritedPhases checks that status calls take the phase of the call
// before them, marked as inherited, and phase-making calls are not.
func TestInheritedPhases(t *testing.T) {
	for _, f := range captured(t, "kubelet-init") {
		for i, s := range f.Steps {
			own := map[string]bool{"RunPodSandbox": true, "ImageStatus": true, "PullImage": true,
				"CreateContainer": true, "StartContainer": true, "StopContainer": true,
				"StopPodSandbox": true, "RemoveContainer": true, "RemovePodSandbox": true}[s.Method]
			switch {
			case own && (s.Inherited || s.Phase == ""):
				t.Errorf("%s %s step %d %s: phase %q inherited %v, want its own", f.Pod, f.Kind, i, s.Method, s.Phase, s.Inherited)
			case !own && i > 0 && (!s.Inherited || s.Phase != f.Steps[i-1].Phase):
				t.Errorf("%s %s step %d %s: phase %q inherited %v, want %q inherited", f.Pod, f.Kind, i, s.Method,
					s.Phase, s.Inherited, f.Steps[i-1].Phase)
			}
		}
	}
}

// TestImagePhasesNamed checks that each container's image phase is named
// after it, and that a pull no container followed keeps "image".
func TestImagePhasesNamed(t *testing.T) {
	var got []string
	for _, f := range captured(t, "kubelet-init") {
		if f.Kind != flow.Start {
			continue
		}
		prev := ""
		for _, s := range f.Steps {
			if strings.HasPrefix(s.Phase, "image") && s.Phase != prev {
				got = append(got, s.Phase)
			}
			prev = s.Phase
		}
	}
	if want := "image setup,image web,image sidecar"; strings.Join(got, ",") != want {
		t.Errorf("image phases %q, want %q", strings.Join(got, ","), want)
	}
	for _, f := range captured(t, "kubelet-missing") {
		for _, s := range f.Steps {
			if s.Method == "PullImage" && s.Phase != "image" {
				t.Errorf("failed pull in phase %q, want image", s.Phase)
			}
		}
	}
}

// TestStopPhases checks that a real stop is told in the phases the summary
// line and diff use: the containers stopped, the sandbox stopped, the
// containers removed, the sandbox removed (kubelet's garbage collector
// stops it once more first).
func TestStopPhases(t *testing.T) {
	for _, f := range captured(t, "kubelet-pull") {
		if f.Kind != flow.Stop {
			continue
		}
		var got []string
		for _, s := range f.Steps {
			if !s.Inherited && s.Phase != "" && (len(got) == 0 || got[len(got)-1] != s.Phase) {
				got = append(got, s.Phase)
			}
		}
		if want := "stop,stop sandbox,remove,stop sandbox,remove sandbox"; strings.Join(got, ",") != want {
			t.Errorf("stop phases %q, want %q", strings.Join(got, ","), want)
		}
	}
}
