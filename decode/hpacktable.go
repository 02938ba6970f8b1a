package decode

import (
	"errors"
	"fmt"

	"golang.org/x/net/http2/hpack"
)

// The header block layer, for a direction caught midway (or after lost
// bytes): HPACK decoding with a dynamic table whose older entries are
// unknown.
//
// Entries enter a dynamic table at index 62 and leave oldest first. So
// once decoding starts at a header block, every entry inserted from then
// on is known, at a known index; an index past them is one of the entries
// that were there before, "unknown slot k" (k = 0 for the newest of them),
// and slot k keeps that number until it is evicted. Eviction only ever
// takes the oldest entries, so the known ones keep their indexes whatever
// the sizes of the unknown ones. When the known entries fill the table
// (their sizes reach the table size, which a size update tells exactly),
// no unknown entry is left: the table is exact again, and decoding goes
// back to x/net's hpack.Decoder, seeded with those entries.

// staticTable is HPACK's static table (RFC 7541 appendix A), read from
// x/net's decoder rather than copied.
var staticTable = func() [62]hpack.HeaderField {
	var t [62]hpack.HeaderField
	d := hpack.NewDecoder(0, nil)
	for i := 1; i < len(t); i++ {
		fs, err := d.DecodeFull([]byte{0x80 | byte(i)})
		if err != nil || len(fs) != 1 {
			panic(fmt.Sprintf("decode: hpack static table entry %d: %v", i, err))
		}
		t[i] = fs[0]
	}
	return t
}()

const (
	// defaultTableSize is SETTINGS_HEADER_TABLE_SIZE until a peer
	// announces one: the most an encoder may use. grpc-go never raises it.
	defaultTableSize = 4096
	// entryOverhead is what RFC 7541 adds to each entry's size.
	entryOverhead = 32
	// maxSlot bounds the unknown slots tracked: a table of maxTableSize
	// bytes holds at most this many entries.
	maxSlot = maxTableSize / entryOverhead
)

// errTableContradiction: the stream referred to an entry that cannot
// be there if the table size assumed is right.
var errTableContradiction = errors.New("hpack: index past the table")

// tableEntry is a dynamic table entry inserted since decoding began.
type tableEntry struct {
	name, value string
	// nameSlot >= 0: the name is that of unknown slot nameSlot (a literal
	// whose name came from an unknown entry); name is then empty.
	nameSlot int32
}

// size is the entry's RFC 7541 size, or a lower bound when the name is
// not known (one byte of name).
func (e *tableEntry) size() uint32 {
	n := uint32(len(e.name))
	if e.nameSlot >= 0 {
		n = 1
	}
	return n + uint32(len(e.value)) + entryOverhead
}

// slotState is what is known of an unknown slot: possibly its field,
// inferred (Decoder.infer), and what inference learnt about it.
type slotState struct {
	filled bool
	field  hpack.HeaderField // when filled
	// notPath: the slot was seen where no :path can be (beside a known
	// :path, after a regular field): it is not a :path.
	notPath bool
	// cands: the CRI methods that fit every call whose :path this slot
	// may be; 0 until the first one.
	cands methodSet
	seen  bool // cands holds something
}

// unknownField is a field of a block that is not known.
type unknownField struct {
	at       int   // how many known fields precede it in the block
	slot     int32 // the unknown slot it is, or -1 for a literal
	nameSlot int32 // a literal: the unknown slot whose name it has
	value    string
}

// blockFields is a decoded header block as far as it is known.
type blockFields struct {
	fields  []hpack.HeaderField // the fields known, in order
	unknown []unknownField
	// filled: a field came from a slot filled by inference.
	filled bool
}

func (b *blockFields) reset() {
	clear(b.fields)
	b.fields = b.fields[:0]
	b.unknown = b.unknown[:0]
	b.filled = false
}

// partialTable is an HPACK decoder whose dynamic table began unknown.
type partialTable struct {
	ents  []tableEntry // inserted since decoding began, oldest first
	lower uint32       // sum of their sizes (lower bound, see tableEntry.size)
	// maxSize is the encoder's table size, from a size update seen;
	// until one is, the table is at most limit.
	maxSize   uint32
	sizeKnown bool
	limit     uint32
	// trusted: limit is believed (it is the protocol's default, or was
	// announced); an index past the table ended that belief.
	trusted bool
	full    bool // no unknown entry is left
	slots   map[int32]*slotState
	// filledMethods are the methods of the slots filled by inference.
	filledMethods methodSet
	// statuses maps trailers made of unknown fields (unknownKey) to the
	// grpc-status they were found to carry.
	statuses map[string]int
	maxStr   int
}

