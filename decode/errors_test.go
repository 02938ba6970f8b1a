package decode

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/criseq/criseq/capture"
	"golang.org/x/net/http2"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Broken connections give a ConnError at the right offset, and decoding
// resumes at the next frame boundary found; a healthy connection
// interleaved with each goes on.
func TestBrokenFrames(t *testing.T) {
	type broken struct {
		name string
		dir  capture.Dir
		err  error
		msg  string
		// write breaks the connection and returns the offset of the error.
		write func(w *h2) int64
		// check looks at the calls of the broken connection, fed in whole
		// writes (whole) or cut in pieces of a few bytes, where fewer
		// frames remain than a resync needs.
		check func(t *testing.T, calls []*Call, whole bool)
	}
	raw := func(w *h2, dir capture.Dir, b string) {
		w.out[dir].WriteString(b)
		w.flush(dir)
	}
	// restart drops what newH2 wrote for w, to write another start.
	restart := func(w *h2) {
		w.off = [2]int64{}
		*w.chunks = slices.DeleteFunc(*w.chunks, func(c capture.Chunk) bool { return c.Conn == w.conn })
	}
	cases := []broken{{
		name: "bad preface", dir: c2s, err: ErrPreface,
		write: func(w *h2) int64 {
			restart(w)
			raw(w, c2s, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			return 0
		},
	}, {
		name: "garbage after the preface", dir: c2s, err: ErrFrame, msg: "not SETTINGS",
		write: func(w *h2) int64 {
			restart(w)
			raw(w, c2s, http2.ClientPreface+"hello, this is not HTTP/2 at all")
			return 24
		},
	}, {
		name: "bad PING length", dir: c2s, err: ErrFrame, msg: "FRAME_SIZE_ERROR",
		write: func(w *h2) int64 {
			w.unary(1, pathVersion, &runtimeapi.VersionRequest{}, &runtimeapi.VersionResponse{})
			at := w.off[c2s]
			w.check(w.fr[c2s].WriteRawFrame(http2.FramePing, 0, 0, []byte{1, 2, 3, 4, 5}))
			w.flush(c2s)
			w.unary(3, pathVersion, &runtimeapi.VersionRequest{}, versionResp("again"))
			return at
		},
		check: func(t *testing.T, calls []*Call, whole bool) {
			if len(calls) != 2 || calls[0].Stream != 1 || calls[0].Flags != 0 || calls[1].Status != 0 {
				t.Fatalf("calls:\n%s", summaries(calls, nil))
			}
			c := calls[1]
			switch {
			case whole:
				// Resumed at the next HEADERS; its :path is an entry from
				// before, so the method is inferred from the messages.
				if c.Name != "Version" || c.Flags != Inferred || c.Response().(*runtimeapi.VersionResponse).RuntimeName != "again" {
					t.Errorf("after the resync: %s", summary(c))
				}
			case c.Method != "" || !hasError(c.Errors, "response to a request that was not seen"):
				t.Errorf("too few frames to resync, the response alone: %s", summary(c))
			}
		},
	}, {
		name: "bad SETTINGS length", dir: s2c, err: ErrFrame, msg: "FRAME_SIZE_ERROR",
		write: func(w *h2) int64 {
			w.request(1, pathVersion, &runtimeapi.VersionRequest{})
			at := w.off[s2c]
			w.check(w.fr[s2c].WriteRawFrame(http2.FrameSettings, 0, 0, []byte{0, 1, 0, 0, 0, 0, 9}))
			w.flush(s2c)
			w.response(1, &runtimeapi.VersionResponse{})
			w.request(3, pathVersion, &runtimeapi.VersionRequest{})
			return at
		},
		check: func(t *testing.T, calls []*Call, whole bool) {
			// The open call is cut: decoding resumes at the next write, its
			// response, whose message is not read (it might continue bytes
			// skipped), but its status is.
			if len(calls) != 2 || !hasError(calls[0].Errors, "server→client decoding error at offset 24") ||
				calls[1].Flags != Incomplete || calls[1].Request() == nil {
				t.Fatalf("calls:\n%s", summaries(calls, nil))
			}
			if c := calls[0]; c.Response() != nil || whole && (c.Flags != Gap || c.Status != 0) || !whole && c.Flags&Gap == 0 {
				t.Errorf("the call cut: %s", summary(c))
			}
		},
	}, {
		name: "truncated frame", dir: s2c, err: ErrTruncated,
		write: func(w *h2) int64 {
			w.request(1, pathVersion, &runtimeapi.VersionRequest{})
			w.headers(s2c, 1, false, ":status", "200")
			at := w.off[s2c]
			w.check(w.fr[s2c].WriteData(1, false, grpcMsg(w.t, &runtimeapi.VersionResponse{RuntimeName: "cut short"})))
			w.out[s2c].Truncate(15)
			w.flush(s2c)
			w.close(s2c)
			w.close(c2s)
			return at
		},
		check: func(t *testing.T, calls []*Call, _ bool) {
			if len(calls) != 1 || calls[0].Flags != Incomplete || calls[0].Request() == nil {
				t.Errorf("calls:\n%s", summaries(calls, nil))
			}
		},
	}, {
		name: "HPACK garbage", dir: c2s, err: ErrFrame, msg: "COMPRESSION_ERROR",
		write: func(w *h2) int64 {
			at := w.off[c2s]
			w.writeBlock(c2s, 1, false, []byte{0xff, 0xff, 0xff, 0xff, 0x0f})
			w.flush(c2s)
			return at
		},
	}, {
		name: "DATA on stream 0", dir: c2s, err: ErrFrame, msg: "PROTOCOL_ERROR",
		write: func(w *h2) int64 {
			at := w.off[c2s]
			w.check(w.fr[c2s].WriteRawFrame(http2.FrameData, 0, 0, []byte{0}))
			w.flush(c2s)
			return at
		},
	}, {
		name: "HEADERS padding too long", dir: c2s, err: ErrFrame, msg: "PROTOCOL_ERROR",
		write: func(w *h2) int64 {
			at := w.off[c2s]
			// PADDED, END_HEADERS; pad length 200 in a 3-byte payload.
			w.check(w.fr[c2s].WriteRawFrame(http2.FrameHeaders, 0x8|0x4, 1, []byte{200, 0x82, 0x86}))
			w.flush(c2s)
			return at
		},
	}, {
		name: "HEADERS without CONTINUATION", dir: c2s, err: ErrFrame, msg: "expected CONTINUATION",
		write: func(w *h2) int64 {
			at := w.off[c2s]
			w.check(w.fr[c2s].WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: w.block(c2s, reqHeaders(pathVersion)...)}))
			w.check(w.fr[c2s].WritePing(false, [8]byte{}))
			w.flush(c2s)
			return at
		},
	}, {
		name: "unexpected CONTINUATION", dir: c2s, err: ErrFrame, msg: "unexpected CONTINUATION",
		write: func(w *h2) int64 {
			at := w.off[c2s]
			w.check(w.fr[c2s].WriteContinuation(1, true, []byte{0x82}))
			w.flush(c2s)
			return at
		},
	}, {
		name: "PUSH_PROMISE", dir: s2c, err: ErrFrame, msg: "PUSH_PROMISE",
		write: func(w *h2) int64 {
			w.request(1, pathVersion, &runtimeapi.VersionRequest{})
			at := w.off[s2c]
			w.check(w.fr[s2c].WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, BlockFragment: []byte{0x82}, EndHeaders: true}))
			w.flush(s2c)
			return at
		},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var chunks []capture.Chunk
			now := t0
			good := newH2(t, 1, &now, &chunks)
			bad := newH2(t, 2, &now, &chunks)
			good.unary(1, pathVersion, &runtimeapi.VersionRequest{}, &runtimeapi.VersionResponse{RuntimeName: "before"})
			at := tc.write(bad)
			good.unary(3, pathVersion, &runtimeapi.VersionRequest{}, &runtimeapi.VersionResponse{RuntimeName: "after"})

			for _, n := range []int{0, 1, 4} {
				in := chunks
				if n > 0 {
					in = rechunk(chunks, n)
				}
				calls, errs := decodeChunks(Options{}, in)
				if len(errs) != 1 && (n == 0 || len(errs) == 0) {
					t.Fatalf("errors %v", errs)
				}
				e := errs[0]
				if n > 0 && len(errs) > 1 {
					// Cut in small pieces, a resync may take bytes of the bad
					// frame for a chain and fail again: never a wrong call.
					errs = errs[:1]
				}
				if e.Conn != 2 || e.Dir != tc.dir.String() || e.Offset != at || !errors.Is(e, tc.err) || !strings.Contains(e.Error(), tc.msg) {
					t.Errorf("error %v (conn %d dir %s offset %d), want conn 2 %s offset %d %v %q", e, e.Conn, e.Dir, e.Offset, tc.dir, at, tc.err, tc.msg)
				}
				var goodCalls, badCalls []*Call
				for _, c := range calls {
					if c.Conn == 1 {
						goodCalls = append(goodCalls, c)
					} else {
						badCalls = append(badCalls, c)
					}
				}
				if len(goodCalls) != 2 || goodCalls[1].Response().(*runtimeapi.VersionResponse).RuntimeName != "after" || goodCalls[1].Flags != 0 {
					t.Errorf("healthy connection:\n%s", summaries(goodCalls, nil))
				}
				if tc.check != nil {
					tc.check(t, badCalls, n == 0)
				}
			}
		})
	}
}

