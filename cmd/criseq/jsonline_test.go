package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"testing"
	"time"

	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/criseq/criseq/decode"
	"github.com/criseq/criseq/flow"
)

// refCall is how calls --json was written with encoding/json and
// protojson; jsonWriter must give the same bytes.
type refCall struct {
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
	Late       bool              `json:"late,omitempty"`
}

func refLine(t *testing.T, c *decode.Call, s flow.Step, late, raw bool) string {
	t.Helper()
	pairs := func(hs []hpack.HeaderField) [][2]string {
		out := make([][2]string, len(hs))
		for i, h := range hs {
			out[i] = [2]string{h.Name, h.Value}
		}
		return out
	}
	msgs := func(ms []decode.Message) []json.RawMessage {
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
				t.Fatal(err)
			}
			out = append(out, b)
		}
		return out
	}
	j := refCall{Time: c.Start.UTC(), Conn: c.Conn, Stream: c.Stream, Method: c.Method, Message: c.Message, Arg: s.Arg, Result: s.Full,
		Flags: flagNames(c.Flags), Errors: c.Errors, Late: late,
		Headers: pairs(c.RequestHeaders), RespHdrs: pairs(c.ResponseHeaders), Trailers: pairs(c.Trailers),
		Requests: msgs(c.Requests), Responses: msgs(c.Responses)}
	if !c.End.IsZero() {
		ms := float64(c.Duration().Microseconds()) / 1000
		j.DurationMS = &ms
		if c.Status >= 0 {
			st := c.Status
			j.Status = &st
			j.Code = codes.Code(c.Status).String()
		}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(j); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

// TestJSONLineLikeEncodingJSON: hostile text (invalid UTF-8, control
// characters, U+2028, HTML), every optional field present and absent.
func TestJSONLineLikeEncodingJSON(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 10, 0, 0, 123456789, time.FixedZone("x", 3600))
	hostile := "a\"b\\c\x00\x1b[31m\u2028\u2029<&>\xff\xfe é 🙂\t\n"
	calls := []struct {
		c    *decode.Call
		s    flow.Step
		late bool
		raw  bool
	}{
		{c: &decode.Call{Conn: 1, Stream: 3, Method: "/runtime.v1.RuntimeService/Version", Start: t0, End: t0.Add(1234567 * time.Nanosecond), Status: 0,
			Requests:       []decode.Message{{Proto: &runtimeapi.VersionRequest{Version: "v1"}}},
			Responses:      []decode.Message{{Proto: &runtimeapi.VersionResponse{RuntimeName: "containerd", RuntimeVersion: hostile[:10] + "ok"}}},
			RequestHeaders: []hpack.HeaderField{{Name: ":path", Value: "/x"}, {Name: "x-evil", Value: hostile}},
			Trailers:       []hpack.HeaderField{{Name: "grpc-status", Value: "0"}}}},
		{c: &decode.Call{Conn: 1 << 40, Stream: 1<<31 - 1, Method: hostile, Start: t0, Status: -1, Flags: decode.Incomplete | decode.Gap,
			Errors: []string{hostile, "second"}}, late: true, s: flow.Step{Arg: hostile, Full: "full " + hostile}},
		{c: &decode.Call{Conn: 2, Stream: 5, Method: "/other/Thing", Start: t0, End: t0.Add(3 * time.Second), Status: 5, Message: hostile,
			Requests:  []decode.Message{{Raw: []byte{1, 2, 3}, Size: 3}, {Err: "unmarshal " + hostile, Size: 7}},
			Responses: []decode.Message{{Raw: []byte("\xff\x00zz"), Size: 4}}}, raw: true},
		{c: &decode.Call{Conn: 3, Stream: 7, Start: t0, End: t0, Status: 0, Flags: decode.Compressed | decode.Malformed | decode.Reset}},
		{c: &decode.Call{Conn: 3, Stream: 9, Start: t0.Add(-time.Hour), End: t0.Add(25 * time.Hour), Status: 16}, s: flow.Step{Arg: "<pod>"}},
	}
	for i, tc := range calls {
		var out bytes.Buffer
		bw := bufio.NewWriter(&out)
		w := &jsonWriter{w: bw, raw: tc.raw}
		if err := w.write(tc.c, tc.s, tc.late); err != nil {
			t.Fatal(err)
		}
		bw.Flush()
		if want := refLine(t, tc.c, tc.s, tc.late, tc.raw); out.String() != want {
			t.Errorf("call %d:\n got %s\nwant %s", i, out.String(), want)
		}
	}
}
