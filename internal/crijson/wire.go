package crijson

import (
	"bytes"
	"encoding/base64"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/criseq/criseq/decode"
)

// Wire writes messages as JSON straight from their wire bytes: byte for
// byte what Encoder.Append writes of the message proto.Unmarshal makes of
// them (redacted as decode redacts it), without making it. Unmarshalling
// whole messages, maps included, was a third of calls --json. Where the
// bytes are anything but what a protobuf encoder writes of valid values
// (a field given twice, a map key twice, a wire type that does not match,
// invalid UTF-8, nesting past 64), it says so and the caller decodes.
// Not safe for concurrent use.
type Wire struct {
	redact bool
	plans  map[planKey]*wirePlan
	ents   []wireEnt  // the fields of the messages being written, a stack
	keys   []mapEntry // the map entries being written, a stack
	// flush, while Check or Write runs, is handed the JSON made so far
	// after each element of the message's own lists and maps, and
	// returns the buffer to go on with: a 16 MiB list's JSON is not
	// held whole.
	flush func(out []byte) []byte
	buf   []byte // Check's and Write's, bounded
}

// flushAt is how much JSON Check and Write make before handing it on
// (a variable for tests).
var flushAt = 32 << 10

// NewWire returns a Wire; redact: as decode does unless NoRedact.
func NewWire(redact bool) *Wire { return &Wire{redact: redact, plans: map[planKey]*wirePlan{}} }

const maxWireDepth = 64

// planMode: which rules apply to a message's fields. The messages of a
// field with a rule have none but the one it says (decode's redactor does
// not look further down).
type planMode uint8

const (
	modeRules planMode = iota // decode.FieldRule
	modeNone                  // no redaction
	modeValue                 // the element of a SecretValue list: its "value" is secret
)

type planKey struct {
	name protoreflect.FullName
	mode planMode
}

type wirePlan struct {
	ok     bool // every field can be written from the wire
	fields []wireField
	byNum  []int16 // field number -> index in fields + 1; 0: unknown
}

type wireField struct {
	key  string // `"name":`
	kind protoreflect.Kind
	wt   protowire.Type // what kind is written as; a map: BytesType
	list bool
	rule decode.Rule
	enum protoreflect.EnumValueDescriptors
	sub  *wirePlan // message kind; a map's value message
	// A map: its value's kind (and sub); its key is a string.
	isMap bool
	val   protoreflect.Kind
}

func (w *Wire) plan(md protoreflect.MessageDescriptor, mode planMode) *wirePlan {
	k := planKey{md.FullName(), mode}
	if p, ok := w.plans[k]; ok {
		return p
	}
	p := &wirePlan{ok: true}
	w.plans[k] = p // before the fields: a message may hold itself
	if strings.HasPrefix(string(md.FullName()), "google.protobuf.") {
		p.ok = false // protojson writes the well-known types its own way
		return p
	}
	fds := md.Fields()
	maxNum := 0
	for i := range fds.Len() {
		maxNum = max(maxNum, int(fds.Get(i).Number()))
	}
	if maxNum > 4096 {
		p.ok = false
		return p
	}
	p.byNum = make([]int16, maxNum+1)
	for i := range fds.Len() {
		fd := fds.Get(i)
		f := wireField{key: strconv.Quote(fd.TextName()) + ":", kind: fd.Kind(), wt: decode.WireType(fd.Kind()), list: fd.IsList(), isMap: fd.IsMap()}
		if fd.ContainingOneof() != nil || fd.HasPresence() && fd.Message() == nil || fd.Kind() == protoreflect.GroupKind {
			p.ok = false
			return p
		}
		switch {
		case !w.redact || mode == modeNone:
		case mode == modeValue:
			if fd.Name() == "value" && !fd.IsList() && (fd.Kind() == protoreflect.StringKind || fd.Kind() == protoreflect.BytesKind) {
				f.rule = decode.Secret
			}
		default:
			f.rule = decode.FieldRule(md, fd)
		}
		sub := mode
		if mode == modeValue || f.rule != decode.Keep {
			sub = modeNone
		}
		if f.rule == decode.SecretValue {
			sub = modeValue
		}
		if fd.IsMap() {
			kd, vd := fd.MapKey(), fd.MapValue()
			if kd.Kind() != protoreflect.StringKind {
				p.ok = false
				return p
			}
			f.val = vd.Kind()
			switch vd.Kind() {
			case protoreflect.StringKind, protoreflect.BytesKind:
			case protoreflect.MessageKind:
				f.sub = w.plan(vd.Message(), sub)
			default:
				p.ok = false
				return p
			}
		} else if fd.Kind() == protoreflect.MessageKind {
			f.sub = w.plan(fd.Message(), sub)
		} else if fd.Kind() == protoreflect.EnumKind {
			f.enum = fd.Enum().Values()
		}
		p.fields = append(p.fields, f)
		p.byNum[fd.Number()] = int16(len(p.fields))
	}
	return p
}

