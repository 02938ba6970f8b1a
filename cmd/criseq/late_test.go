package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/criseq/criseq/capture"
	"github.com/criseq/criseq/decode"
	"github.com/criseq/criseq/flow"
	"github.com/criseq/criseq/internal/benchcap"
)

// TestCallsLate: on a capture with a GetContainerEvents stream open from
// its first byte to its last and calls that never return, calls prints
// every call, in start order but for those open over a minute, which come
// where they ended (or at the end), marked late; the table says so too.
func TestCallsLate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "late.pcapng")
	st, err := benchcap.Write(path, benchcap.DefaultSources(filepath.Join("..", "..")), 2<<20)
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"calls", "--json", path}, &stdout, &stderr); err != nil {
		t.Fatalf("calls: %v\n%s", err, stderr.String())
	}
	type line struct {
		Time       time.Time
		Conn       uint64
		Method     string
		DurationMS *float64        `json:"duration_ms"`
		Response   json.RawMessage // a stream's message, on a line of its own
		Streamed   int
		Late       bool
	}
	var lines []line
	var streamed int // message lines of connection 1's stream
	var lastMsg time.Time
	dec := json.NewDecoder(&stdout)
	for dec.More() {
		var l line
		if err := dec.Decode(&l); err != nil {
			t.Fatal(err)
		}
		if l.Response != nil {
			// Messages come as they came, in time order.
			if l.Conn == 1 {
				streamed++
			}
			if l.Time.Before(lastMsg) && !l.Late {
				t.Errorf("message at %v after one at %v, not marked late", l.Time, lastMsg)
			}
			lastMsg = l.Time
			continue
		}
		lines = append(lines, l)
	}
	if streamed != st.Events {
		t.Errorf("%d messages of the event stream printed, %d sent", streamed, st.Events)
	}
	var last time.Time
	late := 0
	for i, l := range lines {
		if l.Late {
			late++
			// Late: it started before calls printed above it, and was open
			// for over a minute (or never ended).
			if !l.Time.Before(last) {
				t.Errorf("line %d (%s) marked late but in order", i+1, l.Method)
			}
			if l.DurationMS != nil && *l.DurationMS < 60e3 {
				t.Errorf("line %d (%s) late after %.0fms", i+1, l.Method, *l.DurationMS)
			}
			continue
		}
		if l.Time.Before(last) {
			t.Fatalf("line %d (%s at %v) before the line above it (%v) and not marked late", i+1, l.Method, l.Time, last)
		}
		last = l.Time
	}
	first := lines[0].Time
	for _, l := range lines {
		if l.Time.Before(first) {
			first = l.Time
		}
	}
	streams := 0
	for _, l := range lines {
		// The stream served on connection 1 for the benchmarks spans the
		// whole capture.
		if strings.HasSuffix(l.Method, "/GetContainerEvents") && l.Conn == 1 {
			streams++
			if !l.Late || l.DurationMS != nil || !l.Time.Equal(first) || l.Streamed != st.Events {
				t.Errorf("event stream %+v: want it from the first call, open to the end, late, with its %d messages counted", l, st.Events)
			}
		}
	}
	if streams != 1 {
		t.Errorf("%d event streams listed, want 1", streams)
	}
	// Each copy's StopContainer (or StopPodSandbox) left open is late too.
	if late < 1+st.Rounds {
		t.Errorf("%d late lines, want the event stream and at least one open stop per copy (%d copies)", late, st.Rounds)
	}

	stdout.Reset()
	if err := run(context.Background(), []string{"calls", path}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	rows := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if len(rows) != len(lines)+1 {
		t.Fatalf("table: %d rows for %d calls", len(rows)-1, len(lines))
	}
	if n := strings.Count(stdout.String(), "late"); n != late {
		t.Errorf("table marks %d rows late, JSON %d", n, late)
	}
}

