package decode

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/criseq/criseq/capture"
	"golang.org/x/net/http2"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

const (
	pathRun     = "/runtime.v1.RuntimeService/RunPodSandbox"
	pathVersion = "/runtime.v1.RuntimeService/Version"
	pathCreate  = "/runtime.v1.RuntimeService/CreateContainer"
	pathStatus  = "/runtime.v1.RuntimeService/ContainerStatus"
	pathList    = "/runtime.v1.RuntimeService/ListContainers"
	pathEvents  = "/runtime.v1.RuntimeService/GetContainerEvents"
	pathPull    = "/runtime.v1.ImageService/PullImage"
	pathImage   = "/runtime.v1.ImageService/ImageStatus"
)

func runReq(name string) *runtimeapi.RunPodSandboxRequest {
	return &runtimeapi.RunPodSandboxRequest{Config: &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "default", Uid: "uid-" + name},
		Labels:   map[string]string{"app": name},
	}}
}

// fixture is one connection written by h2, with its chunks.
func fixture(t testing.TB) (*h2, *[]capture.Chunk) {
	var chunks []capture.Chunk
	now := t0
	return newH2(t, 1, &now, &chunks), &chunks
}

// oneCall checks a decode gave exactly one call and no errors.
func oneCall(t *testing.T) func([]*Call, []*ConnError) *Call {
	return func(calls []*Call, errs []*ConnError) *Call {
		t.Helper()
		if len(errs) > 0 {
			t.Fatalf("conn errors: %v", errs)
		}
		if len(calls) != 1 {
			t.Fatalf("got %d calls, want 1:\n%s", len(calls), summaries(calls, nil))
		}
		return calls[0]
	}
}

func TestUnary(t *testing.T) {
	w, chunks := fixture(t)
	req := runReq("web")
	resp := &runtimeapi.RunPodSandboxResponse{PodSandboxId: "sb1"}
	start := w.now.Add(time.Millisecond)
	w.unary(1, pathRun, req, resp)
	end := *w.now
	w.close(c2s)
	w.close(s2c)

	c := oneCall(t)(decodeChunks(Options{}, *chunks))
	if c.Conn != 1 || c.Stream != 1 || c.Method != pathRun || c.Service != "runtime.v1.RuntimeService" || c.Name != "RunPodSandbox" || !c.Known {
		t.Errorf("call = %+v", c)
	}
	if !c.Start.Equal(start) || !c.End.Equal(end) || c.Duration() != 4*time.Millisecond {
		t.Errorf("start %v end %v, want %v %v", c.Start, c.End, start, end)
	}
	if c.Status != 0 || !c.OK() || c.Flags != 0 || len(c.Errors) > 0 {
		t.Errorf("status %d flags %s errors %q", c.Status, c.Flags, c.Errors)
	}
	if !proto.Equal(c.Request(), req) || !proto.Equal(c.Response(), resp) {
		t.Errorf("request %v response %v", c.Request(), c.Response())
	}
	if _, ok := c.Request().(*runtimeapi.RunPodSandboxRequest); !ok {
		t.Errorf("request type %T, want the generated type", c.Request())
	}
	if v := headerValue(c.RequestHeaders, "grpc-timeout"); v != "120000m" {
		t.Errorf("grpc-timeout %q", v)
	}
	if v := headerValue(c.ResponseHeaders, ":status"); v != "200" {
		t.Errorf(":status %q", v)
	}
	if v := headerValue(c.Trailers, "grpc-status"); v != "0" {
		t.Errorf("trailers %v", c.Trailers)
	}
	if c.Requests[0].Raw != nil || c.Requests[0].Size != proto.Size(req) {
		t.Errorf("redacted raw %x size %d", c.Requests[0].Raw, c.Requests[0].Size)
	}
}

