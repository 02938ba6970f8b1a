package decode

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/criseq/criseq/capture"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// streamed walks b through a fieldStream in the pieces cuts makes.
func streamed(b []byte, num protowire.Number, cuts []int) [][]byte {
	var got [][]byte
	f := &fieldStream{num: num, fn: func(v []byte) { got = append(got, bytes.Clone(v)) }}
	at := 0
	for _, c := range cuts {
		f.write(b[at:c])
		at = c
	}
	f.write(b[at:])
	return got
}

func whole(b []byte, num protowire.Number) [][]byte {
	var want [][]byte
	eachField(b, num, func(v []byte) { want = append(want, bytes.Clone(v)) })
	return want
}

func sameFields(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// The list answers of real captures, cut into pieces at every byte (the
// smaller ones) and at random, give the fields eachField gives whole.
func TestFieldStreamRealLists(t *testing.T) {
	var lists [][]byte
	for _, name := range []string{"kubelet-burst-containerd2", "kubelet-pull", "crictl-lifecycle"} {
		calls, _, err := DecodeAll(mustOpen(t, name), Options{NoRedact: true})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range calls {
			if (c.Name == "ListContainers" || c.Name == "ListPodSandbox") && len(c.Responses) == 1 && len(c.Responses[0].Raw) > 0 {
				lists = append(lists, c.Responses[0].Raw)
			}
		}
	}
	if len(lists) < 10 {
		t.Fatalf("%d list answers in the captures: too few", len(lists))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	items := 0
	for i, b := range lists {
		want := whole(b, 1)
		items += len(want)
		if i < 20 {
			for c := 0; c <= len(b); c++ {
				if got := streamed(b, 1, []int{c}); !sameFields(got, want) {
					t.Fatalf("list %d (%d bytes) cut at %d: %d fields, want %d", i, len(b), c, len(got), len(want))
				}
			}
		}
		for range 20 {
			var cuts []int
			for at := 0; at < len(b); at += 1 + rng.IntN(64) {
				cuts = append(cuts, at)
			}
			if got := streamed(b, 1, cuts); !sameFields(got, want) {
				t.Fatalf("list %d (%d bytes) in %d pieces: %d fields, want %d", i, len(b), len(cuts)+1, len(got), len(want))
			}
		}
	}
	t.Logf("%d list answers, %d items", len(lists), items)
}

// A large list, with fields of other numbers and types between its
// items, and cut anywhere, or broken anywhere: the same fields as whole,
// up to the break.
func TestFieldStreamShapes(t *testing.T) {
	var cs []*runtimeapi.Container
	for i := range 3000 {
		cs = append(cs, &runtimeapi.Container{Id: fmt.Sprintf("%064x", i), State: runtimeapi.ContainerState(i % 4),
			Labels: map[string]string{"io.kubernetes.pod.name": strings.Repeat("p", i%300)}})
	}
	b, err := proto.Marshal(&runtimeapi.ListContainersResponse{Containers: cs})
	if err != nil {
		t.Fatal(err)
	}
	// Unknown fields between items: varint, fixed, a long string, a group.
	var mixed []byte
	for i, v := range whole(b, 1) {
		mixed = protowire.AppendTag(mixed, 1, protowire.BytesType)
		mixed = protowire.AppendBytes(mixed, v)
		switch i % 5 {
		case 0:
			mixed = protowire.AppendTag(mixed, 7, protowire.VarintType)
			mixed = protowire.AppendVarint(mixed, uint64(i)<<40)
		case 1:
			mixed = protowire.AppendTag(mixed, 8, protowire.Fixed64Type)
			mixed = protowire.AppendFixed64(mixed, uint64(i))
		case 2:
			mixed = protowire.AppendTag(mixed, 9, protowire.BytesType)
			mixed = protowire.AppendBytes(mixed, bytes.Repeat([]byte{byte(i)}, 5000))
		case 3:
			mixed = protowire.AppendTag(mixed, 10, protowire.StartGroupType)
			mixed = protowire.AppendTag(mixed, 1, protowire.VarintType)
			mixed = protowire.AppendVarint(mixed, 3)
			mixed = protowire.AppendTag(mixed, 10, protowire.EndGroupType)
		}
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for _, msg := range [][]byte{b, mixed} {
		want := whole(msg, 1)
		for range 50 {
			var cuts []int
			for at := 0; at < len(msg); at += 1 + rng.IntN(20000) {
				cuts = append(cuts, at)
			}
			if got := streamed(msg, 1, cuts); !sameFields(got, want) {
				t.Fatalf("%d bytes in %d pieces: %d fields, want %d", len(msg), len(cuts)+1, len(got), len(want))
			}
		}
		// Broken: a byte changed, or the message cut short.
		for range 300 {
			bad := bytes.Clone(msg)
			at := rng.IntN(len(bad))
			bad[at] ^= byte(1 + rng.IntN(255))
			if rng.IntN(3) == 0 {
				bad = bad[:at]
			}
			want := whole(bad, 1)
			var cuts []int
			for c := 0; c < len(bad); c += 1 + rng.IntN(4000) {
				cuts = append(cuts, c)
			}
			if got := streamed(bad, 1, cuts); !sameFields(got, want) {
				t.Fatalf("byte %d broken: %d fields, want %d", at, len(got), len(want))
			}
		}
	}
}

// FuzzFieldStream: any bytes, in any two pieces, give eachField's fields.
func FuzzFieldStream(f *testing.F) {
	b, _ := proto.Marshal(&runtimeapi.ListContainersResponse{Containers: []*runtimeapi.Container{{Id: "a", State: 1}, {Id: "b"}}})
	f.Add(b, 3)
	f.Add([]byte{0x0a, 0x80}, 1)
	f.Add([]byte{0x0b, 0x08, 0x01, 0x0c, 0x0a, 0x00}, 2)
	f.Fuzz(func(t *testing.T, b []byte, cut int) {
		if cut < 0 || cut > len(b) {
			cut = len(b) / 2
		}
		want := whole(b, 1)
		if got := streamed(b, 1, []int{cut}); !sameFields(got, want) {
			t.Fatalf("cut at %d of %x: %d fields, want %d", cut, b, len(got), len(want))
		}
	})
}

func mustOpen(t *testing.T, name string) capture.Source {
	t.Helper()
	src, err := capture.OpenFile(filepath.Join("..", "testdata", name, "capture.pcapng"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}
