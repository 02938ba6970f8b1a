package capture

import (
	"bytes"
	"math/rand"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// TestPlainPacketLikeGopacket: the data and FIN segments written without
// gopacket are the bytes gopacket's layers and pcapgo's writer give, in
// either direction, payloads of every length parity, any sequence number,
// checksums with every carry.
func TestPlainPacketLikeGopacket(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	at := time.Date(2026, 11, 30, 10, 0, 0, 123456789, time.UTC)
	for i := range 200 {
		var fast, slow bytes.Buffer
		fw := NewPcapngWriter(&fast)
		sw := NewPcapngWriter(&slow)
		conn := uint64(1 + rng.Intn(70000))
		f := &synFlow{}
		f.ip, f.port = ClientEndpoint(conn)
		d := Dir(rng.Intn(2))
		fin := rng.Intn(4) == 0
		payload := make([]byte, rng.Intn(3000))
		switch {
		case i == 0:
			payload = make([]byte, MaxSegment)
		case i%5 == 1:
			payload = make([]byte, i%7) // padded to Ethernet's minimum
		}
		rng.Read(payload)
		if i%10 == 2 { // every word carries
			for k := range payload {
				payload[k] = 0xff
			}
		}
		if fin {
			payload = nil
		}
		seq, ack := rng.Uint32(), rng.Uint32()
		fw.ip.Id, sw.ip.Id = uint16(i*7), uint16(i*7)
		if err := fw.plainPacket(at, f, d, fin, seq, ack, payload); err != nil {
			t.Fatal(err)
		}
		// The reference: gopacket's serialization, pcapgo's block.
		sw.tcp = layers.TCP{Seq: seq, ACK: true, FIN: fin, PSH: len(payload) > 0, Window: 0xffff, Ack: ack}
		sw.ip.SrcIP, sw.ip.DstIP = f.ip, ServerIP
		sw.tcp.SrcPort, sw.tcp.DstPort = layers.TCPPort(f.port), ServerPort
		sw.eth.SrcMAC, sw.eth.DstMAC = macClient, macServer
		if d == ServerToClient {
			sw.ip.SrcIP, sw.ip.DstIP = ServerIP, f.ip
			sw.tcp.SrcPort, sw.tcp.DstPort = ServerPort, layers.TCPPort(f.port)
			sw.eth.SrcMAC, sw.eth.DstMAC = macServer, macClient
		}
		sw.ip.Id++
		sw.tcp.SetNetworkLayerForChecksum(&sw.ip)
		if err := gopacket.SerializeLayers(sw.buf, sw.opts, &sw.eth, &sw.ip, &sw.tcp, gopacket.Payload(payload)); err != nil {
			t.Fatal(err)
		}
		frame := sw.buf.Bytes()
		if err := sw.ng.WritePacket(gopacket.CaptureInfo{Timestamp: at, CaptureLength: len(frame), Length: len(frame)}, frame); err != nil {
			t.Fatal(err)
		}
		if err := fw.Flush(); err != nil {
			t.Fatal(err)
		}
		if err := sw.Flush(); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(fast.Bytes(), slow.Bytes()) {
			a, b := fast.Bytes(), slow.Bytes()
			k := 0
			for k < len(a) && k < len(b) && a[k] == b[k] {
				k++
			}
			t.Fatalf("packet %d (dir %v, fin %v, %d bytes): differs from gopacket's at byte %d of %d/%d\n fast %x\n slow %x", i, d, fin, len(payload), k, len(a), len(b), around(a, k), around(b, k))
		}
	}
}

func around(b []byte, k int) []byte {
	return b[max(0, k-40):min(len(b), k+40)]
}
