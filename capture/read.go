package capture

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/reassembly"

	"github.com/criseq/criseq/internal/termtext"
)

// h2Preface opens every HTTP/2 connection, sent by the client.
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

const (
	// Out-of-order data waits in reassembly pages of ~1900 bytes. These bound
	// what a missing segment can hold back before it is declared lost.
	maxPagesPerConn = 4096  // ~8 MB
	maxPagesTotal   = 32768 // ~60 MB
	// Every flushEvery packets or flushPeriod of capture time, holes older
	// than lostAfter (capture time) are given up on: a lost segment costs a
	// Gap, and the data behind it waits at most that long. Retransmissions
	// come well within it (Linux's minimum RTO is 200 ms).
	flushEvery  = 4096
	flushPeriod = time.Second
	lostAfter   = 5 * time.Second
	// A connection that carries nothing for idleAfter (capture time), and
	// was not seen to close, is forgotten, so that memory follows the
	// connections in use; if it carries bytes again, they make a new
	// connection caught midway (decode forgets its state likewise).
	idleAfter = 10 * time.Minute
	// endedKept bounds the ended connections Conn still describes.
	endedKept = 4096
	// Past maxLiveConns connections at a flush, the longest idle are
	// forgotten down to three quarters of it, idle or not.
	maxLiveConns = 4096
	// While a connection's client side is unknown its chunks wait; past this
	// many queued bytes the fallback rule decides.
	maxUndecided = 4 << 20
)

// Stdin is the path OpenFile reads standard input for.
const Stdin = "-"

// OpenFile opens a pcap or pcapng file (optionally gzip-compressed) for
// reading; Stdin ("-") reads standard input.
// See NewReader.
func OpenFile(path string) (Source, error) {
	if path == Stdin {
		if termtext.IsTerminal(os.Stdin) {
			return nil, errors.New("open capture: - reads a capture from standard input, which is a terminal here: pipe one in (cat cri.pcapng | criseq ...) or name the file")
		}
		return NewReader(os.Stdin, "standard input")
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open capture: %w", err)
	}
	src, err := NewReader(f, path)
	if err != nil {
		f.Close()
		return nil, err
	}
	src.(*fileSource).closer = f
	return src, nil
}

// NewReader reads a pcap or pcapng stream of TCP traffic, as written by
// PcapngWriter or recorded by tcpdump/tshark, and yields its TCP streams as
// Chunks. name is used in errors.
//
// Link types: Ethernet (with VLAN tags), Linux cooked (SLL and SLL2), raw IPv4/IPv6,
// BSD loopback (null and loop). Other packets are skipped.
//
// TCP streams are reassembled (out-of-order and retransmitted segments are
// handled; missing segments become Chunk.Gap). The client side of a connection
// is the one whose stream starts with the HTTP/2 connection preface. If neither
// side shows it (the capture began mid-connection, or it is not HTTP/2), the
// sender of the first SYN is the client; without a SYN, the side with the
// lower port is the server.
//
// Chunks come in the order their bytes became available in sequence, which is
// capture order unless segments were reordered; Time is the capture time of
// the packet that carried a chunk's first byte. Open comes first for each
// connection, with Midway set if the connection's first packet is not a SYN
// (its start was not captured, as in criseq's files of attached captures);
// Close only for a direction that ended with FIN or RST (a capture that
// stops mid-connection ends without Close). Connection IDs are 1, 2, ... in
// order of first appearance. A direction seen from its middle starts with
// Gap == -1.
//
// The stream is read as Next is called; memory stays bounded. A truncated or
// corrupt file yields what was read before the damage, then a *FormatError.
func NewReader(r io.Reader, name string) (Source, error) {
	pr, err := newPacketReader(name, r)
	if err != nil {
		return nil, err
	}
	s := &fileSource{pr: pr}
	s.pool = reassembly.NewStreamPool(s)
	s.asm = reassembly.NewAssembler(s.pool)
	s.asm.MaxBufferedPagesPerConnection = maxPagesPerConn
	s.asm.MaxBufferedPagesTotal = maxPagesTotal
	return s, nil
}

