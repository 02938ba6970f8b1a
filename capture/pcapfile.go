package capture

import (
	"bufio"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"time"
)

// The block reader below is written by hand rather than with pcapgo's readers:
// pcapgo gives no file offsets for errors, allocates whatever length a record
// claims, and panics on some crafted pcapng headers (an if_tsresol of 64
// divides by zero). Writing stays with pcapgo.

const (
	readBufSize = 256 << 10
	// maxRecord bounds one packet record or pcapng block. Real captures stay
	// under 256 KiB (the largest snaplen tools use); anything bigger is corrupt.
	maxRecord = 16 << 20

	magicPcapMicro   = 0xa1b2c3d4
	magicPcapNano    = 0xa1b23c4d
	magicPcapngBlock = 0x0a0d0d0a
	ngByteOrderMagic = 0x1a2b3c4d

	ngSectionHeader   = 0x0a0d0d0a
	ngInterface       = 1
	ngObsoletePacket  = 2
	ngSimplePacket    = 3
	ngEnhancedPacket  = 6
	ngOptEnd          = 0
	ngOptComment      = 1
	ngOptIfTsresol    = 9
	ngOptIfTsoffset   = 14
	pcapRecordHdrSize = 16
)

// packet is one captured frame. data is valid until the next call to next.
type packet struct {
	data []byte
	ts   time.Time
	link linkType
}

// linkType is a pcap LINKTYPE_ value; gopacket's LinkType is a uint8 and
// cannot hold some of them (SLL2 is 276).
type linkType uint32

const (
	linkNull     linkType = 0
	linkEthernet linkType = 1
	linkRawOld   linkType = 12 // DLT_RAW on most systems
	linkRawBSD   linkType = 14 // DLT_RAW on OpenBSD
	linkRaw      linkType = 101
	linkLoop     linkType = 108
	linkSLL      linkType = 113
	linkIPv4     linkType = 228
	linkIPv6     linkType = 229
	linkSLL2     linkType = 276
)

type ngIface struct {
	link     linkType
	snaplen  uint32
	tsBinary bool  // if_tsresol is a power of 2
	tsExp    uint8 // resolution is 10^-exp or 2^-exp seconds
	tsOffset int64 // seconds added to every timestamp
}

// packetReader pulls packets out of a pcap or pcapng stream.
type packetReader struct {
	name    string
	br      *bufio.Reader
	off     int64 // file offset of the next unread byte
	pending int   // bytes of the last returned record still to discard
	scratch []byte

	pcapng bool
	big    bool // byte order of the current pcap file or pcapng section

	// pcap
	nanos bool
	link  linkType

	// pcapng
	ifaces   []ngIface
	comments []string // the first section's opt_comments
	sections int
}

func (r *packetReader) u16(b []byte) uint16 {
	if r.big {
		return binary.BigEndian.Uint16(b)
	}
	return binary.LittleEndian.Uint16(b)
}

func (r *packetReader) u32(b []byte) uint32 {
	if r.big {
		return binary.BigEndian.Uint32(b)
	}
	return binary.LittleEndian.Uint32(b)
}

func (r *packetReader) formatErr(off int64, format string, args ...any) error {
	return &FormatError{File: r.name, Offset: off, Err: fmt.Errorf(format, args...)}
}

