package decode

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/criseq/criseq/capture"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// keptOrCopied are the options of a decoder that keeps every message as
// it came (keep), or a copy of its bytes (--no-redact), handing calls to
// onCall.
func keptOrCopied(keep bool, onCall func(*Call)) Options {
	opts := Options{ListsUnary: true, OnCall: onCall}
	if keep {
		opts.Encode = func(protoreflect.MessageDescriptor, []byte) ([]byte, bool) { return nil, false }
		opts.KeepWire = func(protoreflect.MessageDescriptor, []byte) bool { return true }
	} else {
		opts.NoRedact = true
	}
	return opts
}

// wireOf decodes chunks cut at at and returns each message's bytes by
// call and place: with keep, what Message.Wire kept of every message
// (KeepWire says yes to all), read once the whole capture is decoded;
// else the copies --no-redact keeps (Message.Raw) of those decoded.
func wireOf(t *testing.T, chunks []capture.Chunk, at pos, keep bool) (map[string][]byte, int) {
	t.Helper()
	var calls []*Call
	d := New(keptOrCopied(keep, func(c *Call) { calls = append(calls, c) }))
	cutFeedEach(d, chunks, at, func() {})
	d.Close()
	out, held := map[string][]byte{}, 0
	for _, c := range calls {
		for dir, ms := range [][]Message{c.Requests, c.Responses} {
			for i, m := range ms {
				k := fmt.Sprint(c.Conn, " ", c.Stream, " ", dir, " ", i)
				switch {
				case !keep:
					if m.Proto != nil {
						out[k] = m.Raw
					}
				case m.Wire != nil:
					out[k] = m.Wire.Bytes
					if m.Wire.Type == nil {
						t.Fatalf("%s: kept without its type", k)
					}
					if m.Size > 16<<10 {
						held++ // more than a frame: held by the assembler
					}
				}
			}
		}
	}
	return out, held
}

