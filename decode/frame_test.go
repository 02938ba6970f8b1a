package decode

import (
	"bytes"
	"fmt"
	"slices"
	"testing"

	"golang.org/x/net/http2"
)

// boundaries lists the frame boundaries of a whole direction stream (after
// the client preface, if it starts with one).
func boundaries(t testing.TB, b []byte) []int {
	t.Helper()
	p := 0
	if bytes.HasPrefix(b, []byte(http2.ClientPreface)) {
		p = len(http2.ClientPreface)
	}
	var out []int
	for len(b)-p >= frameHeaderLen {
		out = append(out, p)
		p += frameHeaderLen + int(readFrameHeader(b[p:]).Length)
	}
	if p != len(b) {
		t.Fatalf("stream does not end at a frame boundary (%d of %d)", p, len(b))
	}
	return out
}

// Every frame the Framer writes, as a gRPC peer would, is plausible;
// frames a gRPC peer never sends are not.
func TestPlausibleFrames(t *testing.T) {
	var buf bytes.Buffer
	fr := http2.NewFramer(&buf, nil)
	writes := []func() error{
		func() error { return fr.WriteData(1, false, []byte("x")) },
		func() error { return fr.WriteData(3, true, nil) },
		func() error { return fr.WriteDataPadded(5, true, []byte("x"), make([]byte, 7)) },
		func() error {
			return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 7, BlockFragment: []byte{0x82}, EndHeaders: true, EndStream: true})
		},
		func() error {
			return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 9, BlockFragment: []byte{0x82}, PadLength: 3,
				Priority: http2.PriorityParam{StreamDep: 7, Weight: 9}})
		},
		func() error { return fr.WriteContinuation(9, true, []byte{0x84}) },
		func() error { return fr.WritePriority(11, http2.PriorityParam{Weight: 1}) },
		func() error { return fr.WriteRSTStream(11, http2.ErrCodeCancel) },
		func() error {
			return fr.WriteSettings(http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 20}, http2.Setting{ID: http2.SettingEnablePush, Val: 0})
		},
		func() error { return fr.WriteSettings() },
		func() error { return fr.WriteSettingsAck() },
		func() error { return fr.WritePing(true, [8]byte{1}) },
		func() error { return fr.WriteGoAway(13, http2.ErrCodeNo, []byte("bye")) },
		func() error { return fr.WriteWindowUpdate(0, 1<<20) },
		func() error { return fr.WriteWindowUpdate(13, 1) },
	}
	for i, w := range writes {
		buf.Reset()
		if err := w(); err != nil {
			t.Fatal(err)
		}
		b := buf.Bytes()
		fh := readFrameHeader(b)
		if int(fh.Length) != len(b)-frameHeaderLen {
			t.Fatalf("write %d: length %d of %d bytes", i, fh.Length, len(b))
		}
		if !plausible(fh, defaultMaxFrame) || !plausiblePayload(fh, b[frameHeaderLen:]) {
			t.Errorf("write %d: %v not plausible", i, fh)
		}
	}
	bad := map[string]func() error{
		"push promise": func() error {
			return fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, BlockFragment: []byte{0x82}, EndHeaders: true})
		},
		"unknown type":         func() error { return fr.WriteRawFrame(0x42, 0, 1, nil) },
		"data on stream 0":     func() error { return fr.WriteRawFrame(http2.FrameData, 0, 0, []byte("x")) },
		"data on even stream":  func() error { return fr.WriteRawFrame(http2.FrameData, 0, 2, []byte("x")) },
		"data unknown flag":    func() error { return fr.WriteRawFrame(http2.FrameData, 0x2, 1, []byte("x")) },
		"ping length":          func() error { return fr.WriteRawFrame(http2.FramePing, 0, 0, make([]byte, 7)) },
		"ping on a stream":     func() error { return fr.WriteRawFrame(http2.FramePing, 0, 1, make([]byte, 8)) },
		"settings on a stream": func() error { return fr.WriteRawFrame(http2.FrameSettings, 0, 1, nil) },
		"settings length":      func() error { return fr.WriteRawFrame(http2.FrameSettings, 0, 0, make([]byte, 5)) },
		"settings ack payload": func() error { return fr.WriteRawFrame(http2.FrameSettings, 1, 0, make([]byte, 6)) },
		"settings unknown id":  func() error { return fr.WriteRawFrame(http2.FrameSettings, 0, 0, []byte{0, 0x42, 0, 0, 0, 1}) },
		"window update zero":   func() error { return fr.WriteRawFrame(http2.FrameWindowUpdate, 0, 0, make([]byte, 4)) },
		"rst unknown code":     func() error { return fr.WriteRawFrame(http2.FrameRSTStream, 0, 1, []byte{0, 0, 1, 0}) },
		"goaway short":         func() error { return fr.WriteRawFrame(http2.FrameGoAway, 0, 0, make([]byte, 7)) },
		"padding too long":     func() error { return fr.WriteRawFrame(http2.FrameData, 0x8, 1, []byte{5, 1, 2}) },
		"too large": func() error {
			return fr.WriteRawFrame(http2.FrameData, 0, 1, make([]byte, defaultMaxFrame+1))
		},
	}
	for name, w := range bad {
		buf.Reset()
		if err := w(); err != nil {
			t.Fatal(err)
		}
		b := buf.Bytes()
		fh := readFrameHeader(b)
		if plausible(fh, defaultMaxFrame) && plausiblePayload(fh, b[frameHeaderLen:]) {
			t.Errorf("%s: %v plausible", name, fh)
		}
	}
}

