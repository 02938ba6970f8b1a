package capture

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// Synthetic addressing of a recorded unix-socket connection in a pcapng file.
// Connection id becomes a TCP flow from ClientEndpoint(id) to
// 127.0.0.1:ServerPort, so Wireshark decodes it with
// `-d tcp.port==10010,http2`.
const (
	ServerPort      = 10010
	firstClientPort = 40001
	clientPorts     = 65535 - firstClientPort + 1 // 25535
	// MaxSegment is the most data PcapngWriter puts in one TCP segment
	// (a chunk is cut every MaxSegment bytes): it keeps a segment's IPv4
	// total length under 65535.
	MaxSegment = 65000
)

// ServerIP is the synthetic address of the runtime in recorded files.
var ServerIP = net.IPv4(127, 0, 0, 1).To4()

// ClientEndpoint is the synthetic address of connection id's client:
// 127.0.0.1, port 40000+id for the first 25535 connections; further ones
// reuse the ports on 127.0.0.2, 127.0.0.3, ..., so flows never collide.
func ClientEndpoint(id uint64) (net.IP, uint16) {
	if id == 0 {
		id = 1
	}
	k := (id - 1) / clientPorts
	ip := net.IP{127, byte(k >> 16), byte(k >> 8), byte(k)}
	ip[3]++ // k = 0 gives 127.0.0.1
	return ip, uint16(firstClientPort + (id-1)%clientPorts)
}

// Sink consumes chunks, in the order they were seen. Write must not keep
// c.Data once it returns: a relay reads its next bytes into it.
type Sink interface {
	Write(Chunk) error
	Close() error
}

// PcapngWriter writes chunks as a pcapng file of synthetic Ethernet/IPv4/TCP
// packets (see ServerPort): a handshake at Open, PSH|ACK segments of at most
// 65000 bytes for Data, a FIN at Close. Timestamps keep nanoseconds. A Gap
// advances the sequence number, so Wireshark shows "previous segment not
// captured", and the packet after it carries a comment saying how many bytes
// were lost. Data without a preceding Open opens the connection implicitly.
// A connection whose Open is Midway has no handshake, and its first packet
// carries a comment saying capture began mid-connection.
type PcapngWriter struct {
	dst   io.Writer     // what the caller gave
	out   *bufio.Writer // batches pcapgo's small writes into few syscalls
	ng    *pcapgo.NgWriter
	err   error // sticky: a failed write leaves the file unusable
	conns map[uint64]*synFlow

	buf     gopacket.SerializeBuffer
	scratch [36 + 54 + 60]byte // plainPacket's and epb's headers
	eth     layers.Ethernet
	ip      layers.IPv4
	tcp     layers.TCP
	opts    gopacket.SerializeOptions
}

// synFlow is the TCP state of one recorded connection.
type synFlow struct {
	ip     net.IP
	port   uint16
	seq    [2]uint32 // next sequence number per Dir
	closed [2]bool
	midway bool // opened before capture began: no handshake, first packet says so
}

// midwayComment is on the first packet of a connection caught midway.
const midwayComment = "criseq: capture began mid-connection: this connection was already open, its earlier bytes were not seen"

// NewPcapngWriter starts a pcapng file on w. Errors of the header write are
// returned by the first Write or Close.
func NewPcapngWriter(w io.Writer) *PcapngWriter { return NewPcapngWriterNotes(w, Notes{}) }

// NewPcapngWriterNotes is NewPcapngWriter for a file that carries notes.
func NewPcapngWriterNotes(w io.Writer, notes Notes) *PcapngWriter {
	pw := &PcapngWriter{
		dst:   w,
		out:   bufio.NewWriterSize(w, 256<<10),
		conns: make(map[uint64]*synFlow),
		buf:   gopacket.NewSerializeBuffer(),
		opts:  gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
	}
	intf := pcapgo.DefaultNgInterface
	intf.LinkType = layers.LinkTypeEthernet
	intf.Name = "criseq"
	intf.Description = fmt.Sprintf("CRI unix-socket connections relayed by criseq, as synthetic TCP: connection N is 127.0.0.1:(40000+N) to %s:%d", ServerIP, ServerPort)
	opts := pcapgo.NgWriterOptions{SectionInfo: pcapgo.NgSectionInfo{
		Application: "criseq",
		OS:          pcapgo.DefaultNgWriterOptions.SectionInfo.OS,
		Hardware:    pcapgo.DefaultNgWriterOptions.SectionInfo.Hardware,
		Comment:     strings.Join(notes.comments(), "\n"),
	}}
	ng, err := pcapgo.NewNgWriterInterface(pw.out, intf, opts)
	if err == nil {
		err = ng.Flush() // packets are written to pw.out directly
	}
	if err != nil {
		pw.err = fmt.Errorf("write pcapng header: %w", err)
	}
	pw.ng = ng
	pw.eth = layers.Ethernet{EthernetType: layers.EthernetTypeIPv4}
	pw.ip = layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, Flags: layers.IPv4DontFragment}
	return pw
}

