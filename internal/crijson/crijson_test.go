package crijson

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/criseq/criseq/capture"
	"github.com/criseq/criseq/decode"
)

// reference is what protojson writes, compacted.
func reference(t *testing.T, m proto.Message) string {
	t.Helper()
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		t.Fatalf("protojson: %v", err)
	}
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

func check(t *testing.T, e *Encoder, m proto.Message) {
	t.Helper()
	got, err := e.Append(nil, m)
	if err != nil {
		t.Fatalf("%s: %v", m.ProtoReflect().Descriptor().FullName(), err)
	}
	if want := reference(t, m); string(got) != want {
		t.Fatalf("%s:\n got %s\nwant %s", m.ProtoReflect().Descriptor().FullName(), got, want)
	}
}

// TestRandomMessages fills every CRI message type with random values (every
// kind, lists, maps, nested messages, enum numbers without a name, NaN,
// infinities, -0, strings with escapes) and compares with protojson.
func TestRandomMessages(t *testing.T) {
	fd := runtimeapi.File_staging_src_k8s_io_cri_api_pkg_apis_runtime_v1_api_proto
	rng := rand.New(rand.NewSource(1))
	var e Encoder
	msgs := fd.Messages()
	for round := range 40 {
		for i := range msgs.Len() {
			md := msgs.Get(i)
			mt, err := protoregistry.GlobalTypes.FindMessageByName(md.FullName())
			if err != nil {
				t.Fatal(err)
			}
			m := mt.New()
			fill(rng, m, 3, round%4 == 0)
			check(t, &e, m.Interface())
		}
	}
}

var texts = []string{"", "a", "web", "naïve ☃", "quote\" back\\slash", "ctl\x00\x01\x1f\x7f", "tab\tnl\ncr\r\b\f", "<html>&amp;", "\u2028\u2029", "𝄞 emoji 🙂", strings.Repeat("x", 300)}

func fill(rng *rand.Rand, m protoreflect.Message, depth int, sparse bool) {
	fds := m.Descriptor().Fields()
	for i := range fds.Len() {
		fd := fds.Get(i)
		if sparse && rng.Intn(3) > 0 {
			continue
		}
		switch {
		case fd.IsMap():
			mp := m.Mutable(fd).Map()
			for range rng.Intn(5) {
				k := scalarValue(rng, fd.MapKey())
				if fd.MapValue().Kind() == protoreflect.MessageKind {
					if depth == 0 {
						continue
					}
					v := mp.NewValue()
					fill(rng, v.Message(), depth-1, sparse)
					mp.Set(k.MapKey(), v)
				} else {
					mp.Set(k.MapKey(), scalarValue(rng, fd.MapValue()))
				}
			}
		case fd.IsList():
			l := m.Mutable(fd).List()
			for range rng.Intn(4) {
				if fd.Kind() == protoreflect.MessageKind {
					if depth == 0 {
						continue
					}
					v := l.NewElement()
					fill(rng, v.Message(), depth-1, sparse)
					l.Append(v)
				} else {
					l.Append(scalarValue(rng, fd))
				}
			}
		case fd.Kind() == protoreflect.MessageKind:
			if depth > 0 {
				fill(rng, m.Mutable(fd).Message(), depth-1, sparse)
			}
		default:
			m.Set(fd, scalarValue(rng, fd))
		}
	}
}

func scalarValue(rng *rand.Rand, fd protoreflect.FieldDescriptor) protoreflect.Value {
	ints := []int64{0, 1, -1, 127, 128, -300, math.MaxInt32, math.MinInt32, math.MaxInt64, math.MinInt64, 1 << 40}
	floats := []float64{0, math.Copysign(0, -1), 1.5, -2.25, 1e-7, 1e21, 3.4e38, 1e300, 5e-324, math.NaN(), math.Inf(1), math.Inf(-1), 0.1, 123456789}
	in := ints[rng.Intn(len(ints))]
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(rng.Intn(2) == 0)
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(int32(in))
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(uint32(in))
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(in)
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(uint64(in))
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(float32(floats[rng.Intn(len(floats))]))
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(floats[rng.Intn(len(floats))])
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(texts[rng.Intn(len(texts))])
	case protoreflect.BytesKind:
		b := make([]byte, rng.Intn(40))
		rng.Read(b)
		return protoreflect.ValueOfBytes(b)
	case protoreflect.EnumKind:
		vals := fd.Enum().Values()
		if rng.Intn(5) == 0 {
			return protoreflect.ValueOfEnum(protoreflect.EnumNumber(1000 + rng.Intn(5)))
		}
		return protoreflect.ValueOfEnum(vals.Get(rng.Intn(vals.Len())).Number())
	}
	panic(fd.Kind())
}

