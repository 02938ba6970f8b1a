package capture

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 123456789, time.UTC)

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7+i/251)
	}
	return b
}

// writePcapng writes chunks with PcapngWriter into a 0600 file.
func writePcapng(t testing.TB, chunks []Chunk) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "rec.pcapng")
	f, err := CreateFile(path)
	if err != nil {
		t.Fatal(err)
	}
	w := NewPcapngWriter(f)
	for _, c := range chunks {
		if err := w.Write(c); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// roundTripChunks: three connections, interleaved, with a chunk larger than
// one segment, a gap, and a connection without an Open.
func roundTripChunks() []Chunk {
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	pre := []byte(h2Preface)
	big := pattern(200_000, 3)
	return []Chunk{
		{Conn: 1, Kind: Open, Time: at(0)},
		{Conn: 1, Dir: ServerToClient, Kind: Data, Time: at(1), Data: pattern(27, 1)}, // server SETTINGS first
		{Conn: 1, Dir: ClientToServer, Kind: Data, Time: at(2), Data: append(pre, pattern(100, 2)...)},
		{Conn: 2, Kind: Open, Time: at(3)},
		{Conn: 2, Dir: ClientToServer, Kind: Data, Time: at(4), Data: append(pre, 9, 9, 9)},
		{Conn: 1, Dir: ServerToClient, Kind: Data, Time: at(5), Data: big, Offset: 27},
		{Conn: 2, Dir: ServerToClient, Kind: Data, Time: at(6), Data: pattern(50, 4)},
		{Conn: 1, Dir: ClientToServer, Kind: Data, Time: at(7), Data: pattern(10, 5), Gap: 1000, Offset: 124 + 1000},
		{Conn: 3, Dir: ClientToServer, Kind: Data, Time: at(8), Data: append(pre, 1)},
		{Conn: 1, Dir: ClientToServer, Kind: Close, Time: at(9), Offset: 1134},
		{Conn: 1, Dir: ServerToClient, Kind: Close, Time: at(10), Offset: 200_027},
		{Conn: 3, Dir: ServerToClient, Kind: Data, Time: at(11), Data: pattern(70_000, 6)},
		{Conn: 2, Dir: ServerToClient, Kind: Close, Time: at(12), Offset: 50},
	}
}

func TestPcapngRoundTrip(t *testing.T) {
	in := roundTripChunks()
	path := writePcapng(t, in)
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("capture file mode %v, %v; want 0600", st.Mode().Perm(), err)
	}
	src, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	out := readAll(t, src)
	compareChunks(t, in, out)
	for id := uint64(1); id <= 3; id++ {
		ci := src.Conn(id)
		want := ConnInfo{ID: id, Client: fmt.Sprintf("127.0.0.1:%d", 40000+id), Server: "127.0.0.1:10010"}
		if ci != want {
			t.Errorf("Conn(%d) = %+v, want %+v", id, ci, want)
		}
	}
}

