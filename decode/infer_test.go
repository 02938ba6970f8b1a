package decode

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// rawMessages returns the uncompressed bytes of a call's messages (the
// decode must have kept them: NoRedact).
func rawMessages(ms []Message) [][]byte {
	out := make([][]byte, len(ms))
	for i, m := range ms {
		out[i] = m.Raw
	}
	return out
}

func (s methodSet) String() string {
	var names []string
	for _, m := range criMethods {
		if s&(1<<m.index) != 0 {
			names = append(names, m.name)
		}
	}
	return "{" + strings.Join(names, " ") + "}"
}

// On every call of the real captures, the method's own types fit its
// messages (inference never rules out the truth); how often it is the
// only one that fits is logged.
func TestCandidatesCaptures(t *testing.T) {
	for _, file := range kubeletCaptures(t) {
		t.Run(captureName(file), func(t *testing.T) {
			calls, _, err := DecodeAll(&sliceSource{chunks: readChunks(t, file)}, Options{NoRedact: true})
			if err != nil {
				t.Fatal(err)
			}
			unique := map[string]int{}
			ambiguous := map[string]string{}
			for _, c := range calls {
				if !c.Known {
					continue
				}
				var fs fitScores
				fs.compute(rawMessages(c.Requests), rawMessages(c.Responses))
				set := fs.fit
				i := slices.IndexFunc(criMethods, func(m *method) bool { return m.name == c.Name })
				if i < 0 || set&(1<<i) == 0 {
					t.Errorf("%s stream %d: %s not among the candidates %v", c.Method, c.Stream, c.Name, set)
					continue
				}
				if near := fs.near(); near&(1<<i) == 0 {
					t.Errorf("%s stream %d: %s scores too low to be a candidate for its :path: %v", c.Method, c.Stream, c.Name, near)
				}
				best := fs.best(allMethods)
				switch {
				case best == nil:
					ambiguous[c.Name] = set.String()
				case best.name != c.Name:
					t.Errorf("%s stream %d: inferred %s", c.Method, c.Stream, best.name)
				default:
					unique[c.Name]++
				}
			}
			t.Logf("named by their messages alone: %v", unique)
			for _, name := range slices.Sorted(mapKeys(ambiguous)) {
				t.Logf("ambiguous: %s among %s", name, ambiguous[name])
			}
		})
	}
}

