package decode

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// truthBlocks decodes blocks from the start with x/net's decoder.
func truthBlocks(t *testing.T, blocks [][]byte) [][]hpack.HeaderField {
	t.Helper()
	d := hpack.NewDecoder(defaultTableSize, nil)
	d.SetAllowedMaxDynamicTableSize(maxTableSize)
	out := make([][]hpack.HeaderField, len(blocks))
	for i, b := range blocks {
		fs, err := d.DecodeFull(b)
		if err != nil {
			t.Fatalf("block %d: %v", i, err)
		}
		out[i] = fs
	}
	return out
}

// checkPartial decodes blocks[from:] with a table begun unknown and
// checks every field it claims to know against the truth; once the table
// is exact it goes on with the seeded hpack.Decoder, which must decode
// the rest exactly. It returns how many blocks had unknown fields, and
// the block where the table became exact (-1 if it did not).
func checkPartial(t *testing.T, blocks [][]byte, truth [][]hpack.HeaderField, from int, limit uint32) (partial, exactAt int) {
	t.Helper()
	tab := newPartialTable(limit, true)
	var bf blockFields
	exactAt = -1
	var seeded *hpack.Decoder
	for i := from; i < len(blocks); i++ {
		if seeded != nil {
			fs, err := seeded.DecodeFull(blocks[i])
			if err != nil || !slices.Equal(fs, truth[i]) {
				t.Fatalf("from %d, block %d after the seed: %v\n got %v\nwant %v", from, i, err, fs, truth[i])
			}
			continue
		}
		if err := tab.decode(blocks[i], &bf); err != nil {
			t.Fatalf("from %d, block %d: %v", from, i, err)
		}
		want := truth[i]
		if len(bf.fields)+len(bf.unknown) != len(want) {
			t.Fatalf("from %d, block %d: %d known + %d unknown fields, want %d", from, i, len(bf.fields), len(bf.unknown), len(want))
		}
		// Put the known fields back in their places.
		k, u := 0, 0
		for j := range want {
			if u < len(bf.unknown) && bf.unknown[u].at == k {
				if uf := bf.unknown[u]; uf.slot < 0 && uf.value != want[j].Value {
					t.Fatalf("from %d, block %d field %d: literal value %q, want %q", from, i, j, uf.value, want[j].Value)
				}
				u++
				continue
			}
			if bf.fields[k] != want[j] {
				t.Fatalf("from %d, block %d field %d: %v, want %v", from, i, j, bf.fields[k], want[j])
			}
			k++
		}
		if len(bf.unknown) > 0 {
			partial++
		}
		if tab.exact() {
			exactAt = i
			d, err := tab.seed(minTableSize)
			if err != nil {
				t.Fatal(err)
			}
			seeded = d
		}
	}
	return partial, exactAt
}

// encodeBlocks encodes n header lists made by fields(i) with x/net's
// encoder; before(i) may change the encoder first.
func encodeBlocks(t *testing.T, n int, before func(*hpack.Encoder, int), fields func(int) []hpack.HeaderField) [][]byte {
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	var blocks [][]byte
	for i := range n {
		buf.Reset()
		if before != nil {
			before(enc, i)
		}
		for _, f := range fields(i) {
			if err := enc.WriteField(f); err != nil {
				t.Fatal(err)
			}
		}
		blocks = append(blocks, bytes.Clone(buf.Bytes()))
	}
	return blocks
}

