package decode

import (
	"fmt"
	"slices"
	"time"

	"github.com/criseq/criseq/capture"
)

// Idle connections: a capture may open connections it never shows closed
// (a client killed, a capture stopped before the FIN, a pcap cut), each
// holding a few KB of decoding state. They are forgotten once idle, so
// memory follows the connections in use (Options.IdleConn).
const (
	defaultIdleConn = 10 * time.Minute
	// Capture time between sweeps: each visits every connection, and a
	// connection may then stay idle a sweep longer than IdleConn.
	idleSweepEvery = time.Minute
	// maxConns bounds the connections kept: past it, the longest idle
	// without a call open are forgotten, down to half (so that the sweep
	// comes once every maxConns/2 new connections at most).
	maxConns = 1024
	// maxForgotten bounds the IDs remembered as forgotten: one that comes
	// back later than that many others is decoded as caught midway all
	// the same, only without its ErrForgotten.
	maxForgotten = 1 << 16
)

// forgottenSet remembers the connections forgotten, with when they last
// carried bytes, oldest first out.
type forgottenSet struct {
	at    map[uint64]time.Time
	order []uint64 // a ring of IDs once full; next is its oldest
	next  int
}

func (f *forgottenSet) add(id uint64, last time.Time) {
	if f.at == nil {
		f.at = make(map[uint64]time.Time)
	}
	if len(f.order) < maxForgotten {
		f.order = append(f.order, id)
	} else {
		delete(f.at, f.order[f.next])
		f.order[f.next] = id
		f.next = (f.next + 1) % maxForgotten
	}
	f.at[id] = last
}

// take reports whether id was forgotten, and when it last carried bytes;
// id is then no longer in the set (its ring slot is reclaimed later).
func (f *forgottenSet) take(id uint64) (time.Time, bool) {
	t, ok := f.at[id]
	if ok {
		delete(f.at, id)
	}
	return t, ok
}

// forgetIdle forgets the connections idle for IdleConn, and more if there
// are over maxConns; never cur (the connection of the chunk being fed),
// nor one with a call open or bytes waiting.
func (d *Decoder) forgetIdle(now time.Time, cur *conn) {
	d.idleSwept = now
	idle := d.opts.IdleConn
	if idle <= 0 {
		idle = defaultIdleConn
	}
	var quiet []*conn
	for _, cn := range d.conns {
		if cn == cur || !forgettable(cn) {
			continue
		}
		if now.Sub(cn.last) >= idle {
			d.forget(cn)
			continue
		}
		quiet = append(quiet, cn)
	}
	if len(d.conns) > maxConns {
		slices.SortFunc(quiet, func(a, b *conn) int { return a.last.Compare(b.last) })
		for _, cn := range quiet {
			if len(d.conns) <= maxConns/2 {
				break
			}
			d.forget(cn)
		}
	}
	// Connections that cannot be forgotten (calls open) are not swept
	// again at every chunk.
	d.connCap = maxConns
	if len(d.conns) > maxConns {
		d.connCap = len(d.conns) + maxConns/2
	}
}

func forgettable(cn *conn) bool {
	if len(cn.streams) > 0 {
		return false
	}
	for i := range cn.half {
		// Bytes of a frame still to come wait; bytes looked through for a
		// frame boundary get their last chance in forget.
		if h := &cn.half[i]; h.held || len(h.fs.buf) > 0 && !h.fs.hunting {
			return false
		}
	}
	return true
}

func (d *Decoder) forget(cn *conn) {
	for i := range cn.half {
		if h := &cn.half[i]; h.fs.hunting && len(h.fs.buf) > 0 {
			d.endHalf(cn, h, cn.last, "connection forgotten while idle")
		}
		if h := &cn.half[i]; h.pending != nil {
			d.reportErr(h.pending)
			h.pending = nil
		}
	}
	// (A frame found in those last bytes may have begun a call.)
	for _, s := range cn.sorted() {
		s.call.Flags |= Incomplete
		s.call.Errors = append(s.call.Errors, "connection forgotten while idle before the call ended")
		d.finish(cn, s, time.Time{})
	}
	delete(d.conns, cn.id)
	d.forgotten.add(cn.id, cn.last)
	if len(d.parked) > 0 {
		d.unpark(func(p *parkedCall) bool { return p.conn == cn && !d.hope(p) })
	}
}

// resume starts a forgotten connection that carries bytes again: both
// directions from their next frame boundary, as one caught midway, with
// an error saying why.
func (d *Decoder) resume(cn *conn, c capture.Chunk, idleSince time.Time) {
	for i := range cn.half {
		d.resync(cn, &cn.half[i])
	}
	h := &cn.half[c.Dir]
	d.lose(cn, h, c.Offset, fmt.Errorf("%w (nothing for %s)", ErrForgotten, c.Time.Sub(idleSince).Round(time.Second)), false, c.Time)
}
