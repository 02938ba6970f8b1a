package decode

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The header block layer: HPACK decoding of each direction's header
// blocks, with x/net's hpack.Decoder while the dynamic table is known,
// with a partialTable while it is not (after a resync, until the table
// has turned over).
//
// The fast path for header blocks held in one HEADERS frame (no padding,
// no priority): the HPACK decoder's fields go into a reused slice instead
// of a MetaHeadersFrame per block. Its checks, limits and errors are those
// of http2.Framer.ReadFrame with ReadMetaHeaders (x/net/http2 frame.go,
// readMetaFrame and checkPseudos), so the output is the same whichever
// path a block takes; the error texts below are that package's. Blocks
// decoded with a partialTable go through the same checks.

// headerBlocks decodes the header blocks of one direction.
type headerBlocks struct {
	hdec *hpack.Decoder // the table, when known
	// part is the table while it is partly unknown (hdec is nil then);
	// blk gathers a block's fragments, bf its fields.
	part *partialTable
	blk  []byte
	bf   blockFields
	fr   *http2.Framer
	sink headerSink              // the fast path's header block state
	emit func(hpack.HeaderField) // sink.emit, made once
	// limit is the most the encoder may use (the peer's
	// SETTINGS_HEADER_TABLE_SIZE), allowed what the decoder accepts.
	limit, allowed uint32
	announced      bool
}

// setup readies the blocks for a new Framer: with the exact table, a new
// hpack.Decoder unless a partial table is in use.
func (hb *headerBlocks) setup(fr *http2.Framer, valid *validCache) {
	hb.fr = fr
	hb.sink.valid = valid
	if hb.emit == nil {
		hb.emit = hb.sink.emit
	}
	if hb.allowed == 0 {
		hb.allowed = minTableSize
	}
	if hb.part == nil && hb.hdec == nil {
		hb.useDecoder(hpack.NewDecoder(defaultTableSize, nil))
	}
	if hb.part == nil {
		fr.ReadMetaHeaders = hb.hdec
	}
}

func (hb *headerBlocks) useDecoder(hdec *hpack.Decoder) {
	hdec.SetAllowedMaxDynamicTableSize(hb.allowed)
	hb.hdec, hb.part = hdec, nil
	hb.sink.hdec = hdec
	if hb.fr != nil {
		hb.fr.ReadMetaHeaders = hdec
	}
}

// unknown forgets the table: from the next block on, entries older than
// it are unknown.
func (hb *headerBlocks) unknown() {
	trusted := hb.part == nil || hb.part.trusted
	hb.part = newPartialTable(hb.limit, trusted)
	hb.hdec, hb.sink.hdec = nil, nil
	if hb.fr != nil {
		hb.fr.ReadMetaHeaders = nil
	}
}

// announce takes the peer's SETTINGS_HEADER_TABLE_SIZE.
func (hb *headerBlocks) announce(v uint32) {
	hb.limit = max(hb.limit, v)
	hb.allowed = max(hb.allowed, v)
	if hb.hdec != nil {
		hb.hdec.SetAllowedMaxDynamicTableSize(hb.allowed)
	}
	if hb.part != nil {
		hb.part.limit = max(hb.part.limit, v)
	}
}

// headerSink collects the fields of one header block.
type headerSink struct {
	hdec           *hpack.Decoder
	fields         []hpack.HeaderField
	headersRemain  uint32
	trailersRemain uint32
	sawRegular     bool
	truncated      bool
	invalid        error
	valid          *validCache // the Decoder's
}

// validCache holds strings found valid (as names or values), by address:
// HPACK hands out the same strings for indexed fields, and most fields are
// indexed, so most checks are one comparison.
type validCache [64]validString

type validString struct {
	s    string
	name bool // valid as a name (else as a value)
}

// known says whether s, the very same string (not just equal), was found
// valid already.
func (s *headerSink) known(v string, name bool) bool {
	if len(v) == 0 {
		return false
	}
	e := &s.valid[uintptr(unsafe.Pointer(unsafe.StringData(v)))>>4%uintptr(len(s.valid))]
	return e.name == name && len(e.s) == len(v) && unsafe.StringData(e.s) == unsafe.StringData(v)
}

func (s *headerSink) remember(v string, name bool) {
	if len(v) == 0 {
		return
	}
	s.valid[uintptr(unsafe.Pointer(unsafe.StringData(v)))>>4%uintptr(len(s.valid))] = validString{v, name}
}

func (s *headerSink) reset() {
	clear(s.fields) // drop the strings of the last block
	s.fields = s.fields[:0]
	s.headersRemain, s.trailersRemain = maxHeaderList, maxHeaderList
	s.sawRegular, s.truncated, s.invalid = false, false, nil
}

