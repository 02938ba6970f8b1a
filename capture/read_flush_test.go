package capture

import (
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// TestReadHoleGivenUpInTime: a segment never captured holds back the bytes
// behind it only lostAfter of capture time, not to the end of the file,
// while another connection keeps the capture going (and many idle
// connections, which the reader does not visit when no hole waits).
func TestReadHoleGivenUpInTime(t *testing.T) {
	pre := []byte(h2Preface)
	req := append(append([]byte{}, pre...), pattern(300, 4)...)
	lossy := &flowSpec{client: net.IPv4(10, 0, 0, 3), server: net.IPv4(10, 0, 0, 2), cport: 40000, sport: 10010, ciss: 5, siss: 6}
	lossy.segs = []tcpSeg{
		{fromClient: true, syn: true},
		{fromClient: false, syn: true},
		{fromClient: true, seq: 1, data: req[:100]},
		// req[100:200] lost
		{fromClient: true, seq: 201, data: req[200:]},
	}
	busy := &flowSpec{client: net.IPv4(10, 0, 0, 4), server: net.IPv4(10, 0, 0, 2), cport: 40001, sport: 10010, ciss: 7, siss: 8}
	// (HTTP/2: a connection whose first bytes are not the preface is skipped.)
	busy.segs = []tcpSeg{{fromClient: true, syn: true}, {fromClient: false, syn: true}, {fromClient: true, seq: 1, data: pre}}
	for i := range 20 {
		busy.segs = append(busy.segs, tcpSeg{fromClient: true, seq: 1 + uint32(len(pre)+i*10), data: pattern(10, byte(i))})
	}

	var buf bytes.Buffer
	w := pcapgo.NewWriter(&buf)
	if err := w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	write := func(at time.Duration, fr []byte) {
		ci := gopacket.CaptureInfo{Timestamp: t0.Add(at), CaptureLength: len(fr), Length: len(fr)}
		if err := w.WritePacket(ci, fr); err != nil {
			t.Fatal(err)
		}
	}
	// Idle connections: a handshake each, never a byte.
	for i := range 200 {
		idle := &flowSpec{client: net.IPv4(10, 1, byte(i/250), byte(i%250+1)), server: net.IPv4(10, 0, 0, 2), cport: 50000, sport: 10010, ciss: 1, siss: 2}
		write(0, idle.frame(t, tcpSeg{fromClient: true, syn: true}))
	}
	for i, s := range lossy.segs {
		write(time.Duration(i)*time.Millisecond, lossy.frame(t, s))
	}
	for i, s := range busy.segs {
		write(time.Second+time.Duration(i)*500*time.Millisecond, busy.frame(t, s))
	}
	path := writeFile(t, "hole.pcap", buf.Bytes())
	src, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	out := readAll(t, src)
	after := -1 // index of the bytes behind the hole
	var busyTimes []time.Time
	for i, c := range out {
		if c.Kind != Data {
			continue
		}
		if c.Gap == 100 && c.Offset == 200 {
			after = i
		}
		if after < 0 && c.Kind == Data && len(c.Data) == 10 {
			busyTimes = append(busyTimes, c.Time)
		}
	}
	if after < 0 {
		t.Fatalf("no chunk at offset 200 after a gap of 100 bytes: %d chunks", len(out))
	}
	// The hole is given up at the first flush lostAfter past the segment
	// behind it: the busy connection's chunks up to then come first, the
	// rest after.
	if len(busyTimes) == 0 || len(busyTimes) == 20 {
		t.Fatalf("%d of the busy connection's 20 chunks came before the bytes behind the hole; want the hole given up in between", len(busyTimes))
	}
	if last := busyTimes[len(busyTimes)-1].Sub(t0); last < lostAfter || last > lostAfter+flushPeriod+time.Second {
		t.Errorf("bytes behind the hole came after the busy chunk at +%v; want them given up about %v after the loss", last, lostAfter)
	}
}
