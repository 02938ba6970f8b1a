package decode_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/criseq/criseq/capture"
	"github.com/criseq/criseq/decode"
)

// tableConn is a connection whose server allows the client's HPACK
// encoder a dynamic table of serverTable bytes (0: no such setting), and
// whose client then uses a table of clientTable bytes for two requests that
// fill it beyond 64 KiB: the second names the first's oldest fields by
// index. Frames are written with x/net's Framer and hpack, as grpc-go's
// are; no grpc-go peer sends a table size this large.
func tableConn(t *testing.T, serverTable, clientTable uint32) []capture.Chunk {
	t.Helper()
	var cs, sc, hb bytes.Buffer
	cfr, sfr := http2.NewFramer(&cs, nil), http2.NewFramer(&sc, nil)
	enc := hpack.NewEncoder(&hb)
	cs.WriteString(http2.ClientPreface)
	cfr.WriteSettings()
	if serverTable > 0 {
		sfr.WriteSettings(http2.Setting{ID: http2.SettingHeaderTableSize, Val: serverTable})
	} else {
		sfr.WriteSettings()
	}
	enc.SetMaxDynamicTableSizeLimit(clientTable)
	enc.SetMaxDynamicTableSize(clientTable)
	for sid := uint32(1); sid <= 3; sid += 2 {
		hb.Reset()
		for _, f := range []hpack.HeaderField{{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"},
			{Name: ":path", Value: "/runtime.v1.RuntimeService/Version"}, {Name: ":authority", Value: "localhost"},
			{Name: "content-type", Value: "application/grpc"}} {
			enc.WriteField(f)
		}
		// 100 fields of 1 KiB: 100 KiB of table, all indexed.
		for i := range 100 {
			enc.WriteField(hpack.HeaderField{Name: "x-fill-" + string(rune('a'+i%26)) + strings.Repeat("n", i/26), Value: strings.Repeat("v", 1000)})
		}
		b := hb.Bytes()
		for first := true; first || len(b) > 0; first = false {
			n := min(len(b), 16384)
			if first {
				cfr.WriteHeaders(http2.HeadersFrameParam{StreamID: sid, BlockFragment: b[:n], EndHeaders: n == len(b)})
			} else {
				cfr.WriteContinuation(sid, n == len(b), b[:n])
			}
			b = b[n:]
		}
		cfr.WriteData(sid, true, []byte{0, 0, 0, 0, 0})
	}
	t0 := time.Unix(1700000000, 0)
	return []capture.Chunk{
		{Conn: 1, Kind: capture.Open, Time: t0},
		{Conn: 1, Dir: capture.ServerToClient, Kind: capture.Data, Time: t0, Data: sc.Bytes()},
		{Conn: 1, Dir: capture.ClientToServer, Kind: capture.Data, Time: t0.Add(time.Millisecond), Data: cs.Bytes()},
	}
}

func decodeChunks(chunks []capture.Chunk) ([]*decode.Call, []*decode.ConnError) {
	var calls []*decode.Call
	d := decode.New(decode.Options{OnCall: func(c *decode.Call) { calls = append(calls, c) }})
	for _, c := range chunks {
		d.Feed(c)
	}
	d.Close()
	return calls, d.Errors()
}

// TestPeerHeaderTableAbove64KiB: a server that allows its client an HPACK
// table larger than the 64 KiB accepted from anyone gets it: the client's
// table size update and the fields it then names by index decode.
func TestPeerHeaderTableAbove64KiB(t *testing.T) {
	const big = 256 << 10
	calls, errs := decodeChunks(tableConn(t, big, big))
	if len(errs) != 0 {
		t.Fatalf("a table of %d bytes, as the server allowed: %v", big, errs)
	}
	if len(calls) != 2 {
		t.Fatalf("%d calls decoded, want 2", len(calls))
	}
	for _, c := range calls {
		if c.Method != "/runtime.v1.RuntimeService/Version" || len(c.RequestHeaders) != 105 {
			t.Errorf("stream %d: %s with %d header fields, want Version with 105", c.Stream, c.Method, len(c.RequestHeaders))
		}
	}

	// Without the server's SETTINGS the same table is refused: the test
	// above is about the setting.
	if _, errs := decodeChunks(tableConn(t, 0, big)); len(errs) == 0 {
		t.Error("a table of 256 KiB no server allowed was accepted")
	}
	// Nor beyond the cap, whatever the server says.
	if _, errs := decodeChunks(tableConn(t, 64<<20, 32<<20)); len(errs) == 0 {
		t.Error("a table of 32 MiB was accepted")
	}
}
