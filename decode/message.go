package decode

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/criseq/criseq/capture"
	"google.golang.org/protobuf/proto"
)

// The gRPC message layer: a stream's DATA frames, in each direction, are
// a sequence of messages, each a 1-byte compressed flag, a 4-byte length
// and the (possibly gzip-compressed) protobuf bytes.

// assembler rebuilds gRPC messages (1-byte flag, 4-byte length, payload)
// from the DATA frames of one direction of a stream.
type assembler struct {
	hdr  [5]byte
	nhdr int
	want uint32 // payload length, once nhdr == 5
	buf  []byte // payload so far
	t    time.Time
	// passing: the payload is not held, only counted in got (passes); a
	// list's answer is read as it passes by list.
	passing bool
	got     uint32
	list    *fieldStream
	answer  *listAnswer
}

// seen is how much of the payload came.
func (a *assembler) seen() int {
	if a.passing {
		return int(a.got)
	}
	return len(a.buf)
}

// maxHeldSkipped is the largest message whose body no output reads that
// is still held whole: larger ones (a 16 MiB ListContainers answer) pass,
// so memory does not follow message size.
var maxHeldSkipped uint32 = 1 << 20 // a variable for tests

// assemble adds a DATA frame's payload to a direction of a stream.
func (d *Decoder) assemble(s *stream, dir capture.Dir, data []byte, t time.Time) {
	a := &s.asm[dir]
	for len(data) > 0 {
		if a.nhdr == 0 && len(data) >= 5 {
			// Fast path: a whole message in the frame is decoded in place.
			n := binary.BigEndian.Uint32(data[1:5])
			if uint64(len(data)-5) >= uint64(n) {
				d.message(s, dir, data[0], data[5:5+n], t, false)
				data = data[5+n:]
				continue
			}
		}
		if a.nhdr < 5 {
			if a.nhdr == 0 {
				a.t = t
			}
			k := copy(a.hdr[a.nhdr:], data)
			a.nhdr += k
			data = data[k:]
			if a.nhdr < 5 {
				return
			}
			a.want = binary.BigEndian.Uint32(a.hdr[1:5])
			if d.passes(s, dir, a) {
				a.passing = true
			} else if a.buf == nil {
				a.buf = d.buffer(a.want)
			}
		}
		if a.passing {
			k := min(uint64(a.want)-uint64(a.got), uint64(len(data)))
			if a.list != nil {
				a.list.write(data[:k])
			}
			a.got += uint32(k)
			data = data[k:]
			if a.got == a.want {
				if a.answer != nil && d.tracking { // as message decides
					a.answer.done()
				}
				d.passed(s, dir, int(a.want), a.t)
				d.release(a)
			}
			continue
		}
		k := min(uint64(a.want)-uint64(len(a.buf)), uint64(len(data)))
		if need := uint64(len(a.buf)) + k; need > uint64(cap(a.buf)) {
			// Doubled as its bytes come (a length from the wire alone
			// proves nothing), and made the message's size once that is
			// at most 8 times what came: append's smaller steps left
			// 45 MB of copies behind a 9 MB message, and the last
			// doubling of a 16 MiB one held 24 MiB at once.
			size := max(2*uint64(cap(a.buf)), need)
			if uint64(a.want) <= 8*need {
				size = uint64(a.want)
			}
			size = min(size, uint64(a.want))
			var b []byte
			if uint64(cap(d.spare)) >= size {
				b, d.spare = d.spare[:len(a.buf)], nil
			} else {
				b = make([]byte, len(a.buf), size)
			}
			copy(b, a.buf)
			a.buf = b
		}
		a.buf = append(a.buf, data[:k]...)
		data = data[k:]
		if uint64(len(a.buf)) == uint64(a.want) {
			if d.message(s, dir, a.hdr[0], a.buf, a.t, true) {
				a.buf = nil // the message keeps it
			}
			d.release(a)
		}
	}
}

// Recycle hands back the bytes of a message kept as it came
// (Message.Wire) once the output is done with them: the next large
// message is assembled in them, not in new memory (a 16 MiB buffer made
// for each of thirty answers kept the heap at its limit).
func (d *Decoder) Recycle(b []byte) {
	if cap(b) > cap(d.spare) {
		d.spare = b[:0]
	}
}

// buffer returns an empty buffer for a message of n bytes; the capacity
// is bounded since n comes from the wire.
func (d *Decoder) buffer(n uint32) []byte {
	if k := len(d.free); k > 0 {
		b := d.free[k-1]
		d.free = d.free[:k-1]
		return b
	}
	return make([]byte, 0, min(n, 1<<20))
}

