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

// TestReadsRequestFields: decoding only ReadsRequestFields of the large
// requests gives the same flows (steps, attribution, results, links), the
// same labels for every call, and the same runtime as decoding them whole,
// on real captures: every testdata capture, and copies of them with IDs of
// their own, overlapping.
func TestReadsRequestFields(t *testing.T) {
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
	read := func(file string, fields bool) []*decode.Call {
		t.Helper()
		src, err := capture.OpenFile(file)
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		// As render and diff decode: polling bodies skipped, so pods are
		// named by the calls that make and inspect them.
		opts := decode.Options{SkipResponseMaps: true, RequestHeader: ReadsHeader, SkipBodies: SkipBody}
		if fields {
			opts.RequestFields = ReadsRequestFields
		}
		calls, _, err := decode.DecodeAll(src, opts)
		if err != nil {
			t.Fatal(err)
		}
		return calls
	}
	pruned := 0
	for _, file := range files {
		name := filepath.Base(filepath.Dir(file)) + "/" + filepath.Base(file)
		whole, some := read(file, false), read(file, true)
		if len(whole) != len(some) {
			t.Fatalf("%s: %d calls, %d decoded whole", name, len(some), len(whole))
		}
		for i := range whole {
			if r := whole[i].Request(); r != nil {
				if _, ok := ReadsRequestFields[r.ProtoReflect().Descriptor().FullName()]; ok {
					pruned++
				}
			}
		}
		// Also as if the capture began after the sandboxes were made: a
		// CreateContainer then names its pod by its sandbox config.
		noRun := func(calls []*decode.Call) []*decode.Call {
			return slices.DeleteFunc(slices.Clone(calls), func(c *decode.Call) bool { return c.Name == "RunPodSandbox" })
		}
		for _, opts := range []Options{{}, {All: true}, {Live: true}, {MaxOpen: -1}} {
			whole, some := whole, some
			if opts.MaxOpen == -1 {
				opts.MaxOpen = 0
				whole, some = noRun(whole), noRun(some)
			}
			sig := func(calls []*decode.Call) []string {
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
				for _, c := range in {
					take(g.Add(c))
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
			sameLines(t, fmt.Sprintf("%s %+v", name, opts), sig(some), sig(whole), "decoding whole")
		}
	}
	if pruned < 100 {
		t.Errorf("only %d requests of the types pruned: the captures do not test it", pruned)
	}
}

var pointer = regexp.MustCompile(`0x[0-9a-f]+`)