// wireEnt is one field of a message on the wire.
type wireEnt struct {
	f  int16 // index in the plan's fields
	wt protowire.Type
	n  uint64 // varint, fixed32 or fixed64 value
	b  []byte // length-delimited value
}

type mapEntry struct{ key, val []byte }

// Append appends the JSON of the message of type md whose wire bytes are
// b; ok is false where it cannot say exactly what Encoder.Append would
// (then dst is returned as it was).
func (w *Wire) Append(dst []byte, md protoreflect.MessageDescriptor, b []byte) (_ []byte, ok bool) {
	out, ok := w.run(dst, md, b)
	if !ok {
		return dst, false
	}
	return out, true
}

// Check reports whether Append would write the message (ok), without
// keeping what it makes: Write's first pass, in bounded memory.
func (w *Wire) Check(md protoreflect.MessageDescriptor, b []byte) bool {
	w.flush = func(out []byte) []byte { return out[:0] }
	_, ok := w.run(w.buf[:0], md, b)
	w.flush = nil
	return ok
}

// Write writes to dst what Append would append, in pieces of about
// 32 KiB, so that a large message's JSON is never held whole. Its
// pieces end between elements of the message's lists, never inside a
// string. Write only bytes Check said ok of: what is made is written
// as it goes, and a message that is not ok stops part way (ok false).
func (w *Wire) Write(dst io.Writer, md protoreflect.MessageDescriptor, b []byte) (ok bool, err error) {
	w.flush = func(out []byte) []byte {
		if err == nil {
			_, err = dst.Write(out)
		}
		return out[:0]
	}
	out, ok := w.run(w.buf[:0], md, b)
	w.flush = nil
	if ok && err == nil {
		_, err = dst.Write(out)
	}
	if cap(out) <= 4*flushAt {
		w.buf = out[:0]
	}
	return ok, err
}

func (w *Wire) run(dst []byte, md protoreflect.MessageDescriptor, b []byte) ([]byte, bool) {
	mode := modeRules
	if !w.redact {
		mode = modeNone
	}
	out, ok := w.message(dst, w.plan(md, mode), b, 0)
	w.ents, w.keys = w.ents[:0], w.keys[:0]
	if cap(w.ents) > 1<<14 || cap(w.keys) > 1<<14 {
		w.ents, w.keys = nil, nil // one huge message: not kept for the next
	}
	return out, ok
}

func (w *Wire) message(out []byte, p *wirePlan, b []byte, depth int) ([]byte, bool) {
	if !p.ok || depth >= maxWireDepth {
		return out, false
	}
	start := len(w.ents)
	for len(b) > 0 {
		num, wt, n := protowire.ConsumeTag(b)
		if n < 0 || num > protowire.MaxValidNumber {
			return out, false
		}
		b = b[n:]
		e := wireEnt{wt: wt}
		switch wt {
		case protowire.BytesType:
			e.b, n = protowire.ConsumeBytes(b)
		case protowire.StartGroupType, protowire.EndGroupType:
			return out, false // groups: not in CRI, left to protobuf-go
		default:
			e.n, n = consumeNumber(wt, b)
		}
		if n < 0 {
			return out, false
		}
		b = b[n:]
		if int(num) >= len(p.byNum) || p.byNum[num] == 0 {
			continue // unknown: protojson does not write it
		}
		e.f = p.byNum[num] - 1
		if f := &p.fields[e.f]; wt != f.wt && (!f.list || wt != protowire.BytesType) {
			return out, false // protobuf-go keeps it as unknown
		}
		w.ents = append(w.ents, e)
	}
	// In the order of the fields' declarations, as protojson writes them;
	// the bytes of one field keep their order.
	// Encoders write them in that order, or by number: a stable sort
	// only when needed (bytes made to interleave fields stay n log n).
	byField := func(a, b wireEnt) int { return int(a.f) - int(b.f) }
	if ents := w.ents[start:]; !slices.IsSortedFunc(ents, byField) {
		slices.SortStableFunc(ents, byField)
	}
	end := len(w.ents)
	out = append(out, '{')
	sep := false
	ok := true
	for i := start; i < end && ok; {
		fi := w.ents[i].f
		j := i + 1
		for j < end && w.ents[j].f == fi {
			j++
		}
		f := &p.fields[fi]
		mark, wasSep := len(out), sep
		if sep {
			out = append(out, ',')
		}
		out = append(out, f.key...)
		wrote := true
		switch {
		case f.isMap:
			out, ok = w.mapField(out, f, i, j, depth)
		case f.list:
			out, wrote, ok = w.listField(out, f, i, j, depth)
		case j-i > 1:
			ok = false // last one wins, or messages merge: protobuf-go's to do
		default:
			out, wrote, ok = w.value(out, f, f.kind, f.rule == decode.Secret, &w.ents[i], false, depth)
		}
		if !wrote {
			out, sep = out[:mark], wasSep
		} else {
			sep = true
		}
		i = j
	}
	w.ents = w.ents[:start]
	return append(out, '}'), ok
}