// compareChunks checks that out, read back from a file, carries the same
// connections, directions, bytes, gaps, closes and times as in.
func compareChunks(t *testing.T, in, out []Chunk) {
	t.Helper()
	want, got := streams(t, in), streams(t, out)
	if len(got) != len(want) {
		t.Fatalf("read %d connections, wrote %d", len(got), len(want))
	}
	for id, w := range want {
		g := got[id]
		if g == nil {
			t.Errorf("conn %d missing", id)
			continue
		}
		if !g[0].opened {
			t.Errorf("conn %d: no Open", id)
		}
		for d := range w {
			if !bytes.Equal(g[d].data, w[d].data) {
				t.Errorf("conn %d %v: read %d bytes, wrote %d", id, Dir(d), len(g[d].data), len(w[d].data))
			}
			if g[d].closed != w[d].closed {
				t.Errorf("conn %d %v: closed %v, want %v", id, Dir(d), g[d].closed, w[d].closed)
			}
			if g[d].gaps != w[d].gaps {
				t.Errorf("conn %d %v: %d gaps, want %d", id, Dir(d), g[d].gaps, w[d].gaps)
			}
		}
	}
	// Every byte read carries the time of the written chunk that held it.
	type key struct {
		conn uint64
		dir  Dir
	}
	times := map[key][]Chunk{}
	for _, c := range in {
		if c.Kind == Data {
			k := key{c.Conn, c.Dir}
			times[k] = append(times[k], c)
		}
	}
	for _, c := range out {
		if c.Kind != Data {
			continue
		}
		found := false
		for _, w := range times[key{c.Conn, c.Dir}] {
			if c.Offset >= w.Offset && c.Offset < w.Offset+int64(len(w.Data)) {
				found = true
				if !c.Time.Equal(w.Time) {
					t.Errorf("conn %d %v offset %d: time %v, want %v", c.Conn, c.Dir, c.Offset, c.Time, w.Time)
				}
			}
		}
		if !found {
			t.Errorf("conn %d %v: chunk at offset %d matches no written chunk", c.Conn, c.Dir, c.Offset)
		}
	}
	// Connections appear in order of their IDs, each starting with Open.
	var last uint64
	for _, c := range out {
		if c.Conn > last {
			if c.Conn != last+1 || c.Kind != Open {
				t.Errorf("connection %d first appears with %v chunk, after %d", c.Conn, c.Kind, last)
			}
			last = c.Conn
		}
	}
}

// tcpSeg is one synthetic TCP segment of a tcpdump-style capture.
type tcpSeg struct {
	fromClient bool
	seq        uint32 // relative to the sender's ISN
	data       []byte
	syn, fin   bool
}

type flowSpec struct {
	client, server   net.IP
	cport, sport     uint16
	ciss, siss       uint32
	segs             []tcpSeg
	wantC2S, wantS2C []byte
}

// frame builds an Ethernet/IP/TCP frame with gopacket layers.
func (f *flowSpec) frame(t testing.TB, s tcpSeg) []byte {
	t.Helper()
	src, dst, sp, dp, iss, ack := f.client, f.server, f.cport, f.sport, f.ciss, f.siss
	if !s.fromClient {
		src, dst, sp, dp, iss, ack = f.server, f.client, f.sport, f.cport, f.siss, f.ciss
	}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(sp), DstPort: layers.TCPPort(dp), Seq: iss + s.seq, SYN: s.syn, FIN: s.fin, Window: 65535}
	if !(s.syn && s.fromClient) {
		tcp.ACK, tcp.Ack = true, ack+1
	}
	tcp.PSH = len(s.data) > 0
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}}
	var nl gopacket.SerializableLayer
	if src.To4() != nil {
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: src.To4(), DstIP: dst.To4()}
		tcp.SetNetworkLayerForChecksum(ip)
		eth.EthernetType, nl = layers.EthernetTypeIPv4, ip
	} else {
		ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP, SrcIP: src, DstIP: dst}
		tcp.SetNetworkLayerForChecksum(ip)
		eth.EthernetType, nl = layers.EthernetTypeIPv6, ip
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, nl, tcp, gopacket.Payload(s.data)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// writeTcpdumpPcap writes frames of several flows, in the given order, as a
// microsecond pcap file with pcapgo.Writer, as tcpdump would.
func writeTcpdumpPcap(t testing.TB, order [][2]int, flows []*flowSpec) string {
	t.Helper()
	var buf bytes.Buffer
	w := pcapgo.NewWriter(&buf)
	if err := w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	for i, o := range order {
		fr := flows[o[0]].frame(t, flows[o[0]].segs[o[1]])
		ci := gopacket.CaptureInfo{Timestamp: t0.Add(time.Duration(i) * time.Millisecond), CaptureLength: len(fr), Length: len(fr)}
		if err := w.WritePacket(ci, fr); err != nil {
			t.Fatal(err)
		}
	}
	return writeFile(t, "tcpdump.pcap", buf.Bytes())
}

