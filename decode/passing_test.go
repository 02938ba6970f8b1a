package decode

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/criseq/criseq/capture"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// skipPolling is SkipBodies as render and diff set it (flow.SkipBody):
// kubelet's polling bodies are not read.
func skipPolling(_, method string) bool {
	return strings.HasPrefix(method, "List") || method == "Version" || method == "Status" || method == "ImageFsInfo" || method == "GetContainerEvents"
}

// passDecode decodes chunks cut at at with every message whose body is
// skipped let pass unheld (or, with held, every one held), and says what
// came out: each call, and what the decoder holds of the runtime's IDs;
// and how many messages passed.
func passDecode(t *testing.T, chunks []capture.Chunk, at pos, held bool) (string, int) {
	t.Helper()
	saved := maxHeldSkipped
	maxHeldSkipped = 0
	if held {
		maxHeldSkipped = math.MaxUint32
	}
	defer func() { maxHeldSkipped = saved }()
	var out []string
	d := New(Options{ListsUnary: true, SkipBodies: skipPolling, OnCall: func(c *Call) { out = append(out, callLine(c)) }})
	cutFeedEach(d, chunks, at, func() {})
	var ids []string
	for id, h := range d.ids {
		ids = append(ids, fmt.Sprint(id, h.kind, h.last, h.prev, len(h.acts)))
	}
	slices.Sort(ids)
	d.Close()
	return strings.Join(out, "\n") + "\n--\n" + strings.Join(ids, "\n"), d.nPassed
}

// Letting a skipped body pass unheld (a large one) changes nothing: every
// skipped body of real captures, whole and cut midway (calls named by
// what lists say of the runtime's IDs), passes; the calls handed out and
// what the decoder learnt of each ID are those it gives holding them.
func TestPassingMatchesHolding(t *testing.T) {
	n, passed := 0, 0
	for _, name := range []string{"kubelet-burst-containerd2", "kubelet-missing", "kubelet-init", "kubelet-warm"} {
		p := planCapture(t, readChunks(t, kubeletCapture(t, name)))
		for i, at := range p.bounds {
			if i%60 != 0 {
				continue
			}
			a, np := passDecode(t, p.chunks, at, false)
			b, _ := passDecode(t, p.chunks, at, true)
			if a != b {
				t.Fatalf("%s cut at %v: passing and holding differ:\n%s", name, at, firstDiff(a, b))
			}
			n, passed = n+1, passed+np
		}
	}
	t.Logf("%d cuts decoded both ways, the same; %d messages passed", n, passed)
	if passed == 0 {
		t.Error("no message passed: the test proves nothing")
	}
}

// callLine is what a call says of itself but its messages' bodies: the
// same whether they were held, passed or kept as they came.
func callLine(c *Call) string {
	var sizes []int
	for _, m := range append(slices.Clone(c.Requests), c.Responses...) {
		sizes = append(sizes, m.Size)
	}
	return fmt.Sprint(c.Conn, c.Stream, c.Method, c.Known, c.Flags, c.Status, c.Start.UnixNano(), c.End.UnixNano(), sizes, c.Streamed, c.Candidates, c.Errors)
}

func firstDiff(a, b string) string {
	la, lb := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := range min(len(la), len(lb)) {
		if la[i] != lb[i] {
			return fmt.Sprintf("line %d:\n passing %s\n holding %s", i, la[i], lb[i])
		}
	}
	return fmt.Sprintf("%d lines against %d", len(la), len(lb))
}

