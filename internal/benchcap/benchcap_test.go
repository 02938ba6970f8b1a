package benchcap

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/criseq/criseq/capture"
	"github.com/criseq/criseq/decode"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestWrite builds a small capture and checks what the benchmarks rely on:
// every copy ends with a StopContainer still open, and one
// GetContainerEvents stream is open from the first byte to the last,
// carrying every event.
func TestWrite(t *testing.T) {
	srcs := DefaultSources(filepath.Join("..", ".."))
	path := filepath.Join(t.TempDir(), "big.pcapng")
	st, err := Write(path, srcs, 12<<20)
	if err != nil {
		t.Fatal(err)
	}
	if st.Rounds < 2 || st.Events == 0 {
		t.Fatalf("stats %+v: want several rounds and events", st)
	}
	src, err := capture.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	calls, errs, err := decode.DecodeAll(src, decode.Options{})
	if err != nil || len(errs) > 0 {
		t.Fatalf("decode: %v %v", err, errs)
	}
	stopConns := map[uint64]bool{} // connections with a stop still open
	var stream *decode.Call        // the one served for the benchmarks
	var events, real int
	sandboxes := map[string]int{}   // RunPodSandbox's answers
	eventIDs := map[string]bool{}   // containers named in the events
	containers := map[string]bool{} // CreateContainer's answers
	for _, c := range calls {
		switch r := c.Response().(type) {
		case *runtimeapi.RunPodSandboxResponse:
			sandboxes[r.GetPodSandboxId()]++
		case *runtimeapi.CreateContainerResponse:
			containers[r.GetContainerId()] = true
		}
		if c.Conn == 1 {
			for _, m := range c.Responses {
				if e, ok := m.Proto.(*runtimeapi.ContainerEventResponse); ok {
					eventIDs[e.GetContainerId()] = true
				}
			}
		}
		switch {
		case (c.Name == "StopContainer" || c.Name == "StopPodSandbox") && c.End.IsZero():
			stopConns[c.Conn] = true
		case c.Name == "GetContainerEvents" && c.Conn == 1:
			stream = c
			events = len(c.Responses)
		case c.Name == "GetContainerEvents" && c.End.IsZero():
			// kubelet's own in each copy of kubelet-burst-containerd2,
			// open to the end (containerd 1.6's, in kubelet-burst, fail
			// at once)
			real++
		}
	}
	// Each copy has sandboxes and containers of its own, and the events
	// name the copy's containers.
	for id, n := range sandboxes {
		if n > 1 {
			t.Errorf("sandbox %s run %d times: copies share IDs", id, n)
		}
	}
	if len(sandboxes) < st.Rounds*2 {
		t.Errorf("%d sandboxes in %d rounds", len(sandboxes), st.Rounds)
	}
	for id := range eventIDs {
		if !containers[id] {
			t.Errorf("event for container %s, which no copy created", id)
		}
	}
	if real != st.Rounds {
		t.Errorf("%d of kubelet's event streams open at the end, want one per copy (%d)", real, st.Rounds)
	}
	// kubelet-missing's pod never had a container: its sandbox's stop is
	// the one left open.
	if want := st.Rounds * len(srcs); len(stopConns) != want {
		t.Errorf("%d connections with a StopContainer or StopPodSandbox open at the end, want one per copy (%d)", len(stopConns), want)
	}
	if stream == nil {
		t.Fatal("no GetContainerEvents stream")
	}
	if !stream.End.IsZero() || stream.Start != calls[0].Start || stream.Conn != 1 {
		t.Errorf("event stream from %v to %v on connection %d; want open from the first call (%v) to the end", stream.Start, stream.End, stream.Conn, calls[0].Start)
	}
	if events != st.Events {
		t.Errorf("%d events decoded, %d sent", events, st.Events)
	}
	last := calls[len(calls)-1]
	if r := stream.Responses[len(stream.Responses)-1].Time; r.Before(last.Start.Add(-60 * time.Second)) {
		t.Errorf("last event at %v, last call at %v: the stream should carry events to the end", r, last.Start)
	}
}