// emit is readMetaFrame's emit function.
func (s *headerSink) emit(hf hpack.HeaderField) {
	if s.invalid != nil || s.truncated {
		return // what hdec.SetEmitEnabled(false) does
	}
	if !s.known(hf.Value, false) {
		if !httpguts.ValidHeaderFieldValue(hf.Value) {
			// Don't include the value in the error, because it may be sensitive.
			s.invalid = headerFieldValueError(hf.Name)
		} else {
			s.remember(hf.Value, false)
		}
	}
	if strings.HasPrefix(hf.Name, ":") {
		if s.sawRegular {
			s.invalid = errPseudoAfterRegular
		}
	} else {
		s.sawRegular = true
		if !s.known(hf.Name, true) {
			if !validWireHeaderFieldName(hf.Name) {
				s.invalid = headerFieldNameError(hf.Name)
			} else {
				s.remember(hf.Name, true)
			}
		}
	}
	if s.invalid != nil {
		if s.hdec != nil {
			s.hdec.SetEmitEnabled(false)
		}
		return
	}
	var remain *uint32
	var size uint32
	if hf.Name == "trailer" {
		remain = &s.trailersRemain
		n := strings.Count(hf.Value, ",") + 1
		size = uint32(len(hf.Value)-n+1) + uint32(n)*hpack.HeaderField{}.Size()
	} else {
		remain = &s.headersRemain
		size = hf.Size()
	}
	if size > *remain {
		if s.hdec != nil {
			s.hdec.SetEmitEnabled(false)
		}
		s.truncated = true
		s.headersRemain, s.trailersRemain = 0, 0
		return
	}
	*remain -= size
	s.fields = append(s.fields, hf)
}

// fastHeaders decodes a header block held in one HEADERS frame with
// END_HEADERS and neither padding nor priority; frag is its payload.
// false if decoding stopped.
func (d *Decoder) fastHeaders(cn *conn, h *half, frag []byte, flags http2.Flags, sid uint32, off int64, t time.Time) bool {
	hs := &h.hb.sink
	hs.reset()
	hdec := h.hb.hdec
	hdec.SetEmitEnabled(true)
	hdec.SetMaxStringLength(maxHeaderList)
	hdec.SetEmitFunc(h.hb.emit)
	var err error
	if int64(len(frag)) > 2*int64(hs.headersRemain+hs.trailersRemain) {
		err = http2.ConnectionError(http2.ErrCodeProtocol)
	} else if _, werr := hdec.Write(frag); werr != nil {
		err = http2.ConnectionError(http2.ErrCodeCompression)
	} else if cerr := hdec.Close(); cerr != nil {
		err = http2.ConnectionError(http2.ErrCodeCompression)
	} else if hs.invalid != nil {
		err = http2.StreamError{StreamID: sid, Code: http2.ErrCodeProtocol, Cause: hs.invalid}
	} else if perr := checkPseudos(hs.fields); perr != nil {
		err = http2.StreamError{StreamID: sid, Code: http2.ErrCodeProtocol, Cause: perr}
	}
	if err != nil {
		if se, ok := err.(http2.StreamError); ok {
			d.streamFrameError(cn, h, sid, http2.FrameHeaders, flags, se, t)
			return true
		}
		d.lose(cn, h, off, fmt.Errorf("%w: %v frame on stream %d: %w", ErrFrame, http2.FrameHeaders, sid, err), false, t)
		return false
	}
	d.onHeaders(cn, h, sid, flags.Has(http2.FlagHeadersEndStream), hs.truncated, hs.fields, true, nil, t)
	return true
}

// partialHeaders decodes a header block (b: HEADERS and CONTINUATION
// frames) with the partial table; false if decoding resynchronises.
func (d *Decoder) partialHeaders(cn *conn, h *half, b []byte, fh http2.FrameHeader, off int64, t time.Time) bool {
	hb := &h.hb
	// The Framer (without ReadMetaHeaders) checks the frames and strips
	// padding and priority; the fragments are copied before its buffer is
	// reused.
	h.rd.b = b
	hb.blk = hb.blk[:0]
	var ended bool
	for len(h.rd.b) > 0 {
		f, err := h.fr.ReadFrame()
		if err != nil {
			if detail := h.fr.ErrorDetail(); detail != nil {
				err = fmt.Errorf("%w (%v)", err, detail)
			}
			d.lose(cn, h, off, fmt.Errorf("%w: %v frame on stream %d: %w", ErrFrame, fh.Type, fh.StreamID, err), false, t)
			return false
		}
		switch f := f.(type) {
		case *http2.HeadersFrame:
			hb.blk = append(hb.blk, f.HeaderBlockFragment()...)
			ended = f.StreamEnded()
		case *http2.ContinuationFrame:
			hb.blk = append(hb.blk, f.HeaderBlockFragment()...)
		}
	}
	sid := fh.StreamID
	bf := &hb.bf
	if err := hb.part.decode(hb.blk, bf); err != nil {
		// The frames are sound but the table is not what it was taken
		// for: it starts over, unknown, at the next block.
		d.tableLost(cn, h, off, sid, err, t)
		return true
	}
	hs := &hb.sink
	hs.reset()
	if len(hb.blk) > 2*int(hs.headersRemain+hs.trailersRemain) {
		d.tableLost(cn, h, off, sid, http2.ConnectionError(http2.ErrCodeProtocol), t)
		return true
	}
	for _, f := range bf.fields {
		hs.emit(f)
	}
	var perr error
	if hs.invalid != nil {
		perr = hs.invalid
	} else if !hs.truncated {
		perr = checkPseudos(hs.fields)
	}
	if perr != nil {
		d.streamFrameError(cn, h, sid, http2.FrameHeaders, fh.Flags, http2.StreamError{StreamID: sid, Code: http2.ErrCodeProtocol, Cause: perr}, t)
	} else {
		d.onHeaders(cn, h, sid, ended, hs.truncated, hs.fields, true, bf, t)
	}
	if hb.part.exact() {
		// The table turned over: back to x/net's decoder.
		if hdec, err := hb.part.seed(hb.allowed); err == nil {
			hb.useDecoder(hdec)
		}
	}
	return true
}

