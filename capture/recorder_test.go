package capture

import (
	"encoding/binary"
	"errors"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// checkSink verifies every chunk it gets against what its Offset says it holds.
type checkSink struct {
	t    *testing.T
	mu   sync.Mutex
	next map[uint64]int64
	n    int
}

func (s *checkSink) Write(c Chunk) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.Kind != Data {
		return nil
	}
	if len(c.Data) != 16 || binary.LittleEndian.Uint64(c.Data) != c.Conn || int64(binary.LittleEndian.Uint64(c.Data[8:])) != c.Offset {
		s.t.Errorf("chunk corrupted in the recorder: conn %d offset %d data %x", c.Conn, c.Offset, c.Data)
	}
	if c.Offset != s.next[c.Conn]+int64(c.Gap) {
		s.t.Errorf("conn %d: chunk at %d after gap %d, want %d", c.Conn, c.Offset, c.Gap, s.next[c.Conn]+int64(c.Gap))
	}
	s.next[c.Conn] = c.Offset + 16
	s.n++
	return nil
}

func (s *checkSink) Close() error { return nil }

// TestRecorderKeepsChunksIntact: many writers racing with the recorder's
// goroutine; every chunk that gets through is intact and in order, and
// dropped ones are accounted for as gaps.
func TestRecorderKeepsChunksIntact(t *testing.T) {
	sink := &checkSink{t: t, next: map[uint64]int64{}}
	rec := NewRecorder(sink, RecorderOptions{MaxChunks: 64})
	var wg sync.WaitGroup
	for conn := uint64(1); conn <= 4; conn++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			gap := 0
			for i := range 20000 {
				d := make([]byte, 16)
				binary.LittleEndian.PutUint64(d, conn)
				binary.LittleEndian.PutUint64(d[8:], uint64(i*16))
				if rec.Record(Chunk{Conn: conn, Kind: Data, Data: d, Offset: int64(i * 16), Gap: gap}) {
					gap = 0
				} else {
					gap += 16
				}
			}
		}()
	}
	wg.Wait()
	// Bursts after pauses, so the recorder's goroutine also wakes to an
	// empty queue and sleeps again, and then gets a batch while more come.
	gap, off, total := 0, 0, int64(80000)
	record := func(n int) {
		for range n {
			d := make([]byte, 16)
			binary.LittleEndian.PutUint64(d, 5)
			binary.LittleEndian.PutUint64(d[8:], uint64(off))
			if rec.Record(Chunk{Conn: 5, Kind: Data, Data: d, Offset: int64(off), Gap: gap}) {
				gap = 0
			} else {
				gap += 16
			}
			off += 16
			total++
		}
	}
	for range 1000 {
		record(3)
		for ; ; runtime.Gosched() {
			if st := rec.Stats(); st.Chunks+st.DroppedChunks == total {
				break
			}
		}
		record(30)
	}
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}
	st := rec.Stats()
	if st.Chunks+st.DroppedChunks != total || int(st.Chunks) != sink.n {
		t.Errorf("stats %+v, sink got %d, want %d in all", st, sink.n, total)
	}
	if rec.Record(Chunk{Kind: Open}) {
		t.Error("Record after Close accepted a chunk")
	}
}

type failSink struct {
	after, n int
	closed   bool
}

func (s *failSink) Write(Chunk) error {
	s.n++
	if s.n > s.after {
		return errors.New("no space left on device")
	}
	return nil
}

func (s *failSink) Close() error { s.closed = true; return nil }

func TestRecorderSinkError(t *testing.T) {
	var logs logBuf
	sink := &failSink{after: 2}
	rec := NewRecorder(sink, RecorderOptions{Log: logs.printf})
	for range 10 {
		rec.Record(Chunk{Kind: Data, Data: []byte("x")})
	}
	err := rec.Close()
	if err == nil || !strings.Contains(err.Error(), "no space left") || !strings.HasPrefix(err.Error(), "recorder: ") {
		t.Errorf("Close: %v, want the sink's error", err)
	}
	if n := logs.count("no space left"); n != 1 {
		t.Errorf("error logged %d times, want once:\n%s", n, logs.String())
	}
	if sink.n != 3 {
		t.Errorf("sink written %d times after failing, want it left alone", sink.n)
	}
	if !sink.closed {
		t.Error("sink not closed")
	}
	if st := rec.Stats(); st.Chunks != 2 || st.DroppedChunks != 8 {
		t.Errorf("stats %+v", st)
	}
}

// stepSink hands each Write to the test and waits for it to say go on.
type stepSink struct {
	got     chan Chunk
	proceed chan struct{}
}

func (s *stepSink) Write(c Chunk) error {
	s.got <- c
	<-s.proceed
	return nil
}

func (s *stepSink) Close() error { return nil }

