package ebpf

import (
	"bytes"
	"math/rand/v2"
	"runtime"
	"testing"
)

// TestSlabRunsKeptUntilReleased: runs copied into slabs keep their bytes
// until each is released, whatever the order of releases, while later
// runs are copied into slabs given back.
func TestSlabRunsKeptUntilReleased(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var sc slabCopier
	type held struct {
		want, got []byte
		done      func()
	}
	var live []held
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	copied := 0
	for i := range 20000 {
		n := 1 + rng.IntN(40<<10)
		if i%500 == 0 {
			n = slabSize/4 + 1 // too large for a slab
		}
		p := make([]byte, n)
		for j := range p {
			p[j] = byte(rng.Uint32())
		}
		copied += n
		got, done := sc.copy(p)
		if !bytes.Equal(got, p) {
			t.Fatalf("run %d: copy of %d bytes differs", i, n)
		}
		if (done == nil) != (n > slabSize/4) {
			t.Fatalf("run %d of %d bytes: release %v", i, n, done != nil)
		}
		if done != nil && cap(got) != n {
			// A queue counts a run by its capacity.
			t.Fatalf("run %d of %d bytes: capacity %d, reaching into the slab", i, n, cap(got))
		}
		live = append(live, held{want: p, got: got, done: done})
		// Release as many as are copied once 300 are held (several
		// slabs' worth), in any order.
		for len(live) > 300 || len(live) > 0 && i%1000 == 999 && rng.IntN(50) > 0 {
			k := rng.IntN(len(live))
			h := live[k]
			if !bytes.Equal(h.got, h.want) {
				t.Fatalf("a run of %d bytes changed before it was released", len(h.want))
			}
			if h.done != nil {
				h.done()
			}
			live[k] = live[len(live)-1]
			live = live[:len(live)-1]
		}
	}
	runtime.ReadMemStats(&after)
	for _, h := range live {
		if !bytes.Equal(h.got, h.want) {
			t.Fatalf("a run of %d bytes changed before it was released", len(h.want))
		}
	}
	// Beyond the test's own runs, the large runs' copies and a few slabs
	// are allocated, far less than a copy of every run: slabs are reused.
	if extra := int64(after.TotalAlloc-before.TotalAlloc) - int64(copied); extra > int64(copied)/4 {
		t.Errorf("%d MB copied, %d MB allocated beyond the runs: slabs not reused", copied>>20, extra>>20)
	}
}
