package decode

import (
	"errors"
	"io"

	"google.golang.org/protobuf/encoding/protowire"
)

// fieldStream walks the top-level fields of a protobuf message that comes
// in pieces, as eachField walks it whole: fn gets the value of each
// length-delimited field num, in order, up to the first malformed field.
// Other fields pass without being held; it holds at most one field num,
// and the head of the next field.
type fieldStream struct {
	num  protowire.Number
	fn   func([]byte)
	pend []byte // an incomplete field: its tag and length, and its value if num's
	skip uint64 // bytes of a passing field still to come
	bad  bool   // a malformed field: nothing after it is read
}

// maxPendingField bounds what a field that cannot pass unread (a group)
// may hold; past it, the walk stops there.
const maxPendingField = 4 << 20

// write takes the message's next bytes.
func (f *fieldStream) write(p []byte) {
	for len(p) > 0 && !f.bad {
		if f.skip > 0 {
			k := min(f.skip, uint64(len(p)))
			f.skip -= k
			p = p[k:]
			continue
		}
		b := p
		if len(f.pend) > 0 {
			f.pend = append(f.pend, p...)
			b = f.pend
		}
		p = nil
		for len(b) > 0 && !f.bad {
			n, typ, k := protowire.ConsumeTag(b)
			if k < 0 {
				f.stop(b, k)
				return
			}
			if typ != protowire.BytesType {
				m := protowire.ConsumeFieldValue(n, typ, b[k:])
				if m < 0 {
					f.stop(b, m)
					return
				}
				b = b[k+m:]
				continue
			}
			size, m := protowire.ConsumeVarint(b[k:])
			if m < 0 {
				f.stop(b, m)
				return
			}
			head := uint64(k + m)
			if uint64(len(b))-head >= size {
				if n == f.num {
					f.fn(b[head : head+size])
				}
				b = b[head+size:]
				continue
			}
			if n != f.num {
				f.skip = head + size - uint64(len(b))
				b = nil
				break
			}
			f.hold(b)
			return
		}
		f.pend = f.pend[:0]
	}
}

// stop ends a walk at b: held if only cut short by the end of what came,
// else malformed.
func (f *fieldStream) stop(b []byte, code int) {
	if errors.Is(protowire.ParseError(code), io.ErrUnexpectedEOF) && len(b) <= maxPendingField {
		f.hold(b)
		return
	}
	f.bad = true
	f.pend = nil
}

// hold keeps b, the start of an incomplete field, for the next write.
func (f *fieldStream) hold(b []byte) {
	f.pend = append(f.pend[:0], b...) // b may lie within pend: copy moves it
}