type fileSource struct {
	closer io.Closer
	pr     *packetReader
	pool   *reassembly.StreamPool
	asm    *reassembly.Assembler

	conns  map[uint64]*tcpConn // live connections, by ID
	ended  [endedKept]ConnInfo // ended connections, at ID % endedKept
	nconns uint64              // IDs given
	// closedFlows remembers connections that ended, so that a retransmission
	// after the FINs is not taken for a new connection.
	closedFlows map[flowKey]time.Time

	// queue holds chunks in emission order; a connection's chunks wait in it
	// until its client side is known.
	queue      []queued
	head       int
	arena      []byte // Data of queued chunks
	undecBytes int
	// notH2 counts the connections skipped as not HTTP/2.
	notH2        int
	notH2Example ConnInfo

	ip4  layers.IPv4
	ip6  layers.IPv6
	tcp  layers.TCP
	ctxs []pktContext // handed out one per packet, allocated in slabs

	npkts     int
	lastTime  time.Time
	lastFlush time.Time
	// lastOOO is the time of the last segment that came ahead of a hole
	// (reassembly keeps it); flushedTo is the T of the last flush, which
	// gave up on every hole older than it. Time-based flushes visit every
	// connection, so they happen only while a hole may be waiting.
	lastOOO, flushedTo time.Time
	atEOF              bool
	finalErr           error // returned after the queue drains; io.EOF at a clean end
}

type flowKey struct{ net, tcp gopacket.Flow }

type queued struct {
	c    *tcpConn
	half int // 0: the side that sent the connection's first packet
	ch   Chunk
}

// pktContext carries a packet's capture info through reassembly, which keeps
// it with out-of-order data; hence one per packet rather than a reused one.
// It holds no pointers (the timestamp is kept as Unix time, as the packet
// reader made it), so its slabs cost the garbage collector nothing to scan.
type pktContext struct {
	sec    int64
	nsec   int32
	length int32
	noTime bool // the packet has no timestamp (zero Time)
}

func (p *pktContext) GetCaptureInfo() gopacket.CaptureInfo {
	ci := gopacket.CaptureInfo{CaptureLength: int(p.length), Length: int(p.length)}
	if !p.noTime {
		ci.Timestamp = time.Unix(p.sec, int64(p.nsec))
	}
	return ci
}

// tcpConn is one TCP connection; halves are indexed 0 for the side that sent
// the first packet seen, 1 for the other.
type tcpConn struct {
	s         *fileSource
	id        uint64
	key       flowKey
	straggler bool      // its 4-tuple belongs to a connection that ended
	addr      [2]string // source address of each half
	port      [2]uint16
	decided   bool
	client    int // half that is the client, once decided

	synSender int       // half that sent a SYN without ACK, -1 if none seen
	last      time.Time // its last packet
	midStart  [2]bool
	noPreface [2]bool // this half's first bytes are not (or cannot be) the preface
	// mismatch: this half's first bytes, seen from its start, are not the
	// preface; notH2: nor are the client's, so the connection is not
	// HTTP/2 (gRPC over cleartext always begins with it) and is skipped.
	mismatch [2]bool
	notH2    bool
	prefN    [2]int // preface bytes matched so far
	offset   [2]int64
	started  [2]bool // first data chunk emitted
	closed   [2]bool
	reset    bool

	// Reassembly drops a FIN that comes out of order, so FINs are tracked
	// here too, by their offset in the stream.
	baseSet [2]bool
	base    [2]uint32 // sequence number of offset 0
	finSeen [2]bool
	finOff  [2]int64
	finTime [2]time.Time
}