// Everything HTTP/2 may put around the frames that matter: CONTINUATION,
// padding, PRIORITY, PING, WINDOW_UPDATE, unknown frame types.
func TestFramingVariety(t *testing.T) {
	w, chunks := fixture(t)
	w.maxFrag = 7
	w.pad = 13
	req := runReq("padded")
	w.check(w.fr[c2s].WritePriority(1, http2.PriorityParam{StreamDep: 0, Weight: 20}))
	w.headers(c2s, 1, false, reqHeaders(pathRun, "x-long", strings.Repeat("v", 300))...)
	w.check(w.fr[c2s].WriteRawFrame(0x42, 0x1, 1, []byte("unknown frame type")))
	w.check(w.fr[c2s].WritePing(false, [8]byte{1, 2, 3}))
	w.check(w.fr[c2s].WriteWindowUpdate(0, 1000))
	w.check(w.fr[c2s].WritePriority(3, http2.PriorityParam{StreamDep: 1, Weight: 1, Exclusive: true}))
	w.data(c2s, 1, true, grpcMsg(t, req))
	w.check(w.fr[s2c].WritePing(true, [8]byte{1, 2, 3}))
	w.check(w.fr[s2c].WriteWindowUpdate(1, 5))
	w.response(1, &runtimeapi.RunPodSandboxResponse{PodSandboxId: "sb"})

	// The same bytes cut at every possible place decode the same way.
	want := summaries(decodeChunks(Options{}, *chunks))
	c := oneCall(t)(decodeChunks(Options{}, *chunks))
	if !proto.Equal(c.Request(), req) || c.Status != 0 || headerValue(c.RequestHeaders, "x-long") != strings.Repeat("v", 300) {
		t.Fatalf("got\n%s", want)
	}
	for _, n := range []int{1, 2, 5, 9, 10, 64} {
		if got := summaries(decodeChunks(Options{}, rechunk(*chunks, n))); got != want {
			t.Errorf("chunks of %d bytes:\n%s\nwant\n%s", n, got, want)
		}
	}
}

// The :path is a literal the first time and a dynamic table index after,
// as kubelet sends it; the table survives size updates.
func TestHPACKState(t *testing.T) {
	w, chunks := fixture(t)
	w.unary(1, pathVersion, &runtimeapi.VersionRequest{Version: "v1"}, &runtimeapi.VersionResponse{RuntimeName: "a"})
	w.unary(3, pathVersion, &runtimeapi.VersionRequest{Version: "v1"}, &runtimeapi.VersionResponse{RuntimeName: "b"})
	// Server raises the client's table: the client announces it.
	w.check(w.fr[s2c].WriteSettings(http2.Setting{ID: http2.SettingHeaderTableSize, Val: 32768}))
	w.flush(s2c)
	w.enc[c2s].SetMaxDynamicTableSizeLimit(32768)
	w.enc[c2s].SetMaxDynamicTableSize(32768)
	w.unary(5, pathVersion, &runtimeapi.VersionRequest{}, &runtimeapi.VersionResponse{RuntimeName: "c"})
	// Client shrinks the server's table to zero: entries are evicted.
	w.check(w.fr[c2s].WriteSettings(http2.Setting{ID: http2.SettingHeaderTableSize, Val: 0}))
	w.flush(c2s)
	w.enc[s2c].SetMaxDynamicTableSizeLimit(0)
	w.enc[s2c].SetMaxDynamicTableSize(0)
	w.unary(7, pathRun, runReq("x"), &runtimeapi.RunPodSandboxResponse{PodSandboxId: "d"})
	w.unary(9, pathVersion, &runtimeapi.VersionRequest{}, &runtimeapi.VersionResponse{RuntimeName: "e"})

	var all []byte
	for _, c := range *chunks {
		if c.Dir == c2s {
			all = append(all, c.Data...)
		}
	}
	if bytes.Contains(all, []byte("Version")) {
		t.Fatal("fixture: :path should be Huffman-coded")
	}
	calls, errs := decodeChunks(Options{}, *chunks)
	if len(errs) > 0 || len(calls) != 5 {
		t.Fatalf("%d calls, errors %v", len(calls), errs)
	}
	for i, want := range []string{"a", "b", "c", "d", "e"} {
		c := calls[i]
		var got string
		switch r := c.Response().(type) {
		case *runtimeapi.VersionResponse:
			got = r.RuntimeName
		case *runtimeapi.RunPodSandboxResponse:
			got = r.PodSandboxId
		}
		if got != want || c.Status != 0 || len(c.Errors) > 0 {
			t.Errorf("call %d: %s", i, summary(c))
		}
	}
	if calls[3].Name != "RunPodSandbox" || calls[4].Name != "Version" {
		t.Errorf("names %s %s", calls[3].Name, calls[4].Name)
	}
}

