package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/criseq/criseq/capture"
	"github.com/criseq/criseq/decode"
	"github.com/criseq/criseq/flow"
	"github.com/criseq/criseq/internal/crijson"
	"github.com/criseq/criseq/internal/termtext"
)

const callsUsage = `Usage: criseq calls [flags] FILE

Lists every gRPC call in a capture (pcap or pcapng, criseq's own or made by
tcpdump/tshark; FILE - reads standard input): when it started relative to the
first call, its connection and stream, the method, how long it took, its
status, and what it was about.

A connection caught midway (criseq record --attach), or whose bytes were
lost, is decoded from the next frame found. A method whose :path cannot be read
then is inferred from the shape of the messages and marked ~ (in JSON, the flag
"inferred"); "(unknown)" when no single method fits, with the few it may be
("one of ..."; in JSON, "candidates"). A status marked ~ was not read either: a
unary call that got its response is OK.

Examples:
  criseq calls cri.pcapng
  criseq calls --hide-polling cri.pcapng        # without kubelet's periodic calls
  criseq calls --json cri.pcapng | jq .response  # decoded messages, one call per line
`

func runCalls(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("calls", callsUsage, stderr)
	asJSON := fs.Bool("json", false, "print JSON lines with the decoded request and response messages")
	hide := fs.Bool("hide-polling", false, "leave out kubelet's periodic calls (List*, Status, Version, ImageFsInfo, stats)")
	noRedact := fs.Bool("no-redact", false, "show registry credentials, environment values and raw bodies (they are redacted by default)")
	var lists listStreaming
	registerListStreaming(fs, &lists)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return fmt.Errorf("%w: calls takes one capture file, got %d arguments", errUsage, len(pos))
	}
	bw := bufio.NewWriter(stdout)
	defer bw.Flush()
	labels := flow.NewLabeler(flow.Options{})
	var out callWriter = &tableWriter{w: bw}
	wire := crijson.NewWire(!*noRedact)
	if *asJSON {
		out = newJSONWriter(bw, *noRedact, wire)
	}
	dopts := decode.Options{NoRedact: *noRedact}
	if !*asJSON {
		// The table shows no detail of kubelet's polling calls, and the
		// names it gives IDs come from the calls that create and inspect
		// pods and containers: their bodies, most of the bytes and of the
		// decoding time, are not read.
		dopts.SkipBodies = func(_, method string) bool { return flow.IsPolling(method) }
		dopts.SkipResponseMaps = true
		dopts.RequestHeader = flow.ReadsHeader // it shows no header
		dopts.Fields = flow.ReadsFields        // nor any message
	}
	if *asJSON && jsonFromWire {
		// Messages are written as JSON from their wire bytes, and decoded
		// only to what grouping and labels read.
		var scratch []byte
		dopts.Fields = flow.ReadsFields
		// The polling calls' messages are written, not decoded: labels
		// learn from them no more than the table's do (but for the
		// container events, whose labels read them).
		dopts.EncodeOnly = func(_, method string) bool { return flow.IsPolling(method) && method != "GetContainerEvents" }
		dopts.KeepWire = func(md protoreflect.MessageDescriptor, b []byte) bool {
			// A large message is kept as it came, its JSON written as
			// the line is (jsonWriter.messageJSON): checked here, so
			// that one the wire cannot write is decoded whole now.
			if len(b) <= keepWireAbove {
				return false
			}
			ok := wire.Check(md, b)
			if onWireJSON != nil {
				onWireJSON(ok)
			}
			if ok && onWireKept != nil {
				onWireKept()
			}
			return ok
		}
		dopts.Encode = func(md protoreflect.MessageDescriptor, b []byte) ([]byte, bool) {
			out, ok := wire.Append(scratch[:0], md, b)
			if onWireJSON != nil {
				onWireJSON(ok)
			}
			if cap(out) > 1<<20 {
				// Not kept as scratch: a huge message's JSON is not copied.
				scratch = nil
			} else {
				scratch = out
				if ok {
					out = bytes.Clone(out)
				}
			}
			if !ok {
				return nil, false
			}
			return out, true
		}
	}
	var keep func(*decode.Call) bool
	if *hide {
		keep = func(c *decode.Call) bool { return !c.Known || !flow.IsPolling(c.Name) }
		dopts.SkipBodies = func(_, method string) bool { return flow.IsPolling(method) }
	}
	err = streamCalls(pos[0], dopts, lists, keep, *asJSON, stderr, func(it *heldItem, late bool) error {
		if it.m != nil {
			return out.(*jsonWriter).message(it, late)
		}
		return out.write(it.c, labels.Label(it.c), late)
	})
	if ferr := out.flush(); err == nil {
		err = ferr
	}
	return err
}