// Write appends the packets of one chunk. A malformed chunk is refused with
// an error and leaves the file intact; a failed write ends the file.
func (w *PcapngWriter) Write(c Chunk) error {
	if w.err != nil {
		return w.err
	}
	if c.Dir > ServerToClient || c.Kind > Close {
		return fmt.Errorf("write pcapng: chunk of connection %d has bad direction %d or kind %d", c.Conn, c.Dir, c.Kind)
	}
	if err := w.write(c); err != nil {
		w.err = fmt.Errorf("write pcapng: %w", err)
		return w.err
	}
	return nil
}

func (w *PcapngWriter) write(c Chunk) error {
	f := w.conns[c.Conn]
	if f == nil {
		if c.Kind == Close {
			return nil // nothing was recorded of it
		}
		var err error
		if f, err = w.open(c); err != nil {
			return err
		}
	}
	d, o := c.Dir, 1-c.Dir
	switch c.Kind {
	case Open:
		return nil
	case Data:
		comment := ""
		if c.Gap != 0 {
			skip := c.Gap
			lost := fmt.Sprintf("%d bytes", c.Gap)
			if skip < 0 {
				skip, lost = 1, "an unknown number of bytes"
			}
			f.seq[d] += uint32(skip)
			comment = fmt.Sprintf("criseq: %s of %s lost before this segment", lost, d)
		}
		if f.midway {
			comment = strings.TrimPrefix(comment+"; "+midwayComment, "; ")
			f.midway = false
		}
		data := c.Data
		for len(data) > 0 {
			n := min(len(data), MaxSegment)
			err := w.packet(c.Time, f, d, true, false, false, f.seq[d], f.seq[o], data[:n], comment)
			if err != nil {
				return err
			}
			f.seq[d] += uint32(n)
			data, comment = data[n:], ""
		}
		return nil
	case Close:
		if f.closed[d] {
			return nil
		}
		if c.Gap > 0 {
			f.seq[d] += uint32(c.Gap)
		}
		comment := ""
		if f.midway {
			comment, f.midway = midwayComment, false
		}
		if err := w.packet(c.Time, f, d, true, false, true, f.seq[d], f.seq[o], nil, comment); err != nil {
			return err
		}
		f.seq[d]++
		f.closed[d] = true
		if f.closed[o] {
			delete(w.conns, c.Conn)
		}
		return nil
	}
	return fmt.Errorf("chunk of connection %d has unknown kind %d", c.Conn, c.Kind)
}

// open writes the three-way handshake of a new connection. A connection
// caught midway gets none: a reader then knows its start was not seen. So
// is one whose first chunk is bytes from its middle, with no Open.
func (w *PcapngWriter) open(c Chunk) (*synFlow, error) {
	f := &synFlow{}
	f.ip, f.port = ClientEndpoint(c.Conn)
	// Fixed initial sequence numbers keep files reproducible; Wireshark shows
	// relative numbers anyway.
	f.seq[ClientToServer] = 0x10000000 + uint32(c.Conn)<<8
	f.seq[ServerToClient] = 0x20000000 + uint32(c.Conn)<<8
	w.conns[c.Conn] = f
	if c.Kind == Open && c.Midway || c.Kind == Data && c.Offset > 0 {
		f.midway = true
		f.seq[ClientToServer]++
		f.seq[ServerToClient]++
		return f, nil
	}
	cs, sc := f.seq[ClientToServer], f.seq[ServerToClient]
	if err := w.packet(c.Time, f, ClientToServer, false, true, false, cs, 0, nil, ""); err != nil {
		return nil, err
	}
	if err := w.packet(c.Time, f, ServerToClient, true, true, false, sc, cs+1, nil, ""); err != nil {
		return nil, err
	}
	f.seq[ClientToServer]++
	f.seq[ServerToClient]++
	err := w.packet(c.Time, f, ClientToServer, true, false, false, f.seq[ClientToServer], f.seq[ServerToClient], nil, "")
	return f, err
}

var windowScale = []layers.TCPOption{{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{14}}}