// newPacketReader reads the file header and tells pcap from pcapng by magic.
func newPacketReader(name string, rd io.Reader) (*packetReader, error) {
	r := &packetReader{name: name, br: bufio.NewReaderSize(rd, readBufSize)}
	head, err := r.br.Peek(4)
	if len(head) >= 2 && head[0] == 0x1f && head[1] == 0x8b {
		// tcpdump -w - | gzip: offsets below count uncompressed bytes.
		zr, zerr := gzip.NewReader(r.br)
		if zerr != nil {
			return nil, &FormatError{File: name, Offset: 0, Err: fmt.Errorf("open gzip stream: %w", zerr)}
		}
		r.br = bufio.NewReaderSize(zr, readBufSize)
		head, err = r.br.Peek(4)
	}
	if len(head) == 0 {
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, &FormatError{File: name, Offset: 0, Err: fmt.Errorf("read header: %w", err)}
		}
		return nil, &FormatError{File: name, Offset: 0, Err: errors.New("empty file, not a pcap or pcapng file")}
	}
	if len(head) < 4 {
		return nil, &FormatError{File: name, Offset: 0, Err: fmt.Errorf("not a pcap or pcapng file (only %d bytes)", len(head))}
	}
	magicLE := binary.LittleEndian.Uint32(head)
	magicBE := binary.BigEndian.Uint32(head)
	switch {
	case magicLE == magicPcapngBlock:
		r.pcapng = true
		if err := r.readSectionHeader(); err != nil {
			return nil, err
		}
		return r, nil
	case magicLE == magicPcapMicro, magicLE == magicPcapNano:
		r.nanos = magicLE == magicPcapNano
	case magicBE == magicPcapMicro, magicBE == magicPcapNano:
		r.big = true
		r.nanos = magicBE == magicPcapNano
	default:
		return nil, &FormatError{File: name, Offset: 0, Err: fmt.Errorf("not a pcap or pcapng file (magic 0x%08x)", magicBE)}
	}
	hdr, err := r.record(24, "pcap file header")
	if err != nil {
		return nil, err
	}
	if major := r.u16(hdr[4:6]); major != 2 {
		return nil, r.formatErr(4, "unsupported pcap version %d.%d", major, r.u16(hdr[6:8]))
	}
	// The upper bits of the link type field carry FCS information.
	r.link = linkType(r.u32(hdr[20:24]) & 0xffff)
	return r, nil
}

// record returns the next n bytes of the file without copying when they fit
// in the read buffer. They stay valid until the next call to record.
func (r *packetReader) record(n int, what string) ([]byte, error) {
	if r.pending > 0 {
		if _, err := r.br.Discard(r.pending); err != nil {
			return nil, r.formatErr(r.off, "skip %d bytes: %w", r.pending, err)
		}
		r.off += int64(r.pending)
		r.pending = 0
	}
	if n <= r.br.Size() {
		b, err := r.br.Peek(n)
		if len(b) < n {
			return nil, r.readErr(len(b), n, what, err)
		}
		r.pending = n
		return b, nil
	}
	if cap(r.scratch) < n {
		r.scratch = make([]byte, n)
	}
	b := r.scratch[:n]
	got, err := io.ReadFull(r.br, b)
	if got < n {
		e := r.readErr(got, n, what, err)
		r.off += int64(got)
		return nil, e
	}
	r.off += int64(n)
	return b, nil
}

