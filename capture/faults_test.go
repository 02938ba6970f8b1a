package capture

// Fault injection for the recording relay: peers that vanish mid-message,
// half-closes, many streams, a large message, a full disk and a slow one.
// Every test checks that the bytes relayed are the bytes sent, both ways, and
// that what was recorded is those bytes too, except where a gap is marked.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// faultTimeout bounds every wait of these tests; none should come near it.
const faultTimeout = 10 * time.Second

// faultDir is a temporary directory with a short path (unix socket paths are
// limited to 107 bytes).
func faultDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "f")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// rawUpstream is a unix socket server the test drives by hand.
type rawUpstream struct {
	path  string
	conns chan *net.UnixConn
}

func startRawUpstream(t *testing.T, dir string) *rawUpstream {
	t.Helper()
	u := &rawUpstream{path: filepath.Join(dir, "u.sock"), conns: make(chan *net.UnixConn, 16)}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: u.path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	var accepted []*net.UnixConn
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.AcceptUnix()
			if err != nil {
				return
			}
			mu.Lock()
			accepted = append(accepted, c)
			mu.Unlock()
			u.conns <- c
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range accepted {
			c.Close()
		}
	})
	return u
}

// accept returns the next connection the proxy made to the upstream.
func (u *rawUpstream) accept(t *testing.T) *net.UnixConn {
	t.Helper()
	select {
	case c := <-u.conns:
		c.SetDeadline(time.Now().Add(faultTimeout))
		return c
	case <-time.After(faultTimeout):
		t.Fatal("the proxy never connected to the upstream")
		return nil
	}
}

// startFaultProxy relays dir/p.sock to upstream, recording into rec (if set).
func startFaultProxy(t *testing.T, dir, upstream string, rec *Recorder, log func(string, ...any)) (*Proxy, func() error) {
	t.Helper()
	p := &Proxy{Upstream: upstream, Listen: filepath.Join(dir, "p.sock"), Recorder: rec, Log: log, Drain: 2 * time.Second}
	return p, startProxy(t, p)
}

// dialRaw connects to the proxy, with a deadline on everything.
func dialRaw(t *testing.T, path string) *net.UnixConn {
	t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(faultTimeout))
	t.Cleanup(func() { c.Close() })
	return c
}

// readToEnd reads until an error and returns the bytes and that error
// (nil for EOF).
func readToEnd(c *net.UnixConn) ([]byte, error) {
	var out bytes.Buffer
	_, err := io.Copy(&out, c)
	return out.Bytes(), err
}

// sameBytes compares two byte streams by hash, and tells where they part.
func sameBytes(t *testing.T, what string, want, got []byte) bool {
	t.Helper()
	if sha256.Sum256(want) == sha256.Sum256(got) {
		return true
	}
	i := 0
	for i < len(want) && i < len(got) && want[i] == got[i] {
		i++
	}
	t.Errorf("%s: %d bytes sent, %d bytes arrived; they differ from byte %d on", what, len(want), len(got), i)
	return false
}

// isEndOfStream: what a reader may see after the last byte of a peer that
// went away: EOF, or a reset if the peer closed with unread data (which a
// direct unix connection gives too).
func isEndOfStream(err error) bool {
	return err == nil || errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)
}

// checkRecorded checks one recorded connection against the bytes that went
// each way. Without a gap, the recording is exactly those bytes; with one,
// every recorded piece is equal to the bytes at its offset. It returns the
// number of chunks carrying a gap.
func checkRecorded(t *testing.T, chunks []Chunk, id uint64, c2s, s2c []byte) (gaps int) {
	t.Helper()
	s := streams(t, chunks)[id]
	if s == nil {
		t.Errorf("connection %d not recorded", id)
		return 0
	}
	if !s[0].opened {
		t.Errorf("connection %d: no Open chunk", id)
	}
	for d, want := range [2][]byte{c2s, s2c} {
		st := s[d]
		if !st.closed {
			t.Errorf("connection %d %v: no Close chunk", id, Dir(d))
		}
		gaps += st.gaps
		if st.gaps == 0 {
			sameBytes(t, fmt.Sprintf("connection %d %v: recording", id, Dir(d)), want, st.data)
			continue
		}
		for _, pc := range st.pieces {
			end := pc.off + int64(len(pc.data))
			if end > int64(len(want)) || !bytes.Equal(want[pc.off:end], pc.data) {
				t.Errorf("connection %d %v: recorded bytes %d..%d differ from the bytes relayed (%d in all)", id, Dir(d), pc.off, end, len(want))
			}
		}
	}
	return gaps
}

