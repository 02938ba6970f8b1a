// Package ebpf records a running CRI client's connections to its runtime
// without touching either: eBPF programs on syscall tracepoints copy the
// bytes the client (kubelet) writes to and reads from its runtime sockets.
//
// In: a process (by pid, or by name: "kubelet") and its runtime socket.
// Out: capture.Chunks to a capture.Recorder, as the relay's: one connection
// per socket, ClientToServer for what the process wrote, ServerToClient for
// what it read. Connections already open when tracing starts begin with an
// Open chunk marked Midway. Bytes lost on the way (ring buffer full,
// recorder behind) are counted and become a Chunk.Gap. It knows nothing
// of HTTP/2.
//
// Needs root and Linux 5.17+ with BTF; only syscall tracepoints are used
// (no kprobes, no fentry), so hardened kernels without kprobes work: the
// perf syscall tracepoints, or where those cannot be attached (no tracefs,
// perf events denied, no syscall events) the raw tracepoints sys_enter and
// sys_exit, which cost every other process more (see bench_test.go).
package ebpf

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/criseq/criseq/capture"
)

// DefaultComm is the process traced when no pid is given.
const DefaultComm = "kubelet"

// Tracer attaches to a process and records its connections to the runtime.
type Tracer struct {
	// PID is the process to trace; 0 finds it by Comm, and then follows
	// new processes of that name (a kubelet restart).
	PID int
	// Comm is the process name to look for (DefaultComm if empty).
	Comm string
	// Socket is the runtime's socket; empty: the endpoints in kubelet's
	// flags or configuration file, else DefaultSocket.
	Socket string
	// RingSize is the kernel ring buffer's size in bytes (a power of two,
	// at least a page); 0 means DefaultRingSize.
	RingSize int
	// Recorder receives the chunks; Run closes it before returning.
	Recorder *capture.Recorder
	// Log receives operational messages; nil discards them.
	Log func(format string, args ...any)
	// Ready, if set, is called once attached, with what is traced.
	Ready func(Attached)

	via attachment // the benchmark compares them

	k         *kernel
	rd        *ringbuf.Reader
	attached  Attached
	pending   []capture.Chunk // Open chunks found by Attach, before Run
	running   bool
	files     map[fileID]string
	procs     map[int]uint64 // traced tgid → start time
	conns     map[uint64]*conn
	slab      slabCopier      // small runs are copied here for the Recorder
	refused   map[uint64]bool // cookies of connections to other sockets
	nextID    uint64
	cookie    uint64 // next cookie for connections found by scanning
	clock     int64  // wall clock minus monotonic clock, ns
	stats     stats
	lastLog   [cMax + 1]uint64
	lastLogAt time.Time
}

// Attached says what a Tracer traces.
type Attached struct {
	PIDs    []int
	Sockets []string // the runtime sockets, as the traced process names them
	Midway  int      // connections found already open
	// Lists: whether the traced processes call the Stream* list methods,
	// from their configuration (kubelet's CRIListStreaming gate).
	Lists Lists
}

// Stats counts what a Tracer saw and lost.
type Stats struct {
	Conns        int64
	Bytes        int64            // payload bytes recorded
	LostBytes    int64            // bytes known lost (marked as gaps)
	RingDrops    uint64           // ring records dropped because the ring was full
	FaultBytes   uint64           // bytes the kernel could not read from the process's memory
	Missed       uint64           // program runs the kernel skipped
	Syscalls     map[string]int64 // bytes per syscall (write, read, writev, ...)
	RecorderDrop int64            // chunks the Recorder could not take
}

type stats struct {
	conns, bytes, lost, recDrop atomic.Int64
	sys                         [8]atomic.Int64
	ring, fault, missed         atomic.Uint64
}

var sysNames = [8]string{"write", "read", "writev", "readv", "sendmsg", "recvmsg", "sendto", "recvfrom"}

