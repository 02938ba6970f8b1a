package capture

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Default bounds of a Recorder's queue.
const (
	DefaultMaxChunks = 4096
	DefaultMaxBytes  = 64 << 20
)

// Recorder moves chunks from relays to a Sink on its own goroutine, so that
// relays never wait for the disk. Its queue is bounded; a chunk that does not
// fit is dropped and Record reports it, so the caller can mark the gap (with
// RecorderOptions.Wait, Record waits for room instead).
//
// After the Sink's first error, the error is logged once and every later chunk
// is dropped: traffic keeps flowing, the recording just stops.
type Recorder struct {
	sink      Sink
	log       func(format string, args ...any)
	maxChunks int
	maxBytes  int
	wait      bool

	mu       sync.Mutex
	room     sync.Cond // signalled when the writer took chunks off the queue, or closed
	queue    []Chunk
	spare    []Chunk
	inFlight int // bytes queued or being written
	closed   bool
	failed   bool
	dropping bool // in a burst of drops, logged once
	awake    bool // the writer is taking the queue: no need to wake it
	err      error
	last     time.Time // Time of the last chunk queued

	wake chan struct{}
	done chan struct{}
	once sync.Once

	written, writtenBytes atomic.Int64
	dropped, droppedBytes atomic.Int64
}

// RecorderOptions tunes a Recorder; zero values take the defaults.
type RecorderOptions struct {
	MaxChunks int                              // queued chunks (DefaultMaxChunks)
	MaxBytes  int                              // queued data bytes (DefaultMaxBytes)
	Log       func(format string, args ...any) // nil: silent
	// Wait: Record waits for room in a full queue rather than drop the
	// chunk. For a source with a buffer of its own, which holds what comes
	// meanwhile (the kernel's ring for attach); never for a relay, whose
	// bytes must not wait for the disk.
	Wait bool
}

// RecorderStats counts what a Recorder wrote and dropped.
type RecorderStats struct {
	Chunks, Bytes               int64 // written to the sink
	DroppedChunks, DroppedBytes int64
}

// NewRecorder starts a Recorder writing to sink. Close it to flush.
func NewRecorder(sink Sink, opts RecorderOptions) *Recorder {
	r := &Recorder{
		sink:      sink,
		log:       opts.Log,
		maxChunks: opts.MaxChunks,
		maxBytes:  opts.MaxBytes,
		wait:      opts.Wait,
		wake:      make(chan struct{}, 1),
		done:      make(chan struct{}),
	}
	if r.maxChunks <= 0 {
		r.maxChunks = DefaultMaxChunks
	}
	if r.maxBytes <= 0 {
		r.maxBytes = DefaultMaxBytes
	}
	if r.log == nil {
		r.log = func(string, ...any) {}
	}
	r.room.L = &r.mu
	go r.run()
	return r
}

// Record queues c without waiting (unless RecorderOptions.Wait) and
// reports whether it was queued. The
// Recorder owns c.Data from then on, queued or not. Open and Close chunks
// are tiny and are queued even when the queue is full, so connection
// boundaries survive overload; they are dropped only once the Recorder
// failed or closed.
//
// A chunk with a zero Time is timed here, as it is queued: chunks leave
// the Recorder in time order whatever goroutines recorded them. Times are
// wall-clock only (no monotonic reading), as a file stores them, so that a
// live reader of the chunks measures the same durations as a reader of the
// file. A time earlier than the last queued one (a wall clock stepped
// back, a source timing its chunks itself) is raised to it, keeping the
// file in time order.
func (r *Recorder) Record(c Chunk) bool {
	ok, wake := r.enqueue(c)
	if wake {
		r.kick()
	}
	return ok
}

// enqueue is Record without waking the writer: a relay queues a chunk
// before passing its bytes on (so that a reply is never queued ahead of
// its request) and wakes the writer after (so that waking another thread
// is not on the way of the bytes). wake says a kick is due.
func (r *Recorder) enqueue(c Chunk) (ok, wake bool) {
	r.mu.Lock()
	for r.wait && c.Kind == Data && r.full(&c) && !r.closed && !r.failed {
		r.kick() // the writer's wait for a batch ends
		r.room.Wait()
	}
	full := r.full(&c)
	// Timed once it waited no more, so that the queue stays in time order.
	if c.Time.IsZero() {
		c.Time = time.Now().Round(0)
	} else {
		c.Time = c.Time.Round(0)
	}
	if c.Time.Before(r.last) {
		c.Time = r.last
	}
	r.last = c.Time
	if r.closed || r.failed || (c.Kind == Data && full) {
		logIt := !r.dropping && !r.closed && !r.failed
		r.dropping = true
		queued, inFlight := len(r.queue), r.inFlight
		r.mu.Unlock()
		r.dropped.Add(1)
		r.droppedBytes.Add(int64(len(c.Data)))
		c.release()
		if logIt {
			r.log("recorder: queue full (%d chunks, %d bytes), dropping data; the capture will show gaps", queued, inFlight)
		}
		return false, false
	}
	r.dropping = false
	r.queue = append(r.queue, c)
	before := r.inFlight
	r.inFlight += c.held()
	// The writer empties the whole queue once awake: only the first chunk
	// after it took a batch needs to wake it, and one that fills a quarter
	// of the queue to end its wait for a batch.
	wake = !r.awake || len(r.queue) == r.maxChunks/4 || before < r.maxBytes/4 && r.inFlight >= r.maxBytes/4
	r.awake = true
	r.mu.Unlock()
	return true, wake
}