// newPartialTable returns a table with nothing known, for an encoder
// allowed limit bytes.
func newPartialTable(limit uint32, trusted bool) *partialTable {
	return &partialTable{limit: limit, trusted: trusted, maxStr: maxHeaderList}
}

// bound is the most the table may hold.
func (t *partialTable) bound() uint32 {
	if t.sizeKnown {
		return t.maxSize
	}
	if !t.trusted {
		return maxTableSize
	}
	return t.limit
}

// evict drops the oldest known entries that cannot still be there, and
// notes when no unknown entry can be.
func (t *partialTable) evict() {
	b := t.bound()
	n := 0
	for t.lower > b && n < len(t.ents) {
		t.lower -= t.ents[n].size()
		n++
	}
	if n > 0 {
		clear(t.ents[:n])
		t.ents = t.ents[n:]
		t.full = true
	}
	if t.lower+entryOverhead > b && (t.sizeKnown || t.trusted) {
		t.full = true
	}
}

func (t *partialTable) add(e tableEntry) {
	t.ents = append(t.ents, e)
	t.lower += e.size()
	t.evict()
}

// slot returns the state of unknown slot k, creating it.
func (t *partialTable) slot(k int32) *slotState {
	s := t.slots[k]
	if s == nil {
		if t.slots == nil {
			t.slots = make(map[int32]*slotState)
		}
		s = &slotState{}
		t.slots[k] = s
	}
	return s
}

// field resolves a dynamic index (1-based past the static table):
// a known entry, a filled slot, or unknown slot k.
func (t *partialTable) field(i uint64) (e tableEntry, slot int32, err error) {
	if i == 0 {
		return e, -1, errors.New("hpack: index 0")
	}
	if p := i - 1; p < uint64(len(t.ents)) {
		return t.ents[uint64(len(t.ents))-1-p], -1, nil
	}
	k := i - 1 - uint64(len(t.ents))
	// Slots 0..k, of 32 bytes at least each, must fit beside the entries.
	if t.full || k >= maxSlot || uint64(t.lower)+(k+1)*entryOverhead > uint64(t.bound()) {
		return e, -1, errTableContradiction
	}
	if s := t.slots[int32(k)]; s != nil && s.filled {
		return tableEntry{name: s.field.Name, value: s.field.Value, nameSlot: -1}, int32(k), nil
	}
	return tableEntry{nameSlot: int32(k)}, int32(k), nil
}

// name resolves the name of entry e: known, from a filled slot, or not.
func (t *partialTable) name(e tableEntry) (string, bool) {
	if e.nameSlot < 0 {
		return e.name, true
	}
	if s := t.slots[e.nameSlot]; s != nil && s.filled {
		return s.field.Name, true
	}
	return "", false
}

// decode decodes one whole header block into out.
func (t *partialTable) decode(p []byte, out *blockFields) error {
	out.reset()
	first := true
	for len(p) > 0 {
		b := p[0]
		switch {
		case b&0x80 != 0: // indexed field
			i, rest, err := readInt(7, p)
			if err != nil {
				return err
			}
			p = rest
			if i == 0 {
				return errors.New("hpack: index 0")
			}
			if i < uint64(len(staticTable)) {
				out.fields = append(out.fields, staticTable[i])
				break
			}
			e, slot, err := t.field(i - uint64(len(staticTable)) + 1)
			if err != nil {
				return err
			}
			name, ok := t.name(e)
			switch {
			case ok:
				out.fields = append(out.fields, hpack.HeaderField{Name: name, Value: e.value})
				out.filled = out.filled || slot >= 0
			case slot >= 0:
				out.unknown = append(out.unknown, unknownField{at: len(out.fields), slot: slot, nameSlot: slot})
			default:
				out.unknown = append(out.unknown, unknownField{at: len(out.fields), slot: -1, nameSlot: e.nameSlot, value: e.value})
			}
		case b&0xe0 == 0x20: // dynamic table size update
			if !first {
				return errors.New("hpack: table size update after a field")
			}
			v, rest, err := readInt(5, p)
			if err != nil {
				return err
			}
			p = rest
			if v > maxTableSize {
				return errors.New("hpack: table size update too large")
			}
			t.maxSize, t.sizeKnown = uint32(v), true
			t.evict()
			continue
		default: // literal: with incremental indexing, without, never indexed
			n, index := byte(4), false
			if b&0xc0 == 0x40 {
				n, index = 6, true
			}
			i, rest, err := readInt(n, p)
			if err != nil {
				return err
			}
			p = rest
			e := tableEntry{nameSlot: -1}
			var slot int32 = -1
			switch {
			case i == 0:
				if e.name, p, err = t.readString(p); err != nil {
					return err
				}
			case i < uint64(len(staticTable)):
				e.name = staticTable[i].Name
			default:
				ne, s, err := t.field(i - uint64(len(staticTable)) + 1)
				if err != nil {
					return err
				}
				slot = s
				if name, ok := t.name(ne); ok {
					e.name = name
				} else {
					e.nameSlot = ne.nameSlot
				}
			}
			if e.value, p, err = t.readString(p); err != nil {
				return err
			}
			if e.nameSlot < 0 {
				out.fields = append(out.fields, hpack.HeaderField{Name: e.name, Value: e.value, Sensitive: b&0xf0 == 0x10})
				out.filled = out.filled || slot >= 0
			} else {
				out.unknown = append(out.unknown, unknownField{at: len(out.fields), slot: -1, nameSlot: e.nameSlot, value: e.value})
			}
			if index {
				t.add(e)
			}
		}
		first = false
	}
	return nil
}