// A too large table size update is a connection error (HPACK state lost).
func TestHPACKTableTooLarge(t *testing.T) {
	w, chunks := fixture(t)
	w.enc[c2s].SetMaxDynamicTableSizeLimit(1 << 20)
	w.enc[c2s].SetMaxDynamicTableSize(1 << 20)
	w.unary(1, pathVersion, &runtimeapi.VersionRequest{}, &runtimeapi.VersionResponse{})
	calls, errs := decodeChunks(Options{}, *chunks)
	if len(errs) != 1 || errs[0].Dir != c2s.String() || !errors.Is(errs[0], ErrFrame) {
		t.Fatalf("errors %v", errs)
	}
	if errs[0].Offset != 24+15+9 { // preface, SETTINGS, SETTINGS ack
		t.Errorf("offset %d", errs[0].Offset)
	}
	// Its response arrives for a request never seen: dropped, as requests are lost.
	if len(calls) != 0 {
		t.Errorf("calls:\n%s", summaries(calls, nil))
	}
}

func TestMessagesAcrossFrames(t *testing.T) {
	w, chunks := fixture(t)
	// One request split over three DATA frames (and two chunks each).
	req := &runtimeapi.CreateContainerRequest{PodSandboxId: "sb", Config: &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "big"},
		Labels:   map[string]string{"big": strings.Repeat("x", 40000)},
	}}
	b := grpcMsg(t, req)
	w.headers(c2s, 1, false, reqHeaders(pathCreate)...)
	w.data(c2s, 1, false, b[:3]) // inside the 5-byte prefix
	w.data(c2s, 1, false, b[3:16000])
	w.data(c2s, 1, true, b[16000:])
	w.response(1, &runtimeapi.CreateContainerResponse{ContainerId: "c1"})

	// Several responses in one DATA frame, one more split at a frame edge.
	events := []*runtimeapi.ContainerEventResponse{
		{ContainerId: "c1", ContainerEventType: runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT, CreatedAt: 1},
		{ContainerId: "c1", ContainerEventType: runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT, CreatedAt: 2},
		{ContainerId: "c1", ContainerEventType: runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT, CreatedAt: 3},
		{ContainerId: "c2", ContainerEventType: runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT, CreatedAt: 4},
		{},
	}
	w.request(3, pathEvents, &runtimeapi.GetEventsRequest{})
	w.headers(s2c, 3, false, ":status", "200", "content-type", "application/grpc")
	var batch []byte
	for _, e := range events[:3] {
		batch = append(batch, grpcMsg(t, e)...)
	}
	four := grpcMsg(t, events[3])
	w.data(s2c, 3, false, append(batch, four[:7]...))
	w.data(s2c, 3, false, four[7:])
	w.data(s2c, 3, false, grpcMsg(t, events[4])) // empty message: 5 bytes
	w.trailers(3, "0", "")

	calls, errs := decodeChunks(Options{}, *chunks)
	if len(errs) > 0 || len(calls) != 2 {
		t.Fatalf("%d calls, errors %v", len(calls), errs)
	}
	if c := calls[0]; !proto.Equal(c.Request(), req) || len(c.Requests) != 1 || c.Requests[0].Size != proto.Size(req) {
		t.Errorf("split request: %s", summary(c))
	}
	c := calls[1]
	if len(c.Responses) != len(events) || c.Status != 0 || len(c.Errors) > 0 {
		t.Fatalf("stream: %s", summary(c))
	}
	for i, e := range events {
		if !proto.Equal(c.Responses[i].Proto, e) {
			t.Errorf("response %d = %v, want %v", i, c.Responses[i].Proto, e)
		}
	}
}