// findSync, started at every byte of a conversation written by the
// Framer, finds the next frame boundary, or says how much to keep.
func TestFindSyncFramer(t *testing.T) {
	seeds := seedStreams(t)
	for _, name := range slices.Sorted(mapKeys(seeds)) {
		for dir, b := range seeds[name] {
			bs := boundaries(t, b)
			for i := range b {
				j, _ := slices.BinarySearch(bs, i)
				at, ok := findSync(b[i:], defaultMaxFrame, false, nil)
				at += i
				if !ok && j < len(bs) && at > bs[j] {
					// The bytes kept hold every boundary not yet judged.
					t.Fatalf("%s dir %d from %d: keeps from %d, boundaries %v", name, dir, i, at, bs[j:])
				}
				if !ok {
					// All the bytes there will be: the chain from the second
					// boundary on is confirmed.
					at, ok = findSync(b[i:], defaultMaxFrame, true, nil)
					at += i
				}
				if !ok {
					if len(bs)-j > syncFrames+1 {
						t.Fatalf("%s dir %d from %d: no boundary found, boundaries %v", name, dir, i, bs[j:])
					}
					continue
				}
				if !slices.Contains(bs[j:], at) {
					t.Fatalf("%s dir %d from %d: boundary %d, want one of %v", name, dir, i, at, bs[j:])
				}
			}
		}
	}
}

func mapKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// On real kubelet traffic, every frame boundary starts a confirmed chain,
// and resync started at any byte lands on the first or second real
// boundary after it, never elsewhere.
func TestFindSyncCaptures(t *testing.T) {
	for _, file := range kubeletCaptures(t) {
		t.Run(captureName(file), func(t *testing.T) {
			streams := dirStreams(readChunks(t, file))
			var bytesSeen, fakeFirst, wrong, skipped int
			for k, b := range streams {
				bs := boundaries(t, b)
				isB := make([]bool, len(b)+1)
				for _, p := range bs {
					isB[p] = true
				}
				// sync[i]: where findSync(b[i:]) lands, from a backward sweep
				// (it takes the first confirmed chain at or after i).
				sync := make([]int, len(b)+1)
				sync[len(b)] = -1
				for i := len(b) - 1; i >= 0; i-- {
					sync[i] = sync[i+1]
					switch r, _, _ := chainFrom(b, i, defaultMaxFrame, nil); {
					case r == chainConfirmed:
						sync[i] = i + frameHeaderLen + int(readFrameHeader(b[i:]).Length)
						if !isB[i] {
							fakeFirst++ // a chain whose first frame is not real
						}
					case r == chainShort || r == chainExactEnd:
						sync[i] = -1
					case isB[i] && len(bs) > 0 && i < bs[len(bs)-1]-syncFrames*(frameHeaderLen+defaultMaxFrame):
						t.Errorf("conn %d dir %d: boundary %d not confirmed", k[0], k[1], i)
					}
				}
				for i := range b {
					s := sync[i]
					if s < 0 {
						continue
					}
					j, _ := slices.BinarySearch(bs, i)
					switch {
					case !isB[s]:
						wrong++
						if wrong < 5 {
							t.Errorf("conn %d dir %d: from %d, sync at %d, not a boundary", k[0], k[1], i, s)
						}
					case j+1 < len(bs) && s > bs[j+1]:
						skipped++ // a frame more than the first one is skipped
					}
				}
				bytesSeen += len(b)
			}
			t.Logf("%d bytes: %d chains begin with a frame that is not real; resync from %d of the bytes skips more than one frame; it lands off a boundary %d times",
				bytesSeen, fakeFirst, skipped, wrong)
		})
	}
}

func TestFindSyncExample(t *testing.T) {
	var buf bytes.Buffer
	fr := http2.NewFramer(&buf, nil)
	fr.WriteData(1, false, []byte("hello, a message cut in two"))
	fr.WritePing(false, [8]byte{})
	fr.WriteWindowUpdate(1, 100)
	fr.WriteWindowUpdate(0, 100)
	fr.WriteData(3, true, []byte("x"))
	fr.WriteRSTStream(3, http2.ErrCodeCancel)
	b := buf.Bytes()
	at, ok := findSync(b[12:], defaultMaxFrame, false, nil)
	// The DATA frame at 36 starts a chain but is not trusted: the next one is.
	if got := fmt.Sprint(12+at, ok, readFrameHeader(b[12+at:]).Type); got != "53 true WINDOW_UPDATE" {
		t.Errorf("got %s, want the WINDOW_UPDATE at 53", got)
	}
}
