package capture

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"syscall"
	"time"
)

// DefaultDrain is how long live connections may go on after the proxy is told
// to stop, before they are closed.
const DefaultDrain = time.Second

const (
	relayBufSize = 128 << 10
	dialTimeout  = 5 * time.Second
)

// Proxy relays a unix socket to another one and records what passes.
//
// In: connections accepted on Listen. Out: the same bytes relayed to and from
// Upstream, unchanged, and Chunks handed to Recorder. The relay never waits for
// the Recorder: when it is behind, chunks are dropped and the next chunk of the
// same connection and direction carries the number of bytes lost in Gap.
//
// Connection IDs are 1, 2, ... in the order upstream dials succeed; Open is
// recorded then, and Close for each direction when it ends. A client whose
// upstream dial fails is closed unrecorded (logged once per run of failures).
type Proxy struct {
	Upstream string // socket of the real server, e.g. /run/containerd/containerd.sock
	Listen   string // socket to create for clients
	// Listener, if set, is accepted on instead of creating Listen, which then
	// only names it in messages. Run closes it; whether that removes its file
	// is the listener's setting (a Swap's removes none).
	Listener *net.UnixListener
	Recorder *Recorder // nil: relay without recording. Run closes it before returning.
	// Log receives operational messages (stale socket removed, upstream
	// unreachable, ...); nil discards them.
	Log func(format string, args ...any)
	// Drain is how long live connections may finish after ctx ends; 0 means DefaultDrain.
	Drain time.Duration
	// Ready, if set, is called once Listen accepts connections.
	Ready func()

	mu          sync.Mutex
	nextID      uint64
	live        map[*relay]struct{}
	stopping    bool
	dialFailing bool
	dialFails   int
}

func (p *Proxy) logf(format string, args ...any) {
	if p.Log != nil {
		p.Log(format, args...)
	}
}

// Run listens on Listen and relays each connection to Upstream until ctx ends.
// Then it stops accepting, gives live connections Drain to finish, closes the
// rest, closes the Recorder (which flushes it) and removes the listen socket.
//
// The listen socket gets the upstream socket's owner, group and permission
// bits, and is never more open than that, not even while being set up. A
// stale socket at Listen (one nobody accepts on) is replaced; anything else
// there is an error.
func (p *Proxy) Run(ctx context.Context) (err error) {
	defer func() {
		if p.Recorder == nil {
			return
		}
		if rerr := p.Recorder.Close(); rerr != nil && err == nil {
			err = fmt.Errorf("proxy: %w", rerr)
		}
	}()
	ln := p.Listener
	if ln == nil {
		if ln, err = p.listen(); err != nil {
			return err
		}
	}
	p.mu.Lock()
	p.live, p.stopping = make(map[*relay]struct{}), false
	p.mu.Unlock()
	if p.Ready != nil {
		p.Ready()
	}

	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	backoff := time.Duration(0)
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				break
			}
			// Out of file descriptors and the like: wait, as net/http does.
			if backoff == 0 {
				backoff = 5 * time.Millisecond
			} else {
				backoff = min(2*backoff, time.Second)
			}
			p.logf("proxy: accept on %s: %v; retrying in %v", p.Listen, err, backoff)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-ctx.Done():
			}
			t.Stop()
			continue
		}
		backoff = 0
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.serve(c)
		}()
	}
	ln.Close() // also removes the socket file, if the listener made it

	drain := p.Drain
	if drain <= 0 {
		drain = DefaultDrain
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(drain):
		p.mu.Lock()
		p.stopping = true // relays still dialing close at once
		n := len(p.live)
		for r := range p.live {
			r.close()
		}
		p.mu.Unlock()
		if n > 0 {
			p.logf("proxy: closed %d connections still open after %v", n, drain)
		}
		<-finished
	}
	return nil
}

// umaskMu serialises this package's umask changes; the umask is per process.
var umaskMu sync.Mutex

