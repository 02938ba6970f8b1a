package flow

import (
	"fmt"

	"google.golang.org/protobuf/reflect/protoreflect"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Link kinds: what kind of value a Link carries.
const (
	LinkSandbox   = "sandbox"
	LinkImage     = "image"
	LinkContainer = "container"
)

// Link is one ID or digest that a step returned and a later step used: the
// thread that ties a flow's calls together (RunPodSandbox's sandbox ID used
// by CreateContainer, PullImage's image ref used by CreateContainer,
// CreateContainer's container ID used by StartContainer).
type Link struct {
	From, To int    // indexes into Flow.Steps; From < To
	Kind     string // LinkSandbox, LinkImage or LinkContainer
	Value    string // the ID, digest or image name, unshortened
}

// Links lists the links of f, ordered by To, then by the order the value
// appears in To's request (sandbox, container, then image). Pure: it reads
// the steps' decoded requests and responses.
//
// A step returns: RunPodSandbox its pod_sandbox_id, CreateContainer its
// container_id, PullImage its image_ref and the image name it pulled, and
// ImageStatus the image's id and the name it asked for (when the image is
// present). A step uses: the pod_sandbox_id and container_id fields of its
// request (any method), the image spec of CreateContainer
// (config.image.image, .image_ref, .user_specified_image) and the image name
// of ImageStatus, PullImage and RemoveImage.
//
// Each use links to the last earlier step that returned the value, so
// repeated status calls each link back to the call that made the ID, not to
// each other. ImageStatus only reports what a PullImage already returned:
// it becomes the source of a value only when no earlier step returned it
// (an image that was already present), so a pulled image links back to its
// PullImage. A step links at most once to each earlier step per kind (the
// first value in its request wins: the digest before the image name), and
// never to itself.
func Links(f *Flow) []Link {
	if f == nil {
		return nil
	}
	type key struct{ kind, value string }
	source := map[key]int{}
	var out []Link
	for i := range f.Steps {
		c := f.Steps[i].Call
		if c == nil {
			continue
		}
		type pairKey struct {
			from int
			kind string
		}
		seen := map[pairKey]bool{}
		for _, u := range uses(c.Request()) {
			from, ok := source[key{u.kind, u.value}]
			if !ok || seen[pairKey{from, u.kind}] {
				continue
			}
			seen[pairKey{from, u.kind}] = true
			out = append(out, Link{From: from, To: i, Kind: u.kind, Value: u.value})
		}
		for _, r := range returns(c.Request(), c.Response()) {
			k := key{r.kind, r.value}
			if _, ok := source[k]; ok && !r.produces {
				continue
			}
			source[k] = i
		}
	}
	return out
}

type idValue struct {
	kind, value string
	produces    bool // the call made the value, not just reported it
}

// returns lists the values a call's response introduced.
func returns(req, resp any) []idValue {
	var out []idValue
	add := func(kind, v string, produces bool) {
		if v != "" {
			out = append(out, idValue{kind, v, produces})
		}
	}
	switch r := resp.(type) {
	case *runtimeapi.RunPodSandboxResponse:
		add(LinkSandbox, r.GetPodSandboxId(), true)
	case *runtimeapi.CreateContainerResponse:
		add(LinkContainer, r.GetContainerId(), true)
	case *runtimeapi.PullImageResponse:
		if r.GetImageRef() != "" {
			add(LinkImage, r.GetImageRef(), true)
			if q, ok := req.(*runtimeapi.PullImageRequest); ok {
				add(LinkImage, q.GetImage().GetImage(), true)
			}
		}
	case *runtimeapi.ImageStatusResponse:
		if id := r.GetImage().GetId(); id != "" {
			add(LinkImage, id, false)
			if q, ok := req.(*runtimeapi.ImageStatusRequest); ok {
				add(LinkImage, q.GetImage().GetImage(), false)
			}
		}
	}
	return out
}

// uses lists the IDs and image names a request refers to, most specific
// first.
func uses(req any) []idValue {
	var out []idValue
	add := func(kind, v string) {
		if v != "" {
			out = append(out, idValue{kind: kind, value: v})
		}
	}
	if m, ok := req.(interface{ ProtoReflect() protoreflect.Message }); ok {
		cid, sid := ids(m)
		add(LinkSandbox, sid)
		add(LinkContainer, cid)
	}
	spec := imageSpec(req)
	add(LinkImage, spec.GetImage())
	add(LinkImage, spec.GetImageRef())
	add(LinkImage, spec.GetUserSpecifiedImage())
	return out
}

// External lists the values steps of f used that no earlier step of f
// returned: the sandbox and container IDs a stop flow gets from the start
// before it, the image name a first ImageStatus asks for. From is -1; To,
// Kind and Value are as in Links. A step that has a Link of some kind gets
// no External of that kind (CreateContainer names its image by digest and by
// name; the digest's link is enough). Each value is listed once per step.
func External(f *Flow) []Link {
	if f == nil {
		return nil
	}
	type key struct{ kind, value string }
	linked := map[key]bool{} // (kind, To as string) of Links
	for _, l := range Links(f) {
		linked[key{l.Kind, fmt.Sprint(l.To)}] = true
	}
	returned := map[key]bool{}
	var out []Link
	for i := range f.Steps {
		c := f.Steps[i].Call
		if c == nil {
			continue
		}
		seen := map[key]bool{}
		for _, u := range uses(c.Request()) {
			k := key{u.kind, u.value}
			if returned[k] || seen[k] || linked[key{u.kind, fmt.Sprint(i)}] {
				continue
			}
			seen[k] = true
			out = append(out, Link{From: -1, To: i, Kind: u.kind, Value: u.value})
		}
		for _, r := range returns(c.Request(), c.Response()) {
			returned[key{r.kind, r.value}] = true
		}
	}
	return out
}