func (d *Decoder) release(a *assembler) {
	// Keep a few small buffers: large ones would pin memory for nothing.
	if a.buf != nil && cap(a.buf) <= 64<<10 && len(d.free) < 64 {
		d.free = append(d.free, a.buf[:0])
	}
	a.buf = nil
	a.nhdr = 0
	a.want = 0
	a.passing, a.got, a.list, a.answer = false, 0, nil, nil
}

// passes says whether the message a starts lets pass unheld: a large one
// whose body nothing reads (Options.SkipBodies), uncompressed, of a named
// call, unless what a call's first message says of the runtime's IDs
// (effects.go) may be needed whole. A list's first answer is read as it
// passes, and noted at its end if IDs are tracked by then.
func (d *Decoder) passes(s *stream, dir capture.Dir, a *assembler) bool {
	if a.want <= maxHeldSkipped || a.hdr[0] != 0 || !s.m.skip || s.deferred() || d.opts.NoRedact {
		return false
	}
	c := s.call
	switch {
	case dir == c2s:
		return len(c.Requests) > 0 // the first: the ID it acts on, its filter
	case len(c.Responses) > 0 || s.m.serverStream:
		return true
	case answersList(s.m):
		a.answer = d.newListAnswer(s, s.m, a.t)
		a.list = &fieldStream{num: 1, fn: a.answer.item}
		return true
	}
	return !readsAnswer(s.m)
}

// passed is message for one that passed unheld: its size counted, its
// body read by nothing.
func (d *Decoder) passed(s *stream, dir capture.Dir, size int, t time.Time) {
	d.nPassed++
	d.keep(s, dir, Message{Time: t, Size: size})
}

// message decodes one gRPC message. payload is only valid during the
// call, unless held (the assembler's own buffer): then kept says the
// message kept it (Message.Wire).
func (d *Decoder) message(s *stream, dir capture.Dir, flag byte, payload []byte, t time.Time, held bool) (kept bool) {
	c := s.call
	list := &c.Requests
	if dir == s2c {
		list = &c.Responses
	}
	m := Message{Time: t}
	raw := payload
	var err error
	switch flag {
	case 0:
	case 1:
		m.Compressed = true
		c.Flags |= Compressed
		raw, err = d.decompress(s.enc[dir], payload)
	default:
		err = fmt.Errorf("invalid compressed flag %d", flag)
	}
	if err == nil {
		m.Size = len(raw)
		if d.tracking && len(*list) == 0 {
			// What the call says of the runtime's IDs, for naming by
			// effect (effects.go).
			if dir == c2s {
				d.request(s, raw)
			} else if !s.deferred() {
				d.answer(s, s.m, raw, t)
			}
		}
		if s.deferred() {
			// Kept for inference, unmarshalled when the call ends.
			if rs := s.rs; len(rs.raw[dir]) < maxDeferred {
				k := bytes.Clone(raw)
				if k == nil {
					k = []byte{}
				}
				rs.raw[dir] = append(rs.raw[dir], k)
				if d.opts.NoRedact {
					m.Raw = k
				}
			} else if d.opts.NoRedact {
				m.Raw = bytes.Clone(raw)
			}
		} else {
			err = d.unmarshal(s, dir, &m, raw, held && flag == 0)
			kept = m.Wire != nil && held && flag == 0
		}
	} else if s.deferred() && len(s.rs.raw[dir]) < maxDeferred {
		s.rs.raw[dir] = append(s.rs.raw[dir], nil) // not readable: no evidence
	}
	if err != nil {
		d.messageError(c, dir, &m, len(*list)+1, err)
	}
	d.keep(s, dir, m)
	return kept
}

// keep hands a server stream's message to OnStreamMessage, or adds m to
// its call's messages.
func (d *Decoder) keep(s *stream, dir capture.Dir, m Message) {
	c := s.call
	if dir == s2c && s.m.serverStream && d.opts.OnStreamMessage != nil && !s.deferred() {
		c.Streamed++
		d.opts.OnStreamMessage(c, m)
		return
	}
	list := &c.Requests
	if dir == s2c {
		list = &c.Responses
	}
	if *list == nil {
		*list = s.first[dir]
	}
	*list = append(*list, m)
}

