package capture

import (
	"encoding/binary"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// ngOpt is a pcapng option: code and value.
type ngOpt struct {
	code uint16
	val  []byte
}

// ngBlock appends one pcapng block of type typ with body and options.
func ngBlock(b []byte, bo binary.AppendByteOrder, typ uint32, body []byte, opts []ngOpt) []byte {
	var o []byte
	for _, op := range opts {
		o = bo.AppendUint16(o, op.code)
		o = bo.AppendUint16(o, uint16(len(op.val)))
		o = append(o, op.val...)
		for len(o)%4 != 0 {
			o = append(o, 0)
		}
	}
	if len(opts) > 0 {
		o = bo.AppendUint32(o, 0) // opt_endofopt
	}
	for len(body)%4 != 0 {
		body = append(body, 0)
	}
	total := uint32(12 + len(body) + len(o))
	b = bo.AppendUint32(b, typ)
	b = bo.AppendUint32(b, total)
	b = append(b, body...)
	b = append(b, o...)
	return bo.AppendUint32(b, total)
}

// rawPcapng writes a pcapng file by hand: one Ethernet interface with the
// given if_tsresol (exp, or 2^-exp with the high bit) and if_tsoffset
// (seconds), and one enhanced packet block per frame at times ts (in
// units of the resolution, before the offset).
func rawPcapng(big bool, tsresol byte, tsoffset int64, ts []uint64, frames ...[]byte) []byte {
	var bo binary.AppendByteOrder = binary.LittleEndian
	if big {
		bo = binary.BigEndian
	}
	var shb []byte
	shb = bo.AppendUint32(shb, ngByteOrderMagic)
	shb = bo.AppendUint16(shb, 1)
	shb = bo.AppendUint16(shb, 0)
	shb = bo.AppendUint64(shb, ^uint64(0)) // section length unknown
	b := ngBlock(nil, bo, ngSectionHeader, shb, nil)

	var idb []byte
	idb = bo.AppendUint16(idb, uint16(linkEthernet))
	idb = bo.AppendUint16(idb, 0)
	idb = bo.AppendUint32(idb, 262144)
	opts := []ngOpt{{ngOptIfTsresol, []byte{tsresol}}}
	if tsoffset != 0 {
		opts = append(opts, ngOpt{ngOptIfTsoffset, bo.AppendUint64(nil, uint64(tsoffset))})
	}
	b = ngBlock(b, bo, ngInterface, idb, opts)

	for i, fr := range frames {
		var epb []byte
		epb = bo.AppendUint32(epb, 0)
		epb = bo.AppendUint32(epb, uint32(ts[i]>>32))
		epb = bo.AppendUint32(epb, uint32(ts[i]))
		epb = bo.AppendUint32(epb, uint32(len(fr)))
		epb = bo.AppendUint32(epb, uint32(len(fr)))
		epb = append(epb, fr...)
		b = ngBlock(b, bo, ngEnhancedPacket, epb, nil)
	}
	return b
}

// TestNgTsoffset: an interface's if_tsoffset (seconds) is added to every
// timestamp of its packets, in either byte order, as Wireshark does.
func TestNgTsoffset(t *testing.T) {
	fl := &flowSpec{client: net.IPv4(10, 0, 0, 1), server: net.IPv4(10, 0, 0, 2), cport: 40000, sport: 10010, ciss: 1, siss: 2}
	frames := [][]byte{
		fl.frame(t, tcpSeg{fromClient: true, syn: true}),
		fl.frame(t, tcpSeg{fromClient: true, seq: 1, data: []byte(h2Preface)}),
	}
	// Microseconds since the offset: 12.5 s and 12.75 s.
	ts := []uint64{12_500_000, 12_750_000}
	const offset = 1_700_000_000
	for _, big := range []bool{false, true} {
		path := writeFile(t, "off.pcapng", rawPcapng(big, 6, offset, ts, frames...))
		src, err := OpenFile(path)
		if err != nil {
			t.Fatal(err)
		}
		out := readAll(t, src)
		src.Close()
		if len(out) != 2 || out[1].Kind != Data {
			t.Fatalf("big=%v: chunks %+v", big, out)
		}
		want := []time.Time{time.Unix(offset+12, 500_000_000), time.Unix(offset+12, 750_000_000)}
		for i, c := range out {
			if !c.Time.Equal(want[i]) {
				t.Errorf("big=%v: chunk %d at %v, want %v (if_tsoffset %d s)", big, i, c.Time.UTC(), want[i].UTC(), int64(offset))
			}
		}
		if big {
			continue
		}
		// Wireshark reads the same times.
		lines := tshark(t, path, "-T", "fields", "-e", "frame.time_epoch")
		for i, l := range lines {
			sec, err := strconv.ParseFloat(strings.TrimSpace(l), 64)
			if err != nil || i >= len(want) || time.Duration((sec-float64(want[i].UnixNano())/1e9)*1e9).Abs() > time.Microsecond {
				t.Errorf("tshark frame %d at %s, want %d.%09d", i+1, l, want[i].Unix(), want[i].Nanosecond())
			}
		}
	}
}