// Header lists like kubelet's, encoded by x/net's hpack.Encoder, decoded
// from every block on: what is claimed known is exact. (Varying values
// of a name not in the static table, grpc-timeout, traceparent, take
// their name from the previous such entry: when that chain starts in an
// unknown entry the name stays unknown, and the table never becomes
// exact; the next test has names that can be known.)
func TestPartialTableEncoder(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	blocks := encodeBlocks(t, 400, func(enc *hpack.Encoder, i int) {
		if i == 150 {
			enc.SetMaxDynamicTableSizeLimit(2048) // a size update
		}
	}, func(i int) []hpack.HeaderField {
		fields := []hpack.HeaderField{
			{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"},
			{Name: ":path", Value: fmt.Sprintf("/runtime.v1.RuntimeService/Method%d", rng.IntN(12))},
			{Name: ":authority", Value: "localhost"}, {Name: "content-type", Value: "application/grpc"},
			{Name: "user-agent", Value: "grpc-go/1.82.1"}, {Name: "te", Value: "trailers"},
			{Name: "grpc-timeout", Value: fmt.Sprintf("%dm", 119990+rng.IntN(10))},
		}
		if i%7 == 0 {
			fields = append(fields, hpack.HeaderField{Name: "traceparent", Value: fmt.Sprintf("00-%032x-%016x-01", rng.Uint64(), rng.Uint64())})
		}
		if i%50 == 0 {
			fields = append(fields, hpack.HeaderField{Name: "authorization", Value: "secret", Sensitive: true})
		}
		return fields
	})
	truth := truthBlocks(t, blocks)
	for from := range blocks {
		partial, _ := checkPartial(t, blocks, truth, from, defaultTableSize)
		if from == 0 && partial > 0 {
			t.Errorf("from the first block: %d blocks with unknown fields", partial)
		}
	}
}

// When the entries inserted fill the table (the size known from a size
// update, or the default assumed), no unknown entry is left: decoding
// goes on with x/net's decoder, seeded, and matches it exactly.
func TestPartialTableExact(t *testing.T) {
	for _, update := range []bool{false, true} {
		rng := rand.New(rand.NewPCG(3, 3))
		blocks := encodeBlocks(t, 300, func(enc *hpack.Encoder, i int) {
			if update && i == 100 {
				enc.SetMaxDynamicTableSizeLimit(1024)
			}
		}, func(int) []hpack.HeaderField {
			// Static names: a literal's name is always known.
			return []hpack.HeaderField{
				{Name: ":method", Value: "POST"}, {Name: ":path", Value: fmt.Sprintf("/p/%d", rng.IntN(20))},
				{Name: "content-length", Value: fmt.Sprint(rng.IntN(400))},
			}
		})
		truth := truthBlocks(t, blocks)
		var exact int
		for from := range blocks[:200] {
			_, at := checkPartial(t, blocks, truth, from, defaultTableSize)
			if at < 0 {
				t.Errorf("update %v, from %d: never exact", update, from)
			}
			exact++
		}
		t.Logf("update %v: %d of 200 starts became exact", update, exact)
	}
}

// An index past what the table can hold, when the table size assumed is
// wrong, is a contradiction, never a wrong field.
func TestPartialTableContradiction(t *testing.T) {
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	enc.SetMaxDynamicTableSizeLimit(1 << 16)
	enc.SetMaxDynamicTableSize(1 << 16) // more than the 4096 assumed
	var blocks [][]byte
	for i := range 300 {
		buf.Reset()
		if err := enc.WriteField(hpack.HeaderField{Name: "x-n", Value: fmt.Sprintf("%04d", i%150)}); err != nil {
			t.Fatal(err)
		}
		blocks = append(blocks, bytes.Clone(buf.Bytes()))
	}
	truth := truthBlocks(t, blocks)
	tab := newPartialTable(defaultTableSize, true)
	var bf blockFields
	var contradiction bool
	for i := 100; i < len(blocks); i++ {
		if err := tab.decode(blocks[i], &bf); err != nil {
			if err != errTableContradiction {
				t.Fatalf("block %d: %v", i, err)
			}
			contradiction = true
			break
		}
		for _, f := range bf.fields {
			if !slices.Contains(truth[i], f) {
				t.Fatalf("block %d: %v, want %v", i, f, truth[i])
			}
		}
	}
	if !contradiction {
		t.Errorf("no contradiction found with a table 16 times the size assumed")
	}
}

// Filling a slot names its references and the names taken from it.
func TestPartialTableFill(t *testing.T) {
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	write := func(fs ...hpack.HeaderField) []byte {
		buf.Reset()
		for _, f := range fs {
			if err := enc.WriteField(f); err != nil {
				t.Fatal(err)
			}
		}
		return bytes.Clone(buf.Bytes())
	}
	path := hpack.HeaderField{Name: ":path", Value: "/runtime.v1.RuntimeService/Version"}
	write(path, hpack.HeaderField{Name: "x-a", Value: "1"}) // before decoding begins
	b1 := write(path, hpack.HeaderField{Name: "x-a", Value: "2"})
	b2 := write(path)
	tab := newPartialTable(defaultTableSize, true)
	var bf blockFields
	if err := tab.decode(b1, &bf); err != nil {
		t.Fatal(err)
	}
	// :path is unknown slot 1 (x-a: 1 is slot 0); x-a: 2 has slot 0's name.
	if len(bf.fields) != 0 || len(bf.unknown) != 2 || bf.unknown[0].slot != 1 || bf.unknown[1].slot != -1 ||
		bf.unknown[1].nameSlot != 0 || bf.unknown[1].value != "2" {
		t.Fatalf("fields %v unknown %+v", bf.fields, bf.unknown)
	}
	st := tab.slot(1)
	st.filled, st.field = true, path
	if err := tab.decode(b2, &bf); err != nil {
		t.Fatal(err)
	}
	if len(bf.fields) != 1 || bf.fields[0] != path || !bf.filled || len(bf.unknown) != 0 {
		t.Fatalf("after the fill: fields %v unknown %+v filled %v", bf.fields, bf.unknown, bf.filled)
	}
}

// blocksOf returns the header blocks of a direction's stream, in
// order, as x/net's Framer reads them.
func blocksOf(t *testing.T, b []byte) [][]byte {
	t.Helper()
	if bytes.HasPrefix(b, []byte(http2.ClientPreface)) {
		b = b[len(http2.ClientPreface):]
	}
	fr := http2.NewFramer(nil, bytes.NewReader(b))
	fr.SetMaxReadFrameSize(16 << 20)
	var blocks [][]byte
	var blk []byte
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return blocks
		}
		switch f := f.(type) {
		case *http2.HeadersFrame:
			blk = append([]byte(nil), f.HeaderBlockFragment()...)
			if f.HeadersEnded() {
				blocks = append(blocks, blk)
			}
		case *http2.ContinuationFrame:
			blk = append(blk, f.HeaderBlockFragment()...)
			if f.HeadersEnded() {
				blocks = append(blocks, blk)
			}
		}
	}
}

// On the real captures, each direction's header blocks decoded from every
// block on: what is claimed known is exact.
func TestPartialTableCaptures(t *testing.T) {
	for _, file := range kubeletCaptures(t) {
		t.Run(captureName(file), func(t *testing.T) {
			var blocks, partial, exact int
			for _, b := range dirStreams(readChunks(t, file)) {
				bl := blocksOf(t, b)
				truth := truthBlocks(t, bl)
				for from := range bl {
					p, at := checkPartial(t, bl, truth, from, defaultTableSize)
					partial += p
					if at >= 0 {
						exact++
					}
				}
				blocks += len(bl)
			}
			t.Logf("%d blocks, %d starts: %d blocks read with unknown fields, %d starts became exact", blocks, blocks, partial, exact)
		})
	}
}