// A header field HTTP/2 forbids hurts its stream only.
func TestInvalidHeaderField(t *testing.T) {
	w, chunks := fixture(t)
	w.headers(c2s, 1, false, reqHeaders(pathVersion, "X-Upper-Case", "no")...)
	w.data(c2s, 1, true, grpcMsg(t, &runtimeapi.VersionRequest{}))
	w.response(1, &runtimeapi.VersionResponse{})
	w.request(3, pathVersion, &runtimeapi.VersionRequest{})
	w.check(w.fr[c2s].WriteRawFrame(http2.FrameWindowUpdate, 0, 3, []byte{0, 0, 0, 0})) // zero increment
	w.flush(c2s)
	w.response(3, &runtimeapi.VersionResponse{RuntimeName: "fine"})
	w.request(5, pathVersion, &runtimeapi.VersionRequest{})
	w.headers(s2c, 5, true, ":status", "200", "grpc-status", "0", "Bad-Name", "x")
	calls, errs := decodeChunks(Options{}, *chunks)
	if len(errs) > 0 || len(calls) != 3 {
		t.Fatalf("%d calls, errors %v", len(calls), errs)
	}
	if c := calls[2]; c.Flags != Malformed || !hasError(c.Errors, "response headers: bad HEADERS frame") || c.End.IsZero() {
		t.Errorf("%s", summary(c))
	}
	if c := calls[0]; c.Flags != Malformed || !hasError(c.Errors, "request headers: bad HEADERS frame") || c.Status != 0 {
		t.Errorf("%s", summary(c))
	}
	if c := calls[1]; c.Flags != 0 || c.Response().(*runtimeapi.VersionResponse).RuntimeName != "fine" || !hasError(c.Errors, "bad WINDOW_UPDATE frame") {
		t.Errorf("%s", summary(c))
	}
}