func TestReadTcpdumpCapture(t *testing.T) {
	pre := []byte(h2Preface)
	req := append(append([]byte{}, pre...), pattern(3000, 1)...)
	resp := pattern(5000, 2)

	// Flow A: full handshake, server on the lower port; segments reordered,
	// duplicated and overlapping.
	a := &flowSpec{client: net.IPv4(10, 0, 0, 1), server: net.IPv4(10, 0, 0, 2), cport: 51000, sport: 10010, ciss: 1000, siss: 9_000_000,
		wantC2S: req, wantS2C: resp}
	a.segs = []tcpSeg{
		{fromClient: true, syn: true},                              // 0
		{fromClient: false, syn: true},                             // 1
		{fromClient: true, seq: 1},                                 // 2 ACK
		{fromClient: false, seq: 1, data: resp[:27]},               // 3 server SETTINGS first
		{fromClient: true, seq: 1, data: req[:1000]},               // 4
		{fromClient: true, seq: 1001, data: req[1000:2000]},        // 5
		{fromClient: true, seq: 2001, data: req[2000:]},            // 6
		{fromClient: true, seq: 501, data: req[500:1500]},          // 7 overlapping retransmission
		{fromClient: false, seq: 28, data: resp[27:2500]},          // 8
		{fromClient: false, seq: 2501, data: resp[2500:]},          // 9
		{fromClient: true, seq: 1 + uint32(len(req)), fin: true},   // 10
		{fromClient: false, seq: 1 + uint32(len(resp)), fin: true}, // 11
		{fromClient: false, seq: 2501, data: resp[2500:]},          // 12 duplicate after FIN
		{fromClient: true, seq: 2 + uint32(len(req)), data: nil},   // 13 last ACK
	}
	// Flow B: no handshake seen, client on the LOWER port, IPv6; the server's
	// bytes come first. Only the preface tells the sides apart.
	b := &flowSpec{client: net.ParseIP("fd00::1"), server: net.ParseIP("fd00::2"), cport: 1234, sport: 50051, ciss: 77, siss: 4_000_000_000,
		wantC2S: append(append([]byte{}, pre...), 7, 7), wantS2C: pattern(40, 3)}
	b.segs = []tcpSeg{
		{fromClient: false, seq: 1, data: b.wantS2C[:20]},
		{fromClient: true, seq: 1, data: b.wantC2S[:10]},
		{fromClient: true, seq: 11, data: b.wantC2S[10:]},
		{fromClient: false, seq: 21, data: b.wantS2C[20:]},
	}
	// Flow C: a segment is never captured: a Gap of its size.
	c := &flowSpec{client: net.IPv4(10, 0, 0, 3), server: net.IPv4(10, 0, 0, 2), cport: 40000, sport: 10010, ciss: 5, siss: 6}
	creq := append(append([]byte{}, pre...), pattern(300, 4)...)
	c.segs = []tcpSeg{
		{fromClient: true, syn: true},
		{fromClient: false, syn: true},
		{fromClient: true, seq: 1, data: creq[:100]},
		// creq[100:200] lost
		{fromClient: true, seq: 201, data: creq[200:]},
	}
	c.wantC2S = append(append([]byte{}, creq[:100]...), creq[200:]...)

	order := [][2]int{
		{0, 0}, {0, 1}, {1, 0}, {0, 2}, {0, 3}, {2, 0}, {0, 5}, {1, 1}, {0, 4}, {2, 1}, {0, 7}, {2, 2},
		{0, 6}, {1, 2}, {0, 9}, {2, 3}, {0, 8}, {1, 3}, {0, 10}, {0, 11}, {0, 12}, {0, 13},
	}
	path := writeTcpdumpPcap(t, order, []*flowSpec{a, b, c})
	src, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	got := streams(t, readAll(t, src))
	if len(got) != 3 {
		t.Fatalf("read %d connections, want 3", len(got))
	}
	for id, f := range []*flowSpec{a, b, c} {
		s := got[uint64(id+1)]
		if !bytes.Equal(s[ClientToServer].data, f.wantC2S) || !bytes.Equal(s[ServerToClient].data, f.wantS2C) {
			t.Errorf("conn %d: client→server %d bytes (want %d), server→client %d bytes (want %d)",
				id+1, len(s[0].data), len(f.wantC2S), len(s[1].data), len(f.wantS2C))
		}
		ci := src.Conn(uint64(id + 1))
		wantClient := net.JoinHostPort(f.client.String(), fmt.Sprint(f.cport))
		if ci.Client != wantClient {
			t.Errorf("conn %d: client %s, want %s", id+1, ci.Client, wantClient)
		}
	}
	if !got[1][0].closed || !got[1][1].closed {
		t.Error("conn 1: FINs not seen as Close")
	}
	if got[2][0].closed || got[2][1].closed {
		t.Error("conn 2 never closed in the capture but got a Close")
	}
	if got[3][0].gaps != 1 || len(got[3][0].pieces) != 2 || got[3][0].pieces[1].off != 200 {
		t.Errorf("conn 3: gaps %d pieces %+v, want one gap of 100 bytes before offset 200", got[3][0].gaps, got[3][0].pieces)
	}
}