// Next returns the next chunk. Data is valid until the next call.
func (s *fileSource) Next() (Chunk, error) {
	for {
		if s.head == len(s.queue) {
			// (Also between packets: chunks skipped leave it empty.)
			s.queue, s.head, s.arena = s.queue[:0], 0, s.arena[:0]
		}
		if s.head < len(s.queue) {
			q := &s.queue[s.head]
			if !q.c.decided && (s.atEOF || s.undecBytes > maxUndecided) {
				q.c.decideFallback()
			}
			if q.c.decided && q.c.notH2 {
				*q = queued{}
				s.head++
				continue
			}
			if q.c.decided {
				ch := q.ch
				if q.half == q.c.client {
					ch.Dir = ClientToServer
				} else {
					ch.Dir = ServerToClient
				}
				if ch.Kind == Open {
					ch.Dir = ClientToServer
				}
				*q = queued{}
				s.head++
				return ch, nil
			}
		}
		if s.atEOF {
			return Chunk{}, s.finalErr
		}
		s.readPacket()
	}
}

// readPacket feeds one packet to reassembly, or ends the input.
func (s *fileSource) readPacket() {
	p, err := s.pr.next()
	if err != nil {
		s.atEOF = true
		s.finalErr = err
		// Hand over what reassembly still holds; skipped holes become gaps.
		s.asm.FlushAll()
		return
	}
	s.npkts++
	if s.npkts%flushEvery == 0 || p.ts.Sub(s.lastFlush) >= flushPeriod {
		s.lastFlush = p.ts
		old := p.ts.Add(-lostAfter)
		if s.npkts%flushEvery == 0 || !s.lastOOO.Before(s.flushedTo) {
			// Gives up on old holes, and forgets long idle connections.
			s.asm.FlushWithOptions(reassembly.FlushOptions{T: old, TC: s.idleCutoff(p.ts)})
			s.flushedTo = old
		}
		for k, t := range s.closedFlows {
			if t.Before(old) {
				delete(s.closedFlows, k)
			}
		}
	}
	ipPayload, flow, ok := s.network(p)
	if !ok {
		return
	}
	if err := s.tcp.DecodeFromBytes(ipPayload, gopacket.NilDecodeFeedback); err != nil {
		return
	}
	if p.ts.After(s.lastTime) {
		s.lastTime = p.ts
	}
	if len(s.ctxs) == 0 {
		s.ctxs = make([]pktContext, 1024)
	}
	ctx := &s.ctxs[0]
	s.ctxs = s.ctxs[1:]
	*ctx = pktContext{sec: p.ts.Unix(), nsec: int32(p.ts.Nanosecond()), length: int32(len(p.data)), noTime: p.ts == (time.Time{})}
	s.asm.AssembleWithContext(flow, &s.tcp, ctx)
}

// network strips the link layer and the IP header; ok is false for anything
// but unfragmented TCP.
func (s *fileSource) network(p packet) (payload []byte, flow gopacket.Flow, ok bool) {
	d := p.data
	var ethType uint16
	switch p.link {
	case linkEthernet:
		if len(d) < 14 {
			return nil, flow, false
		}
		ethType, d = binary.BigEndian.Uint16(d[12:14]), d[14:]
		for (ethType == 0x8100 || ethType == 0x88a8) && len(d) >= 4 {
			ethType, d = binary.BigEndian.Uint16(d[2:4]), d[4:]
		}
	case linkSLL:
		if len(d) < 16 {
			return nil, flow, false
		}
		ethType, d = binary.BigEndian.Uint16(d[14:16]), d[16:]
	case linkSLL2:
		if len(d) < 20 {
			return nil, flow, false
		}
		ethType, d = binary.BigEndian.Uint16(d[0:2]), d[20:]
	case linkNull, linkLoop:
		if len(d) < 4 {
			return nil, flow, false
		}
		// The family is in the writer's byte order (null) or big-endian (loop).
		fam := binary.LittleEndian.Uint32(d)
		if fam > 0xffff {
			fam = binary.BigEndian.Uint32(d)
		}
		d = d[4:]
		switch fam {
		case 2:
			ethType = 0x0800
		case 10, 24, 28, 30:
			ethType = 0x86dd
		}
	case linkRaw, linkRawOld, linkRawBSD, linkIPv4, linkIPv6:
		if len(d) == 0 {
			return nil, flow, false
		}
		switch d[0] >> 4 {
		case 4:
			ethType = 0x0800
		case 6:
			ethType = 0x86dd
		}
	default:
		return nil, flow, false
	}
	switch ethType {
	case 0x0800:
		if err := s.ip4.DecodeFromBytes(d, gopacket.NilDecodeFeedback); err != nil {
			return nil, flow, false
		}
		if s.ip4.Protocol != layers.IPProtocolTCP || s.ip4.FragOffset != 0 || s.ip4.Flags&layers.IPv4MoreFragments != 0 {
			return nil, flow, false
		}
		return s.ip4.Payload, s.ip4.NetworkFlow(), true
	case 0x86dd:
		if err := s.ip6.DecodeFromBytes(d, gopacket.NilDecodeFeedback); err != nil {
			return nil, flow, false
		}
		next, pl := s.ip6.NextHeader, s.ip6.Payload
		if s.ip6.HopByHop != nil {
			next = s.ip6.HopByHop.NextHeader
		}
		for next == layers.IPProtocolIPv6Routing || next == layers.IPProtocolIPv6Destination {
			if len(pl) < 8 || len(pl) < (int(pl[1])+1)*8 {
				return nil, flow, false
			}
			next, pl = layers.IPProtocol(pl[0]), pl[(int(pl[1])+1)*8:]
		}
		if next != layers.IPProtocolTCP {
			return nil, flow, false
		}
		return pl, s.ip6.NetworkFlow(), true
	}
	return nil, flow, false
}