// conn is one traced connection.
type conn struct {
	id     uint64
	tgid   int
	fd     int
	next   [2]uint64 // expected next offset per direction (kernel's count)
	gap    [2]int    // bytes lost before the next chunk
	buf    [2][]byte // pieces of one syscall, joined
	bufOff [2]uint64
	bufAt  [2]time.Time
}

// Stats returns the counts so far.
func (t *Tracer) Stats() Stats {
	s := Stats{
		Conns: t.stats.conns.Load(), Bytes: t.stats.bytes.Load(), LostBytes: t.stats.lost.Load(),
		RingDrops: t.stats.ring.Load(), FaultBytes: t.stats.fault.Load(), Missed: t.stats.missed.Load(),
		RecorderDrop: t.stats.recDrop.Load(), Syscalls: map[string]int64{},
	}
	for i, n := range sysNames {
		if v := t.stats.sys[i].Load(); v > 0 {
			s.Syscalls[n] = v
		}
	}
	return s
}

func (t *Tracer) logf(format string, args ...any) {
	if t.Log != nil {
		t.Log(format, args...)
	}
}

// Attach finds the process and its runtime connections and starts tracing
// them; what it sees waits in the kernel's ring buffer until Run. Call Run
// or Close after it. Run calls it if it was not called.
func (t *Tracer) Attach() (a Attached, err error) {
	if t.k != nil {
		return t.attached, nil
	}
	if t.Comm == "" {
		t.Comm = DefaultComm
	}
	ring := t.RingSize
	if ring == 0 {
		ring = DefaultRingSize
	}
	if ring < os.Getpagesize() || ring&(ring-1) != 0 {
		return a, fmt.Errorf("attach: ring buffer size %d is not a power of two of at least a page", ring)
	}
	pids, err := t.target()
	if err != nil {
		return a, err
	}
	if t.files, err = runtimeFiles(pids[0], t.Socket); err != nil {
		return a, err
	}
	follow := ""
	if t.PID == 0 {
		follow = t.Comm
	}
	k, err := loadKernel(ring, follow, t.via, t.logf)
	if err != nil {
		return a, err
	}
	t.k = k
	defer func() {
		if err != nil {
			t.Close()
		}
	}()
	if t.rd, err = ringbuf.NewReader(k.maps.Events); err != nil {
		return a, fmt.Errorf("attach: ring buffer: %w", err)
	}
	t.conns, t.refused, t.procs = map[uint64]*conn{}, map[uint64]bool{}, map[int]uint64{}
	t.cookie = 1
	var mono unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &mono)
	t.clock = time.Now().UnixNano() - mono.Nano()

	a.PIDs = pids
	a.Lists = Lists{Unary: true}
	var why []string
	for _, pid := range pids {
		l := kubeletLists(pid)
		a.Lists.Unary = a.Lists.Unary && l.Unary
		why = append(why, l.Why)
	}
	a.Lists.Why = strings.Join(why, "; ")
	for _, pid := range pids {
		n, err := t.trace(pid)
		if err != nil {
			return a, err
		}
		a.Midway += n
	}
	for _, p := range t.files {
		a.Sockets = append(a.Sockets, p)
	}
	sort.Strings(a.Sockets)
	t.attached = a
	return a, nil
}

// Close detaches: every BPF program and map is released (a SIGKILL
// releases them too, with the process). Run closes by itself.
func (t *Tracer) Close() error {
	var err error
	if t.rd != nil {
		t.rd.Close()
		t.rd = nil
	}
	if t.k != nil {
		err = t.k.close()
	}
	return err
}

// Run attaches (if Attach was not called) and records until ctx ends; then
// it detaches and closes the Recorder.
func (t *Tracer) Run(ctx context.Context) (err error) {
	defer func() {
		if t.Recorder != nil {
			if rerr := t.Recorder.Close(); rerr != nil && err == nil {
				err = fmt.Errorf("attach: %w", rerr)
			}
		}
	}()
	if t.Recorder == nil {
		t.Close()
		return errors.New("attach: no recorder")
	}
	a, err := t.Attach()
	if err != nil {
		return err
	}
	defer t.Close()
	for _, c := range t.pending {
		t.Recorder.Record(c)
	}
	t.pending, t.running = nil, true
	if t.Ready != nil {
		t.Ready(a)
	}
	return t.loop(ctx, t.rd)
}