func TestReadMidConnectionGapUnknown(t *testing.T) {
	f := &flowSpec{client: net.IPv4(10, 0, 0, 1), server: net.IPv4(10, 0, 0, 2), cport: 50000, sport: 10010, ciss: 1, siss: 2}
	f.segs = []tcpSeg{{fromClient: true, seq: 100, data: []byte("mid-stream")}}
	src, err := OpenFile(writeTcpdumpPcap(t, [][2]int{{0, 0}}, []*flowSpec{f}))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	out := readAll(t, src)
	if len(out) != 2 || out[1].Gap != -1 || string(out[1].Data) != "mid-stream" {
		t.Fatalf("chunks %+v, want Open then data with Gap -1", out)
	}
	// No preface, no SYN: the lower port is the server.
	if ci := src.Conn(1); ci.Server != "10.0.0.2:10010" {
		t.Errorf("server %s, want the lower port", ci.Server)
	}
}

// TestReadLinkTypes reads the same TCP segment under every supported link
// layer, in hand-written pcap files of both byte orders.
func TestReadLinkTypes(t *testing.T) {
	f := &flowSpec{client: net.IPv4(10, 0, 0, 1), server: net.IPv4(10, 0, 0, 2), cport: 50000, sport: 10010, ciss: 1, siss: 2}
	seg := tcpSeg{fromClient: true, seq: 1, data: []byte(h2Preface + "x")}
	eth4 := f.frame(t, seg)
	ip4 := eth4[14:]
	f6 := *f
	f6.client, f6.server = net.ParseIP("fd00::1"), net.ParseIP("fd00::2")
	ip6 := f6.frame(t, seg)[14:]
	sll := func(proto uint16, ip []byte) []byte {
		h := make([]byte, 16)
		binary.BigEndian.PutUint16(h[14:], proto)
		return append(h, ip...)
	}
	sll2 := func(proto uint16, ip []byte) []byte {
		h := make([]byte, 20)
		binary.BigEndian.PutUint16(h[0:], proto)
		return append(h, ip...)
	}
	vlan := append(append(append([]byte{}, eth4[:12]...), 0x81, 0x00, 0, 5, 0x08, 0x00), ip4...)
	for _, tc := range []struct {
		name  string
		link  uint32
		frame []byte
	}{
		{"ethernet", 1, eth4},
		{"ethernet vlan", 1, vlan},
		{"linux sll", 113, sll(0x0800, ip4)},
		{"linux sll2", 276, sll2(0x86dd, ip6)},
		{"null le", 0, append([]byte{2, 0, 0, 0}, ip4...)},
		{"null ipv6 be", 0, append([]byte{0, 0, 0, 30}, ip6...)},
		{"loop", 108, append([]byte{0, 0, 0, 2}, ip4...)},
		{"raw", 101, ip4},
		{"raw dlt 12", 12, ip6},
		{"ipv4", 228, ip4},
		{"ipv6", 229, ip6},
	} {
		for _, big := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s big=%v", tc.name, big), func(t *testing.T) {
				path := writeFile(t, "x.pcap", rawPcap(tc.link, big, tc.frame, []byte("not a packet")))
				src, err := OpenFile(path)
				if err != nil {
					t.Fatal(err)
				}
				defer src.Close()
				out := readAll(t, src)
				if len(out) != 2 || out[1].Dir != ClientToServer || string(out[1].Data) != h2Preface+"x" {
					t.Fatalf("chunks %+v", out)
				}
				if !out[1].Time.Equal(t0.Truncate(time.Microsecond)) {
					t.Errorf("time %v, want %v", out[1].Time, t0.Truncate(time.Microsecond))
				}
			})
		}
	}
}

