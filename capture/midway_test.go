package capture

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// TestPcapngMidwayRoundTrip: a connection caught midway (an attached
// capture) is written without a handshake and with a comment on its first
// packet; reading the file back gives Midway on its Open, its bytes, and a
// normal Open for a connection seen from its start. tshark opens the file
// and shows the comment.
func TestPcapngMidwayRoundTrip(t *testing.T) {
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	mid := pattern(5000, 7) // no preface: the connection began long ago
	in := []Chunk{
		{Conn: 1, Kind: Open, Time: at(0), Midway: true},
		{Conn: 1, Dir: ServerToClient, Kind: Data, Time: at(1), Data: pattern(300, 1)},
		{Conn: 1, Dir: ClientToServer, Kind: Data, Time: at(2), Data: mid},
		{Conn: 2, Kind: Open, Time: at(3)},
		{Conn: 2, Dir: ClientToServer, Kind: Data, Time: at(4), Data: append([]byte(h2Preface), 1, 2, 3)},
		{Conn: 1, Dir: ClientToServer, Kind: Data, Time: at(5), Data: pattern(70_000, 2), Offset: 5000},
		{Conn: 1, Dir: ClientToServer, Kind: Close, Time: at(6), Offset: 75_000},
		{Conn: 1, Dir: ServerToClient, Kind: Close, Time: at(7), Offset: 300},
	}
	path := writePcapng(t, in)
	src, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	out := readAll(t, src)
	opens := map[uint64]bool{}
	var got [2]bytes.Buffer
	firstGap := map[Dir]int{}
	for _, c := range out {
		switch {
		case c.Kind == Open:
			opens[c.Conn] = c.Midway
		case c.Conn == 1 && c.Kind == Data:
			if got[c.Dir].Len() == 0 {
				firstGap[c.Dir] = c.Gap
			} else if c.Gap != 0 {
				t.Errorf("conn 1 %v: gap %d inside the stream", c.Dir, c.Gap)
			}
			got[c.Dir].Write(c.Data)
		}
	}
	if want := map[uint64]bool{1: true, 2: false}; len(opens) != 2 || opens[1] != want[1] || opens[2] != want[2] {
		t.Errorf("Open chunks' Midway: %v, want %v", opens, want)
	}
	if !bytes.Equal(got[ClientToServer].Bytes(), append(append([]byte(nil), mid...), pattern(70_000, 2)...)) {
		t.Errorf("conn 1 client→server: %d bytes read back, want 75000 as written", got[ClientToServer].Len())
	}
	if !bytes.Equal(got[ServerToClient].Bytes(), pattern(300, 1)) {
		t.Errorf("conn 1 server→client: %d bytes read back, want 300", got[ServerToClient].Len())
	}
	// A direction seen from its middle starts with a gap of unknown size.
	if firstGap[ClientToServer] != -1 || firstGap[ServerToClient] != -1 {
		t.Errorf("first chunks' gaps %v, want -1 (unknown) in both directions", firstGap)
	}
	if ci := src.Conn(1); ci.Server != "127.0.0.1:10010" {
		t.Errorf("conn 1 server %q: the runtime must stay the server without preface or SYN", ci.Server)
	}

	needTshark(t)
	lines := tshark(t, path, "-T", "fields", "-e", "frame.number", "-e", "tcp.flags.syn", "-e", "frame.comment")
	comments, syns := 0, 0
	for _, l := range lines {
		if strings.Contains(l, "capture began mid-connection") {
			comments++
		}
		if f := strings.Fields(l); len(f) > 1 && (f[1] == "1" || f[1] == "True") {
			syns++
		}
	}
	if comments != 1 {
		t.Errorf("tshark shows %d mid-connection comments, want 1 (connection 1's first packet):\n%s", comments, strings.Join(lines, "\n"))
	}
	if syns != 2 {
		t.Errorf("tshark shows %d SYN packets, want 2 (connection 2's handshake only)", syns)
	}
}