// HTTP/2 pieces, for raw connections that look like gRPC.
const faultPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

func h2Frame(typ, flags byte, stream uint32, payload []byte) []byte {
	return h2FrameHeader(len(payload), typ, flags, stream, payload)
}

// h2FrameHeader is a frame announcing length bytes of payload, followed by
// payload, which may be shorter: half a frame.
func h2FrameHeader(length int, typ, flags byte, stream uint32, payload []byte) []byte {
	b := []byte{byte(length >> 16), byte(length >> 8), byte(length), typ, flags, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[5:], stream&0x7fffffff)
	return append(b, payload...)
}

var (
	h2Settings     = h2Frame(0x4, 0, 0, nil)
	h2WindowUpdate = h2Frame(0x8, 0, 0, []byte{0, 0, 0x40, 0})
)

// fill is n bytes of a pattern that differs with seed.
func fill(n int, seed byte) []byte {
	b := make([]byte, n)
	x := uint32(seed)*2654435761 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

// dataFrames is the preface, a SETTINGS frame, n DATA frames of 16 KiB, and
// the first half of one more.
func dataFrames(n int, seed byte) []byte {
	msg := []byte(faultPreface)
	msg = append(msg, h2Settings...)
	for i := range n {
		msg = append(msg, h2Frame(0x0, 0, 1, fill(16384, seed+byte(i)))...)
	}
	return append(msg, h2FrameHeader(16384, 0x0, 0, 1, fill(8192, seed+byte(n)))...)
}

// checkStillServes makes a fresh exchange through the proxy and checks that
// it gets through whole; it returns what went each way.
func checkStillServes(t *testing.T, p *Proxy, u *rawUpstream) (req, resp []byte) {
	t.Helper()
	req, resp = dataFrames(2, 90), dataFrames(3, 91)
	c := dialRaw(t, p.Listen)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(req)
		if err == nil {
			err = c.CloseWrite()
		}
		errc <- err
	}()
	s := u.accept(t)
	got, err := readToEnd(s)
	if err != nil {
		t.Errorf("later connection: server read: %v", err)
	}
	sameBytes(t, "later connection, client→server", req, got)
	if _, err := s.Write(resp); err != nil {
		t.Errorf("later connection: server write: %v", err)
	}
	s.Close()
	got, err = readToEnd(c)
	if err != nil {
		t.Errorf("later connection: client read: %v", err)
	}
	sameBytes(t, "later connection, server→client", resp, got)
	if err := <-errc; err != nil {
		t.Errorf("later connection: client write: %v", err)
	}
	c.Close()
	return req, resp
}