// rawPcap writes a microsecond pcap by hand (pcapgo cannot write link types
// above 255).
func rawPcap(link uint32, big bool, frames ...[]byte) []byte {
	var bo binary.AppendByteOrder = binary.LittleEndian
	if big {
		bo = binary.BigEndian
	}
	var b []byte
	b = bo.AppendUint32(b, 0xa1b2c3d4)
	b = bo.AppendUint16(b, 2)
	b = bo.AppendUint16(b, 4)
	b = bo.AppendUint32(b, 0)
	b = bo.AppendUint32(b, 0)
	b = bo.AppendUint32(b, 262144)
	b = bo.AppendUint32(b, link)
	for _, fr := range frames {
		b = bo.AppendUint32(b, uint32(t0.Unix()))
		b = bo.AppendUint32(b, uint32(t0.Nanosecond()/1000))
		b = bo.AppendUint32(b, uint32(len(fr)))
		b = bo.AppendUint32(b, uint32(len(fr)))
		b = append(b, fr...)
	}
	return b
}

// TestReadShuffledSegments: many segments in random order with random
// retransmissions still give the exact stream.
func TestReadShuffledSegments(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	pre := []byte(h2Preface)
	want := append(append([]byte{}, pre...), pattern(50_000, 9)...)
	f := &flowSpec{client: net.IPv4(10, 0, 0, 1), server: net.IPv4(10, 0, 0, 2), cport: 45000, sport: 10010, ciss: 0xfffff000, siss: 3, wantC2S: want}
	f.segs = []tcpSeg{{fromClient: true, syn: true}, {fromClient: false, syn: true}}
	var data []tcpSeg
	for off := 0; off < len(want); {
		n := min(1+rng.Intn(1400), len(want)-off)
		data = append(data, tcpSeg{fromClient: true, seq: 1 + uint32(off), data: want[off : off+n]})
		off += n
	}
	// Local shuffles (a window of 8) and 10% retransmissions, as on a real wire.
	for i := range data {
		j := min(i+rng.Intn(8), len(data)-1)
		data[i], data[j] = data[j], data[i]
	}
	var withRetx []tcpSeg
	for _, s := range data {
		withRetx = append(withRetx, s)
		if rng.Intn(10) == 0 {
			withRetx = append(withRetx, s)
		}
	}
	f.segs = append(f.segs, withRetx...)
	var order [][2]int
	for i := range f.segs {
		order = append(order, [2]int{0, i})
	}
	src, err := OpenFile(writeTcpdumpPcap(t, order, []*flowSpec{f}))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	s := streams(t, readAll(t, src))[1]
	if !bytes.Equal(s[ClientToServer].data, want) || s[ClientToServer].gaps != 0 {
		t.Fatalf("reassembled %d bytes with %d gaps, want %d bytes", len(s[0].data), s[0].gaps, len(want))
	}
}

