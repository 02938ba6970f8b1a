package decode

import (
	"reflect"
	"testing"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// sameAsProto unmarshals b both ways and fails unless the messages (or
// the errors) agree. It says whether the maps were read from the wire.
func sameAsProto(t *testing.T, mf *mapFiller, typ protoreflect.MessageType, b []byte) (filled bool) {
	t.Helper()
	want := typ.New().Interface()
	werr := proto.Unmarshal(b, want)
	got, gerr := mf.unmarshal(typ, b)
	if (werr == nil) != (gerr == nil) {
		t.Fatalf("%s %x: error %v, proto.Unmarshal's %v", typ.Descriptor().FullName(), b, gerr, werr)
	}
	if werr == nil && !proto.Equal(got, want) {
		t.Fatalf("%s %x:\n got %v\nwant %v", typ.Descriptor().FullName(), b, got, want)
	}
	if plan := fillPlanFor(want); plan != nil && werr == nil {
		m := typ.New().Interface()
		body, changed, ok := mf.pruner.pruneAt(0, plan.prune, b)
		filled = ok && changed && proto.Unmarshal(body, m) == nil && mf.fill(plan, reflect.ValueOf(m).Elem(), b, 0)
	}
	return filled
}

func TestMapsFromWire(t *testing.T) {
	labels := map[string]string{"io.kubernetes.pod.name": "web", "io.kubernetes.pod.namespace": "default", "": "empty key", "empty value": ""}
	list := &runtimeapi.ListContainersResponse{Containers: []*runtimeapi.Container{
		{Id: "c1", Labels: labels, Annotations: map[string]string{"a": "1"}, Image: &runtimeapi.ImageSpec{Image: "nginx", Annotations: map[string]string{"i": "2"}}},
		{Id: "c2"}, // no maps: the lists must stay in step
		{Id: "c3", Labels: map[string]string{"x": "y"}},
	}}
	status := &runtimeapi.PodSandboxStatusResponse{
		Status: &runtimeapi.PodSandboxStatus{Id: "s1", Labels: labels, Annotations: map[string]string{"k": "v"}},
		Info:   map[string]string{"info": `{"pid": 42}`},
	}
	var mf mapFiller
	for _, m := range []proto.Message{list, status, &runtimeapi.CreateContainerRequest{
		PodSandboxId:  "s1",
		Config:        &runtimeapi.ContainerConfig{Labels: labels, Envs: []*runtimeapi.KeyValue{{Key: "A", Value: []byte("B")}}},
		SandboxConfig: &runtimeapi.PodSandboxConfig{Annotations: map[string]string{"z": "w"}},
	}} {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if !sameAsProto(t, &mf, m.ProtoReflect().Type(), b) {
			t.Errorf("%T: maps not read from the wire", m)
		}
	}

	// What protobuf-go reads its own way is left to it, with its result.
	typ := status.ProtoReflect().Type()
	entry := func(fields ...[]byte) []byte {
		var e []byte
		for _, f := range fields {
			e = append(e, f...)
		}
		return e
	}
	str := func(num protowire.Number, s string) []byte {
		return protowire.AppendString(protowire.AppendTag(nil, num, protowire.BytesType), s)
	}
	info := func(e []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), e)
	}
	inStatus := func(b []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), b)
	}
	cases := []struct {
		name   string
		b      []byte
		filled bool
	}{
		{"duplicate keys: the last wins", append(info(entry(str(1, "k"), str(2, "a"))), info(entry(str(1, "k"), str(2, "b")))...), true},
		{"key given twice in an entry", info(entry(str(1, "a"), str(1, "k"), str(2, "v"))), true},
		{"value first", info(entry(str(2, "v"), str(1, "k"))), true},
		{"entry without a value", info(entry(str(1, "k"))), true},
		{"empty entry", info(nil), true},
		{"unknown field in an entry", info(entry(str(1, "k"), str(3, "x"), str(2, "v"))), false},
		{"varint in an entry", info(entry(str(1, "k"), protowire.AppendVarint(protowire.AppendTag(nil, 2, protowire.VarintType), 7))), false},
		{"invalid UTF-8 key", info(entry(str(1, "\xff"), str(2, "v"))), false},
		{"invalid UTF-8 key, then a valid one", info(entry(str(1, "\xff"), str(1, "k"), str(2, "v"))), false},
		{"invalid UTF-8 value, then a valid one", info(entry(str(1, "k"), str(2, "\xc3"), str(2, "v"))), false},
		{"invalid UTF-8 value", inStatus(append(str(1, "s1"), protowire.AppendBytes(protowire.AppendTag(nil, 7, protowire.BytesType), entry(str(1, "k"), str(2, "\xc3")))...)), false},
		{"status given twice, merged", append(inStatus(protowire.AppendBytes(protowire.AppendTag(nil, 7, protowire.BytesType), entry(str(1, "a"), str(2, "1")))), inStatus(protowire.AppendBytes(protowire.AppendTag(nil, 7, protowire.BytesType), entry(str(1, "b"), str(2, "2"))))...), false},
		{"cut entry", info(entry(str(1, "k"), str(2, "v")))[:5], false},
		{"map field as a varint", append(protowire.AppendVarint(protowire.AppendTag(nil, 2, protowire.VarintType), 3), info(entry(str(1, "k"), str(2, "v")))...), true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := sameAsProto(t, &mf, typ, c.b); got != c.filled {
				t.Errorf("read from the wire: %v, want %v", got, c.filled)
			}
		})
	}
}