// target is the process to trace: PID, or the one process named Comm.
func (t *Tracer) target() ([]int, error) {
	if t.PID != 0 {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", t.PID)); err != nil {
			return nil, fmt.Errorf("attach: no process %d", t.PID)
		}
		return []int{t.PID}, nil
	}
	pids := findProcesses(t.Comm)
	switch {
	case len(pids) == 0:
		return nil, fmt.Errorf("attach: no %s process found on this machine (is it running? in another PID namespace, run criseq on the host); give its pid with --pid N%s", t.Comm, hint)
	case len(pids) > 1:
		return nil, fmt.Errorf("attach: %d %s processes found (pids %s): choose one with --pid N", len(pids), t.Comm, joinInts(pids))
	}
	return pids, nil
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = fmt.Sprint(n)
	}
	return strings.Join(s, ", ")
}

// trace starts tracing process pid: its future connects (in the kernel) and
// its connections to the runtime open now, each recorded from here on with
// an Open chunk marked Midway. It returns how many it found.
func (t *Tracer) trace(pid int) (int, error) {
	st, err := startTime(pid)
	if err != nil {
		return 0, fmt.Errorf("attach: process %d: %w", pid, err)
	}
	if err := t.k.maps.Procs.Put(uint32(pid), uint8(1)); err != nil {
		return 0, fmt.Errorf("attach: %w", err)
	}
	t.procs[pid] = st
	if t.attached.Lists.Unary {
		// A new kubelet (a restart) may be configured otherwise; the
		// capture's note, written at attach, cannot change.
		if l := kubeletLists(pid); !l.Unary {
			t.logf("process %d may call the Stream* list methods (%s), but this capture notes that list calls are unary: decode it with --cri-list-streaming=on", pid, l.Why)
		}
	}
	fds, err := socketFDs(pid)
	if err != nil {
		return 0, fmt.Errorf("attach: read the sockets of process %d: %w", pid, err)
	}
	socks, err := unixSockets()
	if err != nil {
		return 0, fmt.Errorf("attach: %w", err)
	}
	var found []int
	for fd, ino := range fds {
		if id, ok := peerFile(socks, ino); ok && t.files[id] != "" {
			found = append(found, fd)
		}
	}
	slices.Sort(found)
	now := time.Now()
	n := 0
	for _, fd := range found {
		cookie := t.cookie
		t.cookie++
		key := traceConnKey{Tgid: uint32(pid), Fd: uint32(fd)}
		err := t.k.maps.Conns.Update(key, traceConn{Cookie: cookie}, ebpf.UpdateNoExist)
		if errors.Is(err, ebpf.ErrKeyExist) {
			continue // connected just now: its connect record is on its way
		}
		if err != nil {
			return n, fmt.Errorf("attach: trace fd %d of process %d: %w", fd, pid, err)
		}
		t.open(cookie, pid, fd, now, true)
		n++
	}
	return n, nil
}

func (t *Tracer) open(cookie uint64, tgid, fd int, at time.Time, midway bool) {
	t.nextID++
	c := &conn{id: t.nextID, tgid: tgid, fd: fd}
	t.conns[cookie] = c
	t.stats.conns.Add(1)
	ch := capture.Chunk{Conn: c.id, Dir: capture.ClientToServer, Kind: capture.Open, Time: at, Midway: midway}
	if !t.running {
		t.pending = append(t.pending, ch) // Attach, before Run
		return
	}
	t.Recorder.Record(ch)
}

const (
	// poll is how often the ring is read: the kernel wakes criseq only
	// when the ring fills up (see wakeup in bpf/trace.c).
	poll = 5 * time.Millisecond
	// tick is the housekeeping interval: drop counters, processes gone.
	tick = 250 * time.Millisecond
)

