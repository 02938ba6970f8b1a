package crijson

import (
	"math/rand"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/criseq/criseq/decode"
)

// fromDecoded is what Encoder.Append writes of b decoded as md (and
// redacted as decode redacts it); ok false where proto.Unmarshal refuses b.
func fromDecoded(t testing.TB, md protoreflect.MessageDescriptor, b []byte, redact bool) (string, bool) {
	t.Helper()
	mt, err := protoregistry.GlobalTypes.FindMessageByName(md.FullName())
	if err != nil {
		t.Fatal(err)
	}
	m := mt.New().Interface()
	if proto.Unmarshal(b, m) != nil {
		return "", false
	}
	if redact {
		var r decode.Redaction
		r.Message(m)
	}
	var e Encoder
	out, err := e.Append(nil, m)
	if err != nil {
		return "", false
	}
	return string(out), true
}

// checkWire: whatever Wire writes of b is what decoding b gives; must:
// it may not decline.
func checkWire(t testing.TB, w *Wire, md protoreflect.MessageDescriptor, b []byte, redact, must bool) bool {
	t.Helper()
	got, ok := w.Append([]byte("prefix"), md, b)
	if string(got[:6]) != "prefix" {
		t.Fatalf("%s: the bytes before were changed: %q", md.FullName(), got)
	}
	checkWritten(t, w, md, b, ok, got[6:])
	if !ok {
		if string(got) != "prefix" {
			t.Fatalf("%s: declined, but appended %q", md.FullName(), got[6:])
		}
		if must {
			t.Fatalf("%s: declined bytes proto.Marshal wrote: %x", md.FullName(), b)
		}
		return false
	}
	want, wok := fromDecoded(t, md, b, redact)
	if !wok {
		t.Fatalf("%s: wrote %s from bytes proto.Unmarshal or the Encoder refuses: %x", md.FullName(), got[6:], b)
	}
	if string(got[6:]) != want {
		t.Fatalf("%s (redact %v), bytes %x:\n got %s\nwant %s", md.FullName(), redact, b, got[6:], want)
	}
	return true
}

// checkWritten: Check says what Append said (ok), and Write writes what
// Append appended, in pieces that each end outside any string: here a
// piece after each element of the message's lists and maps.
func checkWritten(t testing.TB, w *Wire, md protoreflect.MessageDescriptor, b []byte, ok bool, want []byte) {
	t.Helper()
	if c := w.Check(md, b); c != ok {
		t.Fatalf("%s: Check says %v, Append %v: %x", md.FullName(), c, ok, b)
	}
	if !ok {
		return
	}
	defer func(n int) { flushAt = n }(flushAt)
	flushAt = 1
	var pw pieces
	if wok, err := w.Write(&pw, md, b); !wok || err != nil {
		t.Fatalf("%s: Write: %v, %v after Check said ok", md.FullName(), wok, err)
	}
	var all []byte
	in := false
	for i, p := range pw {
		all = append(all, p...)
		in = inString(in, p)
		if in {
			t.Fatalf("%s: piece %d of %d ends inside a string: %q", md.FullName(), i+1, len(pw), p)
		}
	}
	if string(all) != string(want) {
		t.Fatalf("%s: Write wrote\n%s\nAppend\n%s", md.FullName(), all, want)
	}
}

// pieces records each Write.
type pieces [][]byte

func (p *pieces) Write(b []byte) (int, error) {
	*p = append(*p, append([]byte(nil), b...))
	return len(b), nil
}

// inString says whether JSON that was inside a string (in) is after b.
func inString(in bool, b []byte) bool {
	for i := 0; i < len(b); i++ {
		switch {
		case in && b[i] == '\\':
			i++
		case b[i] == '"':
			in = !in
		}
	}
	return in
}

// TestWireRandom: every CRI message type filled with random values (every
// kind, lists, maps, nested messages, NaN, -0, unnamed enum numbers,
// escapes), as proto.Marshal writes it, redacted and not.
func TestWireRandom(t *testing.T) {
	fd := runtimeapi.File_staging_src_k8s_io_cri_api_pkg_apis_runtime_v1_api_proto
	rng := rand.New(rand.NewSource(3))
	ws := map[bool]*Wire{false: NewWire(false), true: NewWire(true)}
	msgs := fd.Messages()
	n := 0
	for round := range 40 {
		for i := range msgs.Len() {
			md := msgs.Get(i)
			mt, _ := protoregistry.GlobalTypes.FindMessageByName(md.FullName())
			m := mt.New()
			fill(rng, m, 3, round%4 == 0)
			b, err := proto.Marshal(m.Interface())
			if err != nil {
				t.Fatal(err)
			}
			for redact, w := range ws {
				checkWire(t, w, md, b, redact, true)
				n++
			}
		}
	}
	t.Logf("%d messages", n)
}