// Shapes tell apart what field numbers alone would not.
func TestCandidates(t *testing.T) {
	raw := func(m proto.Message) []byte {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	id := strings.Repeat("ab", 32)
	for _, tc := range []struct {
		name       string
		req, resp  proto.Message
		want       string // the only method, or "" for ambiguous
		wantAmbigu []string
		not        string // a method that must not fit
	}{
		{"container status", &runtimeapi.ContainerStatusRequest{ContainerId: id}, containerStatus(id, false), "ContainerStatus", nil, ""},
		// KEP-5825's Stream* methods read as their List* twins.
		{"list or stream", &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{State: &runtimeapi.ContainerStateValue{}}},
			listContainers(3), "", []string{"ListContainers", "StreamContainers"}, ""},
		{"list, not stream: empty", &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{Id: id}},
			&runtimeapi.ListPodSandboxResponse{}, "", []string{"ListPodSandbox", "ListContainers"}, "StreamPodSandboxes"},
		{"start or remove", &runtimeapi.StartContainerRequest{ContainerId: id}, &runtimeapi.StartContainerResponse{}, "",
			[]string{"StartContainer", "RemoveContainer", "StopContainer", "StopPodSandbox", "RemovePodSandbox"}, ""},
		{"version", &runtimeapi.VersionRequest{Version: "0.1.0"},
			&runtimeapi.VersionResponse{Version: "0.1.0", RuntimeName: "containerd", RuntimeVersion: "1.6", RuntimeApiVersion: "v1"}, "Version", nil, ""},
		{"empty", &runtimeapi.VersionRequest{}, &runtimeapi.StatusResponse{}, "", []string{"Version", "Status", "ImageFsInfo"}, ""},
		// A list of one image reads as an ImageStatus answer, but an
		// ImageStatus request names its image.
		{"one image listed", &runtimeapi.ListImagesRequest{Filter: &runtimeapi.ImageFilter{}},
			&runtimeapi.ListImagesResponse{Images: []*runtimeapi.Image{{Id: "sha256:" + id, RepoTags: []string{"busybox:1.36"}, Size: 4096}}},
			"", []string{"ListImages", "StreamImages"}, "ImageStatus"},
		// An empty answer made nothing: not RunPodSandbox (nor
		// CreateContainer, PullImage), whose answers name what they made.
		{"empty list", &runtimeapi.ListContainerStatsRequest{Filter: &runtimeapi.ContainerStatsFilter{}},
			&runtimeapi.ListContainerStatsResponse{}, "", []string{"ListContainerStats", "ListContainers"}, "RunPodSandbox"},
		{"empty list, no pull", &runtimeapi.ListContainerStatsRequest{Filter: &runtimeapi.ContainerStatsFilter{}},
			&runtimeapi.ListContainerStatsResponse{}, "", []string{"ListPodSandboxStats"}, "PullImage"},
		{"image fs", &runtimeapi.ImageFsInfoRequest{}, &runtimeapi.ImageFsInfoResponse{ImageFilesystems: []*runtimeapi.FilesystemUsage{{
			Timestamp: 1, FsId: &runtimeapi.FilesystemIdentifier{Mountpoint: "/var"}, UsedBytes: &runtimeapi.UInt64Value{Value: 5}}}}, "ImageFsInfo", nil, ""},
	} {
		var fs fitScores
		fs.compute([][]byte{raw(tc.req)}, [][]byte{raw(tc.resp)})
		set := fs.fit
		if tc.want != "" {
			if m := fs.best(allMethods); m == nil || m.name != tc.want {
				t.Errorf("%s: candidates %v, want only %s", tc.name, set, tc.want)
			}
			continue
		}
		if fs.best(allMethods) != nil {
			t.Errorf("%s: candidates %v, inferred %s", tc.name, set, fs.best(allMethods).name)
		}
		if tc.not != "" && strings.Contains(set.String(), tc.not) {
			t.Errorf("%s: %s fits: %v", tc.name, tc.not, set)
		}
		for _, n := range tc.wantAmbigu {
			if !strings.Contains(set.String(), " "+n+" ") && !strings.Contains(set.String(), "{"+n+" ") && !strings.Contains(set.String(), " "+n+"}") {
				t.Errorf("%s: %s not in %v", tc.name, n, set)
			}
		}
	}
}

// nonEmptyAt follows a path of length-delimited fields, byte for byte.
func TestNonEmptyAt(t *testing.T) {
	for _, tc := range []struct {
		b    []byte
		path []int
		want bool
	}{
		{[]byte{0x0a, 0x03, 0x0a, 0x01, 'x'}, []int{1, 1}, true},
		{[]byte{0x0a, 0x00}, []int{1, 1}, false},              // an empty ImageSpec
		{[]byte{0x0a, 0x02, 0x0a, 0x00}, []int{1, 1}, false},  // an empty image name
		{[]byte{0x10, 0x01, 0x0a, 0x01, 'x'}, []int{1}, true}, // past a varint field
		{[]byte{0x12, 0x01, 'x'}, []int{1}, false},            // another field only
		{[]byte{0x0a, 0x05, 'x'}, []int{1}, false},            // cut short
		{[]byte{0x08, 0x01}, []int{1}, false},                 // field 1, not bytes
		{nil, []int{1}, false},
	} {
		var path []protowire.Number
		for _, n := range tc.path {
			path = append(path, protowire.Number(n))
		}
		if got := nonEmptyAt(tc.b, path); got != tc.want {
			t.Errorf("nonEmptyAt(% x, %v) = %v, want %v", tc.b, tc.path, got, tc.want)
		}
	}
}