func (t *Tracer) loop(ctx context.Context, rd *ringbuf.Reader) error {
	var rec ringbuf.Record
	last := time.Now()
	for {
		rd.SetDeadline(time.Now().Add(poll))
		err := rd.ReadInto(&rec)
		switch {
		case err == nil:
			t.event(rec.RawSample)
		case errors.Is(err, os.ErrDeadlineExceeded):
		default:
			return fmt.Errorf("attach: read ring buffer: %w", err)
		}
		if time.Since(last) < tick && ctx.Err() == nil {
			continue
		}
		last = time.Now()
		t.flushAll()
		t.counters(false)
		if err := t.checkProcs(); err != nil {
			t.drain(rd)
			return err
		}
		if ctx.Err() != nil {
			t.drain(rd)
			return nil
		}
	}
}

// drain detaches the programs and records what the ring still holds.
func (t *Tracer) drain(rd *ringbuf.Reader) {
	t.k.detach()
	var rec ringbuf.Record
	for {
		rd.SetDeadline(time.Now())
		if err := rd.ReadInto(&rec); err != nil {
			break
		}
		t.event(rec.RawSample)
	}
	t.flushAll()
	t.counters(true)
}

// counters reads the kernel's drop counters and logs new drops, at most
// every logEvery while they go on, and once more at the end.
func (t *Tracer) counters(final bool) {
	var c [cMax + 1]uint64 // the kernel's counters, then missed runs
	k := t.k.counters()
	copy(c[:], k[:])
	t.stats.ring.Store(c[cDropEvents])
	t.stats.fault.Store(c[cFaultBytes])
	m := t.k.missed()
	t.stats.missed.Store(m)
	c[cMax] = m
	if c == t.lastLog || !final && time.Since(t.lastLogAt) < logEvery {
		return
	}
	if c[cDropEvents] > t.lastLog[cDropEvents] {
		t.logf("ring buffer full: %d records (%d bytes) lost so far; marked as gaps in the capture (a larger --ring-size helps)",
			c[cDropEvents], c[cDropBytes])
	}
	if c[cCtrlLost] > t.lastLog[cCtrlLost] {
		t.logf("ring buffer full: %d connect/close records lost", c[cCtrlLost])
	}
	if c[cFaultBytes] > t.lastLog[cFaultBytes] {
		t.logf("%d bytes could not be read from the traced process's memory; marked as gaps", c[cFaultBytes])
	}
	if m > t.lastLog[cMax] {
		t.logf("the kernel skipped %d runs of criseq's programs (another BPF program ran on that CPU): bytes may be missing without a gap mark", m)
	}
	t.lastLog, t.lastLogAt = c, time.Now()
}

// logEvery spaces the messages about drops.
const logEvery = 5 * time.Second

// checkProcs notices traced processes that exited: their connections end.
func (t *Tracer) checkProcs() error {
	for pid, st := range t.procs {
		if now, err := startTime(pid); err == nil && now == st {
			continue
		}
		delete(t.procs, pid)
		t.k.maps.Procs.Delete(uint32(pid))
		n := 0
		for cookie, c := range t.conns {
			if c.tgid != pid {
				continue
			}
			var kc traceConn
			key := traceConnKey{Tgid: uint32(pid), Fd: uint32(c.fd)}
			final := c.next
			if t.k.maps.Conns.Lookup(key, &kc) == nil && kc.Cookie == cookie {
				final = kc.Off
				t.k.maps.Conns.Delete(key)
			}
			t.close(cookie, c, final, time.Now())
			n++
		}
		if t.PID != 0 {
			return fmt.Errorf("attach: process %d exited (%d connections ended); the capture is complete up to then; to follow %s across restarts, attach by name (without --pid)", pid, n, t.Comm)
		}
		t.logf("process %d (%s) exited; %d connections ended; waiting for a new %s", pid, t.Comm, n, t.Comm)
	}
	if t.PID == 0 && len(t.procs) == 0 {
		// A new one whose exec the kernel did not see (renamed, or started
		// before criseq): found by name, its connections traced midway.
		for _, pid := range findProcesses(t.Comm) {
			if n, err := t.trace(pid); err == nil {
				t.logf("found %s as process %d (%d connections to the runtime already open)", t.Comm, pid, n)
			}
		}
	}
	return nil
}