// consumeNumber reads a varint, fixed32 or fixed64 (wt) value.
func consumeNumber(wt protowire.Type, b []byte) (uint64, int) {
	switch wt {
	case protowire.VarintType:
		return protowire.ConsumeVarint(b)
	case protowire.Fixed32Type:
		v, n := protowire.ConsumeFixed32(b)
		return uint64(v), n
	case protowire.Fixed64Type:
		return protowire.ConsumeFixed64(b)
	}
	return 0, -1
}

// value appends one value of field f (kind k); inList: an element, written
// even when zero. wrote is false for a singular field at its zero value
// (proto3: not set).
func (w *Wire) value(out []byte, f *wireField, k protoreflect.Kind, secret bool, e *wireEnt, inList bool, depth int) (_ []byte, wrote, ok bool) {
	switch k {
	case protoreflect.StringKind:
		if !inList && len(e.b) == 0 {
			return out, false, true
		}
		if secret {
			if !utf8.Valid(e.b) {
				return out, true, false
			}
			return append(out, `"`+decode.Redacted+`"`...), true, true
		}
		out, err := appendString(out, unsafeString(e.b))
		return out, true, err == nil
	case protoreflect.BytesKind:
		if !inList && len(e.b) == 0 {
			return out, false, true
		}
		if secret {
			return append(out, redactedBytes...), true, true
		}
		out = append(out, '"')
		out = base64.StdEncoding.AppendEncode(out, e.b)
		return append(out, '"'), true, true
	case protoreflect.MessageKind:
		out, ok := w.message(out, f.sub, e.b, depth+1)
		return out, true, ok
	}
	v := e.n
	switch k {
	case protoreflect.BoolKind:
		if v == 0 {
			if !inList {
				return out, false, true
			}
			return append(out, "false"...), true, true
		}
		return append(out, "true"...), true, true
	case protoreflect.Int32Kind, protoreflect.Sfixed32Kind, protoreflect.EnumKind, protoreflect.Sint32Kind:
		x := int32(v)
		if k == protoreflect.Sint32Kind {
			x = int32(protowire.DecodeZigZag(v & math.MaxUint32))
		}
		if x == 0 && !inList {
			return out, false, true
		}
		if k == protoreflect.EnumKind {
			if d := f.enum.ByNumber(protoreflect.EnumNumber(x)); d != nil {
				out = append(out, '"')
				out = append(out, d.Name()...)
				return append(out, '"'), true, true
			}
		}
		return strconv.AppendInt(out, int64(x), 10), true, true
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		if uint32(v) == 0 && !inList {
			return out, false, true
		}
		return strconv.AppendUint(out, uint64(uint32(v)), 10), true, true
	case protoreflect.Int64Kind, protoreflect.Sfixed64Kind, protoreflect.Sint64Kind:
		x := int64(v)
		if k == protoreflect.Sint64Kind {
			x = protowire.DecodeZigZag(v)
		}
		if x == 0 && !inList {
			return out, false, true
		}
		out = append(out, '"')
		out = strconv.AppendInt(out, x, 10)
		return append(out, '"'), true, true
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		if v == 0 && !inList {
			return out, false, true
		}
		out = append(out, '"')
		out = strconv.AppendUint(out, v, 10)
		return append(out, '"'), true, true
	case protoreflect.FloatKind:
		if uint32(v) == 0 && !inList {
			return out, false, true
		}
		return appendFloat(out, float64(math.Float32frombits(uint32(v))), 32), true, true
	case protoreflect.DoubleKind:
		if v == 0 && !inList {
			return out, false, true
		}
		return appendFloat(out, math.Float64frombits(v), 64), true, true
	}
	return out, true, false
}