// TestWriteUnclosed: copies of a real crictl capture whose connections
// never close, every call of every copy decoded.
func TestWriteUnclosed(t *testing.T) {
	src := filepath.Join("..", "..", "testdata", "crictl-lifecycle", "capture.pcapng")
	path := filepath.Join(t.TempDir(), "unclosed.pcapng")
	st, err := WriteUnclosed(path, src, 2<<20)
	if err != nil {
		t.Fatal(err)
	}
	oneCalls := decodeFile(t, src)
	s, err := capture.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	closes, opens := 0, 0
	var chunks []capture.Chunk
	for {
		c, err := s.Next()
		if err != nil {
			break
		}
		switch c.Kind {
		case capture.Close:
			closes++
		case capture.Open:
			opens++
		}
		chunks = append(chunks, capture.Chunk{Conn: c.Conn, Dir: c.Dir, Kind: c.Kind, Time: c.Time, Offset: c.Offset, Data: append([]byte(nil), c.Data...)})
	}
	if st.Rounds < 2 || opens != st.Conns || closes != 0 {
		t.Fatalf("stats %+v; %d connections opened, %d closed in the file: want several copies, none closed", st, opens, closes)
	}
	var calls []*decode.Call
	d := decode.New(decode.Options{OnCall: func(c *decode.Call) { calls = append(calls, c) }})
	for _, c := range chunks {
		d.Feed(c)
	}
	d.Close()
	if len(calls) != st.Rounds*len(oneCalls) {
		t.Errorf("%d calls, want %d copies of %d", len(calls), st.Rounds, len(oneCalls))
	}
	for _, c := range calls {
		if c.Flags != 0 || c.Name == "" {
			t.Fatalf("call %s on conn %d: flags %v, errors %v", c.Name, c.Conn, c.Flags, c.Errors)
		}
	}
}

// TestWriteBusy: copies of a real kubelet burst overlapping in time, in
// time order, each with IDs of its own, decode as the source does.
func TestWriteBusy(t *testing.T) {
	src := filepath.Join("..", "..", "testdata", "kubelet-burst-containerd2", "capture.pcapng")
	path := filepath.Join(t.TempDir(), "busy.pcapng")
	st, err := WriteBusy(path, []string{src}, 6<<20, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	oneCalls := decodeFile(t, src)
	sandboxes := func(calls []*decode.Call) map[string]bool {
		ids := map[string]bool{}
		for _, c := range calls {
			if r, ok := c.Response().(*runtimeapi.RunPodSandboxResponse); ok {
				ids[r.GetPodSandboxId()] = true
			}
		}
		return ids
	}
	s, err := capture.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var calls []*decode.Call
	var last time.Time
	d := decode.New(decode.Options{OnCall: func(c *decode.Call) { calls = append(calls, c) }})
	for {
		c, err := s.Next()
		if err != nil {
			break
		}
		if c.Time.Before(last) {
			t.Fatalf("chunk at %v after one at %v", c.Time, last)
		}
		last = c.Time
		d.Feed(c)
	}
	d.Close()
	if st.Rounds < 3 {
		t.Fatalf("stats %+v: want several copies", st)
	}
	// Overlapping: the copies take less time than one after the other.
	span := oneCalls[len(oneCalls)-1].Start.Sub(oneCalls[0].Start)
	if got := calls[len(calls)-1].Start.Sub(calls[0].Start); got >= time.Duration(st.Rounds)*span {
		t.Errorf("%d copies span %v, one %v: they do not overlap", st.Rounds, got, span)
	}
	if len(calls) != st.Rounds*len(oneCalls) {
		t.Errorf("%d calls, want %d copies of %d", len(calls), st.Rounds, len(oneCalls))
	}
	for _, c := range calls {
		if c.Flags&^decode.Incomplete != 0 || c.Name == "" {
			t.Fatalf("call %s on conn %d: flags %v, errors %v", c.Name, c.Conn, c.Flags, c.Errors)
		}
	}
	if got, want := len(sandboxes(calls)), st.Rounds*len(sandboxes(oneCalls)); got != want || want == 0 {
		t.Errorf("%d distinct sandbox IDs, want %d: each copy's own", got, want)
	}
}

// decodeFile decodes every call of a capture file.
func decodeFile(t *testing.T, path string) []*decode.Call {
	t.Helper()
	src, err := capture.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	calls, _, err := decode.DecodeAll(src, decode.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return calls
}