var le = binary.LittleEndian

// event handles one ring record.
func (t *Tracer) event(b []byte) {
	if len(b) < eventSize {
		return
	}
	ts := time.Unix(0, t.clock+int64(le.Uint64(b[0:])))
	cookie := le.Uint64(b[8:])
	off := le.Uint64(b[16:])
	n := int(le.Uint32(b[24:]))
	tgid, fd := int(le.Uint32(b[28:])), int(le.Uint32(b[32:]))
	kind, dir, last, sys := b[36], b[37]&1, b[38] != 0, b[39]
	aux := [3]uint64{le.Uint64(b[40:]), le.Uint64(b[48:]), le.Uint64(b[56:])}
	switch kind {
	case evData:
		if n > len(b)-eventSize {
			n = len(b) - eventSize
		}
		c := t.conns[cookie]
		if c == nil {
			if t.refused[cookie] {
				return
			}
			// Its connect record was lost: check it now.
			if c = t.connect(cookie, tgid, fd, 0, 0, 0, ts); c == nil {
				return
			}
		}
		if int(sys) < len(t.stats.sys) {
			t.stats.sys[sys].Add(int64(n))
		}
		t.data(c, int(dir), off, b[eventSize:eventSize+n], ts, last)
	case evConnect:
		t.connect(cookie, tgid, fd, uint32(aux[0]), uint32(aux[1]), aux[2], ts)
	case evClose:
		if c := t.conns[cookie]; c != nil {
			t.close(cookie, c, [2]uint64{aux[0], aux[1]}, ts)
		}
		delete(t.refused, cookie)
	case evExec:
		if _, ok := t.procs[tgid]; ok {
			return
		}
		st, err := startTime(tgid)
		if err != nil {
			return
		}
		t.procs[tgid] = st
		t.logf("new %s process %d (exec): following its connections", t.Comm, tgid)
	}
}

// connect checks a connection the kernel marked at connect(2): kept if its
// peer is bound to a runtime socket, else no longer traced.
func (t *Tracer) connect(cookie uint64, tgid, fd int, ino, peerDev uint32, peerIno uint64, ts time.Time) *conn {
	if ino == 0 {
		if fds, err := socketFDs(tgid); err == nil {
			ino = fds[fd]
		}
	}
	ok := false
	if socks, err := unixSockets(); err == nil {
		if id, found := peerFile(socks, ino); found {
			ok = t.files[id] != ""
		} else if peerIno != 0 {
			// Gone already: the kernel's view of its peer at connect time.
			ok = t.files[kernelDev(peerDev, peerIno)] != ""
		}
	}
	if !ok {
		key := traceConnKey{Tgid: uint32(tgid), Fd: uint32(fd)}
		var kc traceConn
		if t.k.maps.Conns.Lookup(key, &kc) == nil && kc.Cookie == cookie {
			t.k.maps.Conns.Delete(key)
		}
		t.refused[cookie] = true
		return nil
	}
	t.open(cookie, tgid, fd, ts, false)
	return t.conns[cookie]
}

// maxJoin bounds a chunk made of one syscall's pieces.
const maxJoin = 1 << 20

// slab is where small runs are copied for the Recorder, one after the
// other; it goes back to slabs once every run in it is written.
type slab struct {
	b    []byte
	refs atomic.Int32 // the Tracer's, while it copies into it, and one per run
}

const slabSize = 1 << 20

var slabs = sync.Pool{New: func() any { return &slab{b: make([]byte, 0, slabSize)} }}

// slabCopier copies runs into the current slab.
type slabCopier struct{ cur *slab }

