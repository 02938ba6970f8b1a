package sanitize

import (
	"bytes"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/criseq/criseq/capture"
	"github.com/criseq/criseq/decode"
)

// fuzzChunks cuts data into the chunks of one connection: each run of
// bytes goes to the direction its length byte's high bit names.
func fuzzChunks(data []byte) []capture.Chunk {
	t0 := time.Unix(1700000000, 0)
	chunks := []capture.Chunk{{Conn: 1, Kind: capture.Open, Time: t0}}
	var off [2]int64
	for i := 0; len(data) > 0; i++ {
		n := int(data[0] & 0x7f)
		dir := capture.Dir(data[0] >> 7)
		data = data[1:]
		n = min(max(n, 1), len(data))
		chunks = append(chunks, capture.Chunk{Conn: 1, Dir: dir, Kind: capture.Data, Time: t0.Add(time.Duration(i) * time.Microsecond), Data: data[:n], Offset: off[dir]})
		off[dir] += int64(n)
		data = data[n:]
	}
	return chunks
}

// edgeSeed is the first connection of the edge capture as fuzzChunks
// reads it.
func edgeSeed(f *testing.F) []byte {
	var seed []byte
	for _, c := range edgeCapture(f) {
		if c.Conn != 1 || c.Kind != capture.Data {
			continue
		}
		for b := c.Data; len(b) > 0; {
			n := min(len(b), 127)
			seed = append(seed, byte(n)|byte(c.Dir)<<7)
			seed = append(seed, b[:n]...)
			b = b[n:]
		}
	}
	return seed
}

// streams joins the bytes written per direction.
func streams(chunks []capture.Chunk) [2][]byte {
	var s [2][]byte
	for _, c := range chunks {
		s[c.Dir] = append(s[c.Dir], c.Data...)
	}
	return s
}

// FuzzRewrite: any bytes on a connection rewrite without a panic into
// chunks criseq decodes without a panic, and rewriting the result again
// changes nothing: what sanitize writes has no secret left to replace.
// Seeds are in testdata/fuzz/FuzzRewrite.
func FuzzRewrite(f *testing.F) {
	seed := edgeSeed(f)
	f.Add(seed)
	f.Add([]byte("\x18PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var once memSink
		if _, err := Rewrite(&sliceSource{chunks: fuzzChunks(data)}, &once, Options{}); err != nil {
			t.Fatal(err)
		}
		decode.DecodeAll(&sliceSource{chunks: once.chunks}, decode.Options{})
		var twice memSink
		if _, err := Rewrite(&sliceSource{chunks: once.chunks}, &twice, Options{}); err != nil {
			t.Fatal(err)
		}
		a, b := streams(once.chunks), streams(twice.chunks)
		for d := range a {
			if !bytes.Equal(a[d], b[d]) {
				t.Fatalf("%v: rewriting again changes %d bytes into %d", capture.Dir(d), len(a[d]), len(b[d]))
			}
		}
	})
}

// FuzzLargePath: with every message taken as large (checked one element
// at a time, framed as written, its buffer kept for the next), any bytes
// rewrite into the very file, counts and notes of the whole-message path,
// also when queued bytes go out early (maxQueued).
func FuzzLargePath(f *testing.F) {
	seed := edgeSeed(f)
	f.Add(seed, false)
	f.Add(seed, true)
	f.Fuzz(func(t *testing.T, data []byte, smallQueue bool) {
		oldQ, oldL := maxQueued, largeMessage
		defer func() { maxQueued, largeMessage = oldQ, oldL }()
		if smallQueue {
			maxQueued = 512
		}
		chunks := fuzzChunks(data)
		largeMessage = math.MaxInt
		want, wst, wnotes := rewriteFile(t, chunks)
		largeMessage = 0
		got, gst, gnotes := rewriteFile(t, chunks)
		// Notes of messages cut at the end come in map order.
		slices.Sort(gnotes)
		slices.Sort(wnotes)
		if !bytes.Equal(got, want) || gst != wst || !slices.Equal(gnotes, wnotes) {
			t.Fatalf("taken as large: %d bytes, %+v, notes %q; whole: %d bytes, %+v, notes %q", len(got), gst, gnotes, len(want), wst, wnotes)
		}
	})
}