func (p *Proxy) listen() (*net.UnixListener, error) {
	st, err := os.Stat(p.Upstream)
	if err != nil {
		return nil, fmt.Errorf("proxy: upstream: %w", err)
	}
	if st.Mode()&fs.ModeSocket == 0 {
		return nil, fmt.Errorf("proxy: upstream %s is not a unix socket", p.Upstream)
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return nil, fmt.Errorf("proxy: upstream %s: no owner information", p.Upstream)
	}
	uid, gid, perm := int(sys.Uid), int(sys.Gid), st.Mode().Perm()

	if err := p.removeStale(); err != nil {
		return nil, err
	}

	ln, err := listenPrivate(p.Listen, perm)
	if err != nil {
		return nil, fmt.Errorf("proxy: listen: %w", err)
	}
	if err := os.Lchown(p.Listen, uid, gid); err != nil {
		// Without the upstream's group, group bits would open it to another
		// group: keep it owner-only.
		p.logf("proxy: cannot give %s the owner %d:%d of %s (%v); leaving it owner-only", p.Listen, uid, gid, p.Upstream, err)
		perm &= 0o700
	}
	if err := os.Chmod(p.Listen, perm); err != nil {
		ln.Close()
		return nil, fmt.Errorf("proxy: set mode of %s: %w", p.Listen, err)
	}
	return ln, nil
}

// listenPrivate creates a socket born with at most perm's owner bits (the
// owner being this process), so that it is never more open than the socket
// it stands for, even before chown and chmod. The umask is per process: a file
// another goroutine creates in this instant comes out stricter, never more open.
func listenPrivate(path string, perm fs.FileMode) (*net.UnixListener, error) {
	umaskMu.Lock()
	defer umaskMu.Unlock()
	old := syscall.Umask(0o777 &^ int(perm&0o700))
	defer syscall.Umask(old)
	return net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
}

// removeStale clears Listen if it holds a socket nobody accepts on.
func (p *Proxy) removeStale() error {
	st, err := os.Lstat(p.Listen)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("proxy: listen path: %w", err)
	}
	if st.Mode()&fs.ModeSocket == 0 {
		return fmt.Errorf("proxy: listen path %s exists and is not a socket; refusing to replace it", p.Listen)
	}
	c, err := net.DialTimeout("unix", p.Listen, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("proxy: listen path %s is a live socket; is another proxy running?", p.Listen)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("proxy: probe listen path: %w", err)
	}
	if err := os.Remove(p.Listen); err != nil {
		return fmt.Errorf("proxy: remove stale socket: %w", err)
	}
	p.logf("proxy: removed stale socket %s", p.Listen)
	return nil
}

// serve relays one accepted connection until both directions end.
func (p *Proxy) serve(client *net.UnixConn) {
	var r *relay
	defer p.contain(func() {
		if r != nil {
			r.release()
		} else {
			client.Close()
		}
	})
	up, err := net.DialTimeout("unix", p.Upstream, dialTimeout)
	if err != nil {
		client.Close()
		p.dialFailed(err)
		return
	}
	p.dialSucceeded()
	if r, err = newRelay(client, up.(*net.UnixConn)); err != nil {
		p.logf("proxy: %v; closed that connection", err)
		return
	}
	p.mu.Lock()
	if p.stopping {
		p.mu.Unlock()
		r.release()
		return
	}
	p.live[r] = struct{}{}
	// IDs and Open chunks under one lock: a file lists connections in ID order.
	p.nextID++
	r.id = p.nextID
	if p.Recorder != nil {
		p.Recorder.Record(Chunk{Conn: r.id, Dir: ClientToServer, Kind: Open}) // timed by the Recorder
	}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.live, r)
		p.mu.Unlock()
		r.release()
	}()
	p.run(r)
}

// contain, deferred in a relay goroutine, keeps a panic there from ending the
// process (and with it, if swapped, the node's runtime socket): it closes that
// connection with closeConn and logs the panic.
func (p *Proxy) contain(closeConn func()) {
	if v := recover(); v != nil {
		closeConn()
		p.logf("proxy: panic in a relay: %v; closed that connection\n%s", v, debug.Stack())
	}
}

func (p *Proxy) dialFailed(err error) {
	p.mu.Lock()
	first := !p.dialFailing
	p.dialFailing = true
	p.dialFails++
	p.mu.Unlock()
	if first {
		p.logf("proxy: dial upstream: %v; closing client connections until it answers (logged once)", err)
	}
}

func (p *Proxy) dialSucceeded() {
	p.mu.Lock()
	n := p.dialFails
	p.dialFailing, p.dialFails = false, 0
	p.mu.Unlock()
	if n > 0 {
		p.logf("proxy: upstream %s answers again, after %d failed dials", p.Upstream, n)
	}
}