func (r *packetReader) readErr(got, want int, what string, err error) error {
	if got == 0 && errors.Is(err, io.EOF) {
		return io.EOF
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return r.formatErr(r.off, "truncated %s: file ends after %d of %d bytes: %w", what, got, want, err)
}

// peekHeader returns the next n header bytes without consuming them.
func (r *packetReader) peekHeader(n int, what string) ([]byte, error) {
	if r.pending > 0 {
		if _, err := r.br.Discard(r.pending); err != nil {
			return nil, r.formatErr(r.off, "skip %d bytes: %w", r.pending, err)
		}
		r.off += int64(r.pending)
		r.pending = 0
	}
	b, err := r.br.Peek(n)
	if len(b) < n {
		return nil, r.readErr(len(b), n, what, err)
	}
	return b, nil
}

// next returns the next packet, io.EOF at a clean end, or a *FormatError.
func (r *packetReader) next() (packet, error) {
	if r.pcapng {
		return r.nextNg()
	}
	start := r.off + int64(r.pending)
	h, err := r.peekHeader(pcapRecordHdrSize, "packet record header")
	if err != nil {
		return packet{}, err
	}
	sec, frac := r.u32(h[0:4]), r.u32(h[4:8])
	incl := r.u32(h[8:12])
	if incl > maxRecord {
		return packet{}, r.formatErr(start, "packet record of %d bytes is too large (limit %d)", incl, maxRecord)
	}
	rec, err := r.record(pcapRecordHdrSize+int(incl), "packet record")
	if err != nil {
		return packet{}, err
	}
	ns := int64(frac)
	if !r.nanos {
		ns *= 1000
	}
	return packet{data: rec[pcapRecordHdrSize:], ts: time.Unix(int64(sec), ns), link: r.link}, nil
}

func (r *packetReader) nextNg() (packet, error) {
	for {
		start := r.off + int64(r.pending)
		h, err := r.peekHeader(8, "pcapng block header")
		if err != nil {
			return packet{}, err
		}
		typ := r.u32(h[0:4])
		if typ == ngSectionHeader {
			if err := r.readSectionHeader(); err != nil {
				return packet{}, err
			}
			continue
		}
		b, err := r.block(start, r.u32(h[4:8]))
		if err != nil {
			return packet{}, err
		}
		body := b[8 : len(b)-4]
		switch typ {
		case ngInterface:
			if err := r.readInterface(start, body); err != nil {
				return packet{}, err
			}
		case ngEnhancedPacket, ngObsoletePacket:
			if len(body) < 20 {
				return packet{}, r.formatErr(start, "packet block of %d bytes is too short", len(b))
			}
			var id uint32
			if typ == ngEnhancedPacket {
				id = r.u32(body[0:4])
			} else {
				id = uint32(r.u16(body[0:2]))
			}
			if id >= uint32(len(r.ifaces)) {
				return packet{}, r.formatErr(start, "packet block names interface %d, section has %d", id, len(r.ifaces))
			}
			capLen := r.u32(body[12:16])
			if capLen > uint32(len(body)-20) {
				return packet{}, r.formatErr(start, "packet block claims %d captured bytes, block holds %d", capLen, len(body)-20)
			}
			ifc := &r.ifaces[id]
			ts := uint64(r.u32(body[4:8]))<<32 | uint64(r.u32(body[8:12]))
			return packet{data: body[20 : 20+capLen], ts: ifc.time(ts), link: ifc.link}, nil
		case ngSimplePacket:
			if len(r.ifaces) == 0 {
				return packet{}, r.formatErr(start, "simple packet block before any interface block")
			}
			if len(body) < 4 {
				return packet{}, r.formatErr(start, "simple packet block of %d bytes is too short", len(b))
			}
			data := body[4:]
			if orig := r.u32(body[0:4]); uint64(orig) < uint64(len(data)) {
				data = data[:orig] // the rest is padding
			}
			if sl := r.ifaces[0].snaplen; sl != 0 && uint64(sl) < uint64(len(data)) {
				data = data[:sl]
			}
			// Simple packet blocks carry no timestamp.
			return packet{data: data, link: r.ifaces[0].link}, nil
		}
		// Other blocks (statistics, name resolution, custom) carry no packets.
	}
}

// block reads a whole pcapng block of the given total length and checks its trailer.
func (r *packetReader) block(start int64, length uint32) ([]byte, error) {
	if length < 12 || length%4 != 0 {
		return nil, r.formatErr(start, "bad pcapng block length %d", length)
	}
	if length > maxRecord {
		return nil, r.formatErr(start, "pcapng block of %d bytes is too large (limit %d)", length, maxRecord)
	}
	b, err := r.record(int(length), "pcapng block")
	if err != nil {
		return nil, err
	}
	if trailer := r.u32(b[len(b)-4:]); trailer != length {
		return nil, r.formatErr(start, "pcapng block length %d does not match its trailer %d", length, trailer)
	}
	return b, nil
}

func (r *packetReader) readSectionHeader() error {
	start := r.off + int64(r.pending)
	h, err := r.peekHeader(12, "pcapng section header")
	if err != nil {
		if err == io.EOF {
			err = r.formatErr(start, "truncated pcapng section header: %w", io.ErrUnexpectedEOF)
		}
		return err
	}
	switch {
	case binary.LittleEndian.Uint32(h[8:12]) == ngByteOrderMagic:
		r.big = false
	case binary.BigEndian.Uint32(h[8:12]) == ngByteOrderMagic:
		r.big = true
	default:
		return r.formatErr(start+8, "bad pcapng byte-order magic 0x%08x", binary.BigEndian.Uint32(h[8:12]))
	}
	b, err := r.block(start, r.u32(h[4:8]))
	if err != nil {
		return err
	}
	if len(b) < 28 {
		return r.formatErr(start, "pcapng section header of %d bytes is too short", len(b))
	}
	if major := r.u16(b[12:14]); major != 1 {
		return r.formatErr(start+12, "unsupported pcapng version %d.%d", major, r.u16(b[14:16]))
	}
	r.ifaces = r.ifaces[:0]
	if r.sections++; r.sections == 1 {
		opts := b[24 : len(b)-4]
		for len(opts) >= 4 {
			code, n := r.u16(opts[0:2]), int(r.u16(opts[2:4]))
			padded := (n + 3) &^ 3
			if code == ngOptEnd || 4+padded > len(opts) {
				break // options are notes only: a bad one ends them
			}
			if code == ngOptComment {
				r.comments = append(r.comments, string(opts[4:4+n]))
			}
			opts = opts[4+padded:]
		}
	}
	return nil
}

func (r *packetReader) readInterface(start int64, body []byte) error {
	if len(body) < 8 {
		return r.formatErr(start, "interface block of %d bytes is too short", len(body)+12)
	}
	ifc := ngIface{link: linkType(r.u16(body[0:2])), snaplen: r.u32(body[4:8]), tsExp: 6}
	opts := body[8:]
	for len(opts) >= 4 {
		code, n := r.u16(opts[0:2]), int(r.u16(opts[2:4]))
		if code == ngOptEnd {
			break
		}
		padded := (n + 3) &^ 3
		if 4+padded > len(opts) {
			return r.formatErr(start, "interface option %d overruns its block", code)
		}
		v := opts[4 : 4+n]
		switch {
		case code == ngOptIfTsresol && n >= 1:
			ifc.tsBinary = v[0]&0x80 != 0
			ifc.tsExp = v[0] & 0x7f
		case code == ngOptIfTsoffset && n >= 8:
			if r.big {
				ifc.tsOffset = int64(binary.BigEndian.Uint64(v))
			} else {
				ifc.tsOffset = int64(binary.LittleEndian.Uint64(v))
			}
		}
		opts = opts[4+padded:]
	}
	r.ifaces = append(r.ifaces, ifc)
	return nil
}

// time converts a raw pcapng timestamp; every resolution the field can hold
// is handled without overflow or division by zero.
func (ifc *ngIface) time(ts uint64) time.Time {
	var sec, ns uint64
	e := uint(ifc.tsExp)
	if ifc.tsBinary {
		switch {
		case e == 0:
			sec = ts
		case e < 64:
			sec = ts >> e
			hi, lo := bits.Mul64(ts&(1<<e-1), 1e9)
			ns = hi<<(64-e) | lo>>e
		default:
			hi, _ := bits.Mul64(ts, 1e9)
			if e-64 < 64 {
				ns = hi >> (e - 64)
			}
		}
	} else {
		if e <= 19 {
			unit := pow10(e)
			sec = ts / unit
			frac := ts % unit
			if e <= 9 {
				ns = frac * pow10(9-e)
			} else {
				ns = frac / pow10(e-9)
			}
		} else if e-9 <= 19 {
			ns = ts / pow10(e-9)
		}
		// Finer than 10^-28 s: every value rounds to zero.
	}
	return time.Unix(int64(sec)+ifc.tsOffset, int64(ns))
}

func pow10(e uint) uint64 {
	p := uint64(1)
	for ; e > 0; e-- {
		p *= 10
	}
	return p
}