// unmarshal decodes a message's protobuf bytes with the call's type;
// owned: raw may be kept (Message.Wire) without a copy.
func (d *Decoder) unmarshal(s *stream, dir capture.Dir, m *Message, raw []byte, owned bool) error {
	typ := s.m.in
	if dir == s2c {
		typ = s.m.out
	}
	body, listed := raw, false
	fields, skipMaps := d.opts.Fields, d.opts.SkipResponseMaps
	if typ != nil && !d.noProto && !s.m.skip {
		if d.opts.FieldsAbove > 0 {
			if len(raw) <= d.opts.FieldsAbove {
				fields = nil
			} else {
				skipMaps = true
			}
		}
		if d.opts.Encode != nil {
			if d.opts.KeepWire != nil && d.opts.KeepWire(typ.Descriptor(), raw) {
				w := raw
				if !owned {
					w = bytes.Clone(raw)
				}
				m.Wire, skipMaps = &WireMessage{Type: typ.Descriptor(), Bytes: w}, true
			} else if out, ok := d.opts.Encode(typ.Descriptor(), raw); ok {
				m.Encoded, skipMaps = out, true
			} else {
				fields = nil // decoded whole, for the output too
			}
		}
		if s.m.encodeOnly && (m.Encoded != nil || m.Wire != nil) {
			typ = nil // nothing reads its Proto
		} else if d.opts.ListsAbove > 0 && m.Wire == nil && len(raw) > d.opts.ListsAbove && readByItems(typ.Descriptor()) &&
			d.keepByItems(m, typ.Descriptor(), raw, owned) {
			typ = nil // read by items (else decoded, to say what is wrong)
		}
	}
	if typ != nil && !d.noProto && !s.m.skip {
		var msg proto.Message
		var err error
		if fields != nil {
			body, listed = d.fields.prune(typ.Descriptor(), fields, raw)
		}
		if dir == s2c && (listed || skipMaps) {
			// A response's fields listed keep no map; not listed, its
			// maps are dropped as they are not read.
			msg = typ.New().Interface()
			if !listed {
				if b, ok := d.maps.pruner.prune(planFor(typ.Descriptor()), raw); ok {
					body = b
				}
			}
			err = proto.Unmarshal(body, msg)
		} else {
			msg, err = d.maps.unmarshal(typ, body)
		}
		if err != nil {
			m.Encoded, m.Wire = nil, nil
			return fmt.Errorf("unmarshal %s: %w", typ.Descriptor().FullName(), err)
		}
		if !d.opts.NoRedact {
			d.red.redact(msg.ProtoReflect())
		}
		m.Proto = msg
	}
	if d.opts.NoRedact && m.Raw == nil {
		if m.Wire != nil {
			m.Raw = m.Wire.Bytes // the same bytes, read only
		} else {
			m.Raw = bytes.Clone(raw)
		}
	}
	return nil
}

// messageError records a message that could not be decoded (n counts
// the messages of its direction from 1).
func (d *Decoder) messageError(c *Call, dir capture.Dir, m *Message, n int, err error) {
	m.Err = err.Error()
	c.Flags |= Malformed
	c.Errors = append(c.Errors, fmt.Sprintf("%s %d: %v", dirNoun[dir], n, err))
}

func (d *Decoder) decompress(enc string, p []byte) ([]byte, error) {
	switch enc {
	case "gzip":
		return d.gz.gunzip(p)
	case "", "identity":
		return nil, errors.New("compressed message without grpc-encoding")
	}
	return nil, fmt.Errorf("unsupported grpc-encoding %q", enc)
}

// gunzipper reuses its reader and output buffer across messages.
type gunzipper struct {
	zr  *gzip.Reader
	br  bytes.Reader
	out bytes.Buffer
}

// gunzip returns the decompressed p, valid until the next call.
func (g *gunzipper) gunzip(p []byte) ([]byte, error) {
	g.br.Reset(p)
	var err error
	if g.zr == nil {
		g.zr, err = gzip.NewReader(&g.br)
	} else {
		err = g.zr.Reset(&g.br)
	}
	if err != nil {
		g.zr = nil
		return nil, fmt.Errorf("gzip: %w", err)
	}
	if g.out.Cap() > 16<<20 {
		g.out = bytes.Buffer{}
	}
	g.out.Reset()
	n, err := g.out.ReadFrom(io.LimitReader(g.zr, maxMessage+1))
	if err != nil {
		return nil, fmt.Errorf("gzip: %w", err)
	}
	if n > maxMessage {
		return nil, fmt.Errorf("gzip: message larger than %d bytes", maxMessage)
	}
	return g.out.Bytes(), nil
}