// tableLost handles a header block the partial table could not decode:
// its call is lost, and the table starts over unknown. An index past
// the table means the table size assumed (SETTINGS' default) was wrong:
// it is not assumed again.
func (d *Decoder) tableLost(cn *conn, h *half, off int64, sid uint32, err error, t time.Time) {
	trusted := !errors.Is(err, errTableContradiction) && h.hb.part.trusted
	ce := &ConnError{Conn: cn.id, Dir: h.dir.String(), Offset: off, Time: t, Resumed: off, Lost: 1,
		Err: fmt.Errorf("%w: header block of stream %d (decoding with a table caught midway): %w", ErrFrame, sid, err)}
	d.addErr(ce)
	h.lastErr = ce
	d.reportErr(ce)
	h.hb.unknown()
	h.hb.part.trusted = trusted
	if s := cn.streams[sid]; s != nil {
		s.call.Errors = append(s.call.Errors, fmt.Sprintf("%s header block not decoded", dirNoun[h.dir]))
	}
}

// ownFields returns fields for a Call to keep: a copy when they are the
// fast path's reused slice, nil when empty (as the Framer gives).
func ownFields(fields []hpack.HeaderField, scratch bool) []hpack.HeaderField {
	if !scratch || fields == nil {
		return fields
	}
	if len(fields) == 0 {
		return nil
	}
	return append(make([]hpack.HeaderField, 0, len(fields)), fields...)
}

// keep is ownFields for response headers (kind 0) and trailers (kind 1),
// which are the same for most calls: a list equal to the last one kept
// is shared rather than copied.
func (h *half) keep(kind int, fields []hpack.HeaderField, scratch bool) []hpack.HeaderField {
	if !scratch || len(fields) == 0 {
		return ownFields(fields, scratch)
	}
	if prev := h.kept[kind]; slices.Equal(prev, fields) {
		return prev
	}
	k := ownFields(fields, scratch)
	h.kept[kind] = k
	return k
}

// pseudoValue is MetaHeadersFrame.PseudoValue.
func pseudoValue(fields []hpack.HeaderField, pseudo string) string {
	for _, hf := range fields {
		if !hf.IsPseudo() {
			return ""
		}
		if hf.Name[1:] == pseudo {
			return hf.Value
		}
	}
	return ""
}

// checkPseudos is MetaHeadersFrame.checkPseudos.
func checkPseudos(fields []hpack.HeaderField) error {
	pf := fields
	for i, hf := range fields {
		if !hf.IsPseudo() {
			pf = fields[:i]
			break
		}
	}
	var isRequest, isResponse bool
	for i, hf := range pf {
		switch hf.Name {
		case ":method", ":path", ":scheme", ":authority", ":protocol":
			isRequest = true
		case ":status":
			isResponse = true
		default:
			return pseudoHeaderError(hf.Name)
		}
		for _, hf2 := range pf[:i] {
			if hf.Name == hf2.Name {
				return duplicatePseudoHeaderError(hf.Name)
			}
		}
	}
	if isRequest && isResponse {
		return errMixPseudoHeaderTypes
	}
	return nil
}

// validWireHeaderFieldName is x/net/http2's.
func validWireHeaderFieldName(v string) bool {
	if len(v) == 0 {
		return false
	}
	for _, r := range v {
		if !httpguts.IsTokenRune(r) {
			return false
		}
		if 'A' <= r && r <= 'Z' {
			return false
		}
	}
	return true
}

// The Framer's stream error causes, with its texts.
type (
	pseudoHeaderError          string
	duplicatePseudoHeaderError string
	headerFieldNameError       string
	headerFieldValueError      string
)

func (e pseudoHeaderError) Error() string {
	return fmt.Sprintf("invalid pseudo-header %q", string(e))
}

func (e duplicatePseudoHeaderError) Error() string {
	return fmt.Sprintf("duplicate pseudo-header %q", string(e))
}

func (e headerFieldNameError) Error() string {
	return fmt.Sprintf("invalid header field name %q", string(e))
}

func (e headerFieldValueError) Error() string {
	return fmt.Sprintf("invalid header field value for %q", string(e))
}

var (
	errMixPseudoHeaderTypes = errors.New("mix of request and response pseudo headers")
	errPseudoAfterRegular   = errors.New("pseudo header field after regular")
)