func (w *PcapngWriter) packet(t time.Time, f *synFlow, d Dir, ack, syn, fin bool, seq, ackNo uint32, payload []byte, comment string) error {
	if ack && !syn && comment == "" {
		return w.plainPacket(t, f, d, fin, seq, ackNo, payload)
	}
	w.tcp = layers.TCP{
		Seq: seq, ACK: ack, SYN: syn, FIN: fin,
		PSH:    len(payload) > 0,
		Window: 0xffff,
	}
	if ack {
		w.tcp.Ack = ackNo
	}
	if syn {
		// A window scale makes Wireshark see a large window, so long one-way
		// bursts are not flagged as "window full".
		w.tcp.Options = windowScale
	}
	w.ip.SrcIP, w.ip.DstIP = f.ip, ServerIP
	w.tcp.SrcPort, w.tcp.DstPort = layers.TCPPort(f.port), ServerPort
	w.eth.SrcMAC, w.eth.DstMAC = macClient, macServer
	if d == ServerToClient {
		w.ip.SrcIP, w.ip.DstIP = ServerIP, f.ip
		w.tcp.SrcPort, w.tcp.DstPort = ServerPort, layers.TCPPort(f.port)
		w.eth.SrcMAC, w.eth.DstMAC = macServer, macClient
	}
	w.ip.Id++
	if err := w.tcp.SetNetworkLayerForChecksum(&w.ip); err != nil {
		return err
	}
	if err := gopacket.SerializeLayers(w.buf, w.opts, &w.eth, &w.ip, &w.tcp, gopacket.Payload(payload)); err != nil {
		return fmt.Errorf("build packet: %w", err)
	}
	frame := w.buf.Bytes()
	if comment != "" {
		return w.commentedPacket(t, frame, comment)
	}
	return w.epb(t, frame, nil)
}

// epb writes an enhanced packet block holding head then payload, as pcapgo
// does, straight into the file's buffer: the payload is copied once.
func (w *PcapngWriter) epb(t time.Time, head, payload []byte) error {
	n := len(head) + len(payload)
	pad := (4 - n&3) & 3
	b := w.scratch[:28]
	le := binary.LittleEndian
	le.PutUint32(b[0:], 6) // enhanced packet block
	le.PutUint32(b[4:], uint32(32+n+pad))
	le.PutUint32(b[8:], 0) // interface 0
	ts := uint64(t.UnixNano())
	le.PutUint32(b[12:], uint32(ts>>32))
	le.PutUint32(b[16:], uint32(ts))
	le.PutUint32(b[20:], uint32(n))
	le.PutUint32(b[24:], uint32(n))
	w.out.Write(b)
	w.out.Write(head)
	w.out.Write(payload)
	tail := w.scratch[28:36]
	le.PutUint32(tail[0:], 0)
	le.PutUint32(tail[4:], uint32(32+n+pad))
	_, err := w.out.Write(tail[4-pad:])
	return err
}

// plainPacket writes a segment with ACK, no SYN and no option: every data
// segment and FIN. Its headers are built here, the very bytes gopacket
// builds (TestPlainPacketLikeGopacket), without copying the payload into a
// frame, and with a checksum summed a word at a time: recording a 16 MiB
// response costs a fraction of what it did.
func (w *PcapngWriter) plainPacket(t time.Time, f *synFlow, d Dir, fin bool, seq, ackNo uint32, payload []byte) error {
	h := w.scratch[36 : 36+54]
	clear(h)
	src, dst := f.ip, ServerIP
	sport, dport := f.port, uint16(ServerPort)
	smac, dmac := macClient, macServer
	if d == ServerToClient {
		src, dst, sport, dport, smac, dmac = dst, src, dport, sport, dmac, smac
	}
	be := binary.BigEndian
	copy(h[0:6], dmac)
	copy(h[6:12], smac)
	be.PutUint16(h[12:], 0x0800)
	ip := h[14:34]
	w.ip.Id++
	ip[0] = 0x45
	be.PutUint16(ip[2:], uint16(20+20+len(payload)))
	be.PutUint16(ip[4:], w.ip.Id)
	be.PutUint16(ip[6:], 0x4000) // don't fragment
	ip[8], ip[9] = 64, 6
	copy(ip[12:16], src)
	copy(ip[16:20], dst)
	be.PutUint16(ip[10:], ^fold(sum32(0, ip)))
	tcp := h[34:54]
	be.PutUint16(tcp[0:], sport)
	be.PutUint16(tcp[2:], dport)
	be.PutUint32(tcp[4:], seq)
	be.PutUint32(tcp[8:], ackNo)
	tcp[12] = 5 << 4
	flags := byte(0x10) // ACK
	if fin {
		flags |= 0x01
	}
	if len(payload) > 0 {
		flags |= 0x08 // PSH
	}
	tcp[13] = flags
	be.PutUint16(tcp[14:], 0xffff)
	// Pseudo-header: addresses, protocol, TCP length.
	sum := sum32(0, ip[12:20]) + 6 + uint64(20+len(payload))
	sum = sum32(sum32(sum, tcp), payload)
	be.PutUint16(tcp[16:], ^fold(sum))
	if n := len(h) + len(payload); n < 60 {
		// gopacket pads a frame to Ethernet's 60-byte minimum.
		short := w.scratch[36+54 : 36+54+60]
		clear(short)
		copy(short, h)
		copy(short[len(h):], payload)
		return w.epb(t, short, nil)
	}
	return w.epb(t, h, payload)
}