// TestRecorderBatchesDoNotAlias steps the recorder through writing while
// chunks arrive, then idle, then writing again: every chunk comes out intact
// and in order. (A queue and batch sharing memory lost chunks this way.)
func TestRecorderBatchesDoNotAlias(t *testing.T) {
	sink := &stepSink{got: make(chan Chunk), proceed: make(chan struct{})}
	rec := NewRecorder(sink, RecorderOptions{})
	next := int64(0)
	record := func() {
		rec.Record(Chunk{Conn: 1, Kind: Data, Offset: next, Data: []byte{byte(next)}})
		next++
	}
	want := int64(0)
	expect := func() {
		t.Helper()
		c := <-sink.got
		if c.Conn != 1 || c.Offset != want || len(c.Data) != 1 || c.Data[0] != byte(want) {
			t.Fatalf("sink got %+v, want the chunk at offset %d", c, want)
		}
		want++
	}
	for range 200 {
		record()
		expect() // the recorder is now writing
		record() // arrives during the write
		sink.proceed <- struct{}{}
		expect()
		sink.proceed <- struct{}{}
		for range 3 { // let it go idle
			runtime.Gosched()
		}
	}
	done := make(chan error)
	go func() { done <- rec.Close() }()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestRecorderTimesInOrder: chunks recorded from many goroutines leave the
// Recorder timed in the order they are written, with wall-clock times only
// (a live reader then measures what a reader of the file measures); a
// chunk timed before the last is raised to it.
func TestRecorderTimesInOrder(t *testing.T) {
	sink := &memSink{}
	r := NewRecorder(sink, RecorderOptions{MaxChunks: 1 << 20})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				r.Record(Chunk{Conn: uint64(g + 1), Kind: Data, Data: []byte{byte(i)}})
			}
		}()
	}
	wg.Wait()
	late := time.Now().Add(-time.Hour)
	r.Record(Chunk{Conn: 9, Kind: Data, Time: late, Data: []byte{1}})
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	got := sink.all()
	if len(got) != 8*2000+1 {
		t.Fatalf("%d chunks written", len(got))
	}
	for i, c := range got {
		if c.Time.IsZero() || c.Time != c.Time.Round(0) {
			t.Fatalf("chunk %d timed %v: want a wall-clock time without a monotonic reading", i, c.Time)
		}
		if i > 0 && c.Time.Before(got[i-1].Time) {
			t.Fatalf("chunk %d timed %v before chunk %d", i, got[i-1].Time.Sub(c.Time), i-1)
		}
	}
	if last := got[len(got)-1]; !last.Time.Equal(got[len(got)-2].Time) {
		t.Errorf("a chunk timed an hour back was written at %v, want raised to the last time %v", last.Time, got[len(got)-2].Time)
	}
}

// TestRecorderWaits: with Wait, a chunk that finds the queue full waits
// for the writer rather than being dropped, a chunk larger than the whole
// queue goes in once it is empty, and Close releases a waiting Record. Each
// chunk's Done is called once, written or dropped.
func TestRecorderWaits(t *testing.T) {
	sink := &stepSink{got: make(chan Chunk), proceed: make(chan struct{})}
	rec := NewRecorder(sink, RecorderOptions{MaxBytes: 4 << 10, Wait: true})
	var mu sync.Mutex
	done := map[int64]int{}
	chunk := func(off int64, n int) Chunk {
		return Chunk{Conn: 1, Kind: Data, Offset: off, Data: make([]byte, n), Done: func() {
			mu.Lock()
			done[off]++
			mu.Unlock()
		}}
	}
	recorded := make(chan bool)
	record := func(c Chunk) { go func() { recorded <- rec.Record(c) }() }
	waiting := func(what string) {
		t.Helper()
		select {
		case ok := <-recorded:
			t.Fatalf("%s: Record returned %v, want it waiting", what, ok)
		case <-time.After(50 * time.Millisecond):
		}
	}
	queued := func(what string) {
		t.Helper()
		select {
		case ok := <-recorded:
			if !ok {
				t.Fatalf("%s: dropped", what)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: Record still waiting", what)
		}
	}
	written := func(off int64) {
		t.Helper()
		if c := <-sink.got; c.Offset != off {
			t.Fatalf("sink got the chunk at %d, want %d", c.Offset, off)
		}
		sink.proceed <- struct{}{}
	}

	record(chunk(0, 1<<10))
	queued("first chunk")
	c := <-sink.got // the writer holds it: 1 KiB in flight
	if c.Offset != 0 {
		t.Fatalf("sink got %d first", c.Offset)
	}
	record(chunk(1<<10, 3<<10))
	queued("a chunk that fills the queue")
	record(chunk(4<<10, 1<<10))
	waiting("a chunk past the queue's bytes")
	sink.proceed <- struct{}{} // the first is written: room again
	written(1 << 10)
	queued("a chunk that waited")
	written(4 << 10)

	record(chunk(5<<10, 64<<10))
	queued("a chunk larger than the queue, the queue empty")
	c = <-sink.got
	record(chunk(69<<10, 1))
	waiting("a chunk behind one larger than the queue")
	sink.proceed <- struct{}{}
	queued("the chunk behind")
	written(69 << 10)

	c = chunk(69<<10+1, 8<<10)
	record(c)
	queued("a chunk larger than the queue")
	<-sink.got
	record(chunk(77<<10+1, 1))
	waiting("a chunk while the writer is stuck")
	closed := make(chan error)
	go func() { closed <- rec.Close() }()
	select {
	case ok := <-recorded:
		if ok {
			t.Error("a chunk waiting at Close was queued")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not release a waiting Record")
	}
	sink.proceed <- struct{}{}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, off := range []int64{0, 1 << 10, 4 << 10, 5 << 10, 69 << 10, 69<<10 + 1, 77<<10 + 1} {
		if done[off] != 1 {
			t.Errorf("chunk at %d: Done called %d times, want once", off, done[off])
		}
	}
	if st := rec.Stats(); st.Chunks != 6 || st.DroppedChunks != 1 {
		t.Errorf("stats %+v, want 6 written and 1 dropped", st)
	}
}