// TestFaultClientClosesMidMessage: a client writes half an HTTP/2 frame and
// hangs up. The upstream must get exactly those bytes, then the end, and the
// proxy must go on serving.
func TestFaultClientClosesMidMessage(t *testing.T) {
	t.Run("quiet server", func(t *testing.T) {
		dir := faultDir(t)
		u := startRawUpstream(t, dir)
		sink := &memSink{}
		p, stop := startFaultProxy(t, dir, u.path, NewRecorder(sink, RecorderOptions{}), nil)

		msg := dataFrames(3, 1)
		c := dialRaw(t, p.Listen)
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		c.Close()
		s := u.accept(t)
		got, err := readToEnd(s)
		if err != nil {
			t.Errorf("server read: %v, want EOF after the client's bytes", err)
		}
		sameBytes(t, "client→server", msg, got)
		s.Close()

		req, resp := checkStillServes(t, p, u)
		if err := stop(); err != nil {
			t.Fatalf("Run: %v", err)
		}
		chunks := sink.all()
		checkRecorded(t, chunks, 1, msg, nil)
		checkRecorded(t, chunks, 2, req, resp)
	})

	// A gRPC server greets with SETTINGS and answers DATA with WINDOW_UPDATE,
	// so it is writing while the client hangs up. Connected directly, the
	// server would still read every byte the client wrote before closing.
	t.Run("talking server", func(t *testing.T) {
		dir := faultDir(t)
		u := startRawUpstream(t, dir)
		sink := &memSink{}
		p, stop := startFaultProxy(t, dir, u.path, NewRecorder(sink, RecorderOptions{}), nil)

		msg := dataFrames(64, 2) // ~1 MiB: more than the socket buffers hold
		c := dialRaw(t, p.Listen)
		type result struct {
			got []byte
			err error
		}
		res := make(chan result, 1)
		hungUp := make(chan struct{})
		s := u.accept(t)
		go func() {
			defer s.Close()
			s.Write(h2Settings)
			var got []byte
			buf := make([]byte, 16<<10)
			for {
				// Leave the last 288 KiB in the socket buffers (more than
				// one socket holds) until the client has hung up, then
				// PING until that shows (a write fails), then read on. (The
				// one-second bound only matters if the buffers here cannot
				// hold that much: then the client's write waits for reads.)
				if len(got) >= len(msg)-288<<10 && hungUp != nil {
					select {
					case <-hungUp:
					case <-time.After(time.Second):
					}
					hungUp = nil
					ping := h2Frame(0x6, 0, 0, make([]byte, 8))
					for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(time.Millisecond) {
						if _, err := s.Write(ping); err != nil {
							break
						}
					}
				}
				n, err := s.Read(buf)
				got = append(got, buf[:n]...)
				if err != nil {
					if errors.Is(err, io.EOF) {
						err = nil
					}
					res <- result{got, err}
					return
				}
				s.Write(h2WindowUpdate) // fails once nobody listens: ignored, as a server would
			}
		}()
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		c.Close() // without reading the server's frames
		close(hungUp)
		r := <-res
		if !isEndOfStream(r.err) {
			t.Errorf("server read: %v, want the end of the stream", r.err)
		}
		sameBytes(t, "client→server, after the client hung up", msg, r.got)

		req, resp := checkStillServes(t, p, u)
		if err := stop(); err != nil {
			t.Fatalf("Run: %v", err)
		}
		chunks := sink.all()
		// What the client received is not known (it never read); what the
		// server sent is recorded as relayed, so only the client's side is checked.
		st := streams(t, chunks)[1]
		if st == nil || !st[0].closed || st[0].gaps != 0 {
			t.Errorf("connection 1 client→server: recorded %v", st)
		} else {
			sameBytes(t, "connection 1 client→server: recording", msg, st[0].data)
		}
		checkRecorded(t, chunks, 2, req, resp)
	})
}