func TestReadBadInput(t *testing.T) {
	good, err := os.ReadFile(writePcapng(t, roundTripChunks()))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		data    []byte
		wantErr string
		wantOff int64
	}{
		{"empty", nil, "empty file", 0},
		{"text", []byte("hello, this is not a capture\n"), "not a pcap or pcapng file (magic 0x68656c6c)", 0},
		{"three bytes", []byte{0xd4, 0xc3, 0xb2}, "only 3 bytes", 0},
		{"pcap header cut", rawPcap(1, false)[:20], "truncated pcap file header", 0},
		{"bad pcapng byte order", append([]byte{0x0a, 0x0d, 0x0d, 0x0a, 28, 0, 0, 0}, make([]byte, 20)...), "byte-order magic", 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := OpenFile(writeFile(t, "bad", tc.data))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !isFormatError(err) {
				t.Fatalf("OpenFile: %v; want a FormatError containing %q", err, tc.wantErr)
			}
			var fe *FormatError
			errors.As(err, &fe)
			if fe.Offset != tc.wantOff || !strings.HasSuffix(fe.File, "bad") {
				t.Errorf("FormatError %+v", fe)
			}
		})
	}
	t.Run("truncated pcapng", func(t *testing.T) {
		cut := len(good) - 3000 // inside the last big segment
		src, err := OpenFile(writeFile(t, "cut.pcapng", good[:cut]))
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		chunks, err := readUntilErr(src)
		var fe *FormatError
		if !errors.As(err, &fe) || !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("error %v, want a FormatError wrapping io.ErrUnexpectedEOF", err)
		}
		if fe.Offset <= 0 || fe.Offset >= int64(cut) || !strings.Contains(err.Error(), "truncated pcapng block") {
			t.Errorf("FormatError %v: offset should point at the cut block", err)
		}
		n := 0
		for _, c := range chunks {
			n += len(c.Data)
		}
		if n < 200_000 {
			t.Errorf("delivered %d bytes before the damage, want most of the file", n)
		}
		if _, err2 := src.Next(); err2 != err {
			t.Errorf("Next after the error: %v, want the same error again", err2)
		}
	})
	t.Run("header only", func(t *testing.T) {
		src, err := OpenFile(writeFile(t, "h.pcap", rawPcap(1, false)))
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		if out := readAll(t, src); len(out) != 0 {
			t.Errorf("got %d chunks from an empty capture", len(out))
		}
	})
	t.Run("missing file", func(t *testing.T) {
		_, err := OpenFile(filepath.Join(t.TempDir(), "nope"))
		if !errors.Is(err, os.ErrNotExist) {
			t.Errorf("OpenFile of a missing file: %v", err)
		}
	})
}

func TestNgTimestampResolutions(t *testing.T) {
	for _, tc := range []struct {
		binary bool
		exp    uint8
		ts     uint64
		want   time.Time
	}{
		{false, 6, 1_700_000_000_123_456, time.Unix(1_700_000_000, 123_456_000)},
		{false, 9, 1_700_000_000_123_456_789, time.Unix(1_700_000_000, 123_456_789)},
		{false, 12, 1_700_000_000_123_456_789, time.Unix(1_700_000, 123_456)},
		{true, 1, 3, time.Unix(1, 500_000_000)},
		{true, 30, 3 << 29, time.Unix(1, 500_000_000)},
		{true, 64, 1 << 63, time.Unix(0, 500_000_000)},
		{false, 64, ^uint64(0), time.Unix(0, 0)},
		{true, 127, ^uint64(0), time.Unix(0, 0)},
	} {
		ifc := ngIface{tsBinary: tc.binary, tsExp: tc.exp}
		if got := ifc.time(tc.ts); !got.Equal(tc.want) {
			t.Errorf("resolution binary=%v exp=%d ts=%d: %v, want %v", tc.binary, tc.exp, tc.ts, got, tc.want)
		}
	}
}