// Conn describes connection id.
func (s *fileSource) Conn(id uint64) ConnInfo {
	c := s.conns[id]
	if c == nil {
		if e := s.ended[id%endedKept]; e.ID == id && id != 0 {
			return e
		}
		return ConnInfo{ID: id}
	}
	return c.info()
}

// idleCutoff is the time before which a connection's last packet makes it
// forgotten: idleAfter ago, or later when too many are open.
func (s *fileSource) idleCutoff(now time.Time) time.Time {
	tc := now.Add(-idleAfter)
	if len(s.conns) <= maxLiveConns {
		return tc
	}
	last := make([]time.Time, 0, len(s.conns))
	for _, c := range s.conns {
		last = append(last, c.last)
	}
	slices.SortFunc(last, time.Time.Compare)
	// Reassembly closes those seen before tc: keep the newest.
	return last[len(last)-maxLiveConns*3/4]
}

// NotHTTP2 counts the TCP connections skipped because their client's
// first bytes are not the HTTP/2 preface (other traffic in a capture of a
// node), with the first of them.
func (s *fileSource) NotHTTP2() (int, ConnInfo) { return s.notH2, s.notH2Example }

func (c *tcpConn) info() ConnInfo {
	id := c.id
	cl := c.client
	if !c.decided {
		cl = c.fallbackClient()
	}
	return ConnInfo{ID: id, Client: c.addr[cl], Server: c.addr[1-cl]}
}

// Close releases the file.
func (s *fileSource) Close() error {
	s.atEOF = true
	if s.finalErr == nil {
		s.finalErr = errors.New("read capture: source closed")
	}
	s.queue, s.head, s.arena = nil, 0, nil
	if s.closer != nil {
		c := s.closer
		s.closer = nil
		if err := c.Close(); err != nil {
			return fmt.Errorf("close capture: %w", err)
		}
	}
	return nil
}

// New is called by reassembly for each new TCP connection.
func (s *fileSource) New(netFlow, tcpFlow gopacket.Flow, tcp *layers.TCP, ac reassembly.AssemblerContext) reassembly.Stream {
	c := &tcpConn{s: s, synSender: -1, key: flowKey{netFlow, tcpFlow}}
	_, c.straggler = s.closedFlows[c.key]
	src, dst := netFlow.Endpoints()
	sp, dp := tcpFlow.Endpoints()
	c.port[0] = binary.BigEndian.Uint16(sp.Raw())
	c.port[1] = binary.BigEndian.Uint16(dp.Raw())
	c.addr[0] = hostPort(src.Raw(), c.port[0])
	c.addr[1] = hostPort(dst.Raw(), c.port[1])
	return c
}

