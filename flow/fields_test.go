package flow

import (
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/criseq/criseq/capture"
	"github.com/criseq/criseq/decode"
	"github.com/criseq/criseq/internal/benchcap"
)

// TestReadsFields: decoding only ReadsFields of the large requests,
// responses and runtime events gives the same flows (steps, attribution,
// results, links, events), the same labels for every call, and the same
// runtime as decoding them whole, on real captures: every testdata
// capture, and copies of them with IDs of their own, overlapping.
func TestReadsFields(t *testing.T) {
	dir := t.TempDir()
	busy := filepath.Join(dir, "busy.pcapng")
	srcs := []string{
		filepath.Join("..", "testdata", "kubelet-burst-containerd2", "capture.pcapng"),
		filepath.Join("..", "testdata", "kubelet-pull", "capture.pcapng"),
		filepath.Join("..", "testdata", "kubelet-missing", "capture.pcapng"),
	}
	if _, err := benchcap.WriteBusy(busy, srcs, 6<<20, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	files := []string{busy}
	for _, name := range []string{"crictl-lifecycle", "kubelet-burst", "kubelet-burst-containerd2", "kubelet-init", "kubelet-missing", "kubelet-pull", "kubelet-pull-containerd2", "kubelet-warm", "tshark-tcp-crictl"} {
		m, err := filepath.Glob(filepath.Join("..", "testdata", name, "*.pcap*"))
		if err != nil || len(m) == 0 {
			t.Fatalf("%s: no capture (%v)", name, err)
		}
		files = append(files, m...)
	}
	type event struct {
		c *decode.Call
		m decode.Message
	}
	read := func(file string, fields, all bool) ([]*decode.Call, []event) {
		t.Helper()
		src, err := capture.OpenFile(file)
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		// As render and diff decode: polling bodies skipped but with
		// --all, so pods are named by the calls that make and inspect
		// them.
		var events []event
		opts := decode.Options{SkipResponseMaps: true, RequestHeader: ReadsHeader,
			OnStreamMessage: func(c *decode.Call, m decode.Message) { events = append(events, event{c, m}) }}
		if !all {
			opts.SkipBodies = SkipBody
		}
		if fields {
			opts.Fields = ReadsFields
		}
		calls, _, err := decode.DecodeAll(src, opts)
		if err != nil {
			t.Fatal(err)
		}
		return calls, events
	}
	pruned := map[bool]int{} // by whether a response
	listed := func(m decode.Message, resp bool) {
		if m.Proto != nil {
			if _, ok := ReadsFields[m.Proto.ProtoReflect().Descriptor().FullName()]; ok {
				pruned[resp]++
			}
		}
	}
	for _, file := range files {
		name := filepath.Base(filepath.Dir(file)) + "/" + filepath.Base(file)
		type decoded struct {
			calls  []*decode.Call
			events []event
		}
		var whole, some [2]decoded // by all
		for i, all := range []bool{false, true} {
			whole[i].calls, whole[i].events = read(file, false, all)
			some[i].calls, some[i].events = read(file, true, all)
			if len(whole[i].calls) != len(some[i].calls) || len(whole[i].events) != len(some[i].events) {
				t.Fatalf("%s: %d calls and %d events, %d and %d decoded whole", name, len(some[i].calls), len(some[i].events), len(whole[i].calls), len(whole[i].events))
			}
			for _, c := range whole[i].calls {
				for _, m := range c.Requests {
					listed(m, false)
				}
				for _, m := range c.Responses {
					listed(m, true)
				}
			}
			for _, e := range whole[i].events {
				listed(e.m, true)
			}
		}
		// Also as if the capture began after the sandboxes were made (a
		// CreateContainer then names its pod by its sandbox config), or
		// after the containers were too (named by their status calls,
		// events and lists), or with pods and containers named by the
		// lists and the events alone.
		without := func(methods ...string) func(*decode.Call) bool {
			return func(c *decode.Call) bool { return slices.Contains(methods, c.Name) }
		}
		for _, v := range []struct {
			name string
			opts Options
			drop func(*decode.Call) bool
		}{
			{"", Options{}, nil},
			{"all", Options{All: true}, nil},
			{"live", Options{Live: true}, nil},
			{"all live", Options{All: true, Live: true}, nil},
			{"no RunPodSandbox", Options{}, without("RunPodSandbox")},
			{"no RunPodSandbox or CreateContainer", Options{}, without("RunPodSandbox", "CreateContainer")},
			{"all, no RunPodSandbox or CreateContainer", Options{All: true}, without("RunPodSandbox", "CreateContainer")},
			{"all, named by lists and events alone", Options{All: true}, without("RunPodSandbox", "CreateContainer", "PullImage", "PodSandboxStatus", "ContainerStatus")},
		} {
			opts := v.opts
			i := 0
			if opts.All {
				i = 1
			}
			whole, some := whole[i], some[i]
			if v.drop != nil {
				whole.calls = slices.DeleteFunc(slices.Clone(whole.calls), v.drop)
				some.calls = slices.DeleteFunc(slices.Clone(some.calls), v.drop)
			}
			sig := func(calls []*decode.Call, events []event) []string {
				in := slices.Clone(calls)
				if !opts.Live {
					decode.SortCalls(in)
				}
				var out []string
				g := NewGrouper(opts)
				take := func(fs []*Flow) {
					for _, f := range fs {
						// Steps are told apart by place, not by pointer.
						sig := pointer.ReplaceAllString(flowSig(f), "call")
						out = append(out, sig+fmt.Sprintf("\n  links %+v\n  external %+v", Links(f), External(f)))
					}
				}
				// The runtime's events in time order among the calls, as
				// a decoder hands them out.
				next := 0
				for _, c := range in {
					for ; next < len(events) && events[next].m.Time.Before(c.Start); next++ {
						g.Event(events[next].c, events[next].m)
					}
					take(g.Add(c))
				}
				for ; next < len(events); next++ {
					g.Event(events[next].c, events[next].m)
				}
				take(g.Flush())
				out = append(out, "runtime "+g.Runtime())
				l := NewLabeler(opts)
				for _, c := range in {
					s := l.Label(c)
					out = append(out, fmt.Sprintf("label %s %s %s %s %s %s", s.Method, s.Arg, s.ArgID, s.Result, s.Full, s.Phase))
				}
				return out
			}
			sameLines(t, name+" "+v.name, sig(some.calls, some.events), sig(whole.calls, whole.events), "decoding whole")
		}
	}
	if pruned[false] < 100 || pruned[true] < 100 {
		t.Errorf("only %d requests and %d responses of the types pruned: the captures do not test it", pruned[false], pruned[true])
	}
}

var pointer = regexp.MustCompile(`0x[0-9a-f]+`)