// recycle hands the decoder back the bytes of the messages of it kept as
// they came, now printed.
func recycle(d *decode.Decoder, it *heldItem) {
	if it.m != nil {
		if it.m.Wire != nil {
			d.Recycle(it.m.Wire.Bytes)
		}
		return
	}
	for _, ms := range [][]decode.Message{it.c.Requests, it.c.Responses} {
		for _, m := range ms {
			if m.Wire != nil {
				d.Recycle(m.Wire.Bytes)
			}
		}
	}
}

// jsonFromWire: calls --json writes messages from their wire bytes (else
// from the messages decoded whole: tests compare the two); onWireJSON,
// if set, is told of each message whether it was, and onWireKept of each
// kept to be written as it is printed.
var (
	jsonFromWire = true
	onWireJSON   func(ok bool)
	onWireKept   func()
	// keepWireAbove: a message larger is kept as it came and its JSON
	// written as it is printed (a variable for tests).
	keepWireAbove = 1 << 20
)

// callWriter prints calls one at a time.
type callWriter interface {
	write(c *decode.Call, s flow.Step, late bool) error
	flush() error
}

// Calls are printed in start order (then connection, stream): each is held
// until no call still open, nor any call not yet seen, can start before it.
// A call open for longer than lateAfter (capture time; a server stream
// open for a connection's life, a call that never returns) no longer
// holds back the calls after it: they are printed, and it is printed when
// it ends (or when the capture does), out of order, marked late. The held
// calls are bounded too, by heldCalls and heldBytes: past them the oldest
// is printed, and a call that started before it comes late.
const (
	lateAfter = time.Minute
	heldCalls = 4096
	heldBytes = 4 << 20
)

// A server stream's messages (kubelet's GetContainerEvents, open for the
// connection's life) are not kept in their call: with messages set, each
// is handed to emit as it comes, in time order among the calls' starts;
// without, they are only counted (Call.Streamed).

// streamCalls decodes a capture file and hands each call to emit, in start
// order but for the late ones (see lateAfter), and each server-stream
// message if messages; keep says which calls to print at all. Memory
// follows the calls held back, not the length of the capture.
func streamCalls(path string, dopts decode.Options, lists listStreaming, keep func(*decode.Call) bool, messages bool, stderr io.Writer, emit func(it *heldItem, late bool) error) error {
	src, err := capture.OpenFile(path)
	if err != nil {
		return err
	}
	defer src.Close()
	dopts.ListsUnary = lists.unary(capture.NotesOf(src))
	var held callHeap
	size := 0 // message bytes held, roughly
	var seq uint64
	push := func(it heldItem, at time.Time) {
		seq++
		it.seq = seq
		it.sec, it.nsec = at.Unix(), int32(at.Nanosecond())
		it.size = it.bytes()
		size += it.size
		held.push(it)
	}
	dopts.OnCall = func(c *decode.Call) {
		if keep == nil || keep(c) {
			push(heldItem{c: c, conn: c.Conn, stream: c.Stream}, c.Start)
		}
	}
	dopts.OnStreamMessage = func(c *decode.Call, m decode.Message) {
		if messages && (keep == nil || keep(c)) {
			push(heldItem{c: c, m: &m, conn: c.Conn, stream: c.Stream}, m.Time)
		}
	}
	d := decode.New(dopts)
	var last time.Time
	var emitErr error
	var printed, it heldItem // the last item printed in order, the next
	pop := func() {
		it = held.pop()
		size -= it.size
		late := printed.seq != 0 && it.less(&printed)
		if !late {
			printed = it
		}
		emitErr = emit(&it, late)
		recycle(d, &it)
	}
	release := func(all bool) {
		if all {
			for held.Len() > 0 && emitErr == nil {
				pop()
			}
			return
		}
		// A call not yet decoded starts at or after the last chunk's
		// time, and after the oldest open call, unless that one is late.
		barrier := last.Add(-lateAfter)
		if held.Len() > 0 && !held[0].before(barrier) {
			if t, open := d.Oldest(); !open {
				barrier = last
			} else if t.After(barrier) {
				barrier = t
				if last.Before(t) {
					barrier = last
				}
			}
		}
		for held.Len() > 0 && emitErr == nil && (held[0].before(barrier) || held.Len() > heldCalls || size > heldBytes) {
			pop()
		}
	}
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
		// The barrier visits every open connection: not too often.
		if n++; n%4096 == 0 || held.Len() > heldCalls || size > heldBytes {
			release(false)
		}
	}
	d.Close()
	release(true)
	report(path, src, d, stderr)
	if emitErr != nil {
		return emitErr
	}
	if errors.Is(err, io.EOF) {
		return nil
	}
	if n == 0 {
		return err
	}
	// A truncated file: what was read before the damage is shown.
	fmt.Fprintf(stderr, "criseq: %s (showing what was read before it)\n", termtext.String(err.Error()))
	return nil
}

