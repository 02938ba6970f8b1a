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

// The fast path for header blocks held in one HEADERS frame (no padding,
// no priority): the HPACK decoder's fields go into a reused slice instead
// of a MetaHeadersFrame per block. Its checks, limits and errors are those
// of http2.Framer.ReadFrame with ReadMetaHeaders (x/net/http2 frame.go,
// readMetaFrame and checkPseudos), so the output is the same whichever
// path a block takes; the error texts below are that package's.

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
		s.hdec.SetEmitEnabled(false)
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
		s.hdec.SetEmitEnabled(false)
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
	hs := &h.hs
	hs.reset()
	hdec := h.hdec
	hdec.SetEmitEnabled(true)
	hdec.SetMaxStringLength(maxHeaderList)
	hdec.SetEmitFunc(h.emit)
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
		d.fail(cn, h, off, fmt.Errorf("%w: %v frame on stream %d: %w", ErrFrame, http2.FrameHeaders, sid, err), false, t)
		return false
	}
	d.onHeaders(cn, h, sid, flags.Has(http2.FlagHeadersEndStream), hs.truncated, hs.fields, true, t)
	return true
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
