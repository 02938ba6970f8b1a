package decode

import (
	"slices"
	"time"
)

// Parking: a call caught midway whose :path is an unknown slot, and whose
// messages fit several methods (an empty list reads as any List*), waits
// for a later call to name one of the slots its :path may be, as it
// would have been named had it come after. A header block has one :path,
// so once one of its slots is filled as a :path, that slot is its :path.
// It is then handed to OnCall named, or unnamed once that cannot happen
// any more: none of its slots can be a :path, the connection ended or its
// header table became exact, Options.NameWait of capture time passed, or
// maxParked calls wait.
// Oldest counts the calls waiting, so callers keep their start order.

const (
	defaultNameWait = 30 * time.Second
	maxParked       = 512
)

// parkedCall is an ended call waiting for its :path slot to be named.
type parkedCall struct {
	s     stream // the call's stream state that naming needs (call, rs, enc)
	conn  *conn
	tab   *partialTable
	slots []*slotState // the slots its :path may be
}

// park keeps s's ended call until one of slots is named.
func (d *Decoder) park(cn *conn, s *stream, slots []*slotState) {
	d.parked = append(d.parked, &parkedCall{s: stream{call: s.call, rs: s.rs, m: s.m}, conn: cn, tab: s.rs.tab, slots: slots})
	if len(d.parked) > maxParked {
		first := d.parked[0]
		d.unpark(func(p *parkedCall) bool { return p == first })
	}
}

// unpark hands the parked calls that match to OnCall, in the order they
// were parked: named if their slot is filled with a method their
// messages fit, else unnamed.
func (d *Decoder) unpark(match func(*parkedCall) bool) {
	var out []*parkedCall
	d.parked = slices.DeleteFunc(d.parked, func(p *parkedCall) bool {
		if match(p) {
			out = append(out, p)
			return true
		}
		return false
	})
	for _, p := range out {
		s, c := &p.s, p.s.call
		if st := p.filled(); st != nil {
			if m := methodByPath[st.field.Value]; m != nil && candidates(s.rs.raw[c2s], s.rs.raw[s2c])&(1<<m.index) != 0 {
				d.name(s, m)
			}
		}
		if !c.Known && s.rs.viaErr != nil {
			s.rs.viaErr.Unknown++
		}
		if s.rs.statusUnknown && c.Status < 0 {
			d.inferStatus(s)
		}
		d.emit(c)
	}
}

// sweep hands out the parked calls whose slot can no longer be named,
// or that waited NameWait before now.
func (d *Decoder) sweep(now time.Time) {
	if len(d.parked) == 0 {
		return
	}
	wait := d.nameWait()
	d.unpark(func(p *parkedCall) bool {
		return p.filled() != nil || p.unnamable() || d.conns[p.conn.id] != p.conn ||
			p.conn.half[c2s].hb.part != p.tab || now.Sub(p.s.call.End) > wait
	})
}

// filled returns the first of p's slots filled as a :path, or nil.
func (p *parkedCall) filled() *slotState {
	for _, st := range p.slots {
		if st.filled {
			return st
		}
	}
	return nil
}

// unnamable reports whether none of p's slots can be its :path any more.
func (p *parkedCall) unnamable() bool {
	for _, st := range p.slots {
		if !st.notPath {
			return false
		}
	}
	return true
}

func (d *Decoder) nameWait() time.Duration {
	if d.opts.NameWait > 0 {
		return d.opts.NameWait
	}
	return defaultNameWait
}