// TestFaultUpstreamClosesMidMessage: the server writes half a response and
// hangs up. The client must get exactly those bytes, then the end.
func TestFaultUpstreamClosesMidMessage(t *testing.T) {
	t.Run("client waiting", func(t *testing.T) {
		dir := faultDir(t)
		u := startRawUpstream(t, dir)
		sink := &memSink{}
		p, stop := startFaultProxy(t, dir, u.path, NewRecorder(sink, RecorderOptions{}), nil)

		req := dataFrames(1, 3)
		resp := append(h2Frame(0x1, 0x4, 1, fill(60, 4)), h2FrameHeader(1<<20, 0x0, 0, 1, fill(40000, 5))...)
		c := dialRaw(t, p.Listen)
		if _, err := c.Write(req); err != nil {
			t.Fatal(err)
		}
		s := u.accept(t)
		if _, err := io.ReadFull(s, make([]byte, len(req))); err != nil {
			t.Fatalf("server read: %v", err)
		}
		if _, err := s.Write(resp); err != nil {
			t.Fatal(err)
		}
		s.Close()
		got, err := readToEnd(c)
		if err != nil {
			t.Errorf("client read: %v, want EOF after the server's bytes", err)
		}
		sameBytes(t, "server→client", resp, got)
		c.Close()

		req2, resp2 := checkStillServes(t, p, u)
		if err := stop(); err != nil {
			t.Fatalf("Run: %v", err)
		}
		chunks := sink.all()
		checkRecorded(t, chunks, 1, req, resp)
		checkRecorded(t, chunks, 2, req2, resp2)
	})

	// The client is still streaming its request when the server gives up
	// with half a response. Connected directly, the client would still read
	// every byte the server wrote before closing.
	t.Run("client sending", func(t *testing.T) {
		dir := faultDir(t)
		u := startRawUpstream(t, dir)
		sink := &memSink{}
		p, stop := startFaultProxy(t, dir, u.path, NewRecorder(sink, RecorderOptions{}), nil)

		c := dialRaw(t, p.Listen)
		var sent bytes.Buffer // the writer's until wdone
		var sentN atomic.Int64
		wdone := make(chan struct{})
		go func() {
			defer close(wdone)
			frame := h2Frame(0x0, 0, 1, fill(16384, 6))
			if _, err := c.Write([]byte(faultPreface)); err != nil {
				return
			}
			sent.WriteString(faultPreface)
			for sent.Len() < 64<<20 {
				n, err := c.Write(frame)
				sent.Write(frame[:n])
				sentN.Store(int64(sent.Len()))
				if err != nil {
					return // the proxy stopped taking the request
				}
			}
		}()
		// Half a response, small enough for the socket buffers to hold.
		resp := append(h2Frame(0x1, 0x4, 1, fill(60, 7)), h2FrameHeader(1<<20, 0x0, 0, 1, fill(300<<10, 8))...)
		s := u.accept(t)
		if _, err := io.ReadFull(s, make([]byte, 64<<10)); err != nil {
			t.Fatalf("server read: %v", err)
		}
		// Let the request fill the socket buffers towards the server (or
		// give up waiting, should they be small here).
		for end := time.Now().Add(time.Second); sentN.Load() < 320<<10 && time.Now().Before(end); {
			time.Sleep(time.Millisecond)
		}
		srvGone := make(chan struct{})
		go func() {
			s.Write(resp)
			s.Close() // with the client's bytes unread
			close(srvGone)
		}()
		// The client reads only once its write fails, as it does connected
		// directly when the server has gone (a client that sends its whole
		// request before reading would hang otherwise); so the response is
		// still on its way when the server hangs up.
		select {
		case <-srvGone:
			select {
			case <-wdone:
			case <-time.After(2 * time.Second):
				t.Errorf("the server hung up, but the client's write still blocks; connected directly it fails (EPIPE)")
			}
		case <-time.After(time.Second):
			t.Logf("the socket buffers here cannot hold the response; not checking that the client's write fails")
		}
		got, err := readToEnd(c)
		if !isEndOfStream(err) {
			t.Errorf("client read: %v, want the end of the stream", err)
		}
		sameBytes(t, "server→client, after the server hung up", resp, got)
		// Connected directly, the client's blocked write would fail once the
		// server is gone; it must not hang on the proxy.
		select {
		case <-wdone:
		case <-time.After(2 * time.Second):
			t.Errorf("the client's write still blocks after the server hung up and the client read its end; want it refused (EPIPE), as connected directly")
			c.Close()
			<-wdone
		}

		req2, resp2 := checkStillServes(t, p, u)
		if err := stop(); err != nil {
			t.Fatalf("Run: %v", err)
		}
		chunks := sink.all()
		st := streams(t, chunks)[1]
		if st == nil || !st[1].closed || st[1].gaps != 0 {
			t.Errorf("connection 1 server→client: recorded %v", st)
		} else {
			sameBytes(t, "connection 1 server→client: recording", resp, st[1].data)
		}
		if st != nil && !bytes.HasPrefix(sent.Bytes(), st[0].data) {
			t.Errorf("connection 1 client→server: the recording (%d bytes) is not what the client sent (%d bytes)", len(st[0].data), sent.Len())
		}
		checkRecorded(t, chunks, 2, req2, resp2)
	})
}

