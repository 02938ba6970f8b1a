package ebpf

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/criseq/criseq/capture"
	"github.com/criseq/criseq/decode"
)

func unsafePointer(b []byte) unsafe.Pointer { return unsafe.Pointer(unsafe.SliceData(b)) }

// needBPF skips a test that needs root and BPF where they are missing, and
// fails it in CI, where they must be there.
func needBPF(t testing.TB) {
	t.Helper()
	err := preflight()
	if err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI must run attach tests: %v", err)
	}
	t.Skipf("attach mode cannot run here: %v", err)
}

// attachments are the ways of attaching this machine can run, to test each.
func attachments(t testing.TB) []attachment {
	t.Helper()
	spec, err := loadTrace()
	if err != nil {
		t.Fatal(err)
	}
	if !rawBuilt(spec) {
		t.Logf("no raw tracepoint programs for this machine: perf tracepoints only")
		return []attachment{perfTracepoints}
	}
	return []attachment{perfTracepoints, rawTracepoints}
}

// eachAttachment runs f as a subtest per attachment.
func eachAttachment(t *testing.T, f func(t *testing.T, via attachment)) {
	for _, via := range attachments(t) {
		t.Run(strings.Fields(via.String())[0], func(t *testing.T) { f(t, via) })
	}
}

// tracing is a Tracer running in the background.
type tracing struct {
	tr     *Tracer
	sink   *memSink
	cancel context.CancelFunc
	done   chan error
	logs   *logBuf
}

type logBuf struct {
	t testing.TB
	strings.Builder
}

func (l *logBuf) logf(format string, args ...any) {
	l.t.Logf("tracer: "+format, args...)
	fmt.Fprintf(&l.Builder, format+"\n", args...)
}

// attach starts tr and waits until it is attached.
func attach(t testing.TB, tr *Tracer) *tracing {
	t.Helper()
	return attachTo(t, tr, &memSink{}, capture.RecorderOptions{MaxBytes: 256 << 20, MaxChunks: 1 << 16})
}

