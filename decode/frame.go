package decode

import (
	"cmp"
	"slices"
	"time"

	"golang.org/x/net/http2"
)

// The frame layer: one direction's byte stream cut into HTTP/2 frames
// (a header block with its CONTINUATION frames counts as one unit), and,
// for a stream that starts anywhere, the first frame boundary.

const (
	// frameHeaderLen is the size of an HTTP/2 frame header.
	frameHeaderLen = 9
	// defaultMaxFrame is SETTINGS_MAX_FRAME_SIZE until a peer raises it;
	// grpc-go never does.
	defaultMaxFrame = 16 << 10
	// syncFrames is how many chained frame headers confirm a boundary
	// found by resync.
	syncFrames = 4
	// syncStreamSpan bounds the spread of stream IDs in a chain: the
	// frames of a few hundred bytes belong to streams opened together.
	syncStreamSpan = 1 << 16
)

// readFrameHeader reads a frame header at b[0:9].
func readFrameHeader(b []byte) http2.FrameHeader {
	return http2.FrameHeader{
		Length:   uint32(b[0])<<16 | uint32(b[1])<<8 | uint32(b[2]),
		Type:     http2.FrameType(b[3]),
		Flags:    http2.Flags(b[4]),
		StreamID: (uint32(b[5])<<24 | uint32(b[6])<<16 | uint32(b[7])<<8 | uint32(b[8])) & (1<<31 - 1),
	}
}

// frameStream is the framing state of one direction of a connection.
type frameStream struct {
	next int64  // offset of the next byte expected
	buf  []byte // bytes of a unit not yet complete (or, hunting, not yet judged)
	// marks say when the bytes of buf were seen: a unit's time is that of
	// the chunk holding its first byte.
	marks   []mark
	preface int  // client preface bytes still expected
	settled bool // the first frame (SETTINGS) was seen, or is not expected
	// hunting: the bytes are not known to start at a frame boundary
	// (midway, after lost bytes or an error); findSync looks for one.
	hunting  bool
	maxFrame uint32 // the largest frame the peer allows (for resync)
	starts   []int  // findSync's chunk starts, reused
}

// mark is the stream offset where a chunk's bytes begin in buf, and when
// they were seen.
type mark struct {
	off int64
	t   time.Time
}

// timeAt returns when the byte at stream offset off was seen, off being
// in buf.
func (fs *frameStream) timeAt(off int64) time.Time {
	i, _ := slices.BinarySearchFunc(fs.marks, off, func(m mark, off int64) int { return cmp.Compare(m.off, off+1) })
	return fs.marks[max(i-1, 0)].t
}

// maxHuntMarks bounds the chunks told apart in bytes held by a resync:
// past it, a chunk's bytes count as seen with the one before (tiny
// chunks, such as TCP segments, are no writes anyway).
const maxHuntMarks = 512

// chunkStarts returns where chunks start in in[p:], in being buf (when
// buffered) or a chunk, at stream offset base.
func (fs *frameStream) chunkStarts(in []byte, p int, base int64, buffered bool) []int {
	fs.starts = fs.starts[:0]
	if !buffered {
		if p == 0 {
			fs.starts = append(fs.starts, 0)
		}
		return fs.starts
	}
	for _, m := range fs.marks {
		if i := m.off - base - int64(p); i >= 0 && i < int64(len(in)-p) {
			fs.starts = append(fs.starts, int(i))
		}
	}
	return fs.starts
}

// consumed drops the marks of bytes before stream offset off, and all
// when buf is empty.
func (fs *frameStream) consumed(off int64) {
	if len(fs.buf) == 0 {
		fs.marks = fs.marks[:0]
		return
	}
	i := 0
	for i+1 < len(fs.marks) && fs.marks[i+1].off <= off {
		i++
	}
	if i > 0 {
		fs.marks = fs.marks[:copy(fs.marks, fs.marks[i:])]
	}
}

// unitEnd returns the end of the unit (frame, or header block with its
// CONTINUATION frames) that starts at in[p:], given its header fh: ok is
// false if in holds only part of it. A HEADERS frame without END_HEADERS
// followed by anything but a CONTINUATION ends after that frame's header,
// so that the Framer reports the protocol error. tooBig says the header
// block grew past maxHeaderBlock before it ended.
func unitEnd(in []byte, p int, fh http2.FrameHeader) (end int, ok, tooBig bool) {
	end = p + frameHeaderLen + int(fh.Length)
	if fh.Type != http2.FrameHeaders || fh.Flags.Has(http2.FlagHeadersEndHeaders) {
		return end, end <= len(in), false
	}
	q := end
	for {
		if q-p > maxHeaderBlock {
			return 0, false, true
		}
		if len(in)-q < frameHeaderLen {
			return 0, false, false
		}
		cf := readFrameHeader(in[q:])
		if cf.Type != http2.FrameContinuation {
			end = q + frameHeaderLen
			return end, end <= len(in), false
		}
		q += frameHeaderLen + int(cf.Length)
		if cf.Flags.Has(http2.FlagContinuationEndHeaders) {
			return q, q <= len(in), false
		}
	}
}