// TestFaultHalfClose: after one side's CloseWrite the other side still
// sends, and every byte arrives, both ways round.
func TestFaultHalfClose(t *testing.T) {
	t.Run("client", func(t *testing.T) {
		dir := faultDir(t)
		u := startRawUpstream(t, dir)
		sink := &memSink{}
		p, stop := startFaultProxy(t, dir, u.path, NewRecorder(sink, RecorderOptions{}), nil)

		req, resp := dataFrames(12, 10), dataFrames(30, 11)
		c := dialRaw(t, p.Listen)
		type result struct {
			got []byte
			err error
		}
		srv := make(chan result, 1)
		s := u.accept(t)
		go func() {
			defer s.Close()
			got, err := readToEnd(s) // until the client's half-close
			if err == nil {
				_, err = s.Write(resp)
			}
			srv <- result{got, err}
		}()
		if _, err := c.Write(req); err != nil {
			t.Fatal(err)
		}
		if err := c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		got, err := readToEnd(c)
		if err != nil {
			t.Errorf("client read: %v", err)
		}
		r := <-srv
		if r.err != nil {
			t.Errorf("server: %v", r.err)
		}
		sameBytes(t, "client→server", req, r.got)
		sameBytes(t, "server→client, after the client's half-close", resp, got)
		c.Close()
		if err := stop(); err != nil {
			t.Fatalf("Run: %v", err)
		}
		checkRecorded(t, sink.all(), 1, req, resp)
	})

	t.Run("server", func(t *testing.T) {
		dir := faultDir(t)
		u := startRawUpstream(t, dir)
		sink := &memSink{}
		p, stop := startFaultProxy(t, dir, u.path, NewRecorder(sink, RecorderOptions{}), nil)

		greeting, req := dataFrames(30, 12), dataFrames(12, 13)
		c := dialRaw(t, p.Listen)
		type result struct {
			got []byte
			err error
		}
		srv := make(chan result, 1)
		s := u.accept(t)
		go func() {
			defer s.Close()
			_, err := s.Write(greeting)
			if err == nil {
				err = s.CloseWrite()
			}
			got, rerr := readToEnd(s) // the client answers after the half-close
			srv <- result{got, errors.Join(err, rerr)}
		}()
		got, err := readToEnd(c)
		if err != nil {
			t.Errorf("client read: %v", err)
		}
		sameBytes(t, "server→client", greeting, got)
		if _, err := c.Write(req); err != nil {
			t.Errorf("client write after the server's half-close: %v", err)
		}
		c.CloseWrite()
		r := <-srv
		if r.err != nil {
			t.Errorf("server: %v", r.err)
		}
		sameBytes(t, "client→server, after the server's half-close", req, r.got)
		c.Close()
		if err := stop(); err != nil {
			t.Fatalf("Run: %v", err)
		}
		checkRecorded(t, sink.all(), 1, req, greeting)
	})
}

// startFaultCRIServer serves the CRI runtime with grpc-go and options on
// dir/u.sock, its connections tee'd.
func startFaultCRIServer(t *testing.T, dir string, containers int, opts ...grpc.ServerOption) (string, *teeListener) {
	t.Helper()
	sock := filepath.Join(dir, "u.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	tl := &teeListener{UnixListener: ln}
	srv := grpc.NewServer(opts...)
	runtimeapi.RegisterRuntimeServiceServer(srv, &criServer{containers: containers})
	runtimeapi.RegisterImageServiceServer(srv, imageServer{})
	go srv.Serve(tl)
	t.Cleanup(srv.Stop)
	return sock, tl
}

// dialFaultClient is newCRIClient with dial options.
func dialFaultClient(t *testing.T, sock string, opts ...grpc.DialOption) *criClient {
	t.Helper()
	c := &criClient{}
	dial := func(ctx context.Context, _ string) (net.Conn, error) {
		var d net.Dialer
		nc, err := d.DialContext(ctx, "unix", sock)
		if err != nil {
			return nil, err
		}
		tc := newTeeConn(nc.(*net.UnixConn), true)
		c.mu.Lock()
		c.tees = append(c.tees, tc)
		c.mu.Unlock()
		return tc, nil
	}
	opts = append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(dial),
	}, opts...)
	conn, err := grpc.NewClient("unix://"+sock, opts...)
	if err != nil {
		t.Fatal(err)
	}
	c.conn = conn
	c.runtime = runtimeapi.NewRuntimeServiceClient(conn)
	c.image = runtimeapi.NewImageServiceClient(conn)
	t.Cleanup(func() { conn.Close() })
	return c
}