// A message kept as it came (Options.KeepWire) keeps its bytes: the
// assembler's buffer it took is not reused for later messages, the
// bytes of a frame decoded in place are copied, and those of a call
// named late (caught midway) are its own. Real captures, whole and cut,
// and real grpc-go peers' ListContainers answers held across frames.
func TestKeepWireKeepsBytes(t *testing.T) {
	cc, rec := criPeers(t, fakeRuntime{containers: 40})
	rt := runtimeapi.NewRuntimeServiceClient(cc)
	for range 6 {
		if _, err := rt.ListContainers(context.Background(), &runtimeapi.ListContainersRequest{}); err != nil {
			t.Fatal(err)
		}
		if _, err := rt.Version(context.Background(), &runtimeapi.VersionRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	cc.Close()
	sets := map[string][]capture.Chunk{"grpc-go": rec.take()}
	for _, name := range []string{"kubelet-missing", "kubelet-warm"} {
		sets[name] = readChunks(t, kubeletCapture(t, name))
	}
	n, held := 0, 0
	for name, chunks := range sets {
		ats := []pos{{}}
		if name != "grpc-go" {
			p := planCapture(t, chunks)
			for i := 0; i < len(p.bounds); i += len(p.bounds)/7 + 1 {
				ats = append(ats, p.bounds[i])
			}
		}
		for _, at := range ats {
			got, h := wireOf(t, chunks, at, true)
			want, _ := wireOf(t, chunks, at, false)
			for k, w := range want {
				g, ok := got[k]
				if !ok {
					t.Fatalf("%s cut at %v: message %s not kept", name, at, k)
				}
				if !bytes.Equal(g, w) {
					t.Fatalf("%s cut at %v: message %s kept %d bytes that differ from the %d it came with", name, at, k, len(g), len(w))
				}
				n++
			}
			held += h
		}
	}
	t.Logf("%d messages kept as they came, %d of them held across frames", n, held)
	if held < 6 {
		t.Errorf("%d messages held across frames, want the 6 answers at least", held)
	}
}

// Options.FieldsAbove: a message up to it is decoded whole, maps and all
// (the HTML viewer shows it); a larger one only to Fields, without maps
// (real grpc-go peers, a ListContainers answer of about 31 KB).
func TestFieldsAbove(t *testing.T) {
	cc, rec := criPeers(t, fakeRuntime{containers: 40})
	if _, err := runtimeapi.NewRuntimeServiceClient(cc).ListContainers(context.Background(), &runtimeapi.ListContainersRequest{}); err != nil {
		t.Fatal(err)
	}
	cc.Close()
	chunks := rec.take()
	fields := map[protoreflect.FullName][]string{"runtime.v1.ListContainersResponse": {"containers.id"}}
	for _, above := range []int{0, 16 << 10, 64 << 10} {
		var got *runtimeapi.ListContainersResponse
		d := New(Options{Fields: fields, FieldsAbove: above, OnCall: func(c *Call) {
			if r, ok := c.Response().(*runtimeapi.ListContainersResponse); ok {
				got = r
			}
		}})
		cutFeedEach(d, chunks, pos{}, func() {})
		d.Close()
		if got == nil || len(got.Containers) != 40 {
			t.Fatalf("above %d: answer %v", above, got)
		}
		ct := got.Containers[0]
		whole := ct.GetImageRef() != "" && len(ct.GetLabels()) > 0
		if want := above == 64<<10; whole != want || ct.GetId() == "" {
			t.Errorf("above %d: decoded whole %v, want %v (id %q)", above, whole, want, ct.GetId())
		}
	}
}

// Bytes handed back (Recycle) are where the next large message is
// assembled: each answer kept is whole and right, and from the second on
// it lies in the buffer of the one before (real grpc-go peers, four
// ListContainers answers of about 2.3 MB).
func TestRecycledBuffer(t *testing.T) {
	cc, rec := criPeers(t, fakeRuntime{containers: 3000})
	rt := runtimeapi.NewRuntimeServiceClient(cc)
	for range 4 {
		if _, err := rt.ListContainers(context.Background(), &runtimeapi.ListContainersRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	cc.Close()
	chunks := rec.take()
	want, _ := wireOf(t, chunks, pos{}, false)
	var d *Decoder
	var last []byte
	n, reused := 0, 0
	d = New(Options{
		Encode:   func(protoreflect.MessageDescriptor, []byte) ([]byte, bool) { return nil, false },
		KeepWire: func(_ protoreflect.MessageDescriptor, b []byte) bool { return len(b) > 1<<20 },
		OnCall: func(c *Call) {
			for i, m := range c.Responses {
				if m.Wire == nil {
					continue
				}
				k := fmt.Sprint(c.Conn, " ", c.Stream, " ", 1, " ", i)
				if !bytes.Equal(m.Wire.Bytes, want[k]) {
					t.Fatalf("answer %s: %d bytes kept differ from the %d it came with", k, len(m.Wire.Bytes), len(want[k]))
				}
				if last != nil && &m.Wire.Bytes[0] == &last[0] {
					reused++
				}
				n++
				last = m.Wire.Bytes
				d.Recycle(m.Wire.Bytes) // printed: done with
			}
		},
	})
	cutFeedEach(d, chunks, pos{}, func() {})
	d.Close()
	if n != 4 || reused != 3 {
		t.Errorf("%d answers kept, %d in the buffer handed back before; want 4 and 3", n, reused)
	}
}

// FuzzKeepWire: whatever bytes come, from the start or caught midway, in
// pieces of any size, every message kept as it came (KeepWire) keeps the
// bytes a decoder keeping copies (NoRedact) sees, read once all is
// decoded; the calls are the same either way.
func FuzzKeepWire(f *testing.F) {
	for _, s := range seedStreams(f) {
		f.Add(s[0], s[1], uint16(0), uint16(0), uint8(7))
	}
	resyncSeeds(f)
	// Answers held across frames, in buffers the assembler would reuse.
	cc, rec := criPeers(f, fakeRuntime{containers: 40})
	for range 2 {
		if _, err := runtimeapi.NewRuntimeServiceClient(cc).ListContainers(context.Background(), &runtimeapi.ListContainersRequest{}); err != nil {
			f.Fatal(err)
		}
	}
	cc.Close()
	st := dirStreams(rec.take())
	f.Add(st[[2]uint64{1, 0}], st[[2]uint64{1, 1}], uint16(0), uint16(0), uint8(255))
	f.Fuzz(func(t *testing.T, c, s []byte, cutC, cutS uint16, piece uint8) {
		kept, a := decodeFuzzed(func(on func(*Call)) Options { return keptOrCopied(true, on) }, c, s, cutC, cutS, piece)
		raw, b := decodeFuzzed(func(on func(*Call)) Options { return keptOrCopied(false, on) }, c, s, cutC, cutS, piece)
		if a != b {
			t.Fatalf("calls differ when messages are kept as they came:\n%s", firstDiff(a, b))
		}
		for i, c := range kept {
			for dir, ms := range [][]Message{c.Requests, c.Responses} {
				want := [][]Message{raw[i].Requests, raw[i].Responses}[dir]
				for j, m := range ms {
					if m.Wire != nil && (j >= len(want) || !bytes.Equal(m.Wire.Bytes, want[j].Raw)) {
						t.Fatalf("call %d, %s message %d: the bytes kept changed", i, dirNoun[capture.Dir(dir)], j+1)
					}
				}
			}
		}
	})
}

// TestEncodeOnly: the methods EncodeOnly names are encoded (or kept as
// they came) but not unmarshalled: Proto stays nil, unless Encode
// declines, and then the message is decoded whole as before; other
// methods are decoded. With NoRedact, each still keeps its raw bytes.
// Real grpc-go peers: ListContainers answers of 40 containers, Version.
func TestEncodeOnly(t *testing.T) {
	cc, rec := criPeers(t, fakeRuntime{containers: 40})
	rt := runtimeapi.NewRuntimeServiceClient(cc)
	for range 2 {
		if _, err := rt.ListContainers(context.Background(), &runtimeapi.ListContainersRequest{}); err != nil {
			t.Fatal(err)
		}
		if _, err := rt.Version(context.Background(), &runtimeapi.VersionRequest{Version: "v1"}); err != nil {
			t.Fatal(err)
		}
	}
	cc.Close()
	chunks := rec.take()
	for _, tc := range []struct {
		name     string
		encode   bool // Encode writes the message
		noRedact bool
	}{{"encoded", true, false}, {"declined", false, false}, {"encoded, raw kept", true, true}} {
		var calls []*Call
		encoded := 0
		d := New(Options{
			ListsUnary: true, NoRedact: tc.noRedact,
			OnCall: func(c *Call) { calls = append(calls, c) },
			Encode: func(_ protoreflect.MessageDescriptor, b []byte) ([]byte, bool) {
				encoded++
				return []byte("{}"), tc.encode
			},
			EncodeOnly: func(_, method string) bool { return method == "ListContainers" },
		})
		cutFeedEach(d, chunks, pos{}, func() {})
		d.Close()
		lists, versions := 0, 0
		for _, c := range calls {
			for _, ms := range [][]Message{c.Requests, c.Responses} {
				for _, m := range ms {
					decoded := m.Proto != nil
					switch {
					case c.Name == "ListContainers" && decoded == tc.encode:
						t.Errorf("%s: a ListContainers message decoded %v", tc.name, decoded)
					case c.Name == "Version" && !decoded:
						t.Errorf("%s: a Version message not decoded", tc.name)
					case tc.encode && m.Encoded == nil:
						t.Errorf("%s: %s message not encoded", tc.name, c.Name)
					case tc.noRedact && m.Raw == nil:
						t.Errorf("%s: %s message without its raw bytes", tc.name, c.Name)
					}
				}
			}
			switch c.Name {
			case "ListContainers":
				lists++
			case "Version":
				versions++
			}
		}
		if lists != 2 || versions != 2 || encoded != 8 {
			t.Errorf("%s: %d ListContainers and %d Version calls, %d messages encoded; want 2, 2, 8", tc.name, lists, versions, encoded)
		}
	}
}

// TestListsAbove: a list answer past ListsAbove is kept as it came, not
// decoded, and read item by item gives what decoding it whole to Fields
// gives, item for item (real grpc-go peers: 400 containers and 20 pod
// sandboxes). One with a name that is not UTF-8 is decoded whole instead,
// and the call says what is wrong as before.
func TestListsAbove(t *testing.T) {
	chunks := recordLists(t, 400, 1)
	decodeAll := func(chunks []capture.Chunk, above int) []*Call {
		var calls []*Call
		d := New(Options{ListsUnary: true, Fields: listFields, ListsAbove: above, OnCall: func(c *Call) { calls = append(calls, c) }})
		cutFeedEach(d, chunks, pos{}, func() {})
		d.Close()
		return calls
	}
	whole, byItems := decodeAll(chunks, 0), decodeAll(chunks, 1<<10)
	if len(whole) != 2 || len(byItems) != 2 {
		t.Fatalf("%d and %d calls, want 2", len(whole), len(byItems))
	}
	for i, c := range byItems {
		m := c.Responses[0]
		if m.Proto != nil || m.Wire == nil || m.Size <= 1<<10 {
			t.Errorf("%s (%d bytes): decoded %v, kept %v; want kept as it came", c.Name, m.Size, m.Proto != nil, m.Wire != nil)
		}
		want, got := listItems(t, whole[i].Responses[0]), listItems(t, m)
		if len(want) == 0 || !slices.Equal(got, want) {
			t.Errorf("%s: %d items read one by one, %d decoded whole, or they differ", c.Name, len(got), len(want))
		}
		if strings.Contains(strings.Join(got, ""), "registry.k8s.io") {
			t.Errorf("%s: items read whole, not pruned to Fields", c.Name)
		}
	}

	// A name that is not UTF-8, in the bytes the runtime sent.
	bad := slices.Clone(chunks)
	found := false
	for i, ch := range bad {
		if j := bytes.Index(ch.Data, []byte("container-7")); j >= 0 && ch.Dir == capture.ServerToClient && !found {
			bad[i].Data = slices.Clone(ch.Data)
			bad[i].Data[j] = 0xff
			found = true
		}
	}
	if !found {
		t.Fatal("no container name found in the answer's bytes")
	}
	w, b := decodeAll(bad, 0)[0], decodeAll(bad, 1<<10)[0]
	if w.Flags&Malformed == 0 || b.Flags&Malformed == 0 || !slices.Equal(w.Errors, b.Errors) || b.Responses[0].Wire != nil {
		t.Errorf("not UTF-8: whole %v %q, by items %v %q (kept %v); want the same error", w.Flags, w.Errors, b.Flags, b.Errors, b.Responses[0].Wire != nil)
	}
}

// FuzzListsAbove: whatever bytes come, from the start or caught midway,
// in pieces of any size, a decoder keeping list answers to be read item by
// item (ListsAbove) hands out the calls one decoding them whole does, the
// same errors included, and the items it reads from a kept answer are
// those of the answer decoded whole (both pruned to Fields).
func FuzzListsAbove(f *testing.F) {
	for _, s := range seedStreams(f) {
		f.Add(s[0], s[1], uint16(0), uint16(0), uint8(7))
	}
	resyncSeeds(f)
	st := dirStreams(recordLists(f, 40, 2))
	f.Add(st[[2]uint64{1, 0}], st[[2]uint64{1, 1}], uint16(0), uint16(0), uint8(255))
	f.Fuzz(func(t *testing.T, c, s []byte, cutC, cutS uint16, piece uint8) {
		above := func(n int) func(func(*Call)) Options {
			return func(on func(*Call)) Options {
				return Options{ListsUnary: true, Fields: listFields, ListsAbove: n, OnCall: on}
			}
		}
		kept, a := decodeFuzzed(above(1), c, s, cutC, cutS, piece)
		whole, b := decodeFuzzed(above(0), c, s, cutC, cutS, piece)
		if a != b {
			t.Fatalf("calls differ when list answers are read item by item:\n%s", firstDiff(a, b))
		}
		for i, c := range kept {
			for j, m := range c.Responses {
				if m.Wire == nil {
					continue
				}
				got, want := listItems(t, m), listItems(t, whole[i].Responses[j])
				if !slices.Equal(got, want) {
					t.Fatalf("call %d: %d items read one by one, %d decoded whole, or they differ", i, len(got), len(want))
				}
			}
		}
	})
}

// listFields: what grouping reads of list answers (flow.ReadsFields).
var listFields = map[protoreflect.FullName][]string{
	"runtime.v1.ListContainersResponse": {"containers.id", "containers.pod_sandbox_id", "containers.metadata"},
	"runtime.v1.ListPodSandboxResponse": {"items.id", "items.metadata"},
}

// recordLists records rounds of a ListContainers answer of n containers
// and a ListPodSandbox answer between real grpc-go peers.
func recordLists(tb testing.TB, n, rounds int) []capture.Chunk {
	cc, rec := criPeers(tb, fakeRuntime{containers: n})
	rt := runtimeapi.NewRuntimeServiceClient(cc)
	for range rounds {
		if _, err := rt.ListContainers(context.Background(), &runtimeapi.ListContainersRequest{}); err != nil {
			tb.Fatal(err)
		}
		if _, err := rt.ListPodSandbox(context.Background(), &runtimeapi.ListPodSandboxRequest{}); err != nil {
			tb.Fatal(err)
		}
	}
	cc.Close()
	return rec.take()
}

// listItems is what a list answer's items say, as text, decoded whole or
// kept as it came and read item by item.
func listItems(t *testing.T, m Message) (out []string) {
	t.Helper()
	switch r := m.Proto.(type) {
	case *runtimeapi.ListContainersResponse:
		for _, ct := range r.Containers {
			out = append(out, prototext.Format(ct))
		}
	case *runtimeapi.ListPodSandboxResponse:
		for _, s := range r.Items {
			out = append(out, prototext.Format(s))
		}
	}
	if m.Wire != nil {
		var item proto.Message = &runtimeapi.Container{}
		if m.Wire.Type.FullName() == "runtime.v1.ListPodSandboxResponse" {
			item = &runtimeapi.PodSandbox{}
		}
		if err := m.Wire.Items(item, func() { out = append(out, prototext.Format(item)) }); err != nil {
			t.Fatalf("%s kept as it came does not read: %v", m.Wire.Type.FullName(), err)
		}
	}
	return out
}

// decodeFuzzed decodes a fuzzer's client and server bytes, cut at cutC
// and cutS (caught midway when either is set) and fed in pieces of
// piece+1 bytes, with the options opts makes around OnCall; it returns
// the calls and a line for each.
func decodeFuzzed(opts func(onCall func(*Call)) Options, c, s []byte, cutC, cutS uint16, piece uint8) ([]*Call, string) {
	n := 1 + int(piece)
	midway := cutC > 0 || cutS > 0
	if midway {
		c, s = c[min(int(cutC), len(c)):], s[min(int(cutS), len(s)):]
	}
	var calls []*Call
	d := New(opts(func(c *Call) { calls = append(calls, c) }))
	if midway {
		feedMidway(d, c, s, n)
	} else {
		feedStreams(d, c, s, n, true)
	}
	d.Close()
	var out []string
	for _, c := range calls {
		out = append(out, callLine(c))
	}
	return calls, strings.Join(out, "\n")
}