// attachTo is attach recording into sink through a Recorder with opts.
func attachTo(t testing.TB, tr *Tracer, sink *memSink, opts capture.RecorderOptions) *tracing {
	t.Helper()
	r := &tracing{tr: tr, sink: sink, done: make(chan error, 1), logs: &logBuf{t: t}}
	tr.Recorder = capture.NewRecorder(r.sink, opts)
	tr.Log = r.logs.logf
	ready := make(chan struct{})
	tr.Ready = func(Attached) { close(ready) }
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- tr.Run(ctx) }()
	select {
	case <-ready:
	case err := <-r.done:
		cancel()
		t.Fatalf("attach: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("attach: not attached after 30s")
	}
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop detaches and returns what was recorded.
func (r *tracing) stop(t testing.TB) []capture.Chunk {
	t.Helper()
	if r.cancel != nil {
		r.cancel()
		r.cancel = nil
		if err := <-r.done; err != nil {
			t.Errorf("tracer: %v", err)
		}
	}
	return r.sink.all()
}

// conns splits chunks per connection: each direction's bytes, and whether
// it was caught midway. Offsets and gaps are checked on the way.
type connBytes struct {
	id     uint64
	midway bool
	data   [2][]byte
	gaps   int
	chunks [2][]capture.Chunk
	closed [2]bool
	endGap [2]int // bytes lost at the very end, marked on the Close chunk
}

func splitConns(t testing.TB, chunks []capture.Chunk, allowGaps bool) map[uint64]*connBytes {
	t.Helper()
	out := map[uint64]*connBytes{}
	for _, c := range chunks {
		cb := out[c.Conn]
		if cb == nil {
			cb = &connBytes{id: c.Conn}
			out[c.Conn] = cb
			if c.Kind != capture.Open {
				t.Errorf("conn %d begins with kind %d, not Open", c.Conn, c.Kind)
			}
		}
		switch c.Kind {
		case capture.Open:
			cb.midway = c.Midway
		case capture.Data, capture.Close:
			if c.Gap != 0 {
				cb.gaps++
				if !allowGaps {
					t.Errorf("conn %d %v: gap of %d bytes at offset %d", c.Conn, c.Dir, c.Gap, c.Offset)
				}
			}
			if c.Gap >= 0 {
				// A gap's bytes stand as zeros, so offsets index the
				// stream; a Close's offset is the stream's end, and its gap
				// the bytes lost just before it.
				want := int64(len(cb.data[c.Dir])) + int64(c.Gap)
				if c.Offset != want {
					t.Errorf("conn %d %v: chunk (kind %d) at offset %d, want %d", c.Conn, c.Dir, c.Kind, c.Offset, want)
				}
				cb.data[c.Dir] = append(cb.data[c.Dir], make([]byte, c.Gap)...)
			}
			cb.data[c.Dir] = append(cb.data[c.Dir], c.Data...)
			if c.Kind == capture.Data {
				cb.chunks[c.Dir] = append(cb.chunks[c.Dir], c)
			} else {
				cb.closed[c.Dir] = true
				cb.endGap[c.Dir] = max(c.Gap, 0)
			}
		}
	}
	return out
}

// matchRelay pairs each traced connection with the relay's connection that
// carried the same bytes: all of them for a connection traced from its
// connect (but for replies that came after the client closed), the last
// ones for one caught midway. Every byte must agree.
func matchRelay(t testing.TB, traced, relayed map[uint64]*connBytes) map[uint64]*connBytes {
	t.Helper()
	pairs := map[uint64]*connBytes{}
	used := map[uint64]bool{}
	ids := slices.Sorted(maps.Keys(traced))
	for _, id := range ids {
		tc := traced[id]
		var found *connBytes
		for _, rid := range slices.Sorted(maps.Keys(relayed)) {
			rc := relayed[rid]
			if used[rid] {
				continue
			}
			ok := true
			for d := range 2 {
				switch {
				case tc.midway:
					ok = ok && bytes.HasSuffix(rc.data[d], tc.data[d])
				case d == int(capture.ServerToClient) && tc.closed[d]:
					// What the runtime sent after the client closed
					// reached the relay but never the client.
					ok = ok && bytes.HasPrefix(rc.data[d], tc.data[d])
				default:
					ok = ok && bytes.Equal(rc.data[d], tc.data[d])
				}
			}
			if ok && (len(tc.data[0]) > 0 || !tc.midway) {
				found = rc
				used[rid] = true
				break
			}
		}
		if found == nil {
			t.Errorf("traced conn %d (midway %v, %d/%d bytes) matches no relay connection byte for byte", id, tc.midway, len(tc.data[0]), len(tc.data[1]))
			for _, rid := range slices.Sorted(maps.Keys(relayed)) {
				rc := relayed[rid]
				t.Logf("  relay conn %d: %d/%d bytes; common prefix c→s %d, s→c %d", rid, len(rc.data[0]), len(rc.data[1]),
					commonPrefix(rc.data[0], tc.data[0]), commonPrefix(rc.data[1], tc.data[1]))
			}
			continue
		}
		pairs[id] = found
	}
	return pairs
}

func commonPrefix(a, b []byte) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// timeSkew compares each traced chunk's time with the time the relay saw
// its first byte: tracer minus relay, per direction.
func timeSkew(tc, rc *connBytes) (skew [2][]time.Duration) {
	for d := range 2 {
		shift := int64(len(rc.data[d]) - len(tc.data[d])) // midway: where tracing began
		for _, c := range tc.chunks[d] {
			at := c.Offset + shift
			i := sort.Search(len(rc.chunks[d]), func(i int) bool {
				r := rc.chunks[d][i]
				return r.Offset+int64(len(r.Data)) > at
			})
			if i < len(rc.chunks[d]) {
				skew[d] = append(skew[d], c.Time.Sub(rc.chunks[d][i].Time))
			}
		}
	}
	return skew
}

// decodeConn decodes one traced connection with the decoder as it is.
func decodeConn(t testing.TB, chunks []capture.Chunk, id uint64) ([]*decode.Call, []*decode.ConnError) {
	var calls []*decode.Call
	d := decode.New(decode.Options{OnCall: func(c *decode.Call) { calls = append(calls, c) }})
	for _, c := range chunks {
		if c.Conn == id {
			d.Feed(c)
		}
	}
	d.Close()
	return calls, d.Errors()
}

// TestAttachMatchesRelay traces a real grpc-go CRI client (another process)
// whose connections go through criseq's relay, and compares: every byte the
// tracer saw is the relay's, per connection and direction, at about the
// same time; connections opened after attaching decode completely.
func TestAttachMatchesRelay(t *testing.T) {
	needBPF(t)
	eachAttachment(t, testMatchesRelay)
}

func testMatchesRelay(t *testing.T, via attachment) {
	for _, mode := range []string{"rw", "vec", "msg", "to"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			sock := startServer(t, dir)
			relay, relayed, stopRelay := startRelay(t, dir, sock)
			ch := startChild(t, "")
			old := ch.do("dial %s rw", relay)[0]
			ch.do("calls %s 30", old)

			tr := attach(t, &Tracer{PID: ch.Pid, Socket: relay, via: via})
			ch.do("calls %s 20", old)
			c := ch.do("dial %s %s", relay, mode)[0]
			ch.do("calls %s 60", c)
			ch.do("streams %s 40", c)
			ch.do("big %s %d", c, 3<<20)
			ch.do("calls %s 5", old)
			ch.do("close %s", c)
			time.Sleep(100 * time.Millisecond)
			chunks := tr.stop(t)
			ch.stop()
			stopRelay()

			traced := splitConns(t, chunks, false)
			rel := splitConns(t, relayed.all(), false)
			if len(traced) != 2 {
				t.Fatalf("traced %d connections, want 2 (one midway, one new)", len(traced))
			}
			pairs := matchRelay(t, traced, rel)
			var skews [2][]time.Duration
			for id, tc := range traced {
				rc := pairs[id]
				if rc == nil {
					continue
				}
				sk := timeSkew(tc, rc)
				skews[0], skews[1] = append(skews[0], sk[0]...), append(skews[1], sk[1]...)
				if tc.midway {
					continue
				}
				if !tc.closed[0] || !tc.closed[1] {
					t.Errorf("conn %d: closed %v, want both directions closed", id, tc.closed)
				}
				calls, errs := decodeConn(t, chunks, id)
				if len(errs) > 0 {
					t.Errorf("conn %d: decode: %v", id, errs)
				}
				if want := 1 + 60 + 40 + 1; len(calls) != want {
					t.Errorf("conn %d: %d calls decoded, want %d", id, len(calls), want)
				}
				for _, c := range calls {
					if !c.Known || !c.OK() {
						t.Errorf("conn %d: call %s known=%v status %d", id, c.Method, c.Known, c.Status)
						break
					}
				}
			}
			checkSkew(t, skews)
			st := tr.tr.Stats()
			if st.LostBytes != 0 || st.RingDrops != 0 {
				t.Errorf("stats: %+v, want no loss", st)
			}
			t.Logf("stats: %+v", st)
		})
	}
}

