package flow

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/criseq/criseq/capture"
	"github.com/criseq/criseq/decode"
	"github.com/criseq/criseq/internal/benchcap"
)

// flowSig is what a flow holds when it is handed out: a live flow may grow
// later, so it is read at once.
func flowSig(f *Flow) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s %v %v %v %v %s %s", f.Kind, f.Pod, f.SandboxID, f.Start, f.End, f.Done, f.Complete, f.Runtime, f.Client)
	for _, s := range f.Steps {
		fmt.Fprintf(&b, "\n  %p %s %s %s %s %v %s %v %+v %v", s.Call, s.Method, s.Arg, s.Result, s.Err, s.Start, s.Phase, s.Inherited, s.Attr, s.Duration)
	}
	for _, e := range f.Events {
		fmt.Fprintf(&b, "\n  event %v %s %s", e.Time, e.Type, e.ContainerID)
	}
	fmt.Fprintf(&b, "\n  other pulls %v", f.OtherPulls)
	return b.String()
}

// grouped is every flow handed out, in order, with the call that handed it
// out, offline and live (the clock ticking between calls, as watch does),
// with the scans skipped until a flow's time comes or scanned on every call.
func grouped(calls []*decode.Call, opts Options, noWake bool) []string {
	var out []string
	at := ""
	take := func(fs []*Flow) {
		for _, f := range fs {
			out = append(out, at+" "+flowSig(f))
		}
	}
	g := NewGrouper(opts)
	g.noWake = noWake
	for i, c := range calls {
		at = fmt.Sprintf("call %d:", i)
		take(g.Add(c))
		if opts.Live && !c.End.IsZero() {
			at = fmt.Sprintf("tick after call %d:", i)
			take(g.Tick(c.End.Add(time.Second)))
		}
	}
	at = "flush:"
	take(g.Flush())
	return out
}

// TestWakeSkipsNoFlow: looking only at the open flows that changed until a
// time one waits for comes hands out the same flows, at the same calls,
// as looking at every open flow on every call. The captures are real traffic, copied in
// time so that hundreds of flows are open at once.
func TestWakeSkipsNoFlow(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join("..")
	busy := filepath.Join(dir, "busy.pcapng")
	srcs := []string{
		filepath.Join(root, "testdata", "kubelet-burst-containerd2", "capture.pcapng"),
		filepath.Join(root, "testdata", "kubelet-missing", "capture.pcapng"),
	}
	if _, err := benchcap.WriteBusy(busy, srcs, 6<<20, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	mixed := filepath.Join(dir, "mixed.pcapng")
	if _, err := benchcap.Write(mixed, benchcap.DefaultSources(root), 4<<20); err != nil {
		t.Fatal(err)
	}
	files := []string{busy, mixed}
	for _, name := range []string{"crictl-lifecycle", "kubelet-burst-containerd2", "kubelet-init", "kubelet-missing", "kubelet-pull", "kubelet-warm"} {
		files = append(files, filepath.Join(root, "testdata", name, "capture.pcapng"))
	}
	for _, file := range files {
		src, err := capture.OpenFile(file)
		if err != nil {
			t.Fatal(err)
		}
		calls, _, err := decode.DecodeAll(src, decode.Options{})
		src.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, tail := range []bool{false, file != busy && file != mixed} {
			name := filepath.Base(file)
			if !strings.HasPrefix(file, dir) {
				name = filepath.Base(filepath.Dir(file)) + "/" + name
			}
			in := calls
			if tail {
				name += " cut before the stops, with polling after"
				in = pollingAfter(calls)
			}
			compareWake(t, name, in)
		}
	}
}

func compareWake(t *testing.T, name string, calls []*decode.Call) {
	t.Helper()
	byStart := slices.Clone(calls)
	decode.SortCalls(byStart)
	for _, opts := range []Options{{}, {All: true}, {MaxOpen: 8}, {Live: true}, {Live: true, All: true}} {
		in := byStart
		if opts.Live {
			in = calls // as they end
		}
		want := grouped(in, opts, true)
		got := grouped(in, opts, false)
		if len(want) == 0 {
			t.Fatalf("%s %+v: %d flows", name, opts, len(want))
		}
		sameLines(t, fmt.Sprintf("%s %+v", name, opts), got, want, "scanning every call")
	}
}

// pollingAfter is calls without the pods' stops (as if the capture was cut
// before them), followed by copies of their polling calls, moved later,
// for ten minutes: flows then end by their times alone, with no change to
// any flow between.
func pollingAfter(calls []*decode.Call) []*decode.Call {
	var out []*decode.Call
	first, last := calls[0].Start, calls[0].Start
	for _, c := range calls {
		if strings.HasPrefix(c.Name, "Stop") || strings.HasPrefix(c.Name, "Remove") {
			continue
		}
		out = append(out, c)
		first, last = minTime(first, c.Start), maxTime(last, c.Start)
	}
	span := last.Sub(first) + 5*time.Second
	for shift := span; shift < span+10*time.Minute; shift += span {
		for _, c := range calls {
			if !c.Known || !IsPolling(c.Name) || c.End.IsZero() {
				continue
			}
			d := *c
			d.Start, d.End = c.Start.Add(shift), c.End.Add(shift)
			out = append(out, &d)
		}
	}
	return out
}

// sameLines reports the first line of got that differs from want, which
// the way named by how gave.
func sameLines(t *testing.T, what string, got, want []string, how string) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d lines, %s gives %d", what, len(got), how, len(want))
	}
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			t.Errorf("%s: line %d differs:\n%s\n%s:\n%s", what, i, got[i], how, want[i])
			return
		}
	}
}

