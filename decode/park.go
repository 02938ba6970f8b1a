package decode

import (
	"slices"
	"time"

	"golang.org/x/net/http2/hpack"
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
	// Naming by effect (effects.go): the ID an ID-in, nothing-out call
	// acts on, the last look at it before the call, and the method its
	// effect names.
	id     string
	before idLook
	named  *method
	// The table's filled methods when p was last weighed (eliminate).
	weighed methodSet
}

// park keeps s's ended call until one of slots is named.
func (d *Decoder) park(cn *conn, s *stream, slots []*slotState) {
	p := &parkedCall{s: stream{call: s.call, rs: s.rs, m: s.m, actID: s.actID}, conn: cn, tab: s.rs.tab, slots: slots}
	p.weighed = p.tab.filledMethods
	if d.tracking {
		if p.id = idOnly(s.rs.raw[c2s], s.rs.raw[s2c]); p.id != "" {
			if h := d.ids[p.id]; h != nil {
				p.before = h.before(s.call.Start)
			}
		}
	}
	d.parked = append(d.parked, p)
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
		if m := p.named; m != nil {
			d.name(s, m)
			// Its :path, if it can be one slot only, names later calls.
			if live := p.live(); len(live) == 1 && !live[0].filled && p.conn.half[c2s].hb.part == p.tab && p.tab.filledMethods&(1<<m.index) == 0 {
				live[0].filled = true
				live[0].field = hpack.HeaderField{Name: ":path", Value: m.path}
				p.tab.filledMethods |= 1 << m.index
			}
		} else if st := p.filled(); st != nil {
			if m := methodByPath[st.field.Value]; m != nil && candidates(s.rs.raw[c2s], s.rs.raw[s2c])&(1<<m.index) != 0 {
				d.name(s, m)
			}
		}
		if !c.Known {
			c.Candidates = candidateNames(d.mayBe(p, candidates(s.rs.raw[c2s], s.rs.raw[s2c])))
		}
		if !c.Known && s.rs.viaErr != nil {
			s.rs.viaErr.Unknown++
		}
		if s.rs.statusUnknown && c.Status < 0 {
			d.inferStatus(s)
		}
		if d.tracking {
			d.endedNamed(s)
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
	for _, p := range d.parked {
		d.eliminate(p)
	}
	d.unpark(func(p *parkedCall) bool {
		return p.filled() != nil || p.named != nil || now.Sub(p.s.call.End) > wait || !d.hope(p)
	})
}

// eliminate names p when the slots filled since it was parked leave one
// method its messages fit: a table holds a field once (encoders index an
// exact match rather than insert it again), so a method whose :path
// fills another slot is not p's. resolve weighed the same when the call
// ended, with the slots filled then.
func (d *Decoder) eliminate(p *parkedCall) {
	if d.opts.noElim || p.named != nil || p.tab.filledMethods == p.weighed || p.filled() != nil {
		return
	}
	p.weighed = p.tab.filledMethods
	live := p.live()
	if len(live) == 0 {
		return
	}
	for _, st := range live {
		if !st.seen {
			return // a slot that may hold any method
		}
	}
	rs := p.s.rs
	var fs fitScores
	fs.compute(rs.raw[c2s], rs.raw[s2c])
	p.named = fs.best(d.mayBe(p, fs.fit))
}

// mayBe is the set of methods p may still be, of those its messages fit:
// those its slots allow and no other slot holds.
func (d *Decoder) mayBe(p *parkedCall, fit methodSet) methodSet {
	set := fit & d.inferable() &^ p.tab.filledMethods &^ p.s.rs.notPaths
	live := p.live()
	if len(live) == 0 {
		return set
	}
	var slotCands methodSet
	for _, st := range live {
		if !st.seen {
			return set
		}
		slotCands |= st.cands
	}
	return set & slotCands
}

// hope reports whether p may still be named: by a slot (its table still
// the connection's, a slot that may be its :path), or by its effect.
func (d *Decoder) hope(p *parkedCall) bool {
	bySlot := d.conns[p.conn.id] == p.conn && p.conn.half[c2s].hb.part == p.tab && !p.unnamable()
	return bySlot || p.id != "" && !p.before.end.IsZero()
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

// live returns p's slots that may still be its :path.
func (p *parkedCall) live() []*slotState {
	var out []*slotState
	for _, st := range p.slots {
		if !st.notPath {
			out = append(out, st)
		}
	}
	return out
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
