package capture

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// relay is one client connection and its upstream connection, relayed as
// socat does: one goroutine per connection blocks in ppoll(2) on both
// sockets, then reads and writes with plain system calls. A wake-up is the
// kernel waking that one thread. Through Go's netpoller, each hop cost a
// wake-up of the poller's thread, often a second thread woken to spin for
// work, and the runtime's monitor thread woken by the read: twice what
// socat adds to a small call, on a 2-core node.
//
// The sockets are duplicates taken out of the netpoller (a registered
// duplicate would wake the poller on every read); each open connection
// holds one OS thread while it waits.
type relay struct {
	id uint64

	mu     sync.Mutex
	fds    [2]int // client, upstream; owned by the relay's goroutine
	closed bool   // fds are closed: their numbers may be reused
}

// newRelay takes the descriptors of client and upstream, which it closes.
func newRelay(client, upstream *net.UnixConn) (*relay, error) {
	cfd, err := takeFd(client)
	if err != nil {
		upstream.Close()
		return nil, err
	}
	ufd, err := takeFd(upstream)
	if err != nil {
		unix.Close(cfd)
		return nil, err
	}
	return &relay{fds: [2]int{cfd, ufd}}, nil
}

// takeFd duplicates c's descriptor and closes c: closing it removes the
// socket from the netpoller, the duplicate keeps it open.
func takeFd(c *net.UnixConn) (int, error) {
	defer c.Close()
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, fmt.Errorf("relay: %w", err)
	}
	fd := -1
	var derr error
	if err := rc.Control(func(f uintptr) {
		fd, derr = unix.FcntlInt(f, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, fmt.Errorf("relay: %w", err)
	}
	if derr != nil {
		return -1, fmt.Errorf("relay: duplicate socket: %w", derr)
	}
	// Non-blocking already, as net makes its sockets; said again, since a
	// blocked read would hang the relay.
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("relay: %w", err)
	}
	return fd, nil
}

// close ends the relay from outside (drain): shutdown(2) wakes its ppoll,
// its reads see the end, its writes fail, and both peers see the
// connection end. The relay's goroutine then releases the descriptors.
func (r *relay) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.closed {
		unix.Shutdown(r.fds[0], unix.SHUT_RDWR)
		unix.Shutdown(r.fds[1], unix.SHUT_RDWR)
	}
}

// release closes the descriptors, once the relay's goroutine is done.
func (r *relay) release() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.closed {
		r.closed = true
		unix.Close(r.fds[0])
		unix.Close(r.fds[1])
	}
}

// direction is one direction of a relay.
type direction struct {
	dir      Dir
	src, dst int
	buf      *relayBuf
	pending  []byte // read, not yet written
	off      int64
	gap      int
	canRead  bool // src may hold bytes: read it before polling
	eof      bool // src ended (EOF, or an error such as ECONNRESET)
	discard  bool // dst's reader is gone: src is read to its end and dropped
	done     bool
}

// run relays both directions until both end.
func (p *Proxy) run(r *relay) {
	flows := [2]*direction{
		{dir: ClientToServer, src: r.fds[0], dst: r.fds[1], buf: newRelayBuf(), canRead: true},
		{dir: ServerToClient, src: r.fds[1], dst: r.fds[0], buf: newRelayBuf(), canRead: true},
	}
	defer func() {
		for _, f := range flows {
			f.buf.release()
		}
	}()
	var pfds [2]unix.PollFd
	var of [2]*direction
	var now unix.Timespec // a zero timeout
	for {
		more := false
		for _, f := range flows {
			if !f.done {
				p.step(r, f)
				more = more || !f.done && f.canRead && len(f.pending) == 0
			}
		}
		n := 0
		for _, f := range flows {
			switch {
			case f.done:
				continue
			case len(f.pending) > 0:
				pfds[n] = unix.PollFd{Fd: int32(f.dst), Events: unix.POLLOUT}
			default:
				pfds[n] = unix.PollFd{Fd: int32(f.src), Events: unix.POLLIN}
			}
			of[n] = f
			n++
		}
		if n == 0 {
			return
		}
		// A direction that filled its buffer reads on at once; the other
		// is still polled, without waiting, so that it is not starved.
		timeout := (*unix.Timespec)(nil)
		if more {
			timeout = &now
		}
		if _, err := unix.Ppoll(pfds[:n], timeout, nil); err != nil && err != unix.EINTR {
			// Not expected with two valid descriptors: end the connection,
			// which each peer sees, rather than spin.
			p.logf("proxy: poll connection %d: %v; closing it", r.id, err)
			r.close()
			for _, f := range flows {
				f.canRead = true
			}
			continue
		}
		for i := range n {
			if pfds[i].Revents != 0 && len(of[i].pending) == 0 {
				of[i].canRead = true
			}
		}
	}
}