// TestCaptures compares every message of the repository's real captures,
// redacted and not.
func TestCaptures(t *testing.T) {
	var e Encoder
	n := 0
	for _, noRedact := range []bool{false, true} {
		for _, m := range captureMessages(t, noRedact) {
			if m.Proto != nil {
				check(t, &e, m.Proto)
				n++
			}
		}
	}
	t.Logf("%d messages", n)
}

// captureMessages decodes the repository's real captures.
func captureMessages(t *testing.T, noRedact bool) []decode.Message {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "*", "capture.pcapng"))
	if len(files) == 0 {
		t.Fatal("no testdata captures")
	}
	var msgs []decode.Message
	for _, f := range files {
		src, err := capture.OpenFile(f)
		if err != nil {
			t.Fatal(err)
		}
		calls, _, err := decode.DecodeAll(src, decode.Options{NoRedact: noRedact})
		src.Close()
		if err != nil && !errors.Is(err, io.EOF) {
			t.Fatal(err)
		}
		for _, c := range calls {
			msgs = append(append(msgs, c.Requests...), c.Responses...)
		}
	}
	return msgs
}

// TestOtherMessages: a message that is not a CRI type goes through
// protojson.
func TestOtherMessages(t *testing.T) {
	mt, err := protoregistry.GlobalTypes.FindMessageByName("google.protobuf.FileDescriptorProto")
	if err != nil {
		t.Skip("descriptorpb not linked in")
	}
	m := mt.New()
	fill(rand.New(rand.NewSource(2)), m, 2, true)
	check(t, &Encoder{}, m.Interface())
}

func TestInvalidUTF8(t *testing.T) {
	var e Encoder
	m := &runtimeapi.VersionResponse{RuntimeName: "bad\xff"}
	if _, err := e.Append(nil, m); err == nil {
		t.Error("invalid UTF-8 in a string field: no error")
	}
	if _, err := protojson.Marshal(m); err == nil {
		t.Error("protojson took it: then so should this")
	}
}

// TestGenerated: cri_json.go is what the generator writes for the cri-api
// version in go.mod.
func TestGenerated(t *testing.T) {
	out := filepath.Join(t.TempDir(), "cri_json.go")
	cmd := exec.Command("go", "run", "./gen", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go run ./gen: %v\n%s", err, b)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("cri_json.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Error("cri_json.go is stale: run go generate ./internal/crijson")
	}
}

func BenchmarkEncoder(b *testing.B) {
	m := &runtimeapi.ListContainersResponse{}
	for i := range 40 {
		m.Containers = append(m.Containers, &runtimeapi.Container{Id: strings.Repeat("ab", 32), PodSandboxId: strings.Repeat("cd", 32),
			Metadata: &runtimeapi.ContainerMetadata{Name: "web", Attempt: uint32(i)}, Image: &runtimeapi.ImageSpec{Image: "registry.example/app:1"},
			ImageRef: "sha256:" + strings.Repeat("ef", 32), State: runtimeapi.ContainerState_CONTAINER_RUNNING, CreatedAt: 1_700_000_000_000_000_000,
			Labels:      map[string]string{"io.kubernetes.container.name": "web", "io.kubernetes.pod.name": "pod", "io.kubernetes.pod.namespace": "default", "io.kubernetes.pod.uid": "0123"},
			Annotations: map[string]string{"io.kubernetes.container.hash": "e30b88e", "io.kubernetes.container.restartCount": "0"}})
	}
	b.Run("crijson", func(b *testing.B) {
		var e Encoder
		var buf []byte
		for b.Loop() {
			buf, _ = e.Append(buf[:0], m)
		}
		b.SetBytes(int64(len(buf)))
	})
	b.Run("protojson", func(b *testing.B) {
		var out bytes.Buffer
		for b.Loop() {
			j, _ := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
			out.Reset()
			json.Compact(&out, j)
		}
		b.SetBytes(int64(out.Len()))
	})
}
