package decode

import (
	"bytes"
	"compress/gzip"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The gRPC message layer reads the same messages however the DATA
// payloads are cut: at every byte, inside the 5-byte prefix or not,
// several messages in one payload, compressed or not.
func TestMessageFraming(t *testing.T) {
	msgs := []proto.Message{
		&runtimeapi.ContainerEventResponse{ContainerId: "a", CreatedAt: 1},
		&runtimeapi.ContainerEventResponse{},
		containerStatus("c1", true),
		&runtimeapi.ContainerEventResponse{ContainerId: "last"},
	}
	var payload []byte
	raws := make([][]byte, len(msgs))
	for i, m := range msgs {
		raws[i], _ = proto.MarshalOptions{Deterministic: true}.Marshal(m)
		if i == 2 {
			var z bytes.Buffer
			zw := gzip.NewWriter(&z)
			zw.Write(raws[i])
			zw.Close()
			payload = append(payload, frameMsg(1, z.Bytes())...)
		} else {
			payload = append(payload, frameMsg(0, raws[i])...)
		}
	}
	for cut := 0; cut <= len(payload); cut++ {
		d := New(Options{NoRedact: true})
		s := &stream{call: &Call{Status: -1}, m: d.method(pathEvents)}
		s.enc[s2c] = "gzip"
		d.assemble(s, s2c, payload[:cut], time.Time{})
		d.assemble(s, s2c, payload[cut:], time.Time{})
		got := s.call.Responses
		if len(got) != len(msgs) {
			t.Fatalf("cut at %d: %d messages, want %d", cut, len(got), len(msgs))
		}
		for i, raw := range raws {
			if !bytes.Equal(got[i].Raw, raw) || got[i].Size != len(raw) || got[i].Compressed != (i == 2) {
				t.Fatalf("cut at %d, message %d: %+v", cut, i, got[i])
			}
		}
		if s.asm[s2c].nhdr != 0 {
			t.Fatalf("cut at %d: bytes left in the assembler", cut)
		}
	}
}