func TestCreateFileMode(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := t.TempDir()
	p := filepath.Join(dir, "new.pcapng")
	f, err := CreateFile(p)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
		t.Errorf("new file mode %v, want 0600 with umask 0", st.Mode().Perm())
	}
	// An existing, more open file is truncated and closed down.
	if err := os.WriteFile(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(p, 0o644)
	f, err = CreateFile(p)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 || st.Size() != 0 {
		t.Errorf("existing file: mode %v size %d, want 0600 and truncated", st.Mode().Perm(), st.Size())
	}
	link := filepath.Join(dir, "link")
	os.Symlink(p, link)
	if _, err := CreateFile(link); err == nil {
		t.Error("CreateFile followed a symlink")
	}
}

func TestClientEndpoint(t *testing.T) {
	for _, tc := range []struct {
		id   uint64
		want string
	}{
		{1, "127.0.0.1:40001"},
		{25535, "127.0.0.1:65535"},
		{25536, "127.0.0.2:40001"},
		{25535*300 + 1, "127.0.1.45:40001"},
	} {
		ip, port := ClientEndpoint(tc.id)
		if got := net.JoinHostPort(ip.String(), fmt.Sprint(port)); got != tc.want {
			t.Errorf("ClientEndpoint(%d) = %s, want %s", tc.id, got, tc.want)
		}
	}
	// Connections 1 and 25536 share a port but stay apart.
	in := []Chunk{
		{Conn: 1, Kind: Open, Time: t0},
		{Conn: 25536, Kind: Open, Time: t0},
		{Conn: 1, Kind: Data, Time: t0, Data: []byte(h2Preface + "one")},
		{Conn: 25536, Kind: Data, Time: t0, Data: []byte(h2Preface + "two")},
	}
	src, err := OpenFile(writePcapng(t, in))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	got := streams(t, readAll(t, src))
	if len(got) != 2 || string(got[1][0].data) != h2Preface+"one" || string(got[2][0].data) != h2Preface+"two" {
		t.Errorf("read %d connections", len(got))
	}
	if ci := src.Conn(2); ci.Client != "127.0.0.2:40001" {
		t.Errorf("second connection's client %s", ci.Client)
	}
}

// TestReadIdleConnections: connections that never close are forgotten
// once idle, or when too many are open, so memory follows the connections
// in use; one that carries bytes again comes back as a new connection
// caught midway, with every byte.
func TestReadIdleConnections(t *testing.T) {
	for _, tc := range []struct {
		name  string
		n     int
		every time.Duration
		most  int
	}{
		{"idle", 3000, time.Second, 600 + flushEvery/3}, // 10 minutes' worth, and a flush's
		{"many", 20000, time.Millisecond, maxLiveConns + flushEvery/3},
	} {
		t.Run(tc.name, func(t *testing.T) { testIdleConnections(t, tc.n, tc.every, tc.most) })
	}
}