// TestFlowsStreamed: on the same kind of capture, flows come out in
// start order but for those still open after lateFlow (stops cut by the
// capture's end, handed out when it ends), and diff keeps whole the flow
// it picks while only listing the others.
func TestFlowsStreamed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flows.pcapng")
	// Without the bursts: their forty stops a copy would fill the grouper,
	// which then hands out the oldest, the cut stops, before they are late.
	var srcs []string
	for _, s := range benchcap.DefaultSources(filepath.Join("..", "..")) {
		if !strings.Contains(s, "burst") {
			srcs = append(srcs, s)
		}
	}
	st, err := benchcap.Write(path, srcs, 8<<20)
	if err != nil {
		t.Fatal(err)
	}
	var flows []*flow.Flow
	var maxStart time.Time
	late := 0
	if _, err := streamFlows(path, decode.Options{}, "", flow.Options{}, io.Discard, nil, func(f *flow.Flow) error {
		flows = append(flows, f)
		if f.Start.Before(maxStart) {
			late++
			// In this capture only the stops cut by a copy's end stay open
			// for longer than lateFlow (a start waits ten minutes at most
			// for its container).
			if f.Kind != flow.Stop || f.Complete {
				t.Errorf("%s %s (complete %v) from %v handed out after a flow from %v", f.Pod, f.Kind, f.Complete, f.Start, maxStart)
			}
		} else {
			maxStart = f.Start
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(flows) < st.Rounds*5 || late == 0 {
		t.Fatalf("%d flows, %d late, from %d copies: want the cut stops late", len(flows), late, st.Rounds)
	}

	spec := diffSpec{file: path, pod: "warm-criseq-lab", kind: flow.Start, n: 2}
	picked, _, err := diffFlows(path, []diffSpec{spec}, false, "", io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	f, err := pickFlow(spec, picked, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Steps) == 0 || f.Pod.Name != "warm-criseq-lab" {
		t.Errorf("picked %s with %d steps, want warm-criseq-lab's second start, whole", f.Pod, len(f.Steps))
	}
	spec.n = 999
	if _, err := pickFlow(spec, picked, 0); err == nil || strings.Count(err.Error(), "\n") != len(flows) {
		t.Errorf("#999: want an error listing the %d flows, got %v", len(flows), err)
	}
}

// TestFlowBarrierSkipsEventStream: kubelet's GetContainerEvents stream
// (Evented PLEG) stays open for the life of its connection; it is in no
// flow, so it must not hold back the flows after it (they would wait the
// whole lateFlow, in memory). With --all it is in a flow, and does.
func TestFlowBarrierSkipsEventStream(t *testing.T) {
	chunks := readChunks(t, filepath.Join("..", "..", "testdata", "kubelet-burst-containerd2", "capture.pcapng"))
	for _, all := range []bool{false, true} {
		g := flow.NewGrouper(flow.Options{All: all})
		var stream *decode.Call
		dopts := decode.Options{
			OnCall:          func(c *decode.Call) { g.Add(c) },
			OnStreamMessage: func(c *decode.Call, m decode.Message) { stream = c; g.Event(c, m) },
		}
		if !all {
			dopts.Unwaited = unwaited // as streamHeld
		}
		d := decode.New(dopts)
		// every open call counted, for the oldest
		every := decode.New(decode.Options{OnCall: func(*decode.Call) {}})
		var last time.Time
		for _, c := range chunks {
			if c.Kind == capture.Close {
				continue // as a capture stopped while kubelet runs
			}
			d.Feed(c)
			every.Feed(c)
			last = c.Time
		}
		if stream == nil {
			t.Fatal("no GetContainerEvents stream")
		}
		oldest, _ := every.Oldest()
		barrier := flowBarrier(last, g, d)
		t.Logf("all %v: stream from %v, oldest open %v, barrier %v, last chunk %v", all, stream.Start.Format(time.StampMicro), oldest.Format(time.StampMicro), barrier.Format(time.StampMicro), last.Format(time.StampMicro))
		if !oldest.Equal(stream.Start) {
			t.Fatalf("the oldest open call starts at %v, not the stream's %v", oldest, stream.Start)
		}
		if all != !barrier.After(stream.Start) {
			t.Errorf("all %v: barrier %v against the stream's start %v", all, barrier, stream.Start)
		}
	}
}

// TestHeldFlowsBounded: past maxHeldCalls, the flows held back for order
// are handed out early; every flow still comes, once, and those behind
// them come late.
func TestHeldFlowsBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flows.pcapng")
	if _, err := benchcap.Write(path, benchcap.DefaultSources(filepath.Join("..", "..")), 4<<20); err != nil {
		t.Fatal(err)
	}
	stream := func(limit int) (keys map[string]int, late int) {
		saved := maxHeldCalls
		maxHeldCalls = limit
		defer func() { maxHeldCalls = saved }()
		keys = map[string]int{}
		var maxStart time.Time
		if _, err := streamFlows(path, decode.Options{}, "", flow.Options{}, io.Discard, nil, func(f *flow.Flow) error {
			keys[f.Pod.String()+" "+f.Kind.String()+" "+f.Start.String()+" "+strconv.Itoa(len(f.Steps))]++
			if f.Start.Before(maxStart) {
				late++
			}
			maxStart = later(maxStart, f.Start)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return keys, late
	}
	all, lateAll := stream(1 << 30)
	bounded, lateBounded := stream(20)
	if !maps.Equal(all, bounded) {
		t.Errorf("bounded: %d distinct flows, unbounded %d; they differ", len(bounded), len(all))
	}
	if lateBounded <= lateAll {
		t.Errorf("%d flows late with at most 20 calls held, %d unbounded: the bound did not act", lateBounded, lateAll)
	}
	t.Logf("%d flows; late: %d unbounded, %d bounded", len(all), lateAll, lateBounded)

	// The bound holds for each flow: when a call completes a burst of
	// flows, and to the end, where the decoder hands out the calls still
	// open (the capture is cut in StopContainer calls) all at once.
	saved := maxHeldCalls
	maxHeldCalls = 20
	outstanding, most, largest := 0, 0, 0
	hold := func(f *flow.Flow) heldFlow {
		h := heldWhole(f)
		outstanding += h.calls
		most, largest = max(most, outstanding), max(largest, h.calls)
		return h
	}
	_, err := streamHeld(path, decode.Options{}, "", flow.Options{}, io.Discard, hold, func(h heldFlow) error {
		outstanding -= h.calls
		return nil
	})
	maxHeldCalls = saved
	if err != nil {
		t.Fatal(err)
	}
	if most > 20+largest {
		t.Errorf("up to %d calls held with a bound of 20 (the largest flow has %d)", most, largest)
	}

	// A flow want refuses comes as a stub, in its place.
	stubs, whole := 0, 0
	if _, err := streamFlows(path, decode.Options{}, "", flow.Options{}, io.Discard, func(f *flow.Flow) bool { return f.Kind == flow.Start }, func(f *flow.Flow) error {
		switch {
		case f.Kind != flow.Start && len(f.Steps) == 0:
			stubs++
		case f.Kind == flow.Start && len(f.Steps) > 0:
			whole++
		default:
			t.Errorf("%s %s with %d steps", f.Pod, f.Kind, len(f.Steps))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, n := range all {
		total += n
	}
	if stubs == 0 || whole == 0 || stubs+whole != total {
		t.Errorf("%d stubs and %d whole flows, want the stops and restarts as stubs and the starts whole, %d in all", stubs, whole, total)
	}
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// TestRenderDrawnAhead: render draws flows as they are built and names
// and writes them in their turn (svg, puml, mmd, json, and the ID-flow
// graph from its DOT text); with html, which
// keeps every flow, it holds the flows themselves. Both must give the
// same files and lines, on copies of real captures where many pods start
// twice (named -2, -3…) and flows wait behind calls that never return.
func TestRenderDrawnAhead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "copies.pcapng")
	if _, err := benchcap.Write(path, benchcap.DefaultSources(filepath.Join("..", "..")), 3<<20); err != nil {
		t.Fatal(err)
	}
	renderTo := func(formats string) (string, map[string][]byte) {
		dir := t.TempDir()
		var stdout, stderr bytes.Buffer
		if err := run(context.Background(), []string{"render", "-o", dir, "--format", formats, path}, &stdout, &stderr); err != nil {
			t.Fatalf("render --format %s: %v\n%s", formats, err, stderr.String())
		}
		files := map[string][]byte{}
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			if strings.HasSuffix(e.Name(), ".html") {
				continue
			}
			b, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			files[e.Name()] = b
		}
		// Lines without the directory and the viewer's line.
		var lines []string
		for _, l := range strings.Split(stdout.String(), "\n") {
			if strings.HasPrefix(l, "viewer ") {
				continue
			}
			lines = append(lines, strings.ReplaceAll(strings.ReplaceAll(l, dir+"/", ""), ", "+strings.TrimSuffix(filepath.Base(path), ".pcapng")+".html", ""))
		}
		return strings.Join(lines, "\n"), files
	}
	aheadOut, ahead := renderTo("svg,puml,mmd,json,graph")
	heldOut, held := renderTo("svg,puml,mmd,json,graph,html")
	again := 0
	for name := range ahead {
		if strings.Contains(name, "-2.") || strings.Contains(name, "-2_") {
			again++
		}
	}
	if len(ahead) == 0 || again == 0 {
		t.Fatalf("%d files, %d of pods started again: the test proves nothing", len(ahead), again)
	}
	if len(ahead) != len(held) {
		t.Errorf("%d files drawn ahead, %d held", len(ahead), len(held))
	}
	for name, b := range ahead {
		if !bytes.Equal(b, held[name]) {
			t.Errorf("%s differs drawn ahead (%d bytes) and held (%d bytes)", name, len(b), len(held[name]))
		}
	}
	if aheadOut != heldOut {
		t.Errorf("lines differ:\ndrawn ahead:\n%s\nheld:\n%s", aheadOut, heldOut)
	}
}
