package main

import (
	"container/heap"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/criseq/criseq/capture"
	"github.com/criseq/criseq/decode"
	"github.com/criseq/criseq/flow"
	"github.com/criseq/criseq/internal/termtext"
)

// lateFlow bounds how long, in capture time, a flow still being built (or
// a call still open, which may start one) holds back the flows that start
// after it: past it they are handed out, and it comes when it is done, out
// of order. Flows normally complete within minutes (a start waits a minute
// for more containers, a sandbox that never gets one ten).
const lateFlow = 15 * time.Minute

// maxHeldCalls bounds the calls of the flows held back for order: 15
// minutes of flows behind a call that never returns took 200 MiB on
// overlapping copies of a burst that reused each other's IDs. Past it the
// earliest held flows are handed out, and a flow that starts before them
// comes later, out of order, as after lateFlow. About 1.5 KB a call:
// 6 MB. A variable for tests.
var maxHeldCalls = 4096

// streamFlows decodes and groups a capture file as a stream and hands each
// flow to emit in flow.Sort's order (start time, then pod), but for the
// late ones (see lateFlow). Memory follows the open calls and flows, not
// the length of the capture. Unless fopts.All, the bodies of kubelet's
// polling calls are not unmarshalled: no flow shows them. A flow that
// want refuses is held, and handed to emit, as a stub of its kind, pod
// and start: it costs no memory while it waits for its turn.
func streamFlows(path string, dopts decode.Options, lists listStreaming, fopts flow.Options, stderr io.Writer, want func(*flow.Flow) bool, emit func(*flow.Flow) error) (calls int, err error) {
	hold := func(f *flow.Flow) heldFlow {
		if want != nil && !want(f) {
			return heldFlow{f: stubOf(f)}
		}
		return heldWhole(f)
	}
	return streamHeld(path, dopts, lists, fopts, stderr, hold, func(h heldFlow) error { return emit(h.f) })
}

// streamHeld is streamFlows with what is held of each flow while it waits
// for its turn told by hold: the flow, a stub, or a stub with the flow
// drawn. h.calls counts towards maxHeldCalls.
func streamHeld(path string, dopts decode.Options, lists listStreaming, fopts flow.Options, stderr io.Writer, hold func(*flow.Flow) heldFlow, emit func(heldFlow) error) (calls int, err error) {
	src, err := capture.OpenFile(path)
	if err != nil {
		return 0, err
	}
	defer src.Close()
	dopts.ListsUnary = lists.unary(capture.NotesOf(src))
	g := flow.NewGrouper(fopts)
	var held flowHeap
	seq, heldCalls := 0, 0
	push := func(f *flow.Flow) {
		h := hold(f)
		seq++
		h.seq = seq
		heap.Push(&held, h)
		heldCalls += h.calls
	}
	pop := func() heldFlow {
		h := heap.Pop(&held).(heldFlow)
		heldCalls -= h.calls
		return h
	}
	var emitErr error
	var d *decode.Decoder
	dopts.OnCall = func(c *decode.Call) {
		calls++
		kept := keptLists(c)
		for _, f := range g.Add(c) {
			push(f)
			// Checked for each flow: one call can complete a burst of
			// flows, and closing, the decoder hands out every call still
			// open at once (thousands, in a capture cut while calls were
			// open).
			for heldCalls > maxHeldCalls && emitErr == nil {
				emitErr = emit(pop())
			}
		}
		recycleLists(d, c, kept)
	}
	dopts.OnStreamMessage = g.Event
	if !fopts.All {
		dopts.SkipBodies = flow.SkipBody
		dopts.Unwaited = unwaited
	}
	d = decode.New(dopts)
	release := func(barrier time.Time) {
		for held.Len() > 0 && emitErr == nil && (held[0].f.Start.Before(barrier) || heldCalls > maxHeldCalls) {
			emitErr = emit(pop())
		}
	}
	var last time.Time
	n := 0
	for emitErr == nil {
		var c capture.Chunk
		c, err = src.Next()
		if err != nil {
			break
		}
		if c.Time.After(last) {
			last = c.Time
		}
		d.Feed(c)
		// The barrier visits every open connection and flow: not too
		// often.
		if n++; n%4096 == 0 && held.Len() > 0 || heldCalls > maxHeldCalls {
			release(flowBarrier(last, g, d))
		}
	}
	d.Close()
	// The flows still open at the end come in order with those held, each
	// held (drawn, for render) just before it is handed out: held all at
	// once, render's drawings of up to MaxOpen flows came on top of the
	// flows, and the collector ran every few milliseconds to stay within
	// the memory limit.
	flushed := g.Flush()
	flow.Sort(flushed) // ties in Flush's order, as seq would keep them
	for _, f := range flushed {
		for held.Len() > 0 && emitErr == nil && !flowBefore(f, held[0].f) {
			emitErr = emit(pop())
		}
		if emitErr != nil {
			break
		}
		h := hold(f)
		seq++
		h.seq = seq
		emitErr = emit(h)
	}
	for held.Len() > 0 && emitErr == nil {
		emitErr = emit(pop())
	}
	report(path, src, d, stderr)
	if emitErr != nil {
		return calls, emitErr
	}
	if errors.Is(err, io.EOF) {
		return calls, nil
	}
	if calls == 0 {
		return 0, err
	}
	fmt.Fprintf(stderr, "criseq: %s (showing what was read before it)\n", termtext.String(err.Error()))
	return calls, nil
}

