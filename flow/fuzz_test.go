package flow

import (
	"encoding/binary"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/criseq/criseq/capture"
	"github.com/criseq/criseq/decode"
)

// fuzzCaptures are real captures whose decoded calls the fuzzer mutates.
// kubelet-crashloop brings restarts: a container exiting at once, one
// killed by its liveness probe, kubelet's back-off.
var fuzzCaptures = []string{"crictl-lifecycle", "kubelet-init", "kubelet-missing", "kubelet-crashloop"}

var fuzzBase struct {
	once  sync.Once
	calls [][]*decode.Call
	err   error
}

// baseCalls decodes the fuzz captures once, with the real decoder.
func baseCalls(tb testing.TB) [][]*decode.Call {
	fuzzBase.once.Do(func() {
		for _, name := range fuzzCaptures {
			src, err := capture.OpenFile(filepath.Join("..", "testdata", name, "capture.pcapng"))
			if err != nil {
				fuzzBase.err = err
				return
			}
			calls, _, err := decode.DecodeAll(src, decode.Options{})
			src.Close()
			if err != nil {
				fuzzBase.err = err
				return
			}
			fuzzBase.calls = append(fuzzBase.calls, calls)
		}
	})
	if fuzzBase.err != nil {
		tb.Fatal(fuzzBase.err)
	}
	return fuzzBase.calls
}

// fuzzOps reads a mutation program from the fuzzer's bytes.
type fuzzOps struct{ b []byte }

func (o *fuzzOps) byte() (byte, bool) {
	if len(o.b) == 0 {
		return 0, false
	}
	v := o.b[0]
	o.b = o.b[1:]
	return v, true
}

func (o *fuzzOps) u16() int {
	if len(o.b) < 2 {
		return 0
	}
	v := binary.BigEndian.Uint16(o.b)
	o.b = o.b[2:]
	return int(v)
}

// bytes takes a length-prefixed run of bytes.
func (o *fuzzOps) bytes() []byte {
	b, _ := o.byte()
	n := min(int(b), len(o.b))
	v := o.b[:n]
	o.b = o.b[n:]
	return v
}