func TestGzip(t *testing.T) {
	w, chunks := fixture(t)
	req := &runtimeapi.ContainerStatusRequest{ContainerId: strings.Repeat("c", 100), Verbose: true}
	resp := &runtimeapi.ContainerStatusResponse{Status: &runtimeapi.ContainerStatus{Id: "c", Image: &runtimeapi.ImageSpec{Image: strings.Repeat("img", 100)}}}
	w.headers(c2s, 1, false, reqHeaders(pathStatus, "grpc-encoding", "gzip", "grpc-accept-encoding", "gzip")...)
	w.data(c2s, 1, true, gzipMsg(t, req))
	w.headers(s2c, 1, false, ":status", "200", "content-type", "application/grpc", "grpc-encoding", "gzip")
	w.data(s2c, 1, false, gzipMsg(t, resp))
	w.trailers(1, "0", "")
	// An encoding criseq cannot undo, and a compressed message without one.
	w.headers(c2s, 3, false, reqHeaders(pathStatus, "grpc-encoding", "snappy")...)
	w.data(c2s, 3, true, frameMsg(1, []byte("not really snappy")))
	w.headers(s2c, 3, false, ":status", "200", "content-type", "application/grpc")
	w.data(s2c, 3, false, frameMsg(1, []byte("??")))
	w.trailers(3, "0", "")
	// Corrupt gzip.
	w.headers(c2s, 5, false, reqHeaders(pathStatus, "grpc-encoding", "gzip")...)
	w.data(c2s, 5, true, frameMsg(1, []byte("\x1f\x8b garbage")))
	w.trailers(5, "13", "boom")

	calls, errs := decodeChunks(Options{NoRedact: true}, *chunks)
	if len(errs) > 0 || len(calls) != 3 {
		t.Fatalf("%d calls, errors %v", len(calls), errs)
	}
	c := calls[0]
	if !proto.Equal(c.Request(), req) || !proto.Equal(c.Response(), resp) || c.Flags != Compressed || !c.Requests[0].Compressed {
		t.Errorf("gzip call: %s", summary(c))
	}
	if raw, _ := proto.Marshal(req); !bytes.Equal(c.Requests[0].Raw, raw) || c.Requests[0].Size != len(raw) {
		t.Errorf("raw is not the uncompressed message")
	}
	c = calls[1]
	if c.Flags != Compressed|Malformed || !hasError(c.Errors, `request 1: unsupported grpc-encoding "snappy"`) ||
		!hasError(c.Errors, "response 1: compressed message without grpc-encoding") || c.Request() != nil {
		t.Errorf("snappy call: %s", summary(c))
	}
	c = calls[2]
	if c.Flags&Malformed == 0 || !hasError(c.Errors, "request 1: gzip:") || c.Status != 13 || c.Message != "boom" || c.Flags&TrailersOnly == 0 {
		t.Errorf("bad gzip call: %s", summary(c))
	}
}

func TestTrailersOnly(t *testing.T) {
	w, chunks := fixture(t)
	w.request(1, pathImage, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: "nginx"}})
	w.headers(s2c, 1, true, ":status", "200", "content-type", "application/grpc",
		"grpc-status", "5", "grpc-message", "image %22nginx%22 not found: 100%25 sure%0A%zz")
	c := oneCall(t)(decodeChunks(Options{}, *chunks))
	if c.Status != 5 || c.OK() || c.Message != "image \"nginx\" not found: 100% sure\n%zz" {
		t.Errorf("status %d message %q", c.Status, c.Message)
	}
	if c.Flags != TrailersOnly || len(c.Errors) > 0 || c.ResponseHeaders != nil || len(c.Responses) != 0 || c.End.IsZero() {
		t.Errorf("call: %s", summary(c))
	}
}