// copy returns a copy of p and the function that releases it.
func (sc *slabCopier) copy(p []byte) ([]byte, func()) {
	s := sc.cur
	if len(p) > slabSize/4 {
		// Rare (a syscall of over 256 KiB): not worth a slab's room.
		return append([]byte(nil), p...), nil
	}
	if s == nil || len(s.b)+len(p) > cap(s.b) {
		if s != nil {
			s.release()
		}
		s = slabs.Get().(*slab)
		s.b = s.b[:0]
		s.refs.Store(1)
		sc.cur = s
	}
	off := len(s.b)
	s.b = append(s.b, p...)
	s.refs.Add(1)
	return s.b[off:len(s.b):len(s.b)], s.release
}

func (s *slab) release() {
	if s.refs.Add(-1) == 0 {
		slabs.Put(s)
	}
}

// data adds the bytes of one ring record. Pieces of one syscall are joined
// into one chunk; a jump in offsets is a loss, recorded as the next chunk's Gap.
func (t *Tracer) data(c *conn, dir int, off uint64, p []byte, ts time.Time, last bool) {
	if off != c.next[dir] {
		t.emit(c, dir)
		if off > c.next[dir] {
			lost := int(off - c.next[dir])
			c.gap[dir] += lost
			t.stats.lost.Add(int64(lost))
		}
	}
	if len(c.buf[dir]) == 0 {
		c.bufOff[dir], c.bufAt[dir] = off, ts
	}
	c.buf[dir] = append(c.buf[dir], p...)
	c.next[dir] = off + uint64(len(p))
	if last || len(c.buf[dir]) >= maxJoin {
		t.emit(c, dir)
	}
}

// emit hands the joined bytes of one direction to the Recorder.
func (t *Tracer) emit(c *conn, dir int) {
	if len(c.buf[dir]) == 0 {
		return
	}
	d := capture.ClientToServer
	if dir == dirIn {
		d = capture.ServerToClient
	}
	ch := capture.Chunk{Conn: c.id, Dir: d, Kind: capture.Data, Time: c.bufAt[dir], Gap: c.gap[dir], Offset: int64(c.bufOff[dir])}
	// Copied into a slab, the buffer kept for the next syscall's pieces:
	// a read of 32 KiB (grpc-go's) is not a new buffer each time. Fresh
	// buffers per chunk kept the heap at its limit with garbage: 40 MB of
	// RSS under 16 MiB answers, and the collector's pauses lost bytes of
	// them with an 8 MiB ring.
	data := c.buf[dir]
	ch.Data, ch.Done = t.slab.copy(data)
	c.buf[dir] = data[:0]
	if cap(data) > slabSize/4 {
		c.buf[dir] = nil // a large join's buffer is not kept for the connection's life
	}
	if t.Recorder.Record(ch) {
		c.gap[dir] = 0
		t.stats.bytes.Add(int64(len(data)))
	} else {
		c.gap[dir] += len(data)
		t.stats.recDrop.Add(1)
		t.stats.lost.Add(int64(len(data)))
	}
}

func (t *Tracer) flushAll() {
	for _, c := range t.conns {
		t.emit(c, dirOut)
		t.emit(c, dirIn)
	}
}

// close ends both directions; final are the kernel's last offsets, so bytes
// lost at the very end still show as a gap.
func (t *Tracer) close(cookie uint64, c *conn, final [2]uint64, ts time.Time) {
	for dir := range 2 {
		t.emit(c, dir)
		c.buf[dir] = nil
		if final[dir] > c.next[dir] {
			lost := int(final[dir] - c.next[dir])
			c.gap[dir] += lost
			t.stats.lost.Add(int64(lost))
			c.next[dir] = final[dir]
		}
		d := capture.ClientToServer
		if dir == dirIn {
			d = capture.ServerToClient
		}
		t.Recorder.Record(capture.Chunk{Conn: c.id, Dir: d, Kind: capture.Close, Time: ts, Gap: c.gap[dir], Offset: int64(c.next[dir])})
		c.gap[dir] = 0
	}
	delete(t.conns, cookie)
}