// finishGRPC closes the client, stops the proxy and checks that the one
// client connection and the one server connection saw the same bytes, and
// that the recording (if any) holds them. It returns the client's bytes.
func finishGRPC(t *testing.T, cl *criClient, srv *teeListener, stop func() error, sink interface{ all() []Chunk }) (sent, recv []byte, gaps int, runErr error) {
	t.Helper()
	cl.close()
	runErr = stop()
	cs, ss := cl.connections(), srv.accepted()
	if len(cs) != 1 || len(ss) != 1 {
		t.Fatalf("%d client connections, %d server connections; want 1 each", len(cs), len(ss))
	}
	sent, recv = cs[0].bytes(t)
	ssent, srecv := ss[0].bytes(t)
	sameBytes(t, "client→server", sent, srecv)
	sameBytes(t, "server→client", ssent, recv)
	if sink != nil {
		gaps = checkRecorded(t, sink.all(), 1, sent, recv)
	}
	return sent, recv, gaps, runErr
}

// TestFaultConcurrentStreams: 1,000 unary calls at once on one connection.
func TestFaultConcurrentStreams(t *testing.T) {
	dir := faultDir(t)
	upstream, srvTees := startFaultCRIServer(t, dir, 0, grpc.MaxConcurrentStreams(2000))
	sink := &memSink{}
	rec := NewRecorder(sink, RecorderOptions{})
	p, stop := startFaultProxy(t, dir, upstream, rec, nil)
	cl := dialFaultClient(t, p.Listen)

	const calls = 1000
	ctx, cancel := context.WithTimeout(context.Background(), faultTimeout)
	defer cancel()
	start := make(chan struct{})
	errs := make(chan error, calls)
	var wg sync.WaitGroup
	for i := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			name := fmt.Sprintf("pod-%d", i)
			r, err := cl.runtime.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: name}}})
			if err == nil && r.PodSandboxId != "sandbox-"+name {
				err = fmt.Errorf("answer %q", r.PodSandboxId)
			}
			if err != nil {
				errs <- fmt.Errorf("call %d: %w", i, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	n := 0
	for err := range errs {
		if n++; n <= 5 {
			t.Error(err)
		}
	}
	if n > 0 {
		t.Errorf("%d of %d calls failed", n, calls)
	}
	_, _, gaps, err := finishGRPC(t, cl, srvTees, stop, sink)
	if err != nil {
		t.Errorf("Run: %v", err)
	}
	if st := rec.Stats(); st.DroppedChunks != 0 || gaps != 0 {
		t.Errorf("recorder dropped %d chunks (%d gaps) with a fast sink: %+v", st.DroppedChunks, gaps, st)
	}
}

// TestFaultLargeMessage: a ListContainers answer of over 16 MiB.
func TestFaultLargeMessage(t *testing.T) {
	const containers = 50000
	want, _ := (&criServer{containers: containers}).ListContainers(context.Background(), nil)
	if size := proto.Size(want); size < 16<<20 || size > 30<<20 {
		t.Fatalf("response of %d bytes; adjust the container count to ~16 MiB", size)
	}
	dir := faultDir(t)
	upstream, srvTees := startFaultCRIServer(t, dir, containers, grpc.MaxSendMsgSize(32<<20))
	sink := &memSink{}
	rec := NewRecorder(sink, RecorderOptions{})
	p, stop := startFaultProxy(t, dir, upstream, rec, nil)
	cl := dialFaultClient(t, p.Listen, grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(32<<20)))

	ctx, cancel := context.WithTimeout(context.Background(), 3*faultTimeout) // slow under -race
	defer cancel()
	got, err := cl.runtime.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got, want) {
		t.Errorf("ListContainers through the proxy: %d containers, not the %d the server sent", len(got.Containers), len(want.Containers))
	}
	_, recv, gaps, err := finishGRPC(t, cl, srvTees, stop, sink)
	if err != nil {
		t.Errorf("Run: %v", err)
	}
	if len(recv) < proto.Size(want) {
		t.Errorf("client received %d bytes, less than the message", len(recv))
	}
	if st := rec.Stats(); st.DroppedChunks != 0 || gaps != 0 {
		t.Errorf("recorder dropped %d chunks (%d gaps) with a fast sink: %+v", st.DroppedChunks, gaps, st)
	}
}