func TestGap(t *testing.T) {
	w, chunks := fixture(t)
	w.request(1, pathVersion, &runtimeapi.VersionRequest{})
	w.headers(c2s, 3, false, reqHeaders(pathStatus)...)
	// Bytes lost client→server: call 3's request and the next call.
	at := w.off[c2s]
	w.check(w.fr[c2s].WriteData(3, true, grpcMsg(t, &runtimeapi.ContainerStatusRequest{ContainerId: "c"})))
	lost := w.out[c2s].Len()
	w.out[c2s].Reset()
	w.off[c2s] += int64(lost)
	resumed := w.off[c2s]
	w.request(5, pathVersion, &runtimeapi.VersionRequest{})
	(*chunks)[len(*chunks)-2].Gap = lost
	w.response(1, &runtimeapi.VersionResponse{RuntimeName: "one"})
	w.response(3, &runtimeapi.ContainerStatusResponse{Status: &runtimeapi.ContainerStatus{Id: "c"}})
	w.response(5, versionResp("five"))

	calls, errs := decodeChunks(Options{}, *chunks)
	want := fmt.Sprintf("decoding resumed at offset %d (2 calls cut)", resumed)
	if len(errs) != 1 || !errors.Is(errs[0], ErrBytesLost) || errs[0].Offset != at || errs[0].Dir != c2s.String() ||
		errs[0].Resumed != resumed || !strings.Contains(errs[0].Error(), want) {
		t.Fatalf("errors %v, want one saying %q", errs, want)
	}
	if len(calls) != 3 {
		t.Fatalf("calls:\n%s", summaries(calls, nil))
	}
	for _, c := range calls[:2] {
		if c.Flags&Gap == 0 || c.Status != 0 || c.Response() == nil || !hasError(c.Errors, "bytes lost") {
			t.Errorf("%s", summary(c))
		}
	}
	if calls[1].Request() != nil {
		t.Errorf("request in the gap decoded")
	}
	// After the gap the table is unknown: the :path of call 5 is an entry
	// from before, its method is inferred.
	if c := calls[2]; c.Name != "Version" || c.Flags != Inferred || c.Response().(*runtimeapi.VersionResponse).RuntimeName != "five" {
		t.Errorf("after the gap: %s", summary(c))
	}

	// An offset beyond the bytes seen is a gap too; server→client: the
	// open call gets its status after the resync, not its message (the
	// bytes after a gap may continue one).
	w2, chunks2 := fixture(t)
	w2.request(1, pathVersion, &runtimeapi.VersionRequest{})
	w2.off[s2c] += 10
	w2.response(1, &runtimeapi.VersionResponse{RuntimeName: "late"})
	calls, errs = decodeChunks(Options{}, *chunks2)
	if len(errs) != 1 || !errors.Is(errs[0], ErrBytesLost) || errs[0].Dir != s2c.String() || errs[0].Resumed != errs[0].Offset+10 {
		t.Fatalf("errors %v", errs)
	}
	if len(calls) != 1 || calls[0].Flags != Gap || calls[0].Status != 0 || len(calls[0].Responses) != 0 {
		t.Errorf("calls:\n%s", summaries(calls, nil))
	}
}

// versionResp is a VersionResponse as containerd gives it, which tells
// its type by its shape.
func versionResp(name string) *runtimeapi.VersionResponse {
	return &runtimeapi.VersionResponse{Version: "0.1.0", RuntimeName: name, RuntimeVersion: "1.6.20", RuntimeApiVersion: "v1"}
}

// Orphan responses (request headers never seen, stream above any seen) are
// shown; frames of ended streams are not.
func TestOrphanResponse(t *testing.T) {
	w, chunks := fixture(t)
	w.response(9, &runtimeapi.VersionResponse{})
	c := oneCall(t)(decodeChunks(Options{}, *chunks))
	if c.Stream != 9 || c.Method != "" || c.Known || !hasError(c.Errors, "response to a request that was not seen") || len(c.Responses) != 1 {
		t.Errorf("%s", summary(c))
	}
	if !proto.Equal(&runtimeapi.VersionResponse{}, &runtimeapi.VersionResponse{}) {
		t.Fatal()
	}
}