func testIdleConnections(t *testing.T, n int, every time.Duration, bound int) {
	var in []Chunk
	pre := []byte(h2Preface)
	for i := range n {
		at := t0.Add(time.Duration(i) * every)
		id := uint64(i + 1)
		in = append(in,
			Chunk{Conn: id, Kind: Open, Time: at},
			Chunk{Conn: id, Dir: ClientToServer, Kind: Data, Time: at.Add(time.Microsecond), Data: append(slices.Clone(pre), pattern(100, byte(i))...)},
			Chunk{Conn: id, Dir: ServerToClient, Kind: Data, Time: at.Add(2 * time.Microsecond), Data: pattern(60, byte(i+1))})
	}
	// The first connection carries bytes again 15 minutes after the last.
	later := pattern(300, 42)
	end := t0.Add(time.Duration(n)*every + 15*time.Minute)
	in = append(in, Chunk{Conn: 1, Dir: ClientToServer, Kind: Data, Time: end, Data: later, Offset: int64(len(pre) + 100)})
	src, err := OpenFile(writePcapng(t, in))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	fsrc := src.(*fileSource)
	most := 0
	var out []Chunk
	for {
		c, err := src.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		c.Data = slices.Clone(c.Data)
		out = append(out, c)
		most = max(most, len(fsrc.conns))
	}
	t.Logf("%d connections; at most %d held at once", n, most)
	if most > bound {
		t.Errorf("%d connections held at once, want at most %d", most, bound)
	}
	// The last Data is the first connection's, under a new ID, opened
	// midway.
	last := out[len(out)-1]
	if last.Kind != Data || !bytes.Equal(last.Data, later) || last.Conn <= uint64(n) {
		t.Fatalf("last chunk: conn %d kind %v %d bytes, want the %d bytes again under a new ID", last.Conn, last.Kind, len(last.Data), len(later))
	}
	opened := false
	for _, c := range out {
		if c.Conn == last.Conn && c.Kind == Open {
			opened = c.Midway
		}
		if c.Kind == Close {
			t.Fatalf("conn %d: a Close chunk, for a connection never closed", c.Conn)
		}
	}
	if !opened {
		t.Errorf("conn %d: no Open marked Midway", last.Conn)
	}
	// Every byte of every connection came through.
	var sent, got int
	for _, c := range in {
		sent += len(c.Data)
	}
	for _, c := range out {
		got += len(c.Data)
	}
	if got != sent {
		t.Errorf("%d bytes read, %d written", got, sent)
	}
	if ci := src.Conn(uint64(n)); ci.Client == "" {
		t.Errorf("Conn(%d) = %+v: an ended connection is no longer described", n, ci)
	}
}

// TestReadSkipsNotHTTP2: a TCP connection seen from its handshake whose
// client's first bytes are not the HTTP/2 preface (other traffic of a
// node) is skipped and counted; one caught midway is kept for the decoder
// to judge, and HTTP/2 ones are read whole.
func TestReadSkipsNotHTTP2(t *testing.T) {
	httpReq := []byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	httpResp := []byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
	h2 := append([]byte(h2Preface), pattern(40, 1)...)
	var in []Chunk
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * time.Millisecond) }
	for i := range 10 {
		id := uint64(i + 1)
		req, resp, midway := httpReq, httpResp, false
		switch i {
		case 3, 7:
			req, resp = h2, pattern(30, 2)
		case 5:
			midway = true // no handshake seen: kept
		}
		in = append(in,
			Chunk{Conn: id, Kind: Open, Time: at(3 * i), Midway: midway},
			Chunk{Conn: id, Dir: ClientToServer, Kind: Data, Time: at(3*i + 1), Data: req},
			Chunk{Conn: id, Dir: ServerToClient, Kind: Data, Time: at(3*i + 2), Data: resp},
			Chunk{Conn: id, Dir: ClientToServer, Kind: Close, Time: at(3*i + 2), Offset: int64(len(req))},
			Chunk{Conn: id, Dir: ServerToClient, Kind: Close, Time: at(3*i + 2), Offset: int64(len(resp))})
	}
	src, err := OpenFile(writePcapng(t, in))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	out := readAll(t, src)
	seen := map[string]int{} // first client bytes, by kind
	conns := map[uint64]bool{}
	for _, c := range out {
		conns[c.Conn] = true
		if c.Kind == Data && c.Dir == ClientToServer {
			switch {
			case bytes.HasPrefix(c.Data, []byte(h2Preface)):
				seen["h2"]++
			case bytes.HasPrefix(c.Data, []byte("GET")):
				seen["http"]++
			}
		}
	}
	n, ex := src.(*fileSource).NotHTTP2()
	t.Logf("%d connections read, %v; %d skipped, e.g. %+v", len(conns), seen, n, ex)
	if seen["h2"] != 2 || seen["http"] != 1 || len(conns) != 3 {
		t.Errorf("read %d connections (%v), want the 2 HTTP/2 ones and the one caught midway", len(conns), seen)
	}
	if n != 7 || ex.ID != 1 || ex.Client == "" {
		t.Errorf("NotHTTP2() = %d, %+v; want 7, the first being connection 1", n, ex)
	}
}