// fullDisk is a capture file on a disk with room for limit bytes.
type fullDisk struct {
	mu              sync.Mutex
	limit           int
	data            []byte
	fails, afterErr int // failed writes; writes after the first failure
	closed          bool
}

func (d *fullDisk) Write(p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fails > 0 {
		d.afterErr++
	}
	room := d.limit - len(d.data)
	if len(p) <= room {
		d.data = append(d.data, p...)
		return len(p), nil
	}
	d.data = append(d.data, p[:room]...)
	d.fails++
	return room, &os.PathError{Op: "write", Path: "/var/lib/criseq/rec.pcapng", Err: syscall.ENOSPC}
}

func (d *fullDisk) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	return nil
}

// TestFaultDiskFull: the capture file's disk fills up. Calls go on, the error
// is logged once, the recorder counts drops, and Run reports the error.
func TestFaultDiskFull(t *testing.T) {
	dir := faultDir(t)
	upstream, srvTees := startFaultCRIServer(t, dir, 200) // ListContainers answers ~40 KB
	disk := &fullDisk{limit: 300 << 10}
	var logs logBuf
	rec := NewRecorder(NewPcapngWriter(disk), RecorderOptions{Log: logs.printf})
	p, stop := startFaultProxy(t, dir, upstream, rec, logs.printf)
	cl := dialFaultClient(t, p.Listen)

	ctx, cancel := context.WithTimeout(context.Background(), faultTimeout)
	defer cancel()
	for i := range 40 { // ~2 MB of traffic, ~2.5 MB of pcapng
		if _, err := cl.callAll(ctx, fmt.Sprintf("pod-%d", i)); err != nil {
			t.Fatalf("call %d with a full disk: %v", i, err)
		}
	}
	// Stopping the proxy closes the recorder, which reports the error.
	sent, _, _, err := finishGRPC(t, cl, srvTees, stop, nil)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("Run: %v, want the recorder's ENOSPC", err)
	}
	if err := rec.Close(); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("recorder Close again: %v, want ENOSPC", err)
	}
	if n := logs.count("no space left on device"); n != 1 {
		t.Errorf("the full disk was logged %d times, want once:\n%s", n, logs.String())
	}
	st := rec.Stats()
	if st.DroppedChunks == 0 || st.DroppedBytes == 0 {
		t.Errorf("stats %+v: no drops after the disk filled", st)
	}
	disk.mu.Lock()
	defer disk.mu.Unlock()
	if disk.fails != 1 || disk.afterErr != 0 {
		t.Errorf("the full disk was written %d times after failing (%d failures); want it left alone", disk.afterErr, disk.fails)
	}
	if len(disk.data) != disk.limit {
		t.Errorf("%d bytes on a disk of %d", len(disk.data), disk.limit)
	}
	if !disk.closed {
		t.Error("capture file not closed")
	}
	// What did reach the disk is a truncated capture; what it holds of the
	// client's bytes must be right.
	src, err := NewReader(bytes.NewReader(disk.data), "full.pcapng")
	if err != nil {
		t.Fatalf("the truncated capture cannot be opened: %v", err)
	}
	defer src.Close()
	chunks, _ := readUntilErr(src)
	pieces := 0
	for _, c := range chunks {
		if c.Kind != Data || c.Conn != 1 || c.Dir != ClientToServer {
			continue
		}
		pieces++
		end := c.Offset + int64(len(c.Data))
		if c.Offset < 0 || end > int64(len(sent)) || !bytes.Equal(sent[c.Offset:end], c.Data) {
			t.Errorf("truncated capture: client bytes %d..%d differ from what the client sent", c.Offset, end)
		}
	}
	if pieces == 0 {
		t.Logf("the truncated capture yields no client data (%d chunks)", len(chunks))
	}
}

