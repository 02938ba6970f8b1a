package main

import (
	"bufio"
	"container/heap"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/criseq/criseq/capture"
	"github.com/criseq/criseq/decode"
	"github.com/criseq/criseq/flow"
	"github.com/criseq/criseq/internal/termtext"
)

const callsUsage = `Usage: criseq calls [flags] FILE

Lists every gRPC call in a capture (pcap or pcapng, criseq's own or made by
tcpdump/tshark): when it started relative to the first call, its connection and
stream, the method, how long it took, its status, and what it was about.

A connection caught midway (criseq record --attach), or whose bytes were
lost, is decoded from the next frame found. A method whose :path cannot be read
then is inferred from the shape of the messages and marked ~ (in JSON, the flag
"inferred"); "(unknown)" when no single method fits. A status marked ~ was not
read either: a unary call that got its response is OK.

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
	var out callWriter = &tableWriter{tw: tabwriter.NewWriter(bw, 0, 0, 2, ' ', 0)}
	if *asJSON {
		out = newJSONWriter(bw, *noRedact)
	}
	err = streamCalls(pos[0], decode.Options{NoRedact: *noRedact}, stderr, func(c *decode.Call) error {
		if *hide && c.Known && flow.IsPolling(c.Name) {
			return nil
		}
		return out.write(c, labels.Label(c))
	})
	if ferr := out.flush(); err == nil {
		err = ferr
	}
	return err
}

// callWriter prints calls one at a time.
type callWriter interface {
	write(c *decode.Call, s flow.Step) error
	flush() error
}

// tableWriter prints the aligned table; it flushes every tableBlock rows so
// memory stays bounded (columns align within a block, and CRI method
// names are short enough that blocks rarely differ).
type tableWriter struct {
	tw       *tabwriter.Writer
	t0       time.Time
	rows     int
	inferred bool // a row was marked ~
}

const tableBlock = 4096

func (w *tableWriter) write(c *decode.Call, s flow.Step) error {
	if w.rows == 0 {
		w.t0 = c.Start
		fmt.Fprintln(w.tw, "TIME\tCONN\tSTREAM\tMETHOD\tDURATION\tSTATUS\tDETAIL")
	}
	method := s.Method
	if c.Known {
		method = s.Service + "/" + s.Method
	}
	switch {
	case method == "":
		method = "(unknown)"
	case c.Flags&decode.Inferred != 0:
		method += "~"
	}
	status := statusText(c)
	if c.Flags&decode.InferredStatus != 0 {
		status += "~"
	}
	w.inferred = w.inferred || c.Flags&(decode.Inferred|decode.InferredStatus) != 0
	dur := "-"
	if s.Done {
		dur = fmtDuration(s.Duration)
	}
	fmt.Fprintf(w.tw, "%s\t%d\t%d\t%s\t%s\t%s\t%s\n",
		fmtOffset(c.Start.Sub(w.t0)), c.Conn, c.Stream, termtext.String(method), dur, status, termtext.String(detail(s, c)))
	w.rows++
	if w.rows%tableBlock == 0 {
		return w.tw.Flush()
	}
	return nil
}

func (w *tableWriter) flush() error {
	if err := w.tw.Flush(); err != nil {
		return err
	}
	if w.inferred {
		_, err := fmt.Fprintln(w.tw, "~ inferred from the messages: the :path or grpc-status was in a header table entry older than the capture")
		if err != nil {
			return err
		}
		return w.tw.Flush()
	}
	return nil
}

// streamCalls decodes a capture file and hands each call to emit in start
// order (then connection, stream), holding only the calls that a call
// still open could precede: memory follows the open calls, not the length
// of the capture.
func streamCalls(path string, dopts decode.Options, stderr io.Writer, emit func(*decode.Call) error) error {
	src, err := capture.OpenFile(path)
	if err != nil {
		return err
	}
	defer src.Close()
	var held callHeap
	dopts.OnCall = func(c *decode.Call) { heap.Push(&held, c) }
	d := decode.New(dopts)
	var last time.Time
	var emitErr error
	release := func(all bool) {
		barrier, open := d.Oldest()
		for held.Len() > 0 && emitErr == nil {
			c := held[0]
			// A call not yet decoded starts at or after the last chunk's
			// time, and after the oldest open call.
			if !all && (!c.Start.Before(last) || open && !c.Start.Before(barrier)) {
				break
			}
			emitErr = emit(heap.Pop(&held).(*decode.Call))
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
		if n++; n%64 == 0 || held.Len() > 1024 {
			release(false)
		}
	}
	d.Close()
	release(true)
	report(path, d.Errors(), stderr)
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

// callHeap orders calls like decode.SortCalls.
type callHeap []*decode.Call

func (h callHeap) Len() int { return len(h) }
func (h callHeap) Less(i, j int) bool {
	a, b := h[i], h[j]
	if !a.Start.Equal(b.Start) {
		return a.Start.Before(b.Start)
	}
	if a.Conn != b.Conn {
		return a.Conn < b.Conn
	}
	return a.Stream < b.Stream
}
func (h callHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *callHeap) Push(x any)   { *h = append(*h, x.(*decode.Call)) }
func (h *callHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return c
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

func detail(s flow.Step, c *decode.Call) string {
	var parts []string
	if s.Arg != "" {
		parts = append(parts, s.Arg)
	}
	if s.Err != "" {
		parts = append(parts, "✗ "+oneLine(c.Message))
	} else if s.Result != "" {
		parts = append(parts, "→ "+s.Result)
	}
	parts = append(parts, c.Errors...)
	return strings.Join(parts, " ")
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 120 {
		s = s[:117] + "..."
	}
	return s
}

// fmtOffset prints a time offset as seconds with milliseconds: "+12.345s".
func fmtOffset(d time.Duration) string {
	return fmt.Sprintf("+%.3fs", d.Seconds())
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

type jsonCall struct {
	Time       time.Time         `json:"time"`
	Conn       uint64            `json:"conn"`
	Stream     uint32            `json:"stream"`
	Method     string            `json:"method"`
	DurationMS *float64          `json:"duration_ms,omitempty"`
	Status     *int              `json:"status,omitempty"`
	Code       string            `json:"code,omitempty"`
	Message    string            `json:"message,omitempty"`
	Arg        string            `json:"arg,omitempty"`
	Result     string            `json:"result,omitempty"`
	Headers    [][2]string       `json:"request_headers,omitempty"`
	RespHdrs   [][2]string       `json:"response_headers,omitempty"`
	Trailers   [][2]string       `json:"trailers,omitempty"`
	Requests   []json.RawMessage `json:"requests,omitempty"`
	Responses  []json.RawMessage `json:"responses,omitempty"`
	Flags      []string          `json:"flags,omitempty"`
	Errors     []string          `json:"errors,omitempty"`
}

// jsonWriter prints one JSON object per call, valid JSON with what a
// terminal would act on escaped.
type jsonWriter struct {
	enc *json.Encoder
	raw bool
}

func newJSONWriter(out io.Writer, raw bool) *jsonWriter {
	w := &jsonWriter{enc: json.NewEncoder(termtext.JSONWriter(out)), raw: raw}
	w.enc.SetEscapeHTML(false)
	return w
}

func (w *jsonWriter) write(c *decode.Call, s flow.Step) error {
	j := jsonCall{
		Time: c.Start.UTC(), Conn: c.Conn, Stream: c.Stream, Method: c.Method,
		Message: c.Message, Arg: s.Arg, Result: s.Full,
		Flags: flagNames(c.Flags), Errors: c.Errors,
		Headers: pairs(c.RequestHeaders), RespHdrs: pairs(c.ResponseHeaders), Trailers: pairs(c.Trailers),
	}
	if !c.End.IsZero() {
		ms := float64(c.Duration().Microseconds()) / 1000
		j.DurationMS = &ms
		if c.Status >= 0 {
			st := c.Status
			j.Status = &st
			j.Code = codes.Code(c.Status).String()
		}
	}
	var err error
	if j.Requests, err = messagesJSON(c.Requests, w.raw); err != nil {
		return err
	}
	if j.Responses, err = messagesJSON(c.Responses, w.raw); err != nil {
		return err
	}
	return w.enc.Encode(j)
}

func (w *jsonWriter) flush() error { return nil }

func pairs(hs []hpack.HeaderField) [][2]string {
	out := make([][2]string, len(hs))
	for i, h := range hs {
		out[i] = [2]string{h.Name, h.Value}
	}
	return out
}

func messagesJSON(ms []decode.Message, raw bool) ([]json.RawMessage, error) {
	var out []json.RawMessage
	for _, m := range ms {
		var b []byte
		var err error
		switch {
		case m.Proto != nil:
			b, err = protojson.MarshalOptions{UseProtoNames: true}.Marshal(m.Proto)
		case raw && m.Raw != nil:
			b, err = json.Marshal(map[string]string{"raw_base64": base64.StdEncoding.EncodeToString(m.Raw)})
		default:
			b, err = json.Marshal(map[string]any{"bytes": len(m.Raw), "error": m.Err})
		}
		if err != nil {
			return nil, fmt.Errorf("calls: encoding a message as JSON: %w", err)
		}
		out = append(out, b)
	}
	return out, nil
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
