package decode

import (
	"bytes"
	"compress/gzip"
	"math"
	"runtime"
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

// A message's buffer grows with what came, not with the length its
// prefix claims: 4 GiB claimed and 3 MiB sent allocate about twice what
// came; and it is made the message's size once that is at most eight
// times what came, so a 16 MiB message allocates 1, 2 and 16 MiB (it
// doubled to 31 MiB, appending left 45 MB behind a 9 MB message).
func TestMessageBufferGrowth(t *testing.T) {
	feed := func(claim uint32, send int) uint64 {
		d := New(Options{})
		s := &stream{call: &Call{Status: -1}, m: d.method(pathEvents)}
		piece := make([]byte, 16<<10)
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		d.assemble(s, s2c, []byte{0, byte(claim >> 24), byte(claim >> 16), byte(claim >> 8), byte(claim)}, time.Time{})
		for sent := 0; sent < send; sent += len(piece) {
			d.assemble(s, s2c, piece[:min(len(piece), send-sent)], time.Time{})
		}
		runtime.ReadMemStats(&after)
		if got := s.asm[s2c].seen(); got != send {
			t.Fatalf("claim %d: %d bytes held, sent %d", claim, got, send)
		}
		return after.TotalAlloc - before.TotalAlloc
	}
	const mib = 1 << 20
	if got := feed(math.MaxUint32, 3*mib); got > 7*mib+mib/2 {
		t.Errorf("4 GiB claimed, 3 MiB sent: %.1f MiB allocated, want at most 7 (1, 2 and 4)", float64(got)/mib)
	}
	if got := feed(16*mib, 16*mib-1); got > 19*mib+mib/2 {
		t.Errorf("16 MiB claimed and sent: %.1f MiB allocated, want at most 19 (1, 2 and 16)", float64(got)/mib)
	}
}