var redactedBytes = `"` + base64.StdEncoding.EncodeToString([]byte(decode.Redacted)) + `"`

// listField appends the elements of a list field, ents[i:j]: packed or
// not, in their order. wrote is false when there are none (an empty
// packed run).
func (w *Wire) listField(out []byte, f *wireField, i, j, depth int) (_ []byte, wrote, ok bool) {
	out = append(out, '[')
	n := 0
	secret := f.rule == decode.Secret
	for ; i < j; i++ {
		e := w.ents[i]
		if e.wt == protowire.BytesType && f.wt != protowire.BytesType {
			// Packed: the values one after another.
			for p := e.b; len(p) > 0; {
				var v wireEnt
				var m int
				v.n, m = consumeNumber(f.wt, p)
				if m < 0 {
					return out, true, false
				}
				p = p[m:]
				if n > 0 {
					out = append(out, ',')
				}
				n++
				if out, _, ok = w.value(out, f, f.kind, false, &v, true, depth); !ok {
					return out, true, false
				}
				if depth == 0 && w.flush != nil && len(out) >= flushAt {
					out = w.flush(out)
				}
			}
			continue
		}
		if n > 0 {
			out = append(out, ',')
		}
		n++
		if out, _, ok = w.value(out, f, f.kind, secret, &e, true, depth); !ok {
			return out, true, false
		}
		if depth == 0 && w.flush != nil && len(out) >= flushAt {
			out = w.flush(out)
		}
	}
	return append(out, ']'), n > 0, true
}

// mapField appends a map field's entries, ents[i:j], sorted by key.
func (w *Wire) mapField(out []byte, f *wireField, i, j, depth int) ([]byte, bool) {
	kb := len(w.keys)
	for ; i < j; i++ {
		var me mapEntry
		var seen [3]bool
		for p := w.ents[i].b; len(p) > 0; {
			num, wt, n := protowire.ConsumeTag(p)
			if n < 0 || num > 2 || wt != protowire.BytesType || seen[num] {
				return out, false
			}
			seen[num] = true
			v, m := protowire.ConsumeBytes(p[n:])
			if m < 0 {
				return out, false
			}
			p = p[n+m:]
			if num == 1 {
				me.key = v
			} else {
				me.val = v
			}
		}
		w.keys = append(w.keys, me)
	}
	keys := w.keys[kb:]
	if len(keys) <= 16 {
		// Labels and annotations: a few keys, often sorted already.
		for i := 1; i < len(keys); i++ {
			for j := i; j > 0 && bytes.Compare(keys[j].key, keys[j-1].key) < 0; j-- {
				keys[j], keys[j-1] = keys[j-1], keys[j]
			}
		}
	} else {
		slices.SortFunc(keys, func(a, b mapEntry) int { return bytes.Compare(a.key, b.key) })
	}
	out = append(out, '{')
	ok := true
	for n := range keys {
		if n > 0 && bytes.Equal(keys[n].key, keys[n-1].key) {
			ok = false // the last one wins: protobuf-go's to do
			break
		}
		if n > 0 {
			out = append(out, ',')
		}
		var err error
		if out, err = appendString(out, unsafeString(keys[n].key)); err != nil {
			ok = false
			break
		}
		out = append(out, ':')
		e := wireEnt{b: keys[n].val}
		switch {
		case f.val == protoreflect.MessageKind:
			out, ok = w.message(out, f.sub, e.b, depth+1)
		default:
			out, _, ok = w.value(out, f, f.val, f.rule == decode.SecretEntries, &e, true, depth)
		}
		if !ok {
			break
		}
		if depth == 0 && w.flush != nil && len(out) >= flushAt {
			out = w.flush(out)
		}
	}
	clear(w.keys[kb:])
	w.keys = w.keys[:kb]
	return append(out, '}'), ok
}

// unsafeString is b as a string, for writers that do not keep it.
func unsafeString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }
