package decode

import (
	"strings"
	"testing"
	"time"

	"github.com/criseq/criseq/capture"
)

// A call caught midway that its messages cannot name (an empty list reads
// as any List*) is named once a later call names its :path slot: cut a
// real kubelet capture at frame boundaries, decode each cut with and
// without parking, and compare with the whole decode.
func TestParkedCallsNamedLater(t *testing.T) {
	file := kubeletCapture(t, "kubelet-warm")
	p := planCapture(t, readChunks(t, file))
	p.name = "kubelet-warm"
	var with, without, short cutCounts
	for i, at := range p.bounds {
		if i%25 != 0 {
			continue
		}
		with.add(p.cutAt(t, at, Options{ListsUnary: true}))
		without.add(p.cutAt(t, at, Options{ListsUnary: true, noPark: true}))
		short.add(p.cutAt(t, at, Options{ListsUnary: true, NameWait: time.Millisecond}))
	}
	// kubelet's relist comes every second: waiting a millisecond names
	// fewer.
	if n := short.exact + short.inferred; n >= with.exact+with.inferred || short.wrong > 0 {
		t.Errorf("with NameWait 1ms: %d named, %d wrong; with the default wait %d named", n, short.wrong, with.exact+with.inferred)
	}
	if with.wrong+without.wrong > 0 {
		t.Fatalf("wrong calls: %d parked, %d not", with.wrong, without.wrong)
	}
	if with.total() != without.total() {
		t.Fatalf("%d calls decoded with parking, %d without", with.total(), without.total())
	}
	t.Logf("named: %d of %d with parking, %d without", with.exact+with.inferred, with.total(), without.exact+without.inferred)
	if with.exact+with.inferred <= without.exact+without.inferred {
		t.Errorf("parking named %d calls, no more than the %d named without it", with.exact+with.inferred, without.exact+without.inferred)
	}
}

// While a call waits for its slot, Oldest still counts it: a caller that
// prints in start order never prints a later call before it.
func TestParkedCallsHoldOldest(t *testing.T) {
	file := kubeletCapture(t, "kubelet-warm")
	p := planCapture(t, readChunks(t, file))
	parkedSeen := 0
	for i, at := range p.bounds {
		if i%50 != 0 {
			continue
		}
		var d *Decoder
		var lastOldest []int64
		emitted := map[callKey]bool{}
		d = New(Options{ListsUnary: true, OnCall: func(c *Call) {
			emitted[callKey{c.Conn, c.Stream}] = true
			for _, o := range lastOldest {
				if c.Start.UnixNano() < o {
					t.Errorf("cut %v: call conn %d stream %d starts %v, before Oldest %v reported earlier", at, c.Conn, c.Stream, c.Start, o)
				}
			}
		}})
		cutFeedEach(d, p.chunks, at, func() {
			if len(d.parked) > 0 {
				parkedSeen++
			}
			if o, ok := d.Oldest(); ok {
				lastOldest = append(lastOldest[:0], o.UnixNano())
			} else {
				lastOldest = lastOldest[:0]
			}
		})
		d.Close()
	}
	if parkedSeen == 0 {
		t.Error("no call was ever parked: the test proves nothing")
	}
}

// A parked call is named by elimination once the slots filled after it
// leave one method its messages fit: cut a real kubelet capture at frame
// boundaries, decode each cut with and without it.
func TestParkedCallsNamedByElimination(t *testing.T) {
	file := kubeletCapture(t, "kubelet-init")
	p := planCapture(t, readChunks(t, file))
	p.name = "kubelet-init"
	var with, without cutCounts
	for i, at := range p.bounds {
		if i%5 != 0 {
			continue
		}
		with.add(p.cutAt(t, at, Options{ListsUnary: true}))
		without.add(p.cutAt(t, at, Options{ListsUnary: true, noElim: true}))
	}
	if with.wrong+without.wrong > 0 || with.total() != without.total() {
		t.Fatalf("wrong calls: %d with elimination, %d without; %d calls against %d", with.wrong, without.wrong, with.total(), without.total())
	}
	t.Logf("named: %d of %d with elimination, %d without", with.exact+with.inferred, with.total(), without.exact+without.inferred)
	if with.exact+with.inferred <= without.exact+without.inferred {
		t.Errorf("elimination named %d calls, no more than the %d named without it", with.exact+with.inferred, without.exact+without.inferred)
	}
}

// Oldest keeps each connection's oldest open call until a stream opens or
// ends there: after every chunk of real captures, whole and cut midway
// (calls whose method comes late), it must equal a scan of every stream,
// with and without Unwaited.
func TestOldestCachedMatchesScan(t *testing.T) {
	unwaited := func(c *Call) bool { return c.Name == "GetContainerEvents" || strings.HasPrefix(c.Name, "List") }
	scan := func(d *Decoder) (t time.Time, ok bool) {
		for _, p := range d.parked {
			if !ok || p.s.call.Start.Before(t) {
				t, ok = p.s.call.Start, true
			}
		}
		for _, cn := range d.conns {
			if o, open := d.oldestOpen(cn); open && (!ok || o.Before(t)) {
				t, ok = o, true
			}
			if fs := &cn.half[capture.ClientToServer].fs; len(fs.buf) > 0 && (!ok || fs.marks[0].t.Before(t)) {
				t, ok = fs.marks[0].t, true
			}
		}
		return t, ok
	}
	checked, skipped := 0, 0
	for _, name := range []string{"kubelet-burst-containerd2", "kubelet-burst", "kubelet-init"} {
		p := planCapture(t, readChunks(t, kubeletCapture(t, name)))
		for i, at := range p.bounds {
			if i%150 != 0 {
				continue
			}
			for _, skip := range []func(*Call) bool{nil, unwaited} {
				d := New(Options{ListsUnary: true, Unwaited: skip, OnCall: func(*Call) {}})
				n := 0
				cutFeedEach(d, p.chunks, at, func() {
					got, gotOK := d.Oldest()
					want, wantOK := scan(d)
					if gotOK != wantOK || !got.Equal(want) {
						t.Fatalf("%s cut %v, chunk %d after it: Oldest %v %v, a scan of every stream %v %v", name, at, n, got, gotOK, want, wantOK)
					}
					n++
					checked++
					if skip != nil && len(d.conns) > 0 {
						for _, cn := range d.conns {
							for _, s := range cn.streams {
								if s.call.Known && skip(s.call) {
									skipped++
								}
							}
						}
					}
				})
				d.Close()
			}
		}
	}
	t.Logf("%d comparisons; %d open calls left out", checked, skipped)
	if skipped == 0 {
		t.Error("no open call was ever left out: the test proves nothing of Unwaited")
	}
}