// Strings are shared, and the table stays bounded.
func TestMapStringsShared(t *testing.T) {
	var mf mapFiller
	a, b := mf.str([]byte("io.kubernetes.pod.name")), mf.str([]byte("io.kubernetes.pod.name"))
	if a != "io.kubernetes.pod.name" || b != a {
		t.Fatalf("got %q and %q", a, b)
	}
	if unsafe.StringData(a) != unsafe.StringData(b) {
		t.Error("equal strings not shared")
	}
	for i := range 3 * maxShared {
		mf.str([]byte{byte(i), byte(i >> 8), 'x'})
	}
	if len(mf.strs) > maxShared {
		t.Errorf("%d shared strings, bound %d", len(mf.strs), maxShared)
	}
}

// Every message of the real captures is what proto.Unmarshal makes, and
// the maps of most were read from the wire.
func TestMapsFromWireCaptures(t *testing.T) {
	total, filled := 0, 0
	for _, path := range kubeletCaptures(t) {
		chunks := readChunks(t, path)
		var mf mapFiller
		check := func(m Message) {
			if m.Proto == nil || m.Raw == nil {
				return
			}
			typ := m.Proto.ProtoReflect().Type()
			want := typ.New().Interface()
			if err := proto.Unmarshal(m.Raw, want); err != nil {
				t.Fatalf("%s: %v", captureName(path), err)
			}
			if !proto.Equal(m.Proto, want) {
				t.Fatalf("%s: decoded %v\nproto.Unmarshal %v", captureName(path), m.Proto, want)
			}
			total++
			if sameAsProto(t, &mf, typ, m.Raw) {
				filled++
			}
		}
		d := New(Options{NoRedact: true,
			OnCall: func(c *Call) {
				for _, l := range [][]Message{c.Requests, c.Responses} {
					for _, m := range l {
						check(m)
					}
				}
			},
			OnStreamMessage: func(_ *Call, m Message) { check(m) },
		})
		for _, c := range chunks {
			d.Feed(c)
		}
		d.Close()
	}
	t.Logf("%d messages, %d with maps read from the wire", total, filled)
	if filled == 0 || total == 0 {
		t.Fatalf("%d messages, %d with maps read from the wire", total, filled)
	}
}

// FuzzMapsFromWire: whatever the bytes, the message or the error is
// proto.Unmarshal's.
func FuzzMapsFromWire(f *testing.F) {
	types := []protoreflect.MessageType{
		(&runtimeapi.ListContainersResponse{}).ProtoReflect().Type(),
		(&runtimeapi.PodSandboxStatusResponse{}).ProtoReflect().Type(),
		(&runtimeapi.ContainerStatusResponse{}).ProtoReflect().Type(),
		(&runtimeapi.CreateContainerRequest{}).ProtoReflect().Type(),
		(&runtimeapi.ListPodSandboxStatsResponse{}).ProtoReflect().Type(),
	}
	for i, m := range []proto.Message{
		&runtimeapi.ListContainersResponse{Containers: []*runtimeapi.Container{{Id: "c", Labels: map[string]string{"a": "b"}}, {Id: "d"}}},
		&runtimeapi.PodSandboxStatusResponse{Status: &runtimeapi.PodSandboxStatus{Annotations: map[string]string{"k": "v"}}, Info: map[string]string{"i": "j"}},
		&runtimeapi.ContainerStatusResponse{Status: &runtimeapi.ContainerStatus{Image: &runtimeapi.ImageSpec{Annotations: map[string]string{"x": "y"}}}},
		&runtimeapi.CreateContainerRequest{Config: &runtimeapi.ContainerConfig{Labels: map[string]string{"l": "m"}}},
		&runtimeapi.ListPodSandboxStatsResponse{Stats: []*runtimeapi.PodSandboxStats{{Attributes: &runtimeapi.PodSandboxAttributes{Labels: map[string]string{"p": "q"}}}}},
	} {
		b, _ := proto.Marshal(m)
		f.Add(uint8(i), b)
	}
	var mf mapFiller
	f.Fuzz(func(t *testing.T, which uint8, b []byte) {
		sameAsProto(t, &mf, types[int(which)%len(types)], b)
	})
}