// plausible reports whether fh can be the header of a frame that a gRPC
// client or server sends: a known type, flags and length valid for it, a
// stream ID of the right kind (gRPC streams are client-initiated, odd),
// a length within maxFrame. It is strict where HTTP/2 is lenient (unknown
// types and flags are legal there), because a resync must not take bytes
// from the middle of a message for a frame.
func plausible(fh http2.FrameHeader, maxFrame uint32) bool {
	if fh.Length > maxFrame {
		return false
	}
	sid, n, f := fh.StreamID, fh.Length, fh.Flags
	onStream := sid != 0 && sid&1 == 1
	switch fh.Type {
	case http2.FrameData:
		// An empty DATA frame only ends a stream.
		return onStream && f&^(http2.FlagDataEndStream|http2.FlagDataPadded) == 0 &&
			(!f.Has(http2.FlagDataPadded) || n >= 1) && (n > 0 || f.Has(http2.FlagDataEndStream))
	case http2.FrameHeaders:
		min := uint32(0)
		if f.Has(http2.FlagHeadersPadded) {
			min++
		}
		if f.Has(http2.FlagHeadersPriority) {
			min += 5
		}
		return onStream && f&^(http2.FlagHeadersEndStream|http2.FlagHeadersEndHeaders|http2.FlagHeadersPadded|http2.FlagHeadersPriority) == 0 && n >= min
	case http2.FramePriority:
		return sid != 0 && n == 5 && f == 0
	case http2.FrameRSTStream:
		return onStream && n == 4 && f == 0
	case http2.FrameSettings:
		if f.Has(http2.FlagSettingsAck) {
			return sid == 0 && f == http2.FlagSettingsAck && n == 0
		}
		return sid == 0 && f == 0 && n%6 == 0
	case http2.FramePing:
		return sid == 0 && n == 8 && f&^http2.FlagPingAck == 0
	case http2.FrameGoAway:
		return sid == 0 && n >= 8 && f == 0
	case http2.FrameWindowUpdate:
		return n == 4 && f == 0 && (sid == 0 || sid&1 == 1)
	case http2.FrameContinuation:
		return onStream && f&^http2.FlagContinuationEndHeaders == 0
	}
	return false // PUSH_PROMISE (gRPC clients disable push) and unknown types
}

// plausiblePayload checks what can be checked of a control frame's
// payload p (of fh.Length bytes).
func plausiblePayload(fh http2.FrameHeader, p []byte) bool {
	u32 := func(b []byte) uint32 { return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) }
	switch fh.Type {
	case http2.FrameWindowUpdate:
		v := u32(p)
		return v != 0 && v < 1<<31
	case http2.FrameRSTStream:
		return u32(p) <= uint32(http2.ErrCodeHTTP11Required)
	case http2.FrameGoAway:
		return u32(p) < 1<<31 && u32(p[4:]) <= uint32(http2.ErrCodeHTTP11Required)
	case http2.FrameSettings:
		for i := 0; i+6 <= len(p); i += 6 {
			id, v := http2.SettingID(uint16(p[i])<<8|uint16(p[i+1])), u32(p[i+2:])
			switch id {
			case http2.SettingHeaderTableSize, http2.SettingMaxConcurrentStreams, http2.SettingMaxHeaderListSize:
			case http2.SettingEnablePush:
				if v > 1 {
					return false
				}
			case http2.SettingInitialWindowSize:
				if v >= 1<<31 {
					return false
				}
			case http2.SettingMaxFrameSize:
				if v < defaultMaxFrame || v >= 1<<24 {
					return false
				}
			case 8, 9: // ENABLE_CONNECT_PROTOCOL, NO_RFC7540_PRIORITIES
				if v > 1 {
					return false
				}
			default:
				return false
			}
		}
	case http2.FrameData, http2.FrameHeaders:
		if fh.Flags.Has(http2.FlagDataPadded) { // same bit as FlagHeadersPadded
			return uint32(p[0]) < fh.Length
		}
	}
	return true
}