// heldItem is a call, or a message of a server stream, waiting for its
// turn to be printed. Its time is kept as seconds and nanoseconds, which
// compare as time.Time does (capture times have no monotonic reading) and
// make a smaller item for the heap to move.
type heldItem struct {
	c      *decode.Call    // the call, or the message's call
	m      *decode.Message // a server-stream message; nil for a call
	sec    int64           // the call's start, the message's time: Unix seconds
	conn   uint64
	seq    uint64 // arrival order, the last tie-break
	size   int    // bytes
	nsec   int32
	stream uint32
}

// bytes is about what a held item costs.
func (it *heldItem) bytes() int {
	if it.m != nil {
		return 256 + it.m.Size
	}
	n := 512
	for _, m := range it.c.Requests {
		n += m.Size
	}
	for _, m := range it.c.Responses {
		n += m.Size
	}
	return n
}

// before reports whether the item's time is before t.
func (it *heldItem) before(t time.Time) bool {
	sec := t.Unix()
	return it.sec < sec || it.sec == sec && it.nsec < int32(t.Nanosecond())
}

// less orders items like decode.SortCalls: start (or message) time, then
// connection and stream; a call before its messages.
func (it *heldItem) less(o *heldItem) bool {
	switch {
	case it.sec != o.sec:
		return it.sec < o.sec
	case it.nsec != o.nsec:
		return it.nsec < o.nsec
	case it.conn != o.conn:
		return it.conn < o.conn
	case it.stream != o.stream:
		return it.stream < o.stream
	case (it.m == nil) != (o.m == nil):
		return it.m == nil
	}
	return it.seq < o.seq
}

// callHeap is a min-heap of items by less. The items are held by value:
// comparing pointers' items was a cache miss a level.
type callHeap []heldItem

func (h callHeap) Len() int { return len(h) }

func (h *callHeap) push(it heldItem) {
	*h = append(*h, it)
	s := *h
	for j := len(s) - 1; j > 0; {
		i := (j - 1) / 2
		if !s[j].less(&s[i]) {
			break
		}
		s[i], s[j] = s[j], s[i]
		j = i
	}
}

func (h *callHeap) pop() heldItem {
	s := *h
	n := len(s) - 1
	top := s[0]
	s[0] = s[n]
	s[n] = heldItem{} // let the call go
	s = s[:n]
	for i := 0; ; {
		j := 2*i + 1
		if j >= n {
			break
		}
		if r := j + 1; r < n && s[r].less(&s[j]) {
			j = r
		}
		if !s[j].less(&s[i]) {
			break
		}
		s[i], s[j] = s[j], s[i]
		i = j
	}
	*h = s
	return top
}

func statusText(c *decode.Call) string {
	switch {
	case c.End.IsZero():
		return "incomplete"
	case c.Status < 0:
		return "no status"
	}
	return codes.Code(c.Status).String()
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 120 {
		s = s[:117] + "..."
	}
	return s
}

// appendOffset prints a time offset as seconds with milliseconds:
// "+12.345s" (a late call may start before the first row: "-0.500s").
func appendOffset(b []byte, d time.Duration) []byte {
	if d >= 0 {
		b = append(b, '+')
	}
	b = strconv.AppendFloat(b, d.Seconds(), 'f', 3, 64)
	return append(b, 's')
}

// fmtDuration rounds a call's duration for people: 105ms, 1.94s, 812µs.
func fmtDuration(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return d.Round(100 * time.Millisecond).String()
	case d >= time.Second:
		return d.Round(10 * time.Millisecond).String()
	case d >= 10*time.Millisecond:
		return d.Round(time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(100 * time.Microsecond).String()
	}
	return d.Round(time.Microsecond).String()
}

func flagNames(f decode.Flags) []string {
	var out []string
	for _, x := range []struct {
		f    decode.Flags
		name string
	}{{decode.Incomplete, "incomplete"}, {decode.Reset, "reset"}, {decode.Compressed, "compressed"},
		{decode.Gap, "gap"}, {decode.Malformed, "malformed"}, {decode.Inferred, "inferred"}, {decode.InferredStatus, "inferred-status"}} {
		if f&x.f != 0 {
			out = append(out, x.name)
		}
	}
	return out
}