// TestWireCaptures: every message of the repository's real captures.
func TestWireCaptures(t *testing.T) {
	ws := map[bool]*Wire{false: NewWire(false), true: NewWire(true)}
	n, secrets := 0, 0
	for _, m := range captureMessages(t, true) {
		if m.Proto == nil || m.Raw == nil {
			continue
		}
		md := m.Proto.ProtoReflect().Descriptor()
		for redact, w := range ws {
			checkWire(t, w, md, m.Raw, redact, true)
		}
		var r decode.Redaction
		if r.Message(proto.Clone(m.Proto)) {
			secrets++
		}
		n++
	}
	if secrets == 0 {
		t.Error("no message with secrets: the redaction is not tested")
	}
	t.Logf("%d messages, %d of types with secrets", n, secrets)
}

// wireMsg builds wire bytes by hand: pairs of field number and value
// (string, []byte: length-delimited; uint64: varint).
func wireMsg(fields ...any) []byte {
	var b []byte
	for i := 0; i < len(fields); i += 2 {
		num := protowire.Number(fields[i].(int))
		switch v := fields[i+1].(type) {
		case string:
			b = protowire.AppendTag(b, num, protowire.BytesType)
			b = protowire.AppendString(b, v)
		case []byte:
			b = protowire.AppendTag(b, num, protowire.BytesType)
			b = protowire.AppendBytes(b, v)
		case uint64:
			b = protowire.AppendTag(b, num, protowire.VarintType)
			b = protowire.AppendVarint(b, v)
		case uint32:
			b = protowire.AppendTag(b, num, protowire.Fixed32Type)
			b = protowire.AppendFixed32(b, v)
		}
	}
	return b
}

// TestWireHandMade: bytes no protobuf encoder writes, but a capture may
// hold: written when the result is certain, declined otherwise.
func TestWireHandMade(t *testing.T) {
	md := func(m proto.Message) protoreflect.MessageDescriptor { return m.ProtoReflect().Descriptor() }
	meta := wireMsg(1, "web", 2, "uid", 3, "default", 4, uint64(2))
	label := func(k, v string) []byte { return wireMsg(1, k, 2, v) }
	cases := []struct {
		name  string
		md    protoreflect.MessageDescriptor
		b     []byte
		wrote bool
	}{
		{"fields out of order", md(&runtimeapi.PodSandboxMetadata{}), wireMsg(4, uint64(1), 1, "web", 3, "ns"), true},
		{"unknown fields", md(&runtimeapi.PodSandboxMetadata{}), wireMsg(99, "x", 1, "web", 50, uint64(7)), true},
		{"zero written out", md(&runtimeapi.PodSandboxMetadata{}), wireMsg(1, "", 4, uint64(0)), true},
		{"int32 past 32 bits", md(&runtimeapi.PodSandboxMetadata{}), wireMsg(4, uint64(1<<32)), true},
		{"enum without a name", md(&runtimeapi.ContainerStatus{}), wireMsg(3, uint64(77)), true},
		{"empty message", md(&runtimeapi.PodSandbox{}), wireMsg(2, []byte{}), true},
		{"two lists interleaved", md(&runtimeapi.ContainerConfig{}), wireMsg(4, "a1", 3, "c1", 4, "a2", 3, "c2", 2, wireMsg(1, "img"), 3, "c3"), true},
		{"list split by another field", md(&runtimeapi.ListContainersResponse{}), wireMsg(1, wireMsg(1, "a"), 9, "x", 1, wireMsg(1, "b")), true},
		{"map entries unsorted", md(&runtimeapi.PodSandbox{}), wireMsg(6, label("z", "1"), 6, label("a", "2"), 6, label("m", "")), true},
		{"map entry without value", md(&runtimeapi.PodSandbox{}), wireMsg(6, wireMsg(1, "k")), true},
		{"map entry without key", md(&runtimeapi.PodSandbox{}), wireMsg(6, wireMsg(2, "v")), true},
		{"info values redacted, one missing", md(&runtimeapi.ContainerStatusResponse{}), wireMsg(2, label("info", "{\"env\":\"SECRET\"}"), 2, wireMsg(1, "empty")), true},
		{"env values redacted, one empty", md(&runtimeapi.ContainerConfig{}), wireMsg(6, wireMsg(1, "A", 2, "secret"), 6, wireMsg(1, "B")), true},
		{"auth redacted", md(&runtimeapi.PullImageRequest{}), wireMsg(2, wireMsg(1, "user", 2, "pass", 3, "", 4, "server")), true},
		{"packed and not", md(&runtimeapi.LinuxContainerSecurityContext{}), wireMsg(0, nil), true},
		{"singular field twice", md(&runtimeapi.PodSandboxMetadata{}), wireMsg(1, "a", 1, "b"), false},
		{"message twice (merged)", md(&runtimeapi.PodSandbox{}), wireMsg(2, meta, 2, meta), false},
		{"map key twice", md(&runtimeapi.PodSandbox{}), wireMsg(6, label("k", "1"), 6, label("k", "2")), false},
		{"wire type not the field's", md(&runtimeapi.PodSandboxMetadata{}), wireMsg(4, "x"), false},
		{"fixed32 where a varint goes", md(&runtimeapi.PodSandboxMetadata{}), wireMsg(4, uint32(5)), false},
		{"invalid UTF-8", md(&runtimeapi.PodSandboxMetadata{}), wireMsg(1, "bad\xff"), false},
		{"invalid UTF-8 in a redacted value", md(&runtimeapi.PullImageRequest{}), wireMsg(2, wireMsg(2, "bad\xff")), false},
		{"bytes env value, not UTF-8", md(&runtimeapi.ContainerConfig{}), wireMsg(6, wireMsg(1, "A", 2, "bad\xff")), true},
		{"invalid UTF-8 in a map key", md(&runtimeapi.PodSandbox{}), wireMsg(6, label("\xff", "v")), false},
		{"map entry with a third field", md(&runtimeapi.PodSandbox{}), wireMsg(6, wireMsg(1, "k", 2, "v", 3, "x")), false},
		{"truncated", md(&runtimeapi.PodSandboxMetadata{}), wireMsg(1, "web")[:3], false},
		{"group", md(&runtimeapi.PodSandboxMetadata{}), []byte{0x0b, 0x0c}, false},
	}
	// Supplemental groups as a packed run and as single values.
	sc := protowire.AppendTag(nil, 8, protowire.BytesType)
	sc = protowire.AppendBytes(sc, protowire.AppendVarint(protowire.AppendVarint(nil, 1), 300))
	sc = protowire.AppendTag(sc, 8, protowire.VarintType)
	sc = protowire.AppendVarint(sc, 7)
	sc = protowire.AppendTag(sc, 8, protowire.BytesType)
	sc = protowire.AppendBytes(sc, nil)
	for i := range cases {
		if cases[i].name == "packed and not" {
			cases[i].b = sc
		}
	}
	for _, c := range cases {
		for _, redact := range []bool{false, true} {
			w := NewWire(redact)
			if got := checkWire(t, w, c.md, c.b, redact, false); got != c.wrote {
				t.Errorf("%s (redact %v): wrote %v, want %v", c.name, redact, got, c.wrote)
			}
			// The Wire is as good after declining.
			checkWire(t, w, (&runtimeapi.PodSandboxMetadata{}).ProtoReflect().Descriptor(), wireMsg(1, "after", 4, uint64(1)), redact, true)
		}
	}
}

