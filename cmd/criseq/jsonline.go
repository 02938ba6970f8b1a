package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"time"
	"unicode/utf8"

	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"

	"github.com/criseq/criseq/decode"
	"github.com/criseq/criseq/flow"
	"github.com/criseq/criseq/internal/crijson"
	"github.com/criseq/criseq/internal/termtext"
)

// jsonWriter prints one JSON object per call (calls --json). The line is
// written by hand, the messages by crijson: the same bytes encoding/json
// and protojson gave, without reflection per call. Its fields, in order:
//
//	time, conn, stream, method, candidates, duration_ms, status, code, message, arg,
//	result, request_headers, response_headers, trailers, requests,
//	responses, streamed, flags, errors, late
//
// each left out when empty (duration_ms and status while the call had no
// end or no status). A server stream's messages have lines of their own
// (see message); its call's line counts them in streamed.
type jsonWriter struct {
	w    io.Writer
	raw  bool
	enc  crijson.Encoder
	wire *crijson.Wire // for messages kept as they came (Message.Wire)
	buf  []byte
}

func newJSONWriter(out io.Writer, raw bool, wire *crijson.Wire) *jsonWriter {
	return &jsonWriter{w: out, raw: raw, wire: wire}
}

func (w *jsonWriter) write(c *decode.Call, s flow.Step, late bool) error {
	b := append(w.buf[:0], `{"time":"`...)
	b = c.Start.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","conn":`...)
	b = strconv.AppendUint(b, c.Conn, 10)
	b = append(b, `,"stream":`...)
	b = strconv.AppendUint(b, uint64(c.Stream), 10)
	b = append(b, `,"method":`...)
	b = appendJSONString(b, c.Method)
	b = appendStrings(b, "candidates", c.Candidates)
	code := ""
	if !c.End.IsZero() {
		b = append(b, `,"duration_ms":`...)
		b = crijson.AppendFloat64(b, float64(c.Duration().Microseconds())/1000)
		if c.Status >= 0 {
			b = append(b, `,"status":`...)
			b = strconv.AppendInt(b, int64(c.Status), 10)
			code = codes.Code(c.Status).String()
		}
	}
	b = appendField(b, "code", code)
	b = appendField(b, "message", c.Message)
	b = appendField(b, "arg", s.Arg)
	b = appendField(b, "result", s.Full)
	b = appendHeaders(b, "request_headers", c.RequestHeaders)
	b = appendHeaders(b, "response_headers", c.ResponseHeaders)
	b = appendHeaders(b, "trailers", c.Trailers)
	var err error
	if b, err = w.messages(b, "requests", c.Requests); err != nil {
		return err
	}
	if b, err = w.messages(b, "responses", c.Responses); err != nil {
		return err
	}
	if c.Streamed > 0 {
		b = append(b, `,"streamed":`...)
		b = strconv.AppendInt(b, int64(c.Streamed), 10)
	}
	b = appendStrings(b, "flags", flagNames(c.Flags))
	b = appendStrings(b, "errors", c.Errors)
	if late {
		b = append(b, `,"late":true`...)
	}
	b = append(b, '}', '\n')
	// Valid JSON with what a terminal would act on escaped.
	_, err = w.w.Write(termtext.JSON(b))
	if cap(b) <= 1<<20 {
		w.buf = b // reused, unless one huge call made it big
	}
	return err
}

func (w *jsonWriter) flush() error { return nil }

// message prints a server-stream message on a line of its own: time,
// conn, stream, method, response (and late). Its call's line, at its end,
// counts them (streamed).
func (w *jsonWriter) message(it *heldItem, late bool) error {
	b := append(w.buf[:0], `{"time":"`...)
	b = it.m.Time.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","conn":`...)
	b = strconv.AppendUint(b, it.conn, 10)
	b = append(b, `,"stream":`...)
	b = strconv.AppendUint(b, uint64(it.stream), 10)
	b = append(b, `,"method":`...)
	b = appendJSONString(b, it.c.Method)
	b = append(b, `,"response":`...)
	var err error
	if b, err = w.messageJSON(b, *it.m); err != nil {
		return err
	}
	if late {
		b = append(b, `,"late":true`...)
	}
	b = append(b, '}', '\n')
	_, err = w.w.Write(termtext.JSON(b))
	if cap(b) <= 1<<20 {
		w.buf = b
	}
	return err
}