// checkSkew checks the tracer's clock against the relay's. The two see
// each byte at different points: the client writes a request before the
// relay reads it, and reads a reply after the relay wrote it; queueing in
// between (a busy relay, a client slow to read) can take milliseconds. So
// the times must agree with that order, to within 1 ms (a write's own
// duration, the clock conversion). The tracer stamps a syscall at its
// exit: a writer preempted after its bytes were copied is stamped late, so
// a few chunks may break the order; many, or one by far, is a clock bug.
func checkSkew(t testing.TB, skew [2][]time.Duration) {
	t.Helper()
	if len(skew[0]) == 0 || len(skew[1]) == 0 {
		t.Error("no chunk times compared")
		return
	}
	for d, sk := range skew {
		slices.Sort(sk)
		bad := 0
		var worst time.Duration
		for _, s := range sk {
			if d == 1 {
				s = -s
			}
			if s > time.Millisecond {
				bad++
			}
			worst = max(worst, s)
		}
		abs := make([]time.Duration, len(sk))
		for i, s := range sk {
			abs[i] = s.Abs()
		}
		slices.Sort(abs)
		t.Logf("%v: tracer − relay over %d chunks: min %v, median %v, max %v; |difference| median %v, p90 %v",
			capture.Dir(d), len(sk), sk[0], sk[len(sk)/2], sk[len(sk)-1], abs[len(abs)/2], abs[len(abs)*9/10])
		if bad*20 > len(sk) || worst > 100*time.Millisecond {
			t.Errorf("%v: %d of %d chunks seen by the tracer out of order with the relay by more than 1ms, the worst by %v", capture.Dir(d), bad, len(sk), worst)
		}
	}
}