// register gives the connection its ID and queues its Open chunk; midway
// if its handshake was not seen.
func (c *tcpConn) register(ts time.Time, midway bool) {
	s := c.s
	s.nconns++
	c.id = s.nconns
	if s.conns == nil {
		s.conns = make(map[uint64]*tcpConn)
	}
	s.conns[c.id] = c
	s.enqueue(c, 0, Chunk{Conn: c.id, Kind: Open, Time: ts, Midway: midway}, nil)
}

func hostPort(ip []byte, port uint16) string {
	return net.JoinHostPort(net.IP(ip).String(), strconv.Itoa(int(port)))
}

func (s *fileSource) enqueue(c *tcpConn, half int, ch Chunk, data []byte) {
	if c.notH2 {
		return
	}
	if len(data) > 0 {
		off := len(s.arena)
		s.arena = append(s.arena, data...)
		ch.Data = s.arena[off:len(s.arena):len(s.arena)]
	}
	if !c.decided {
		s.undecBytes += len(data)
	}
	s.queue = append(s.queue, queued{c: c, half: half, ch: ch})
}

func halfIndex(dir reassembly.TCPFlowDirection) int {
	if dir == reassembly.TCPDirClientToServer {
		return 0
	}
	return 1
}

// Accept takes every segment of a connection that has shown a SYN or data; a
// direction without a SYN starts where it is first seen.
func (c *tcpConn) Accept(tcp *layers.TCP, ci gopacket.CaptureInfo, dir reassembly.TCPFlowDirection, nextSeq reassembly.Sequence, start *bool, ac reassembly.AssemblerContext) bool {
	if c.id == 0 {
		if !tcp.SYN && (len(tcp.Payload) == 0 || c.straggler) {
			// The last ACK or a late retransmission of a closed connection,
			// or a keepalive: not a connection worth an ID.
			return false
		}
		c.register(ci.Timestamp, !tcp.SYN)
	}
	c.last = ci.Timestamp
	h := halfIndex(dir)
	if nextSeq != -1 && len(tcp.Payload) > 0 && nextSeq.Difference(reassembly.Sequence(tcp.Seq)) > 0 && ci.Timestamp.After(c.s.lastOOO) {
		c.s.lastOOO = ci.Timestamp // ahead of a hole: reassembly keeps it
	}
	if tcp.SYN && !tcp.ACK && c.synSender < 0 {
		c.synSender = h
	}
	if nextSeq == -1 && !tcp.SYN {
		*start = true
		c.midStart[h] = true
	}
	if !c.baseSet[h] && (tcp.SYN || nextSeq == -1) {
		c.baseSet[h], c.base[h] = true, tcp.Seq
		if tcp.SYN {
			c.base[h]++
		}
	}
	if tcp.RST {
		c.reset = true
		c.finSeen[h], c.finOff[h], c.finTime[h] = true, -1, ci.Timestamp
	}
	if tcp.FIN && !c.finSeen[h] && c.baseSet[h] {
		c.finSeen[h], c.finTime[h] = true, ci.Timestamp
		c.finOff[h] = int64(tcp.Seq + uint32(len(tcp.Payload)) - c.base[h])
	}
	return true
}

// ReassembledSG receives in-order bytes of one direction.
func (c *tcpConn) ReassembledSG(sg reassembly.ScatterGather, ac reassembly.AssemblerContext) {
	dir, _, end, skip := sg.Info()
	h := halfIndex(dir)
	n, _ := sg.Lengths()
	if c.closed[h] {
		return
	}
	gap := 0
	if skip > 0 {
		gap = skip
	}
	if n > 0 {
		data := sg.Fetch(n)
		if !c.started[h] {
			c.started[h] = true
			if c.midStart[h] {
				gap = -1
			}
			if gap > 0 {
				// The first bytes are lost. (A direction seen from its middle
				// may still start with the preface: its SYN was just missed.)
				c.noPreface[h] = true
			}
		}
		c.offset[h] += int64(max(gap, 0))
		c.checkPreface(h, data)
		ts := sg.CaptureInfo(0).Timestamp
		c.s.enqueue(c, h, Chunk{Conn: c.id, Kind: Data, Time: ts, Gap: gap, Offset: c.offset[h]}, data)
		c.offset[h] += int64(n)
		gap = 0
	}
	if !end && c.finSeen[h] && c.finOff[h] >= 0 && c.offset[h] >= c.finOff[h] {
		end = true // the FIN came before the bytes it follows
	}
	if end {
		ts := c.finTime[h]
		if ts.IsZero() && ac != nil {
			ts = ac.GetCaptureInfo().Timestamp
		}
		c.close(h, gap, ts)
		if c.reset {
			c.close(1-h, 0, ts) // a reset ends both directions
		}
	}
}