// Real grpc-go peers, ListContainers answers of 9 MB: they pass unheld,
// each call is whole (its size), and the IDs they list are learnt as when
// they are held. Another client's connection, caught midway, makes the
// decoder learn IDs.
func TestPassingRealLargeLists(t *testing.T) {
	cc2, rec2 := criPeers(t, fakeRuntime{})
	for range 3 {
		if _, err := runtimeapi.NewRuntimeServiceClient(cc2).Version(context.Background(), &runtimeapi.VersionRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	cc, rec := criPeers(t, fakeRuntime{containers: 12000})
	rt := runtimeapi.NewRuntimeServiceClient(cc)
	var sizes []int
	for range 3 {
		resp, err := rt.ListContainers(context.Background(), &runtimeapi.ListContainersRequest{})
		if err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, proto.Size(resp))
	}
	cc.Close()
	cc2.Close()
	if sizes[0] < 4<<20 {
		t.Fatalf("answers of %d bytes: not large", sizes[0])
	}
	var chunks []capture.Chunk
	for _, c := range rec2.take() {
		c.Conn += 1000
		chunks = append(chunks, c)
	}
	cut := 0
	for chunks[cut].Kind != capture.Data || chunks[cut].Dir != s2c {
		cut++
	}
	chunks = append(chunks, rec.take()...)
	at := pos{chunk: cut, at: 3} // into the first answer of the other connection
	a, passed := passDecode(t, chunks, at, false)
	b, _ := passDecode(t, chunks, at, true)
	if a != b {
		t.Fatalf("passing and holding differ:\n%s", firstDiff(a, b))
	}
	if passed < len(sizes) {
		t.Errorf("%d messages passed, want the %d answers at least", passed, len(sizes))
	}
	for _, size := range sizes {
		if !strings.Contains(a, fmt.Sprint(" ", size, "]")) {
			t.Errorf("no call with an answer of %d bytes:\n%.2000s", size, a)
		}
	}
	if ids := strings.Count(a[strings.Index(a, "--\n"):], "\n"); ids < 12000 {
		t.Errorf("%d IDs learnt, want the 12000 listed", ids)
	}
	t.Logf("answers of %v bytes", sizes)
}

// A connection caught midway while a large list's first answer passes on
// another starts the tracking of IDs before the answer ends: the answer
// is noted then, as a held one is (real grpc-go peers).
func TestPassingTrackingStartsMidAnswer(t *testing.T) {
	cc2, rec2 := criPeers(t, fakeRuntime{})
	if _, err := runtimeapi.NewRuntimeServiceClient(cc2).Version(context.Background(), &runtimeapi.VersionRequest{}); err != nil {
		t.Fatal(err)
	}
	cc, rec := criPeers(t, fakeRuntime{containers: 8000})
	if _, err := runtimeapi.NewRuntimeServiceClient(cc).ListContainers(context.Background(), &runtimeapi.ListContainersRequest{}); err != nil {
		t.Fatal(err)
	}
	cc.Close()
	cc2.Close()
	big := rec.take()
	// The other connection's answer, caught from its fourth byte, in the
	// middle of the list's answer.
	var other capture.Chunk
	for _, c := range rec2.take() {
		if c.Kind == capture.Data && c.Dir == s2c {
			other = c
			break
		}
	}
	other.Conn, other.Data, other.Offset = 1000, other.Data[3:], 0
	var mid int
	var answer int64
	for i, c := range big {
		if c.Kind == capture.Data && c.Dir == s2c {
			if answer += int64(len(c.Data)); answer > 2<<20 {
				mid = i
				break
			}
		}
	}
	if mid == 0 {
		t.Fatal("no large answer")
	}
	chunks := slices.Concat(big[:mid], []capture.Chunk{{Conn: 1000, Kind: capture.Open, Midway: true, Time: other.Time}, other}, big[mid:])
	for i := range chunks {
		chunks[i].Time = big[0].Time.Add(time.Duration(i) * time.Microsecond) // in order, as fed
	}
	a, passed := passDecode(t, chunks, pos{}, false)
	b, _ := passDecode(t, chunks, pos{}, true)
	if a != b {
		t.Fatalf("passing and holding differ:\n%s", firstDiff(a, b))
	}
	if ids := strings.Count(a[strings.Index(a, "--\n"):], "\n"); passed == 0 || ids < 8000 {
		t.Errorf("%d messages passed, %d IDs learnt; want the answer passed and its 8000 IDs", passed, ids)
	}
}

// FuzzPassing: whatever the bytes, from the first one or caught midway,
// letting every skipped body pass unheld gives what holding them gives:
// the same calls, errors and IDs learnt.
func FuzzPassing(f *testing.F) {
	for _, s := range seedStreams(f) {
		f.Add(s[0], s[1], uint16(0), uint16(0), uint8(7))
	}
	resyncSeeds(f)
	f.Fuzz(func(t *testing.T, c, s []byte, cutC, cutS uint16, piece uint8) {
		n := 1 + int(piece)
		midway := cutC > 0 || cutS > 0
		if midway {
			c, s = c[min(int(cutC), len(c)):], s[min(int(cutS), len(s)):]
		}
		run := func(limit uint32) string {
			saved := maxHeldSkipped
			maxHeldSkipped = limit
			defer func() { maxHeldSkipped = saved }()
			var calls []*Call
			d := New(Options{ListsUnary: true, SkipBodies: skipPolling, OnCall: func(c *Call) { calls = append(calls, c) }})
			if midway {
				feedMidway(d, c, s, n)
			} else {
				feedStreams(d, c, s, n, true)
			}
			var ids []string
			for id, h := range d.ids {
				ids = append(ids, fmt.Sprint(id, h.kind, h.last, h.prev, len(h.acts)))
			}
			slices.Sort(ids)
			d.Close()
			return summaries(calls, d.Errors()) + "\n" + strings.Join(ids, "\n")
		}
		if a, b := run(0), run(math.MaxUint32); a != b {
			t.Fatalf("passing and holding differ:\n%s", firstDiff(a, b))
		}
	})
}