// FuzzWire: whatever Wire writes of any bytes is what decoding them gives.
func FuzzWire(f *testing.F) {
	fd := runtimeapi.File_staging_src_k8s_io_cri_api_pkg_apis_runtime_v1_api_proto
	msgs := fd.Messages()
	rng := rand.New(rand.NewSource(4))
	for i := range msgs.Len() {
		md := msgs.Get(i)
		mt, _ := protoregistry.GlobalTypes.FindMessageByName(md.FullName())
		m := mt.New()
		fill(rng, m, 2, true)
		b, _ := proto.Marshal(m.Interface())
		f.Add(uint16(i), b, i%2 == 0)
	}
	ws := map[bool]*Wire{false: NewWire(false), true: NewWire(true)}
	f.Fuzz(func(t *testing.T, typ uint16, b []byte, redact bool) {
		md := msgs.Get(int(typ) % msgs.Len())
		checkWire(t, ws[redact], md, b, redact, false)
	})
}

// TestPlainRun: eight bytes at a time, what a byte at a time finds, with
// each byte value at each place of a word.
func TestPlainRun(t *testing.T) {
	slow := func(s string, i int) int {
		for i < len(s) && s[i] >= ' ' && s[i] != '"' && s[i] != '\\' && s[i] < 0x80 {
			i++
		}
		return i
	}
	base := []byte("abcdefghijklmnopqrstuvwx")
	for c := range 256 {
		for at := range len(base) {
			b := append([]byte(nil), base...)
			b[at] = byte(c)
			for from := range 3 {
				if got, want := PlainRun(string(b), from), slow(string(b), from); got != want {
					t.Fatalf("byte %#x at %d, from %d: %d, want %d", c, at, from, got, want)
				}
			}
		}
	}
	rng := rand.New(rand.NewSource(5))
	for range 20000 {
		b := make([]byte, rng.Intn(40))
		for i := range b {
			b[i] = byte(0x1e + rng.Intn(0x62)) // around the edges: 0x1e..0x7f
			if rng.Intn(10) == 0 {
				b[i] = byte(rng.Intn(256))
			}
		}
		if got, want := PlainRun(string(b), 0), slow(string(b), 0); got != want {
			t.Fatalf("%q: %d, want %d", b, got, want)
		}
	}
}