// findSync looks for the first frame boundary in b, a stream of frames
// cut anywhere. A boundary is confirmed by a chain of frame headers that
// follow one another, each plausible, CONTINUATIONs where a header block
// is open and only there (or leading, ending a block begun before b), and
// stream IDs close to each other.
//
// Bytes are captured a write (or read) at a time, and gRPC peers write
// whole frames: a chain that starts where a chunk of bytes starts (starts
// lists those offsets, ascending), whose frames the later chunks start
// with too (chunks are whole writes, not TCP segments), is taken once it
// holds syncFrames+1 headers, or ends exactly where the bytes do. Elsewhere the bytes just
// before a real boundary may read as a plausible frame ending there
// (eight zeros and an odd byte are an empty DATA frame), so the first
// frame of a chain is not trusted: the boundary returned is the second
// one of a chain of syncFrames+1 headers (or, once final says no more
// bytes will come, of one ending where the bytes do).
//
// It returns the boundary and true; or, when the bytes run out before a
// chain is confirmed, false and the offset from which bytes must be kept
// (those before cannot start a chain). No preface or SETTINGS is needed.
func findSync(b []byte, maxFrame uint32, final bool, starts []int) (at int, ok bool) {
	keep := -1 // the first chain that more bytes may confirm
	for i := 0; i < len(b); i++ {
		if keep >= 0 {
			// An earlier chain waits for more bytes: only a chunk start
			// may overtake it.
			if len(starts) == 0 {
				break
			}
			i = max(i, starts[0])
		}
		start := len(starts) > 0 && starts[0] == i
		for len(starts) > 0 && starts[0] <= i {
			starts = starts[1:]
		}
		r, n, aligned := chainFrom(b, i, maxFrame, starts)
		switch {
		case r == chainBroken:
		case start && aligned && r != chainShort:
			// (An uncertain chain before it is no frame: a real one would
			// have to hold this chunk start in its payload.)
			return i, true
		case keep >= 0:
		case r == chainConfirmed, r == chainExactEnd && final && n >= syncFrames:
			return i + frameHeaderLen + int(readFrameHeader(b[i:]).Length), true
		case !final:
			keep = i
		}
	}
	if keep >= 0 {
		return keep, false
	}
	return len(b), false
}

type chainResult uint8

const (
	chainBroken    chainResult = iota // some header is not plausible
	chainShort                        // plausible so far, the bytes ran out inside a frame
	chainExactEnd                     // plausible so far, the bytes ran out at a frame's end
	chainConfirmed                    // syncFrames+1 headers chained
)

// chainFrom judges the chain of frame headers that starts at b[i], counts
// its headers, and says whether every chunk start (starts, ascending,
// those after i) within it is one of its frame boundaries.
func chainFrom(b []byte, i int, maxFrame uint32, starts []int) (r chainResult, headers int, aligned bool) {
	aligned = true
	r, headers, end := chainOf(b, i, maxFrame)
	for _, s := range starts {
		if s <= i {
			continue
		}
		if s >= end {
			break
		}
		if !chainHas(b, i, s) {
			aligned = false
			break
		}
	}
	return r, headers, aligned
}

// chainHas reports whether the frames from b[i] have a boundary at s.
func chainHas(b []byte, i, s int) bool {
	for p := i; p <= s && len(b)-p >= frameHeaderLen; p += frameHeaderLen + int(readFrameHeader(b[p:]).Length) {
		if p == s {
			return true
		}
	}
	return false
}

// chainOf judges the chain of frame headers that starts at b[i]: its
// result, its headers, and where the bytes it covers end.
func chainOf(b []byte, i int, maxFrame uint32) (chainResult, int, int) {
	var (
		open               uint32 // stream of an open header block, 0 if none
		lead               = true // still in leading CONTINUATIONs
		minSID, maxSID     uint32
		p                  = i
		headers, frameSeen int
	)
	for headers <= syncFrames {
		if p == len(b) && headers > 0 {
			return chainExactEnd, headers, p
		}
		if len(b)-p < frameHeaderLen {
			return chainShort, headers, len(b)
		}
		fh := readFrameHeader(b[p:])
		if !plausible(fh, maxFrame) {
			return chainBroken, headers, p
		}
		if fh.Type == http2.FrameContinuation {
			if open == 0 && !lead || open != 0 && fh.StreamID != open {
				return chainBroken, headers, p
			}
			if lead && open == 0 {
				open = fh.StreamID // a block begun before i
			}
			if fh.Flags.Has(http2.FlagContinuationEndHeaders) {
				open = 0
			}
		} else {
			if open != 0 {
				return chainBroken, headers, p
			}
			if fh.Type == http2.FrameHeaders && !fh.Flags.Has(http2.FlagHeadersEndHeaders) {
				open = fh.StreamID
			}
		}
		lead = lead && fh.Type == http2.FrameContinuation
		if fh.StreamID != 0 {
			if frameSeen == 0 || fh.StreamID < minSID {
				minSID = fh.StreamID
			}
			if fh.StreamID > maxSID {
				maxSID = fh.StreamID
			}
			frameSeen++
			if maxSID-minSID > syncStreamSpan {
				return chainBroken, headers, p
			}
		}
		end := p + frameHeaderLen + int(fh.Length)
		if fh.Type != http2.FrameData && fh.Type != http2.FrameHeaders && fh.Type != http2.FrameContinuation || fh.Flags.Has(http2.FlagDataPadded) {
			// A control frame's payload (or a pad length) is checked when
			// it is there.
			if end > len(b) {
				return chainShort, headers, len(b)
			}
			if !plausiblePayload(fh, b[p+frameHeaderLen:end]) {
				return chainBroken, headers, p
			}
		}
		headers++
		p = end
		if p > len(b) {
			return chainShort, headers, len(b)
		}
	}
	return chainConfirmed, headers, p
}
