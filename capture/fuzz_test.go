package capture

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
)

// FuzzOpenFile: any bytes give chunks and then io.EOF or a *FormatError;
// never a panic, never a hang. Seeds are in testdata/fuzz/FuzzOpenFile.
func FuzzOpenFile(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("not a capture"))
	f.Add(rawPcap(1, false))
	fl := &flowSpec{client: net.IPv4(10, 0, 0, 1), server: net.IPv4(10, 0, 0, 2), cport: 40000, sport: 10010, ciss: 1, siss: 2}
	f.Add(rawPcap(1, true, fl.frame(f, tcpSeg{fromClient: true, syn: true}), fl.frame(f, tcpSeg{fromClient: true, seq: 1, data: []byte(h2Preface)})))
	// pcapng written by hand with interface options: resolutions in
	// powers of 10 and 2, an offset, either byte order.
	syn := fl.frame(f, tcpSeg{fromClient: true, syn: true})
	pre := fl.frame(f, tcpSeg{fromClient: true, seq: 1, data: []byte(h2Preface)})
	f.Add(rawPcapng(false, 9, 1_700_000_000, []uint64{1, 2}, syn, pre))
	f.Add(rawPcapng(true, 0x80|20, -5, []uint64{1 << 40, 1<<40 + 1}, syn, pre))
	f.Add(rawPcap(276, true, append(make([]byte, 20), pre[14:]...)))
	f.Fuzz(func(t *testing.T, data []byte) {
		src, err := NewReader(bytes.NewReader(data), "fuzz")
		if err != nil {
			if !isFormatError(err) {
				t.Fatalf("NewReader: %v is not a *FormatError", err)
			}
			return
		}
		defer src.Close()
		for i := 0; ; i++ {
			c, err := src.Next()
			if err != nil {
				if err != io.EOF && !isFormatError(err) {
					t.Fatalf("Next: %v is neither io.EOF nor a *FormatError", err)
				}
				break
			}
			if i > 1_000_000 {
				t.Fatal("more chunks than the input can hold")
			}
			if c.Conn == 0 || c.Dir > ServerToClient || c.Kind > Close {
				t.Fatalf("bad chunk %+v", c)
			}
			if ci := src.Conn(c.Conn); ci.ID != c.Conn || ci.Client == "" {
				t.Fatalf("Conn(%d) = %+v", c.Conn, ci)
			}
		}
		if _, err := src.Next(); err == nil || errors.Is(err, io.ErrNoProgress) {
			t.Fatalf("Next after the end: %v", err)
		}
	})
}
