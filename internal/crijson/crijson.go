// Package crijson writes CRI protobuf messages as compact JSON: byte for
// byte what protojson.MarshalOptions{UseProtoNames: true} writes once
// compacted (protojson varies its spacing on purpose), by code generated
// from the CRI descriptors (cri_json.go, go generate): no reflection per
// message. Other messages go through protojson.
//
// In: proto.Messages (decoded and redacted by decode). Out: JSON appended
// to a buffer.
package crijson

//go:generate go run ./gen cri_json.go

import (
	"bytes"
	"cmp"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"strconv"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// An Encoder writes messages as JSON. It is not safe for concurrent use.
type Encoder struct {
	compact bytes.Buffer
	keys    []string // map keys being written, a stack
}

// Append appends m as JSON to dst.
func (e *Encoder) Append(dst []byte, m proto.Message) ([]byte, error) {
	if m == nil {
		return append(dst, '{', '}'), nil
	}
	out, ok, err := e.appendKnown(dst, m)
	if ok {
		if err != nil {
			err = fmt.Errorf("crijson: %s: %w", m.ProtoReflect().Descriptor().FullName(), err)
		}
		return out, err
	}
	j, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		return dst, err
	}
	e.compact.Reset()
	if err := json.Compact(&e.compact, j); err != nil {
		return dst, err
	}
	return append(dst, e.compact.Bytes()...), nil
}

// appendSortedKeys appends m's keys to keys, the new ones sorted.
func appendSortedKeys[V any](keys []string, m map[string]V) []string {
	n := len(keys)
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys[n:])
	return keys
}

func sortedKeys[K cmp.Ordered, V any](m map[K]V) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func appendEnum(b []byte, v int32, names map[int32]string) []byte {
	if n, ok := names[v]; ok {
		b = append(b, '"')
		b = append(b, n...)
		return append(b, '"')
	}
	return strconv.AppendInt(b, int64(v), 10)
}

func appendBytes(b, v []byte) []byte {
	b = append(b, '"')
	b = base64.StdEncoding.AppendEncode(b, v)
	return append(b, '"')
}

// AppendFloat64 appends f as encoding/json and protojson write a finite
// double.
func AppendFloat64(b []byte, f float64) []byte { return appendFloat(b, f, 64) }

// appendFloat is protojson's.
func appendFloat(out []byte, n float64, bitSize int) []byte {
	switch {
	case math.IsNaN(n):
		return append(out, `"NaN"`...)
	case math.IsInf(n, +1):
		return append(out, `"Infinity"`...)
	case math.IsInf(n, -1):
		return append(out, `"-Infinity"`...)
	}
	fmt := byte('f')
	if abs := math.Abs(n); abs != 0 {
		if bitSize == 64 && (abs < 1e-6 || abs >= 1e21) ||
			bitSize == 32 && (float32(abs) < 1e-6 || float32(abs) >= 1e21) {
			fmt = 'e'
		}
	}
	out = strconv.AppendFloat(out, n, fmt, -1, bitSize)
	if fmt == 'e' {
		n := len(out)
		if n >= 4 && out[n-4] == 'e' && out[n-3] == '-' && out[n-2] == '0' {
			out[n-2] = out[n-1]
			out = out[:n-1]
		}
	}
	return out
}

var errInvalidUTF8 = errors.New("string field holds invalid UTF-8")

// appendString is protojson's string writer: invalid UTF-8 is an error.
func appendString(out []byte, in string) ([]byte, error) {
	out = append(out, '"')
	for i := 0; i < len(in); {
		c := in[i]
		if c >= ' ' && c != '"' && c != '\\' && c < utf8.RuneSelf {
			j := PlainRun(in, i+1)
			out = append(out, in[i:j]...)
			i = j
			continue
		}
		if c >= utf8.RuneSelf {
			r, n := utf8.DecodeRuneInString(in[i:])
			if r == utf8.RuneError && n == 1 {
				return out, errInvalidUTF8
			}
			out = append(out, in[i:i+n]...)
			i += n
			continue
		}
		out = append(out, '\\')
		switch c {
		case '"', '\\':
			out = append(out, c)
		case '\b':
			out = append(out, 'b')
		case '\f':
			out = append(out, 'f')
		case '\n':
			out = append(out, 'n')
		case '\r':
			out = append(out, 'r')
		case '\t':
			out = append(out, 't')
		default:
			out = append(out, 'u')
			out = append(out, "0000"[1+(bits.Len32(uint32(c))-1)/4:]...)
			out = strconv.AppendUint(out, uint64(c), 16)
		}
		i++
	}
	return append(out, '"'), nil
}

// PlainRun is the index of the first byte of s from i on that a JSON
// string writer must look at (below 0x20, '"', '\\', not ASCII), or
// len(s); eight bytes at a time, as most strings are plain.
func PlainRun(s string, i int) int {
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	for ; i+8 <= len(s); i += 8 {
		w := s[i : i+8] // one load, no bounds check per byte
		x := uint64(w[0]) | uint64(w[1])<<8 | uint64(w[2])<<16 | uint64(w[3])<<24 |
			uint64(w[4])<<32 | uint64(w[5])<<40 | uint64(w[6])<<48 | uint64(w[7])<<56
		q, bs := x^(lo*'"'), x^(lo*'\\')
		// A byte below 0x20, a zero byte of q or bs, or a high bit: each
		// test exact for "some byte", none borrowing into a false "none".
		if ((x-lo*0x20)&^x|(q-lo)&^q|(bs-lo)&^bs|x)&hi != 0 {
			break
		}
	}
	for i < len(s) {
		if c := s[i]; c < ' ' || c == '"' || c == '\\' || c >= utf8.RuneSelf {
			break
		}
		i++
	}
	return i
}