func appendField(b []byte, name, v string) []byte {
	if v == "" {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return appendJSONString(b, v)
}

func appendHeaders(b []byte, name string, hs []hpack.HeaderField) []byte {
	if len(hs) == 0 {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, `":[`...)
	for i, h := range hs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '[')
		b = appendJSONString(b, h.Name)
		b = append(b, ',')
		b = appendJSONString(b, h.Value)
		b = append(b, ']')
	}
	return append(b, ']')
}

func appendStrings(b []byte, name string, ss []string) []byte {
	if len(ss) == 0 {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, `":[`...)
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, s)
	}
	return append(b, ']')
}

// messages writes a call's decoded messages; one that could not be decoded
// shows its size and why (or, with --no-redact, its bytes).
func (w *jsonWriter) messages(b []byte, name string, ms []decode.Message) ([]byte, error) {
	if len(ms) == 0 {
		return b, nil
	}
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, `":[`...)
	for i, m := range ms {
		if i > 0 {
			b = append(b, ',')
		}
		var err error
		if b, err = w.messageJSON(b, m); err != nil {
			return b, err
		}
	}
	return append(b, ']'), nil
}

// messageJSON writes one decoded message; one that could not be decoded
// shows its size and why (or, with --no-redact, its bytes).
func (w *jsonWriter) messageJSON(b []byte, m decode.Message) ([]byte, error) {
	var err error
	switch {
	case m.Wire != nil:
		// Written as it is made, after the line so far: checked when
		// it was kept (Wire.Check), so it is written whole.
		if _, err := w.w.Write(termtext.JSON(b)); err != nil {
			return b, err
		}
		ok, err := w.wire.Write(termtext.JSONWriter(w.w), m.Wire.Type, m.Wire.Bytes)
		if err == nil && !ok {
			err = fmt.Errorf("calls: %s changed after it was checked", m.Wire.Type.FullName())
		}
		if err != nil {
			return b, err
		}
		b = b[:0]
	case len(m.Encoded) > 64<<10:
		// Written as it is, not copied into the line: the line so far
		// first. Escaping for the terminal goes rune by rune, so in parts
		// it writes the same bytes.
		if _, err := w.w.Write(termtext.JSON(b)); err != nil {
			return b, err
		}
		if _, err := w.w.Write(termtext.JSON(m.Encoded)); err != nil {
			return b, err
		}
		b = b[:0]
	case m.Encoded != nil:
		b = append(b, m.Encoded...)
	case m.Proto != nil:
		b, err = w.enc.Append(b, m.Proto)
	case w.raw && m.Raw != nil:
		var j []byte
		j, err = json.Marshal(map[string]string{"raw_base64": base64.StdEncoding.EncodeToString(m.Raw)})
		b = append(b, j...)
	default:
		var j []byte
		j, err = json.Marshal(map[string]any{"bytes": len(m.Raw), "error": m.Err})
		b = append(b, j...)
	}
	if err != nil {
		return b, fmt.Errorf("calls: encoding a message as JSON: %w", err)
	}
	return b, nil
}

// appendJSONString is encoding/json's string encoding without HTML
// escaping (json.Encoder.SetEscapeHTML(false)): invalid UTF-8 becomes
// U+FFFD, U+2028 and U+2029 are escaped.
func appendJSONString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= ' ' && c != '"' && c != '\\' {
				i = crijson.PlainRun(s, i+1)
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '\\', '"':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
