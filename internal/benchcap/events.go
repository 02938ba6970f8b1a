package benchcap

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/criseq/criseq/capture"
)

// streamChunk is a chunk of the event connection, tagged with the event
// being sent when it was seen (-1: before the first).
type streamChunk struct {
	chunk capture.Chunk
	tag   int
}

// recordEvents serves events on a GetContainerEvents stream between a real
// grpc-go server and client over a unix socket and returns the bytes of
// the client's connection, up to the last event (the stream stays open).
// Each event is sent once the client has read the one before, so each
// chunk can be given the time of the event it carries.
func recordEvents(events []timedEvent) ([]streamChunk, error) {
	dir, err := os.MkdirTemp("", "criseq-benchcap-")
	if err != nil {
		return nil, fmt.Errorf("benchcap: %w", err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "runtime.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return nil, fmt.Errorf("benchcap: %w", err)
	}
	srv := grpc.NewServer()
	es := &eventServer{events: events, read: make(chan struct{})}
	runtimeapi.RegisterRuntimeServiceServer(srv, es)
	go srv.Serve(ln)
	defer srv.Stop()

	rec := &tee{tag: &es.tag}
	es.tag.Store(-1)
	cc, err := grpc.NewClient("unix://"+sock,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, "unix", sock)
			if err != nil {
				return nil, err
			}
			return rec.wrap(c), nil
		}))
	if err != nil {
		return nil, fmt.Errorf("benchcap: %w", err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	stream, err := runtimeapi.NewRuntimeServiceClient(cc).GetContainerEvents(ctx, &runtimeapi.GetEventsRequest{})
	if err != nil {
		return nil, fmt.Errorf("benchcap: GetContainerEvents: %w", err)
	}
	for i := range events {
		if _, err := stream.Recv(); err != nil {
			return nil, fmt.Errorf("benchcap: event %d: %w", i, err)
		}
		es.read <- struct{}{}
	}
	return rec.take(), nil
}

type eventServer struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	events []timedEvent
	tag    atomic.Int64
	read   chan struct{} // the client read an event
}

func (s *eventServer) GetContainerEvents(_ *runtimeapi.GetEventsRequest, stream grpc.ServerStreamingServer[runtimeapi.ContainerEventResponse]) error {
	for i, e := range s.events {
		s.tag.Store(int64(i))
		if err := stream.Send(e.ev); err != nil {
			return err
		}
		select {
		case <-s.read:
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
	}
	// Stay open, as a runtime does for the life of kubelet's connection.
	<-stream.Context().Done()
	return nil
}

// tee records what a client connection writes and reads as chunks.
type tee struct {
	tag *atomic.Int64

	mu      sync.Mutex
	chunks  []streamChunk
	off     [2]int64
	opened  bool
	stopped bool
}

func (t *tee) wrap(c net.Conn) net.Conn { return &teeConn{Conn: c, t: t} }

func (t *tee) add(dir capture.Dir, p []byte) {
	if len(p) == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return
	}
	tag := int(t.tag.Load())
	if !t.opened {
		t.opened = true
		t.chunks = append(t.chunks, streamChunk{capture.Chunk{Conn: 1, Kind: capture.Open}, tag})
	}
	t.chunks = append(t.chunks, streamChunk{capture.Chunk{Conn: 1, Dir: dir, Kind: capture.Data, Data: slices.Clone(p), Offset: t.off[dir]}, tag})
	t.off[dir] += int64(len(p))
}

// take returns the chunks so far; later ones (the teardown) are not kept.
func (t *tee) take() []streamChunk {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := t.chunks
	t.chunks = nil
	t.stopped = true
	return out
}

type teeConn struct {
	net.Conn
	t *tee
}

func (c *teeConn) Write(p []byte) (int, error) {
	// Recorded before it is sent, so that an answer is never recorded
	// ahead of its request.
	c.t.add(capture.ClientToServer, p)
	return c.Conn.Write(p)
}

func (c *teeConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.t.add(capture.ServerToClient, p[:n])
	return n, err
}