func TestResetAndGoAway(t *testing.T) {
	w, chunks := fixture(t)
	w.request(1, pathVersion, &runtimeapi.VersionRequest{})
	w.check(w.fr[c2s].WriteRSTStream(1, http2.ErrCodeCancel))
	w.flush(c2s)
	w.request(3, pathVersion, &runtimeapi.VersionRequest{})
	w.request(5, pathVersion, &runtimeapi.VersionRequest{})
	w.request(7, pathVersion, &runtimeapi.VersionRequest{})
	w.check(w.fr[s2c].WriteGoAway(3, http2.ErrCodeNo, []byte("bye")))
	w.flush(s2c)
	w.response(3, &runtimeapi.VersionResponse{RuntimeName: "last"})
	w.check(w.fr[s2c].WriteRSTStream(3, http2.ErrCodeNo)) // after the end: ignored
	w.flush(s2c)
	w.close(s2c)
	w.close(c2s)

	calls, errs := decodeChunks(Options{}, *chunks)
	if len(errs) > 0 || len(calls) != 4 {
		t.Fatalf("%d calls, errors %v", len(calls), errs)
	}
	for _, c := range calls {
		switch c.Stream {
		case 1:
			if c.Flags != Reset || !hasError(c.Errors, "stream reset by the client: CANCEL") || c.End.IsZero() {
				t.Errorf("reset: %s", summary(c))
			}
		case 3:
			if c.Flags != 0 || c.Status != 0 || c.Response() == nil {
				t.Errorf("below GOAWAY: %s", summary(c))
			}
		default:
			if c.Flags != Reset || !hasError(c.Errors, "GOAWAY from the server (last stream 3, NO_ERROR)") || c.Status != -1 {
				t.Errorf("above GOAWAY: %s", summary(c))
			}
		}
	}
}

func TestCloseAndIncomplete(t *testing.T) {
	var chunks []capture.Chunk
	now := t0
	a := newH2(t, 1, &now, &chunks)
	b := newH2(t, 2, &now, &chunks)
	a.request(1, pathVersion, &runtimeapi.VersionRequest{})
	b.request(1, pathVersion, &runtimeapi.VersionRequest{})
	a.request(3, pathVersion, &runtimeapi.VersionRequest{})
	b.close(c2s)
	b.close(s2c) // ends b's call now

	var got []string
	d := New(Options{OnCall: func(c *Call) { got = append(got, summary(c)) }})
	for _, c := range chunks {
		d.Feed(c)
	}
	if len(got) != 1 || !strings.HasPrefix(got[0], "conn=2 stream=1") || !strings.Contains(got[0], "connection closed before the call ended") {
		t.Fatalf("after close: %q", got)
	}
	d.Close()
	if len(got) != 3 || !strings.HasPrefix(got[1], "conn=1 stream=1 ") || !strings.HasPrefix(got[2], "conn=1 stream=3 ") ||
		!strings.Contains(got[2], "flags=incomplete") || !strings.Contains(got[2], "capture ended before the call ended") {
		t.Errorf("after Close: %q", got)
	}
}

func TestUnknownServices(t *testing.T) {
	w, chunks := fixture(t)
	ver := &runtimeapi.VersionResponse{RuntimeName: "containerd"} // any bytes will do
	w.unary(1, "/containerd.services.version.v1.Version/Version", &runtimeapi.VersionRequest{}, ver)
	w.unary(3, "/grpc.health.v1.Health/Check", &runtimeapi.VersionRequest{Version: "x"}, ver)
	w.unary(5, "/runtime.v1.RuntimeService/NoSuchMethod", &runtimeapi.VersionRequest{}, ver)
	w.unary(7, "not-a-path", &runtimeapi.VersionRequest{}, ver)
	raw, _ := proto.Marshal(ver)
	for _, noRedact := range []bool{false, true} {
		calls, errs := decodeChunks(Options{NoRedact: noRedact}, *chunks)
		if len(errs) > 0 || len(calls) != 4 {
			t.Fatalf("%d calls, errors %v", len(calls), errs)
		}
		for _, c := range calls {
			if c.Known || c.Request() != nil || c.Response() != nil || len(c.Errors) > 0 || c.Status != 0 || c.Flags != 0 {
				t.Errorf("%s", summary(c))
			}
			if m := c.Responses[0]; m.Size != len(raw) || (noRedact != (m.Raw != nil)) || (noRedact && !bytes.Equal(m.Raw, raw)) {
				t.Errorf("noRedact=%v: response %+v", noRedact, m)
			}
		}
		if c := calls[0]; c.Service != "containerd.services.version.v1.Version" || c.Name != "Version" {
			t.Errorf("service %q name %q", c.Service, c.Name)
		}
		if c := calls[3]; c.Method != "not-a-path" || c.Service != "" || c.Name != "" {
			t.Errorf("bad path: %s", summary(c))
		}
	}
}