// reparse replaces a message with the fuzzer's bytes read as the same CRI
// type, as the decoder would read them off the wire.
func reparse(m proto.Message, b []byte) proto.Message {
	if m == nil {
		return nil
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByName(m.ProtoReflect().Descriptor().FullName())
	if err != nil {
		return m
	}
	n := mt.New().Interface()
	if proto.Unmarshal(b, n) != nil {
		return m
	}
	return n
}

// mutate applies the program to shallow copies of calls (the base stays as
// decoded; messages are replaced, never changed in place).
func mutate(base []*decode.Call, o *fuzzOps) []*decode.Call {
	calls := make([]*decode.Call, len(base))
	for i, c := range base {
		cp := *c
		calls[i] = &cp
	}
	pick := func() int {
		if len(calls) == 0 {
			return -1
		}
		return o.u16() % len(calls)
	}
	for steps := 0; steps < 64; steps++ {
		op, ok := o.byte()
		if !ok {
			break
		}
		i := pick()
		if i < 0 {
			break
		}
		c := calls[i]
		switch op % 9 {
		case 0: // drop
			calls = slices.Delete(calls, i, i+1)
		case 1: // duplicate somewhere else
			cp := *c
			j := pick()
			calls = slices.Insert(calls, max(j, 0), &cp)
		case 2: // move in time, both ends
			d := time.Duration(int16(o.u16())) * time.Millisecond
			c.Start = c.Start.Add(d)
			if !c.End.IsZero() {
				c.End = c.End.Add(d)
			}
		case 3: // end later or earlier
			if !c.End.IsZero() {
				c.End = c.End.Add(time.Duration(int16(o.u16())) * time.Millisecond)
			}
		case 4: // fail with a code
			b, _ := o.byte()
			c.Status = int(b % 17)
		case 5: // never ends
			c.End = time.Time{}
			c.Flags |= decode.Incomplete
		case 6: // another request
			if len(c.Requests) > 0 {
				c.Requests = []decode.Message{{Proto: reparse(c.Requests[0].Proto, o.bytes())}}
			}
		case 7: // another response
			if len(c.Responses) > 0 {
				c.Responses = []decode.Message{{Proto: reparse(c.Responses[0].Proto, o.bytes())}}
			}
		case 8: // swap with another call
			j := pick()
			calls[i], calls[j] = calls[j], calls[i]
		}
	}
	return calls
}

// checkFlows holds for any input: every step is one of the calls given,
// steps in time order, the flow starting with its first own step; a
// polling step before it (--all) was open then.
func checkFlows(t *testing.T, flows []*Flow, in map[*decode.Call]bool) {
	t.Helper()
	for _, f := range flows {
		if f == nil || len(f.Steps) == 0 {
			t.Fatalf("empty flow %+v", f)
		}
		own := -1
		for i, s := range f.Steps {
			if s.Call == nil || !in[s.Call] {
				t.Fatalf("flow %s %s: step %d is not one of the calls given", f.Pod, f.Kind, i)
			}
			if i > 0 && s.Start.Before(f.Steps[i-1].Start) {
				t.Fatalf("flow %s %s: step %d starts before step %d", f.Pod, f.Kind, i, i-1)
			}
			if own < 0 && s.Attr.By != ByTime {
				own = i
			}
		}
		if own < 0 {
			t.Fatalf("flow %s %s: polling steps alone", f.Pod, f.Kind)
		}
		if !f.Start.Equal(f.Steps[own].Start) {
			t.Fatalf("flow %s %s starts at %v, its first own step at %v", f.Pod, f.Kind, f.Start, f.Steps[own].Start)
		}
		for i, s := range f.Steps[:own] {
			if end := s.Call.End; !end.IsZero() && end.Before(f.Start) {
				t.Fatalf("flow %s %s: polling step %d (%s) ended at %v, before the flow began at %v", f.Pod, f.Kind, i, s.Method, end, f.Start)
			}
		}
		_ = f.Duration()
		_ = Links(f)
		_ = External(f)
	}
}

// FuzzGroup: calls decoded from real captures, then dropped, repeated,
// moved in time, failed, cut short or given requests and responses parsed
// from the fuzzer's bytes, group without a panic into flows made of those
// calls, offline and live, the same whether or not the scans of open
// flows wait for a change or a flow's time. Seeds are in
// testdata/fuzz/FuzzGroup.
func FuzzGroup(f *testing.F) {
	base := baseCalls(f)
	f.Add([]byte{0})
	f.Add([]byte{1, 0, 0, 0, 2, 0, 5, 0x80, 0})
	f.Add([]byte{2, 4, 0, 3, 2, 5, 0, 7, 6, 0, 9, 4, 0x0a, 0x02, 0x6e, 0x73})
	f.Add([]byte{0, 8, 0, 1, 0, 20, 0, 0, 0, 4, 1, 0, 0, 3, 0, 2, 0xff, 0x00})
	f.Add([]byte{3, 0})                                  // the crash loop as recorded
	f.Add([]byte{3, 1, 2, 0, 90, 0x10, 0, 5, 0, 120, 0}) // ...with --all, a call moved, one never ending
	f.Fuzz(func(t *testing.T, data []byte) {
		o := &fuzzOps{b: data}
		which, _ := o.byte()
		flags, _ := o.byte()
		calls := mutate(base[int(which)%len(base)], o)
		in := make(map[*decode.Call]bool, len(calls))
		for _, c := range calls {
			in[c] = true
		}
		opts := Options{All: flags&1 != 0, MaxOpen: int(flags>>1)%8 + 1}
		if flags&0x10 == 0 {
			decode.SortCalls(calls)
		}
		flows := Group(calls, opts)
		checkFlows(t, flows, in)
		for i := 1; i < len(flows); i++ {
			if flows[i].Start.Before(flows[i-1].Start) {
				t.Fatalf("flow %d starts before flow %d", i, i-1)
			}
		}

		// Live: calls come as they end, the clock ticks between them. A
		// flow handed out may grow later (the same *Flow): each is checked
		// when it is handed out, as watch draws it then.
		opts.Live = true
		g := NewGrouper(opts)
		for _, c := range calls {
			checkFlows(t, g.Add(c), in)
			if !c.End.IsZero() {
				checkFlows(t, g.Tick(c.End.Add(3*time.Second)), in)
			}
		}
		checkFlows(t, g.Flush(), in)

		l := NewLabeler(opts)
		for _, c := range calls {
			l.Label(c)
		}

		// Skipping the scans of open flows until one changes or its time
		// comes hands out the same flows at the same calls.
		for _, live := range []bool{false, true} {
			opts.Live = live
			want, got := grouped(calls, opts, true), grouped(calls, opts, false)
			if !slices.Equal(got, want) {
				t.Fatalf("live %v: skipping scans hands out\n%s\nscanning every call:\n%s", live, strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		}
	})
}

// TestFuzzCapturesDecode: the fuzz target's base is real traffic.
func TestFuzzCapturesDecode(t *testing.T) {
	for i, calls := range baseCalls(t) {
		if len(calls) < 10 {
			t.Errorf("%s: %d calls", fuzzCaptures[i], len(calls))
		}
	}
}