// readString reads an HPACK string literal.
func (t *partialTable) readString(p []byte) (string, []byte, error) {
	if len(p) == 0 {
		return "", nil, errors.New("hpack: truncated string")
	}
	huff := p[0]&0x80 != 0
	n, p, err := readInt(7, p)
	if err != nil {
		return "", nil, err
	}
	if n > uint64(len(p)) {
		return "", nil, errors.New("hpack: truncated string")
	}
	if n > uint64(t.maxStr) {
		return "", nil, hpack.ErrStringLength
	}
	raw := p[:n]
	p = p[n:]
	if !huff {
		return string(raw), p, nil
	}
	s, err := hpack.HuffmanDecodeToString(raw)
	if err != nil {
		return "", nil, err
	}
	if len(s) > t.maxStr {
		return "", nil, hpack.ErrStringLength
	}
	return s, p, nil
}

// readInt reads an HPACK integer with an n-bit prefix (RFC 7541 5.1).
func readInt(n byte, p []byte) (uint64, []byte, error) {
	if len(p) == 0 {
		return 0, nil, errors.New("hpack: truncated integer")
	}
	mask := uint64(1)<<n - 1
	i := uint64(p[0]) & mask
	if i < mask {
		return i, p[1:], nil
	}
	for k, shift := 1, uint(0); k < len(p); k, shift = k+1, shift+7 {
		if shift >= 63 {
			return 0, nil, errors.New("hpack: integer overflow")
		}
		b := p[k]
		i += uint64(b&0x7f) << shift
		if b&0x80 == 0 {
			return i, p[k+1:], nil
		}
	}
	return 0, nil, errors.New("hpack: truncated integer")
}

// exact reports whether every entry of the table is known, names
// included: then seed can hand it to an hpack.Decoder.
func (t *partialTable) exact() bool {
	if !t.full {
		return false
	}
	for i := range t.ents {
		if _, ok := t.name(t.ents[i]); !ok {
			return false
		}
	}
	return true
}

// seed returns an hpack.Decoder whose dynamic table is t's, t being exact:
// a synthetic block inserts the entries, oldest first.
func (t *partialTable) seed(allowed uint32) (*hpack.Decoder, error) {
	d := hpack.NewDecoder(defaultTableSize, nil)
	d.SetAllowedMaxDynamicTableSize(max(allowed, t.bound()))
	d.SetMaxDynamicTableSize(t.bound())
	var blk []byte
	for i := range t.ents {
		name, _ := t.name(t.ents[i])
		blk = append(blk, 0x40)
		blk = appendLiteral(blk, name)
		blk = appendLiteral(blk, t.ents[i].value)
	}
	d.SetEmitEnabled(false)
	if _, err := d.Write(blk); err != nil {
		return nil, fmt.Errorf("hpack: seeding the table: %w", err)
	}
	if err := d.Close(); err != nil {
		return nil, fmt.Errorf("hpack: seeding the table: %w", err)
	}
	d.SetEmitEnabled(true)
	return d, nil
}

// appendLiteral appends s as an HPACK string literal without Huffman.
func appendLiteral(b []byte, s string) []byte {
	n := uint64(len(s))
	if n < 0x7f {
		b = append(b, byte(n))
	} else {
		b = append(b, 0x7f)
		n -= 0x7f
		for n >= 0x80 {
			b = append(b, byte(n)|0x80)
			n >>= 7
		}
		b = append(b, byte(n))
	}
	return append(b, s...)
}