func TestV1alpha2(t *testing.T) {
	w, chunks := fixture(t)
	resp := &runtimeapi.VersionResponse{Version: "0.1.0", RuntimeName: "containerd", RuntimeVersion: "1.6", RuntimeApiVersion: "v1alpha2"}
	w.unary(1, "/runtime.v1alpha2.RuntimeService/Version", &runtimeapi.VersionRequest{Version: "0.1.0"}, resp)
	c := oneCall(t)(decodeChunks(Options{}, *chunks))
	if !c.Known || c.Service != "runtime.v1alpha2.RuntimeService" || !proto.Equal(c.Response(), resp) {
		t.Errorf("%s", summary(c))
	}
}

func TestRedaction(t *testing.T) {
	pull := &runtimeapi.PullImageRequest{
		Image: &runtimeapi.ImageSpec{Image: "registry.example/private:1"},
		Auth: &runtimeapi.AuthConfig{Username: "alice", Password: "s3cret", Auth: "YWxpY2U6czNjcmV0",
			ServerAddress: "registry.example", IdentityToken: "idt", RegistryToken: "rt"},
		SandboxConfig: &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "p"}},
	}
	create := &runtimeapi.CreateContainerRequest{PodSandboxId: "sb", Config: &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "sidecar"},
		Envs:     []*runtimeapi.KeyValue{{Key: "TOKEN", Value: []byte("hunter2")}, {Key: "EMPTY"}},
		Labels:   map[string]string{"keep": "me"},
	}}
	status := &runtimeapi.ContainerStatusResponse{Status: &runtimeapi.ContainerStatus{Id: "c1"},
		Info: map[string]string{"info": `{"config":{"envs":[{"key":"TOKEN","value":"hunter2"}]}}`, "pid": "42"}}
	w, chunks := fixture(t)
	w.headers(c2s, 1, false, reqHeaders(pathPull, "authorization", "Bearer xyz")...)
	w.data(c2s, 1, true, grpcMsg(t, pull))
	w.response(1, &runtimeapi.PullImageResponse{ImageRef: "sha256:1"})
	w.unary(3, pathCreate, create, &runtimeapi.CreateContainerResponse{ContainerId: "c1"})
	w.unary(5, pathStatus, &runtimeapi.ContainerStatusRequest{ContainerId: "c1", Verbose: true}, status)

	calls, errs := decodeChunks(Options{}, *chunks)
	if len(errs) > 0 || len(calls) != 3 {
		t.Fatalf("%d calls, errors %v", len(calls), errs)
	}
	a := calls[0].Request().(*runtimeapi.PullImageRequest).Auth
	if a.Username != Redacted || a.Password != Redacted || a.Auth != Redacted || a.ServerAddress != Redacted ||
		a.IdentityToken != Redacted || a.RegistryToken != Redacted {
		t.Errorf("auth not redacted: %v", a)
	}
	if img := calls[0].Request().(*runtimeapi.PullImageRequest).Image.Image; img != "registry.example/private:1" {
		t.Errorf("image redacted too: %q", img)
	}
	if v := headerValue(calls[0].RequestHeaders, "authorization"); v != Redacted {
		t.Errorf("authorization header %q", v)
	}
	envs := calls[1].Request().(*runtimeapi.CreateContainerRequest).Config.Envs
	if string(envs[0].Value) != Redacted || envs[0].Key != "TOKEN" || len(envs[1].Value) != 0 {
		t.Errorf("envs %v", envs)
	}
	if l := calls[1].Request().(*runtimeapi.CreateContainerRequest).Config.Labels["keep"]; l != "me" {
		t.Errorf("label redacted: %q", l)
	}
	info := calls[2].Response().(*runtimeapi.ContainerStatusResponse).Info
	if info["info"] != Redacted || info["pid"] != Redacted || len(info) != 2 {
		t.Errorf("info %v", info)
	}
	for _, c := range calls {
		for _, m := range append(c.Requests, c.Responses...) {
			if m.Raw != nil {
				t.Errorf("%s: raw bytes kept while redacting", c.Name)
			}
		}
	}

	calls, _ = decodeChunks(Options{NoRedact: true}, *chunks)
	if !proto.Equal(calls[0].Request(), pull) || !proto.Equal(calls[1].Request(), create) || !proto.Equal(calls[2].Response(), status) {
		t.Errorf("NoRedact changed messages")
	}
	if v := headerValue(calls[0].RequestHeaders, "authorization"); v != "Bearer xyz" {
		t.Errorf("NoRedact authorization header %q", v)
	}
	if raw, _ := proto.Marshal(pull); !bytes.Equal(calls[0].Requests[0].Raw, raw) {
		t.Errorf("NoRedact raw bytes differ")
	}
}