// flowBarrier is the earliest start a flow still to come can have: after
// the last chunk, the oldest call still open and the oldest flow being
// built, unless those are late. d leaves out the open calls that are in
// no flow (unwaited).
func flowBarrier(last time.Time, g *flow.Grouper, d *decode.Decoder) time.Time {
	barrier := last
	if t, ok := g.Oldest(); ok && t.Before(barrier) {
		barrier = t
	}
	if t, ok := d.Oldest(); ok && t.Before(barrier) {
		barrier = t
	}
	if floor := last.Add(-lateFlow); barrier.Before(floor) {
		barrier = floor
	}
	return barrier
}

// unwaited says which open calls no flow waits for, unless flow.Options.All:
// polling calls, such as a GetContainerEvents stream open for the life of
// kubelet's connection.
func unwaited(c *decode.Call) bool { return flow.IsPolling(c.Name) }

// loadFlows is streamFlows keeping every flow, sorted (tests).
func loadFlows(path string, dopts decode.Options, fopts flow.Options, stderr io.Writer) (flows []*flow.Flow, calls int, err error) {
	calls, err = streamFlows(path, dopts, "", fopts, stderr, nil, func(f *flow.Flow) error {
		flows = append(flows, f)
		return nil
	})
	if err != nil {
		return nil, calls, err
	}
	flow.Sort(flows) // the late ones
	return flows, calls, nil
}

// flowHeap orders flows like flow.Sort, a stable sort of the flows in the
// order the grouper handed them out.
type flowHeap []heldFlow

type heldFlow struct {
	f     *flow.Flow // the flow, or its stub
	calls int        // the flow's calls and events, held as they are
	drawn *drawn     // the flow drawn, if held so
	seq   int
}

// heldWhole is f held as it is.
func heldWhole(f *flow.Flow) heldFlow {
	return heldFlow{f: f, calls: len(f.Steps) + len(f.Events)}
}

// stubOf is what of f sorts it and names its files.
func stubOf(f *flow.Flow) *flow.Flow {
	return &flow.Flow{Kind: f.Kind, Pod: f.Pod, SandboxID: f.SandboxID, Start: f.Start}
}

func (h flowHeap) Len() int { return len(h) }
func (h flowHeap) Less(i, j int) bool {
	a, b := h[i].f, h[j].f
	if flowBefore(a, b) || flowBefore(b, a) {
		return flowBefore(a, b)
	}
	return h[i].seq < h[j].seq
}

// flowBefore is flow.Sort's order: a starts before b, or with it and its
// pod sorts first.
func flowBefore(a, b *flow.Flow) bool {
	switch {
	case !a.Start.Equal(b.Start):
		return a.Start.Before(b.Start)
	}
	return a.Pod.String() < b.Pod.String()
}
func (h flowHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *flowHeap) Push(x any)   { *h = append(*h, x.(heldFlow)) }
func (h *flowHeap) Pop() any {
	old := *h
	f := old[len(old)-1]
	old[len(old)-1] = heldFlow{}
	*h = old[:len(old)-1]
	return f
}

// maxReported bounds the connection errors printed: past it, a count.
const maxReported = 50

// report prints what could not be decoded: connections skipped as not
// HTTP/2, and the decoder's connection errors.
func report(path string, src capture.Source, d *decode.Decoder, stderr io.Writer) {
	if s, ok := src.(interface {
		NotHTTP2() (int, capture.ConnInfo)
	}); ok {
		if n, ci := s.NotHTTP2(); n > 0 {
			fmt.Fprintf(stderr, "criseq: %s: %s skipped: not HTTP/2 in clear text (the client's first bytes are not the HTTP/2 preface: TLS, or another protocol), e.g. connection %d, %s → %s\n",
				path, plural(n, "TCP connection"), ci.ID, termtext.String(ci.Client), termtext.String(ci.Server))
		}
	}
	errs := d.Errors()
	for i, e := range errs {
		if i == maxReported {
			break
		}
		fmt.Fprintf(stderr, "criseq: %s: %s\n", path, termtext.String(e.Error()))
	}
	if more := len(errs) - maxReported + d.ErrorsDropped(); more > 0 {
		fmt.Fprintf(stderr, "criseq: %s: and %s\n", path, plural(more, "more connection error"))
	}
}

// plural is "1 call", "2 calls".
func plural(n int, what string) string {
	s := strconv.Itoa(n) + " " + what
	if n != 1 {
		s += "s"
	}
	return s
}

// keptLists are the bytes of c's answers kept as they came for grouping to
// read item by item (decode.Options.ListsAbove), by answer.
func keptLists(c *decode.Call) map[int][]byte {
	var kept map[int][]byte
	for i, m := range c.Responses {
		if m.Wire != nil && m.Proto == nil {
			if kept == nil {
				kept = map[int][]byte{}
			}
			kept[i] = m.Wire.Bytes
		}
	}
	return kept
}

// recycleLists hands the decoder back the bytes of the answers grouping
// dropped once it learnt from them: the next large answer is assembled in
// them, not in new memory.
func recycleLists(d *decode.Decoder, c *decode.Call, kept map[int][]byte) {
	for i, b := range kept {
		if c.Responses[i].Wire == nil {
			d.Recycle(b)
			if onListRecycled != nil {
				onListRecycled()
			}
		}
	}
}

// onListRecycled, if set, is told of each list answer's bytes handed back
// (tests).
var onListRecycled func()