// step moves f's bytes as far as its sockets allow without blocking.
func (p *Proxy) step(r *relay, f *direction) {
	if len(f.pending) > 0 {
		if f.flush(); len(f.pending) > 0 {
			return
		}
	}
	for !f.eof && f.canRead {
		if f.buf.refs.Load() > 1 {
			// The Recorder still holds the last bytes read.
			f.buf.release()
			f.buf = newRelayBuf()
		}
		n, errno := sysRead(f.src, f.buf.b)
		switch {
		case errno == syscall.EINTR:
			continue
		case errno == syscall.EAGAIN:
			f.canRead = false
			return
		case errno != 0 || n == 0:
			// EOF, or ECONNRESET, which a unix socket reports only after
			// every byte its peer wrote was read: either way, the end.
			f.eof = true
			continue
		}
		// A short read emptied the socket: ppoll, level-triggered, says
		// when there is more.
		f.canRead = n == len(f.buf.b)
		if f.discard {
			continue
		}
		rec := p.Recorder
		wake := false
		if rec != nil {
			// Queued before relaying, so that a reply is never queued
			// ahead of the request it answers; timed by the Recorder as it
			// is queued, so the file is in time order; the recorder is
			// woken after, off the bytes' way.
			c := Chunk{Conn: r.id, Dir: f.dir, Kind: Data, Gap: f.gap, Offset: f.off}
			if n >= shareAtLeast {
				// Handed over, not copied: the relay reads into another
				// buffer next, and this one is reused once the
				// Recorder wrote it and the relay passed it on.
				f.buf.refs.Add(1)
				c.Data, c.shared = f.buf.b[:n], f.buf
			} else {
				c.Data = append([]byte(nil), f.buf.b[:n]...)
			}
			var ok bool
			if ok, wake = rec.enqueue(c); ok {
				f.gap = 0
			} else {
				f.gap += n
			}
		}
		f.off += int64(n)
		f.pending = f.buf.b[:n]
		f.flush()
		if wake {
			rec.kick()
		}
		return
	}
	if f.eof && len(f.pending) == 0 {
		// Pass the end on, so the peer sees it too. (After a drain's
		// shutdown this is a no-op.)
		if !f.discard {
			unix.Shutdown(f.dst, unix.SHUT_WR)
		}
		f.done = true
		if p.Recorder != nil {
			p.Recorder.Record(Chunk{Conn: r.id, Dir: f.dir, Kind: Close, Gap: f.gap, Offset: f.off})
		}
	}
}

// relayBuf is a direction's read buffer. A large read is handed to the
// Recorder in it rather than copied (copying a 16 MiB response and
// collecting the copies was a sixth of the relay's CPU); refs counts the
// relay and a queued chunk, and the buffer is reused when both are done.
// Small reads are copied, so that a queued chunk of a few bytes does not
// hold a whole buffer.
type relayBuf struct {
	b    []byte
	refs atomic.Int32
}

// shareAtLeast is the smallest read handed over in its buffer.
const shareAtLeast = relayBufSize / 4

var relayBufs = sync.Pool{New: func() any { return &relayBuf{b: make([]byte, relayBufSize)} }}

func newRelayBuf() *relayBuf {
	b := relayBufs.Get().(*relayBuf)
	b.refs.Store(1)
	return b
}

func (b *relayBuf) release() {
	if b.refs.Add(-1) == 0 {
		relayBufs.Put(b)
	}
}

// release gives back the memory c.Data lies in: a relay buffer, or its
// source's (Done).
func (c *Chunk) release() {
	if c.shared != nil {
		c.shared.release()
		c.shared = nil
	}
	if c.Done != nil {
		c.Done()
		c.Done = nil
	}
}

// held is the memory c holds while queued: its relay buffer, or the
// capacity of a buffer its source takes back.
func (c *Chunk) held() int {
	switch {
	case c.shared != nil:
		return len(c.shared.b)
	case c.Done != nil:
		return cap(c.Data)
	}
	return len(c.Data)
}

// flush writes f's pending bytes as far as dst takes them now.
func (f *direction) flush() {
	for len(f.pending) > 0 {
		n, errno := sysSend(f.dst, f.pending)
		switch errno {
		case 0:
			f.pending = f.pending[n:]
		case syscall.EINTR:
		case syscall.EAGAIN:
			return
		default:
			// dst's reader is gone: this direction is over, but the other
			// may still carry bytes, so the relay stays open until it
			// ends too. src's writer now gets EPIPE, as it would connected
			// directly; reading on to the end wakes a writer blocked on a
			// full buffer.
			f.pending = nil
			f.discard = true
			unix.Shutdown(f.src, unix.SHUT_RD)
			f.canRead = true
		}
	}
}

// sysRead and sysSend are raw system calls on non-blocking sockets: they
// never block, so they need not tell the scheduler, which would wake its
// monitor thread.
func sysRead(fd int, b []byte) (int, syscall.Errno) {
	r, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	return int(r), e
}

func sysSend(fd int, b []byte) (int, syscall.Errno) {
	r, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), syscall.MSG_DONTWAIT|syscall.MSG_NOSIGNAL, 0, 0)
	return int(r), e
}