// sum32 adds b's big-endian 16-bit words to sum (a one's complement sum
// folds the same: 2^16 is 1 modulo 0xffff). The bulk is summed as
// little-endian 64-bit words with carries, which folds to the byte-swapped
// sum (RFC 1071): recording a large response costs less.
func sum32(sum uint64, b []byte) uint64 {
	if len(b) >= 64 {
		le := binary.LittleEndian
		var s, c uint64
		for len(b) >= 32 {
			s, c = bits.Add64(s, le.Uint64(b), c)
			s, c = bits.Add64(s, le.Uint64(b[8:]), c)
			s, c = bits.Add64(s, le.Uint64(b[16:]), c)
			s, c = bits.Add64(s, le.Uint64(b[24:]), c)
			b = b[32:]
		}
		s, c = bits.Add64(s, c, 0)
		s += c // cannot carry again
		sum += uint64(bits.ReverseBytes16(fold(s&0xffffffff + s>>32)))
	}
	for len(b) >= 8 {
		sum += uint64(binary.BigEndian.Uint32(b)) + uint64(binary.BigEndian.Uint32(b[4:]))
		b = b[8:]
	}
	if len(b) >= 4 {
		sum += uint64(binary.BigEndian.Uint32(b))
		b = b[4:]
	}
	if len(b) >= 2 {
		sum += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint64(b[0]) << 8
	}
	return sum
}

func fold(sum uint64) uint16 {
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}

var (
	macClient = net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	macServer = net.HardwareAddr{0x02, 0, 0, 0, 0, 2}
)

// commentedPacket writes an enhanced packet block with an opt_comment, which
// pcapgo's writer cannot.
func (w *PcapngWriter) commentedPacket(t time.Time, frame []byte, comment string) error {
	pad := func(n int) int { return (n + 3) &^ 3 }
	optLen := 4 + pad(len(comment)) + 4 // comment option + end of options
	total := 28 + pad(len(frame)) + optLen + 4
	b := make([]byte, total)
	le := binary.LittleEndian
	le.PutUint32(b[0:], 6) // enhanced packet block
	le.PutUint32(b[4:], uint32(total))
	le.PutUint32(b[8:], 0) // interface 0
	ts := uint64(t.UnixNano())
	le.PutUint32(b[12:], uint32(ts>>32))
	le.PutUint32(b[16:], uint32(ts))
	le.PutUint32(b[20:], uint32(len(frame)))
	le.PutUint32(b[24:], uint32(len(frame)))
	copy(b[28:], frame)
	o := 28 + pad(len(frame))
	le.PutUint16(b[o:], 1) // opt_comment
	le.PutUint16(b[o+2:], uint16(len(comment)))
	copy(b[o+4:], comment)
	le.PutUint32(b[total-4:], uint32(total))
	_, err := w.out.Write(b)
	return err
}

// Flush writes buffered packets to the underlying writer. The Recorder calls
// it whenever its queue runs empty.
func (w *PcapngWriter) Flush() error {
	if w.err != nil {
		return w.err
	}
	err := w.ng.Flush()
	if err == nil {
		err = w.out.Flush()
	}
	if err != nil {
		w.err = fmt.Errorf("write pcapng: %w", err)
		return w.err
	}
	return nil
}

// Close flushes the file and closes the underlying writer if it is an io.Closer.
// Connections still open get no FIN: the file ends as the capture did.
func (w *PcapngWriter) Close() error {
	err := w.Flush()
	if c, ok := w.dst.(io.Closer); ok {
		if cerr := c.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close pcapng: %w", cerr)
		}
	}
	if err == nil {
		w.err = errors.New("write pcapng: writer closed")
	}
	return err
}

// CreateFile creates (or truncates) a capture file readable by its owner only:
// mode 0600 whatever the umask, set before any data is written. It refuses to
// follow a symlink or to write into anything but a regular file.
func CreateFile(path string) (*os.File, error) {
	// Checked before opening too: opening a FIFO for writing would block.
	if st, err := os.Lstat(path); err == nil && !st.Mode().IsRegular() {
		return nil, fmt.Errorf("create capture file: %s exists and is not a regular file", path)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create capture file: %w", err)
	}
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() {
		err = fmt.Errorf("%s is not a regular file", path)
	}
	if err == nil {
		err = f.Chmod(0o600)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("create capture file: %w", err)
	}
	return f, nil
}