func (c *tcpConn) close(h, gap int, ts time.Time) {
	if c.closed[h] {
		return
	}
	c.closed[h] = true
	if !c.started[h] {
		c.noPreface[h] = true
	}
	c.s.enqueue(c, h, Chunk{Conn: c.id, Kind: Close, Time: ts, Gap: gap, Offset: c.offset[h]}, nil)
	c.maybeDecide()
}

// ReassemblyComplete lets reassembly forget the connection.
func (c *tcpConn) ReassemblyComplete(ac reassembly.AssemblerContext) bool {
	for h := range 2 {
		if c.id != 0 && (c.finSeen[h] || c.reset) {
			ts := c.finTime[h]
			if ts.IsZero() {
				ts = c.finTime[1-h]
			}
			c.close(h, 0, ts)
		}
	}
	if c.id != 0 && !c.s.atEOF && (c.finSeen[0] || c.finSeen[1] || c.reset) {
		// (A connection forgotten while idle may carry bytes again.)
		if c.s.closedFlows == nil {
			c.s.closedFlows = make(map[flowKey]time.Time)
		}
		c.s.closedFlows[c.key] = c.s.lastTime
		c.s.closedFlows[flowKey{c.key.net.Reverse(), c.key.tcp.Reverse()}] = c.s.lastTime
	}
	c.noPreface = [2]bool{true, true}
	c.maybeDecide()
	if c.id != 0 {
		c.s.ended[c.id%endedKept] = c.info()
		delete(c.s.conns, c.id)
	}
	return true
}

// checkPreface matches the first bytes of a direction against the HTTP/2 preface.
func (c *tcpConn) checkPreface(h int, data []byte) {
	if c.decided || c.noPreface[h] {
		return
	}
	want := h2Preface[c.prefN[h]:]
	k := min(len(want), len(data))
	if !bytes.Equal(data[:k], []byte(want[:k])) {
		c.noPreface[h] = true
		c.mismatch[h] = !c.midStart[h]
		c.maybeDecide()
		return
	}
	c.prefN[h] += k
	if c.prefN[h] == len(h2Preface) {
		c.decide(h)
	}
}

func (c *tcpConn) maybeDecide() {
	if !c.decided && c.noPreface[0] && c.noPreface[1] {
		c.decideFallback()
	}
}

func (c *tcpConn) decideFallback() {
	client := c.fallbackClient()
	if c.mismatch[client] && !c.decided {
		c.notH2 = true
		c.s.notH2++
		if c.s.notH2 == 1 {
			c.s.notH2Example = c.info()
		}
	}
	c.decide(client)
}

// fallbackClient: the SYN sender, else the side with the higher port (servers
// listen on the lower, well-known one), else the first side seen.
func (c *tcpConn) fallbackClient() int {
	switch {
	case c.synSender >= 0:
		return c.synSender
	case c.port[0] < c.port[1]:
		return 1
	default:
		return 0
	}
}

func (c *tcpConn) decide(client int) {
	if c.decided {
		return
	}
	c.decided, c.client = true, client
	for i := c.s.head; i < len(c.s.queue); i++ {
		if c.s.queue[i].c == c {
			c.s.undecBytes -= len(c.s.queue[i].ch.Data)
		}
	}
}
