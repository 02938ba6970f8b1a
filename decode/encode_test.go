package decode

import (
	"bytes"
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// TestEncodeHook: a message Options.Encode takes keeps what it returned and
// is decoded as with Fields and SkipResponseMaps; one it declines is
// decoded whole, as without it, Fields notwithstanding.
func TestEncodeHook(t *testing.T) {
	fields := map[protoreflect.FullName][]string{
		"runtime.v1.CreateContainerRequest":   {"config.metadata"},
		"runtime.v1.ListContainersResponse":   {"containers.id"},
		"runtime.v1.PodSandboxStatusResponse": {"status.id"},
	}
	for _, path := range kubeletCaptures(t) {
		t.Run(captureName(path), func(t *testing.T) {
			chunks := readChunks(t, path)
			decodeWith := func(opts Options) (msgs []Message) {
				opts.OnCall = func(c *Call) { msgs = append(append(msgs, c.Requests...), c.Responses...) }
				opts.OnStreamMessage = func(_ *Call, m Message) { msgs = append(msgs, m) }
				d := New(opts)
				for _, c := range chunks {
					d.Feed(c)
				}
				d.Close()
				return msgs
			}
			whole := decodeWith(Options{})
			lean := decodeWith(Options{Fields: fields, SkipResponseMaps: true})
			n := 0
			takes := func(md protoreflect.MessageDescriptor, b []byte) ([]byte, bool) {
				n++
				return []byte(fmt.Sprintf("%s %d", md.FullName(), len(b))), true
			}
			declines := func(protoreflect.MessageDescriptor, []byte) ([]byte, bool) { return []byte("x"), false }
			took := decodeWith(Options{Fields: fields, Encode: takes})
			declined := decodeWith(Options{Fields: fields, Encode: declines})
			if len(took) != len(whole) || len(declined) != len(whole) || len(lean) != len(whole) {
				t.Fatalf("%d messages whole, %d lean, %d taken, %d declined", len(whole), len(lean), len(took), len(declined))
			}
			pruned := 0
			for i, w := range whole {
				if w.Proto == nil {
					continue
				}
				want := fmt.Sprintf("%s %d", w.Proto.ProtoReflect().Descriptor().FullName(), w.Size)
				if !bytes.Equal(took[i].Encoded, []byte(want)) {
					t.Fatalf("message %d: Encoded %q, want %q", i, took[i].Encoded, want)
				}
				if !proto.Equal(took[i].Proto, lean[i].Proto) {
					t.Fatalf("message %d taken: %v, want %v", i, took[i].Proto, lean[i].Proto)
				}
				if !proto.Equal(declined[i].Proto, w.Proto) || declined[i].Encoded != nil {
					t.Fatalf("message %d declined: %v (Encoded %q), want %v", i, declined[i].Proto, declined[i].Encoded, w.Proto)
				}
				if !proto.Equal(took[i].Proto, w.Proto) {
					pruned++
				}
			}
			if n == 0 || pruned == 0 {
				t.Errorf("%d messages handed to Encode, %d decoded less than whole: the test proves nothing", n, pruned)
			}
		})
	}
}