// TestForgetDropsKeys: once a flow is handed out for good, no sandbox or
// container key leads to it, so later calls do not join a flow already
// handed out and the keys do not grow with the capture.
func TestForgetDropsKeys(t *testing.T) {
	busy := filepath.Join(t.TempDir(), "busy.pcapng")
	srcs := []string{
		filepath.Join("..", "testdata", "kubelet-burst-containerd2", "capture.pcapng"),
		filepath.Join("..", "testdata", "kubelet-missing", "capture.pcapng"),
	}
	if _, err := benchcap.WriteBusy(busy, srcs, 4<<20, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	files := []string{busy}
	for _, name := range []string{"crictl-lifecycle", "kubelet-init", "kubelet-pull", "kubelet-warm"} {
		files = append(files, filepath.Join("..", "testdata", name, "capture.pcapng"))
	}
	for _, file := range files {
		src, err := capture.OpenFile(file)
		if err != nil {
			t.Fatal(err)
		}
		calls, _, err := decode.DecodeAll(src, decode.Options{})
		src.Close()
		if err != nil {
			t.Fatal(err)
		}
		decode.SortCalls(calls)
		checkKeys(t, file, calls, false)
	}
	// A sandbox that failed to start is keyed by its call: the real pull
	// with its RunPodSandbox calls failing, its polling going on after.
	file := filepath.Join("..", "testdata", "kubelet-pull", "capture.pcapng")
	src, err := capture.OpenFile(file)
	if err != nil {
		t.Fatal(err)
	}
	calls, _, err := decode.DecodeAll(src, decode.Options{})
	src.Close()
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range calls {
		if c.Name == "RunPodSandbox" {
			failed := *c
			failed.Responses, failed.Status = nil, 2
			calls[i] = &failed
		}
	}
	calls = pollingAfter(calls)
	decode.SortCalls(calls)
	checkKeys(t, file+" with its sandboxes failing", calls, true)
}

func checkKeys(t *testing.T, file string, calls []*decode.Call, failed bool) {
	t.Helper()
	for _, opts := range []Options{{}, {MaxOpen: 8}} {
		g := NewGrouper(opts)
		stops, handed, failures := 0, 0, 0
		for i, c := range calls {
			for _, f := range g.Add(c) {
				handed++
				if f.Kind == Stop {
					stops++
				}
				if f.Kind == Start && f.SandboxID == "" {
					failures++
				}
			}
			open := map[*open]bool{}
			for _, o := range g.order {
				open[o] = true
			}
			for k, o := range g.starts {
				if !open[o] {
					t.Fatalf("%s %+v, call %d: start key %q leads to a flow handed out", file, opts, i, k)
				}
			}
			for k, o := range g.stops {
				if !open[o] {
					t.Fatalf("%s %+v, call %d: stop key %q leads to a flow handed out", file, opts, i, k)
				}
			}
		}
		if failed && failures == 0 {
			t.Fatalf("%s %+v: no failed sandbox handed out before the end: nothing checked", file, opts)
		}
		if !failed && (stops == 0 || handed == stops) {
			t.Fatalf("%s %+v: %d flows handed out before the end, %d of them stops: nothing checked", file, opts, handed, stops)
		}
	}
}
