package ebpf

import (
	"strings"
	"testing"
	"time"

	"github.com/criseq/criseq/capture"
)

// TestAttachLarge: a 16 MiB response read with readv, and 200 calls at once,
// traced whole.
func TestAttachLarge(t *testing.T) {
	needBPF(t)
	eachAttachment(t, testLarge)
}

func testLarge(t *testing.T, via attachment) {
	dir := t.TempDir()
	sock := startServer(t, dir)
	relay, relayed, stopRelay := startRelay(t, dir, sock)
	ch := startChild(t, "")
	tr := attach(t, &Tracer{PID: ch.Pid, Socket: relay, via: via})
	c := ch.do("dial %s vec", relay)[0]
	ch.do("big %s %d", c, 16<<20)
	ch.do("streams %s 200", c)
	ch.do("close %s", c)
	time.Sleep(100 * time.Millisecond)
	chunks := tr.stop(t)
	stopRelay()

	traced := splitConns(t, chunks, false)
	pairs := matchRelay(t, traced, splitConns(t, relayed.all(), false))
	if len(traced) != 1 || len(pairs) != 1 {
		t.Fatalf("%d connections traced, %d matched, want 1", len(traced), len(pairs))
	}
	for id, tc := range traced {
		if len(tc.data[1]) < 16<<20 {
			t.Errorf("conn %d: %d bytes read, want the 16 MiB response", id, len(tc.data[1]))
		}
		calls, errs := decodeConn(t, chunks, id)
		if len(errs) > 0 {
			t.Errorf("decode: %v", errs)
		}
		if len(calls) != 202 {
			t.Errorf("%d calls decoded, want 202", len(calls))
		}
	}
	if st := tr.tr.Stats(); st.LostBytes != 0 {
		t.Errorf("stats %+v, want no loss", st)
	}
}

// TestAttachOverload: a ring buffer far too small for a 16 MiB response
// loses records; every loss is counted and marked as a gap, and every byte
// that did arrive is where the relay saw it.
func TestAttachOverload(t *testing.T) {
	needBPF(t)
	eachAttachment(t, testOverload)
}

func testOverload(t *testing.T, via attachment) {
	dir := t.TempDir()
	sock := startServer(t, dir)
	relay, relayed, stopRelay := startRelay(t, dir, sock)
	ch := startChild(t, "")
	tr := attach(t, &Tracer{PID: ch.Pid, Socket: relay, RingSize: 64 << 10, via: via})
	c := ch.do("dial %s rw", relay)[0]
	for range 3 {
		ch.do("big %s %d", c, 16<<20)
	}
	ch.do("close %s", c)
	time.Sleep(100 * time.Millisecond)
	chunks := tr.stop(t)
	stopRelay()

	st := tr.tr.Stats()
	t.Logf("stats: %+v", st)
	if st.RingDrops == 0 || st.LostBytes == 0 {
		t.Fatalf("stats %+v: no drops with a 64 KiB ring and 48 MiB of responses", st)
	}
	traced := splitConns(t, chunks, true)
	rel := splitConns(t, relayed.all(), false)
	if len(traced) != 1 || len(rel) != 1 {
		t.Fatalf("%d traced, %d relayed connections, want 1", len(traced), len(rel))
	}
	tc, rc := traced[1], rel[1]
	if tc.gaps == 0 {
		t.Error("no chunk marks a gap")
	}
	lost := sameWhereRecorded(t, tc, rc)
	if !strings.Contains(tr.logs.String(), "ring buffer full") {
		t.Errorf("drops not reported; log:\n%s", tr.logs.String())
	}
	if lost > st.LostBytes || lost == 0 {
		t.Errorf("gaps add up to %d bytes, stats say %d lost", lost, st.LostBytes)
	}
}

// TestAttachSlowWriter: a writer slower than the traffic, behind a queue
// as small as record's, that waits when full (capture.RecorderOptions.Wait):
// the kernel's ring holds what comes meanwhile. Nothing is dropped by the
// writer, and every byte recorded is where the relay saw it: runs copied
// into slabs are written before their slab is reused.
func TestAttachSlowWriter(t *testing.T) {
	needBPF(t)
	dir := t.TempDir()
	sock := startServer(t, dir)
	relay, relayed, stopRelay := startRelay(t, dir, sock)
	ch := startChild(t, "")
	sink := &memSink{delay: 200 * time.Microsecond}
	tr := attachTo(t, &Tracer{PID: ch.Pid, Socket: relay}, sink, capture.RecorderOptions{MaxBytes: 1 << 20, Wait: true})
	c := ch.do("dial %s rw", relay)[0]
	for range 2 {
		ch.do("big %s %d", c, 4<<20)
		ch.do("streams %s 100", c)
	}
	ch.do("close %s", c)
	time.Sleep(100 * time.Millisecond)
	chunks := tr.stop(t)
	stopRelay()

	st := tr.tr.Stats()
	t.Logf("stats: %+v, %d chunks", st, len(chunks))
	if st.RecorderDrop != 0 {
		t.Errorf("the writer dropped %d chunks; with Wait it should wait", st.RecorderDrop)
	}
	traced := splitConns(t, chunks, true)
	rel := splitConns(t, relayed.all(), false)
	if len(traced) != 1 || len(rel) != 1 {
		t.Fatalf("%d traced, %d relayed connections, want 1", len(traced), len(rel))
	}
	tc, rc := traced[1], rel[1]
	if len(tc.data[1]) < 8<<20 {
		t.Errorf("%d bytes read recorded, want the two 4 MiB answers", len(tc.data[1]))
	}
	sameWhereRecorded(t, tc, rc)
}

// sameWhereRecorded checks a traced connection against the relay's: with
// gaps standing as zeros, the same length, and the same bytes wherever
// data arrived. What the runtime sent after the client closed (a GOAWAY)
// reached the relay but never the client. It returns the bytes the gaps
// say were lost.
func sameWhereRecorded(t *testing.T, tc, rc *connBytes) (lost int64) {
	t.Helper()
	for d := range 2 {
		n := len(rc.data[d])
		if d == int(capture.ServerToClient) && tc.closed[d] && len(tc.data[d]) < n {
			n = len(tc.data[d])
		}
		if len(tc.data[d]) != n {
			t.Errorf("%d: %d bytes with gaps, relay %d", d, len(tc.data[d]), len(rc.data[d]))
			continue
		}
		for _, c := range tc.chunks[d] {
			if string(rc.data[d][c.Offset:c.Offset+int64(len(c.Data))]) != string(c.Data) {
				t.Errorf("dir %d: bytes at offset %d differ from the relay's", d, c.Offset)
				break
			}
			lost += int64(max(c.Gap, 0))
		}
		lost += int64(tc.endGap[d])
	}
	return lost
}