// full says whether c finds no room in the queue. With Wait, a chunk
// larger than the queue goes in once the queue is empty. Called with mu.
func (r *Recorder) full(c *Chunk) bool {
	return len(r.queue) >= r.maxChunks || r.inFlight+c.held() > r.maxBytes && !(r.wait && r.inFlight == 0)
}

// kick wakes the writer.
func (r *Recorder) kick() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *Recorder) run() {
	defer close(r.done)
	// A buffering sink is flushed when traffic pauses, at most every
	// sinkFlushEvery under steady traffic: a flush is a write to the disk.
	flushed := time.Now()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	gather := time.NewTimer(time.Hour)
	gather.Stop()
	armed, dirty := false, false
	for {
		r.mu.Lock()
		for len(r.queue) == 0 && !r.closed {
			if dirty && !armed {
				if since := time.Since(flushed); since >= sinkFlushEvery {
					r.mu.Unlock()
					r.flush()
					flushed, dirty = time.Now(), false
					r.mu.Lock()
					continue
				} else {
					timer.Reset(sinkFlushEvery - since)
					armed = true
				}
			}
			r.awake = false
			r.mu.Unlock()
			select {
			case <-r.wake:
				// Let a batch gather (a relay kicks again only when the
				// queue fills up, or Close): woken for each small call,
				// the writer would take CPU from the peers of the call it
				// records, on its way.
				gather.Reset(batchDelay)
				select {
				case <-r.wake:
					gather.Stop()
				case <-gather.C:
				}
			case <-timer.C:
				armed = false
				r.flush()
				flushed, dirty = time.Now(), false
			}
			r.mu.Lock()
		}
		r.awake = true
		if len(r.queue) == 0 {
			r.mu.Unlock()
			timer.Stop()
			gather.Stop()
			return // closed and drained
		}
		// Double buffering: relays fill one slice while this writes the other.
		batch := r.queue
		r.queue, r.spare = r.spare[:0], nil
		r.mu.Unlock()

		n := 0
		for i := range batch {
			h := batch[i].held()
			r.write(batch[i])
			batch[i] = Chunk{} // let the data go
			if r.wait {
				// Room as soon as each chunk is written: a source
				// waiting for it is not reading its own buffer.
				r.mu.Lock()
				r.inFlight -= h
				r.room.Broadcast()
				r.mu.Unlock()
			} else {
				n += h
			}
		}
		r.mu.Lock()
		r.inFlight -= n
		r.spare = batch[:0]
		r.room.Broadcast()
		r.mu.Unlock()
		dirty = true
	}
}

// batchDelay is how long the writer, woken by a chunk, lets more gather.
const batchDelay = 10 * time.Millisecond

// sinkFlushEvery bounds how often a buffering sink is flushed while traffic
// goes on; a pause flushes at once if the last flush is older.
const sinkFlushEvery = 100 * time.Millisecond

// Flusher is a Sink that buffers; the Recorder flushes it when idle.
type Flusher interface {
	Flush() error
}

func (r *Recorder) flush() {
	f, ok := r.sink.(Flusher)
	if !ok {
		return
	}
	r.mu.Lock()
	failed := r.failed
	r.mu.Unlock()
	if failed {
		return
	}
	if err := contained(f.Flush); err != nil {
		r.fail(err)
	}
}

func (r *Recorder) fail(err error) {
	r.mu.Lock()
	r.failed = true
	r.room.Broadcast()
	r.err = fmt.Errorf("recorder: %w", err)
	r.mu.Unlock()
	r.log("recorder: %v; recording stopped, traffic still relayed", err)
}

func (r *Recorder) write(c Chunk) {
	defer c.release()
	r.mu.Lock()
	failed := r.failed
	r.mu.Unlock()
	if failed {
		r.dropped.Add(1)
		r.droppedBytes.Add(int64(len(c.Data)))
		return
	}
	if err := contained(func() error { return r.sink.Write(c) }); err != nil {
		r.fail(err)
		r.dropped.Add(1)
		r.droppedBytes.Add(int64(len(c.Data)))
		return
	}
	r.written.Add(1)
	r.writtenBytes.Add(int64(len(c.Data)))
}

// contained turns a panic in the sink into an error: recording stops, the
// relay goes on (and a swapped runtime socket stays served).
func contained(f func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("panic in the sink: %v", v)
		}
	}()
	return f()
}

// Stats returns the counts so far.
func (r *Recorder) Stats() RecorderStats {
	return RecorderStats{
		Chunks: r.written.Load(), Bytes: r.writtenBytes.Load(),
		DroppedChunks: r.dropped.Load(), DroppedBytes: r.droppedBytes.Load(),
	}
}

// Close stops accepting chunks, writes the queued ones, and closes the sink.
// It returns the first error of the sink. Calling it again returns the same.
func (r *Recorder) Close() error {
	r.once.Do(func() {
		r.mu.Lock()
		r.closed = true
		r.room.Broadcast()
		r.mu.Unlock()
		select {
		case r.wake <- struct{}{}:
		default:
		}
		<-r.done
		err := r.sink.Close()
		r.mu.Lock()
		if r.err == nil && err != nil {
			r.err = fmt.Errorf("recorder: %w", err)
		}
		r.mu.Unlock()
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}