// slowSink takes delay for every chunk, like a disk that cannot keep up.
type slowSink struct {
	delay time.Duration
	memSink
	writes int
}

func (s *slowSink) Write(c Chunk) error {
	time.Sleep(s.delay)
	s.mu.Lock()
	s.writes++
	s.mu.Unlock()
	return s.memSink.Write(c)
}

// TestFaultSlowDisk: a sink far slower than the traffic. Calls take about as
// long as without a recorder; the recorder drops, marks the gaps, and what it
// keeps is right.
func TestFaultSlowDisk(t *testing.T) {
	const bursts, perBurst, delay = 4, 50, 50 * time.Millisecond
	const calls = bursts * perBurst
	// run makes the calls in bursts; between bursts it gives a recorder
	// time to write what it queued, so later chunks are queued after drops.
	run := func(t *testing.T, rec *Recorder) (lat []time.Duration, total time.Duration, cl *criClient, srvTees *teeListener, stop func() error) {
		dir := faultDir(t)
		upstream, srvTees := startFaultCRIServer(t, dir, 20)
		p, stop := startFaultProxy(t, dir, upstream, rec, nil)
		cl = dialFaultClient(t, p.Listen)
		ctx, cancel := context.WithTimeout(context.Background(), faultTimeout)
		defer cancel()
		for b := range bursts {
			if b > 0 && rec != nil {
				time.Sleep(6 * delay)
			}
			for i := range perBurst {
				t0 := time.Now()
				var err error
				if i%2 == 0 {
					_, err = cl.runtime.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
				} else {
					_, err = cl.runtime.Version(ctx, &runtimeapi.VersionRequest{})
				}
				if err != nil {
					t.Fatalf("burst %d, call %d: %v", b, i, err)
				}
				d := time.Since(t0)
				lat = append(lat, d)
				total += d
			}
		}
		return lat, total, cl, srvTees, stop
	}
	_, base, cl0, srv0, stop0 := run(t, nil)
	if _, _, _, err := finishGRPC(t, cl0, srv0, stop0, nil); err != nil {
		t.Errorf("Run without a recorder: %v", err)
	}

	sink := &slowSink{delay: delay}
	rec := NewRecorder(sink, RecorderOptions{MaxChunks: 4})
	lat, total, cl, srvTees, stop := run(t, rec)
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	st := rec.Stats()
	t.Logf("%d calls: %v without a recorder, %v with a %v-per-chunk sink (median %v, slowest %v); %+v",
		calls, base, total, delay, lat[len(lat)/2], lat[len(lat)-1], st)
	if st.DroppedChunks == 0 {
		t.Errorf("the slow sink made nothing drop: %+v", st)
	}
	// Waiting for the sink once per call would take calls*delay; no call
	// may wait for even a few of its writes.
	if slowest := lat[len(lat)-1]; slowest >= 10*delay {
		t.Errorf("slowest call took %v: the relay waited for the sink", slowest)
	}
	if total >= calls*delay/4 {
		t.Errorf("%d calls took %v (%v without a recorder): the relay waited for the sink", calls, total, base)
	}
	_, _, gaps, err := finishGRPC(t, cl, srvTees, stop, &sink.memSink)
	if err != nil {
		t.Errorf("Run: %v", err)
	}
	later := 0
	for _, c := range sink.all() {
		if c.Kind == Data && c.Gap > 0 {
			later++
		}
	}
	if gaps == 0 || later == 0 {
		t.Errorf("chunks were dropped but %d chunks mark a gap, %d of them data", gaps, later)
	}
}