// Every type that can carry a secret is found from the descriptors.
func TestRedactionPlan(t *testing.T) {
	var r redactor
	for _, m := range []proto.Message{
		&runtimeapi.PullImageRequest{}, &runtimeapi.CreateContainerRequest{}, &runtimeapi.ContainerStatusResponse{},
		&runtimeapi.PodSandboxStatusResponse{}, &runtimeapi.StatusResponse{}, &runtimeapi.ImageStatusResponse{},
	} {
		if !r.needsRedaction(m.ProtoReflect().Descriptor()) {
			t.Errorf("%T: no redaction planned", m)
		}
	}
	for _, m := range []proto.Message{&runtimeapi.ListContainersResponse{}, &runtimeapi.ListPodSandboxResponse{}, &runtimeapi.VersionResponse{}} {
		if r.needsRedaction(m.ProtoReflect().Descriptor()) {
			t.Errorf("%T: redaction planned, none needed", m)
		}
	}
}

func TestMalformedMessage(t *testing.T) {
	w, chunks := fixture(t)
	w.headers(c2s, 1, false, reqHeaders(pathVersion)...)
	w.data(c2s, 1, true, frameMsg(0, []byte{0xff, 0xff, 0xff}))
	w.headers(s2c, 1, false, ":status", "200")
	w.data(s2c, 1, false, frameMsg(7, nil))
	w.data(s2c, 1, false, []byte{0, 0, 1, 0, 2, 1, 2}) // 7 bytes of a 65538-byte message
	w.trailers(1, "0", "")
	c := oneCall(t)(decodeChunks(Options{}, *chunks))
	if c.Flags != Malformed || !hasError(c.Errors, "request 1: unmarshal runtime.v1.VersionRequest") ||
		!hasError(c.Errors, "response 1: invalid compressed flag 7") || !hasError(c.Errors, "response message truncated: 2 of 65538 bytes") {
		t.Errorf("%s", summary(c))
	}
	if len(c.Requests) != 1 || c.Requests[0].Err == "" || c.Requests[0].Proto != nil {
		t.Errorf("requests %+v", c.Requests)
	}
}

func TestDecodeAll(t *testing.T) {
	var chunks []capture.Chunk
	now := t0
	a := newH2(t, 7, &now, &chunks)
	b := newH2(t, 3, &now, &chunks)
	b.request(1, pathVersion, &runtimeapi.VersionRequest{})
	a.unary(1, pathVersion, &runtimeapi.VersionRequest{}, &runtimeapi.VersionResponse{})
	b.response(1, &runtimeapi.VersionResponse{})
	a.request(3, pathVersion, &runtimeapi.VersionRequest{})
	var seen int
	calls, errs, err := DecodeAll(&sliceSource{chunks: chunks}, Options{OnCall: func(*Call) { seen++ }})
	if err != nil || len(errs) > 0 || len(calls) != 3 || seen != 3 {
		t.Fatalf("calls %d seen %d errs %v err %v", len(calls), seen, errs, err)
	}
	if calls[0].Conn != 3 || calls[1].Conn != 7 || calls[2].Stream != 3 || calls[2].Flags != Incomplete {
		t.Errorf("order:\n%s", summaries(calls, nil))
	}
	boom := errors.New("boom")
	if _, _, err := DecodeAll(&sliceSource{chunks: chunks, err: boom}, Options{}); !errors.Is(err, boom) {
		t.Errorf("source error: %v", err)
	}
}

func TestFlagsString(t *testing.T) {
	if s := (Incomplete | Gap | TrailersOnly | 1<<20).String(); s != "incomplete|gap|trailers-only|0x100000" {
		t.Errorf("%q", s)
	}
	if s := Flags(0).String(); s != "" {
		t.Errorf("%q", s)
	}
}
