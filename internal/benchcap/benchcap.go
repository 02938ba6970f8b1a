// Package benchcap builds large captures of real kubelet traffic for the
// benchmarks: time-shifted copies of the repository's real captures, each
// cut while a StopContainer is still open (as a capture stopped during a
// pod's stop would be), so that the real GetContainerEvents stream of
// kubelet's Evented PLEG in kubelet-burst-containerd2 stays open from the
// first copy to the end; plus one more GetContainerEvents stream, served
// by real grpc-go peers, open from the first byte to the last, carrying a
// container event for each container created, started, stopped and
// removed in every copy.
//
// In: capture files (pcap or pcapng). Out: one pcapng file in criseq's own
// format (synthetic TCP, which tshark reads too). The files are made at
// benchmark time, never committed.
package benchcap

import (
	"bufio"
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/criseq/criseq/capture"
	"github.com/criseq/criseq/decode"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Version changes whenever the output for the same inputs changes, so that
// a cached capture is made again.
const Version = 2

// DefaultSources returns the real captures the benchmarks copy: the
// kubelet captures under testdata/ of the repository at root (kubelet-*),
// and the reference kubelet 1.37 capture (testdata/reference).
func DefaultSources(root string) []string {
	out, _ := filepath.Glob(filepath.Join(root, "testdata", "kubelet-*", "capture.pcapng"))
	// The capture of kubelet with the Evented PLEG first: its real
	// GetContainerEvents stream, cut with the copy, stays open from
	// (nearly) the first byte to the last.
	slices.SortStableFunc(out, func(a, b string) int {
		return cmp.Compare(btoi(!strings.Contains(a, "burst-containerd2")), btoi(!strings.Contains(b, "burst-containerd2")))
	})
	return append(out, Reference(root))
}

// Reference is the kubelet 1.37 reference capture of the repository at
// root (testdata/reference: socat's, recorded before criseq's recorder).
func Reference(root string) string {
	return filepath.Join(root, "testdata", "reference", "kubelet-1.37-two-containers.pcap")
}

// MeasuredSources are the DefaultSources make bench copies: all but the
// captures added after the README's figures were measured
// (kubelet-crashloop), so that those figures and a new run measure the
// same bytes. Tests take DefaultSources, every kind of traffic.
func MeasuredSources(root string) []string {
	var out []string
	for _, s := range DefaultSources(root) {
		if !strings.Contains(s, "kubelet-crashloop") {
			out = append(out, s)
		}
	}
	return out
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Stats describe a capture written by Write.
type Stats struct {
	Rounds  int   // copies of every source
	Conns   int   // connections
	Events  int   // messages on the event stream
	Bytes   int64 // file size
	Payload int64 // TCP payload bytes
}

// source is one capture, read and cut.
type source struct {
	path   string
	chunks []capture.Chunk // up to the cut, in file order
	ids    [][]int         // by chunk, where its IDs are (findIDs)
	start  time.Time       // first chunk's time
	span   time.Duration   // first chunk to the cut
	conns  map[uint64]bool
	events []timedEvent // offsets from start
}

type timedEvent struct {
	at time.Duration
	ev *runtimeapi.ContainerEventResponse
}

// Write writes a capture of about size bytes to path: rounds of copies of
// every source, one after the other in time, and the event stream.
func Write(path string, sources []string, size int64) (Stats, error) {
	var srcs []*source
	var round int64
	for _, p := range sources {
		s, err := load(p)
		if err != nil {
			return Stats{}, err
		}
		srcs = append(srcs, s)
		for _, c := range s.chunks {
			round += int64(len(c.Data)) + 80 // pcapng + TCP/IP overhead per packet, roughly
		}
	}
	if len(srcs) == 0 {
		return Stats{}, errors.New("benchcap: no source captures")
	}
	rounds := int(max(1, (size+round-1)/round))

	// Where each copy goes in time, and the events it brings.
	base := srcs[0].start
	const pause = time.Second
	type placed struct {
		s     *source
		shift time.Duration // added to the source's times
	}
	var plan []placed
	var events []timedEvent // absolute offsets from base
	cursor := time.Duration(0)
	for range rounds {
		for _, s := range srcs {
			shift := base.Add(cursor).Sub(s.start)
			for _, e := range s.events {
				ev, err := copyEvent(e.ev, len(plan))
				if err != nil {
					return Stats{}, err
				}
				ev.CreatedAt = s.start.Add(shift + e.at).UnixNano()
				events = append(events, timedEvent{cursor + e.at, ev})
			}
			plan = append(plan, placed{s, shift})
			cursor += s.span + pause
		}
	}
	slices.SortStableFunc(events, func(a, b timedEvent) int { return int(a.at - b.at) })
	stream, err := recordEvents(events)
	if err != nil {
		return Stats{}, err
	}

	f, err := capture.CreateFile(path)
	if err != nil {
		return Stats{}, err
	}
	cw := &countWriter{w: bufio.NewWriterSize(f, 1<<20)}
	w := capture.NewPcapngWriter(cw)
	st := Stats{Rounds: rounds, Events: len(events), Conns: 1}
	// The event stream is connection 1; the copies' connections follow.
	next := uint64(2)
	k := 0 // next event stream chunk
	at := func(tag int) time.Time {
		if tag < 0 {
			return base
		}
		return base.Add(events[tag].at)
	}
	write := func(c capture.Chunk) error {
		st.Payload += int64(len(c.Data))
		return w.Write(c)
	}
	buf := make([]byte, 0, 1<<16)
	for n, p := range plan {
		ids := map[uint64]uint64{}
		for i, c := range p.s.chunks {
			c.Time = c.Time.Add(p.shift)
			if len(p.s.ids[i]) > 0 {
				buf = append(buf[:0], c.Data...)
				ownIDs(buf, p.s.ids[i], n)
				c.Data = buf
			}
			for k < len(stream) && !at(stream[k].tag).After(c.Time) {
				e := stream[k].chunk
				e.Time = at(stream[k].tag)
				if err := write(e); err != nil {
					f.Close()
					return st, err
				}
				k++
			}
			id, ok := ids[c.Conn]
			if !ok {
				id = next
				next++
				ids[c.Conn] = id
				st.Conns++
			}
			c.Conn = id
			if err := write(c); err != nil {
				f.Close()
				return st, err
			}
		}
	}
	for ; k < len(stream); k++ {
		e := stream[k].chunk
		e.Time = at(stream[k].tag)
		if err := write(e); err != nil {
			f.Close()
			return st, err
		}
	}
	// No Close for the event stream or the copies' cut connections: the
	// capture ends with them open.
	return finish(w, cw, f, st, nil)
}

// finish flushes and closes a capture being written, and counts its bytes.
func finish(w *capture.PcapngWriter, cw *countWriter, f *os.File, st Stats, err error) (Stats, error) {
	if err == nil {
		err = w.Close() // flushes into cw
	}
	if err == nil {
		err = cw.w.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	st.Bytes = cw.n
	if err != nil {
		return st, fmt.Errorf("benchcap: %w", err)
	}
	return st, nil
}

type countWriter struct {
	w *bufio.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// Close does not close the file: Write does.
func (c *countWriter) Close() error { return nil }

// load reads a source capture, finds its last StopContainer that
// completed (or StopPodSandbox, without one) and cuts the capture halfway
// through it, and derives the
// container events a runtime would have sent meanwhile.
func load(path string) (*source, error) {
	src, err := capture.OpenFile(path)
	if err != nil {
		return nil, fmt.Errorf("benchcap: %w", err)
	}
	var chunks []capture.Chunk
	var calls []*decode.Call
	d := decode.New(decode.Options{NoRedact: true, OnCall: func(c *decode.Call) { calls = append(calls, c) }})
	for {
		c, err := src.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			src.Close()
			return nil, fmt.Errorf("benchcap: %s: %w", path, err)
		}
		c.Data = slices.Clone(c.Data)
		chunks = append(chunks, c)
		d.Feed(c)
	}
	src.Close()
	d.Close()
	if len(chunks) == 0 {
		return nil, fmt.Errorf("benchcap: %s holds no traffic", path)
	}
	decode.SortCalls(calls)
	// A pod whose image never came has no container to stop: its sandbox's
	// stop is cut instead.
	var stop *decode.Call
	for _, name := range []string{"StopContainer", "StopPodSandbox"} {
		for _, c := range calls {
			if c.Name == name && !c.End.IsZero() {
				stop = c
			}
		}
		if stop != nil {
			break
		}
	}
	if stop == nil {
		return nil, fmt.Errorf("benchcap: %s has no StopContainer or StopPodSandbox to cut the capture in", path)
	}
	cut := stop.Start.Add(stop.Duration() / 2)
	s := &source{path: path, start: chunks[0].Time, conns: map[uint64]bool{}}
	for _, c := range chunks {
		if c.Time.After(cut) {
			break
		}
		s.chunks = append(s.chunks, c)
		s.conns[c.Conn] = true
	}
	s.span = cut.Sub(s.start)
	s.ids = findIDs(s.chunks)
	s.events = containerEvents(calls, cut, s.start)
	return s, nil
}

// containerEvents are the events a runtime with the Evented PLEG sends
// for the calls that changed a container before cut, shortly before each
// call returned, as containerd does.
func containerEvents(calls []*decode.Call, cut, start time.Time) []timedEvent {
	type pod struct {
		id   string
		meta *runtimeapi.PodSandboxMetadata
		cfg  *runtimeapi.PodSandboxConfig
		at   time.Time
	}
	type ctr struct {
		id      string
		sid     string
		meta    *runtimeapi.ContainerMetadata
		image   *runtimeapi.ImageSpec
		labels  map[string]string
		created time.Time
		started time.Time
	}
	pods := map[string]*pod{}
	ctrs := map[string]*ctr{}
	var out []timedEvent
	emit := func(c *decode.Call, cid string, typ runtimeapi.ContainerEventType, state runtimeapi.ContainerState) {
		k := ctrs[cid]
		if k == nil || c.End.IsZero() || c.End.After(cut) || !c.OK() {
			return
		}
		t := c.End.Add(-50 * time.Microsecond)
		ev := &runtimeapi.ContainerEventResponse{ContainerId: cid, ContainerEventType: typ}
		if p := pods[k.sid]; p != nil {
			ev.PodSandboxStatus = &runtimeapi.PodSandboxStatus{
				Id: p.id, Metadata: p.meta, State: runtimeapi.PodSandboxState_SANDBOX_READY,
				CreatedAt: p.at.UnixNano(), Labels: p.cfg.GetLabels(), Annotations: p.cfg.GetAnnotations(),
				Linux: &runtimeapi.LinuxPodSandboxStatus{Namespaces: &runtimeapi.Namespace{Options: p.cfg.GetLinux().GetSecurityContext().GetNamespaceOptions()}},
			}
		}
		cs := &runtimeapi.ContainerStatus{Id: cid, Metadata: k.meta, State: state, CreatedAt: k.created.UnixNano(),
			Image: k.image, ImageRef: k.image.GetImage(), Labels: k.labels}
		if !k.started.IsZero() {
			cs.StartedAt = k.started.UnixNano()
		}
		if state == runtimeapi.ContainerState_CONTAINER_EXITED {
			cs.FinishedAt, cs.Reason = t.UnixNano(), "Completed"
		}
		ev.ContainersStatuses = []*runtimeapi.ContainerStatus{cs}
		out = append(out, timedEvent{t.Sub(start), ev})
	}
	for _, c := range calls {
		if !c.OK() {
			continue
		}
		switch req := c.Request().(type) {
		case *runtimeapi.RunPodSandboxRequest:
			if resp, ok := c.Response().(*runtimeapi.RunPodSandboxResponse); ok {
				pods[resp.GetPodSandboxId()] = &pod{id: resp.GetPodSandboxId(), meta: req.GetConfig().GetMetadata(), cfg: req.GetConfig(), at: c.End}
			}
		case *runtimeapi.CreateContainerRequest:
			if resp, ok := c.Response().(*runtimeapi.CreateContainerResponse); ok {
				cfg := req.GetConfig()
				ctrs[resp.GetContainerId()] = &ctr{id: resp.GetContainerId(), sid: req.GetPodSandboxId(), meta: cfg.GetMetadata(),
					image: cfg.GetImage(), labels: cfg.GetLabels(), created: c.End}
				emit(c, resp.GetContainerId(), runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT, runtimeapi.ContainerState_CONTAINER_CREATED)
			}
		case *runtimeapi.StartContainerRequest:
			if k := ctrs[req.GetContainerId()]; k != nil {
				k.started = c.End
			}
			emit(c, req.GetContainerId(), runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT, runtimeapi.ContainerState_CONTAINER_RUNNING)
		case *runtimeapi.StopContainerRequest:
			emit(c, req.GetContainerId(), runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT, runtimeapi.ContainerState_CONTAINER_EXITED)
		case *runtimeapi.RemoveContainerRequest:
			emit(c, req.GetContainerId(), runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT, runtimeapi.ContainerState_CONTAINER_EXITED)
		}
	}
	slices.SortStableFunc(out, func(a, b timedEvent) int { return int(a.at - b.at) })
	return out
}

// copyEvent is e with the IDs of copy k (ownIDs).
func copyEvent(e *runtimeapi.ContainerEventResponse, k int) (*runtimeapi.ContainerEventResponse, error) {
	b, err := proto.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("benchcap: %w", err)
	}
	ownIDs(b, findIDs([]capture.Chunk{{Data: b}})[0], k)
	ev := &runtimeapi.ContainerEventResponse{}
	if err := proto.Unmarshal(b, ev); err != nil {
		return nil, fmt.Errorf("benchcap: %w", err)
	}
	return ev, nil
}
