package decode

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/criseq/criseq/capture"
	"golang.org/x/net/http2"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// dumpCalls is summaries with times and the nil-ness of header lists.
func dumpCalls(calls []*Call, errs []*ConnError) string {
	var b strings.Builder
	for _, c := range calls {
		fmt.Fprintf(&b, "%v %v nil=%v,%v,%v\n", c.Start, c.End, c.RequestHeaders == nil, c.ResponseHeaders == nil, c.Trailers == nil)
		for _, l := range [][]Message{c.Requests, c.Responses} {
			for _, m := range l {
				fmt.Fprintf(&b, "  at %v\n", m.Time)
			}
		}
	}
	b.WriteString(summaries(calls, errs))
	return b.String()
}

func decodeBoth(t testing.TB, feed func(d *Decoder), opts Options) (fast, slow string) {
	for _, noFast := range []bool{false, true} {
		var calls []*Call
		o := opts
		o.OnCall = func(c *Call) { calls = append(calls, c) }
		d := New(o)
		d.noFast = noFast
		feed(d)
		d.Close()
		if noFast {
			slow = dumpCalls(calls, d.Errors())
		} else {
			fast = dumpCalls(calls, d.Errors())
		}
	}
	return fast, slow
}

// The fast path gives what the Framer gives, on real traffic.
func TestFastPathCaptures(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("..", "testdata", "*", "capture.pcapng"))
	if len(files) == 0 {
		t.Skip("no captures")
	}
	for _, file := range files {
		t.Run(filepath.Base(filepath.Dir(file)), func(t *testing.T) {
			chunks := readChunks(t, file)
			for _, noRedact := range []bool{false, true} {
				fast, slow := decodeBoth(t, func(d *Decoder) {
					for _, c := range chunks {
						d.Feed(c)
					}
				}, Options{NoRedact: noRedact})
				if fast != slow {
					t.Fatalf("fast path differs (noRedact %v):\n%s\nframer:\n%s", noRedact, fast, slow)
				}
			}
		})
	}
}

// The fast path gives what the Framer gives, whatever the bytes.
func FuzzFastPath(f *testing.F) {
	for _, s := range seedStreams(f) {
		f.Add(s[0], s[1])
	}
	f.Add([]byte(http2.ClientPreface), []byte{})
	f.Add([]byte(http2.ClientPreface+"\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00\x05\x01\x04\x00\x00\x00\x01\xff\xff\xff\xff\x0f"), []byte("\x00\x00\x00\x04\x00\x00\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, c, s []byte) {
		fast, slow := decodeBoth(t, func(d *Decoder) {
			feedStreams(d, c, s, 1+len(s)%97, true)
		}, Options{NoRedact: len(c)%2 == 0})
		if fast != slow {
			t.Fatalf("fast path differs:\n%s\nframer:\n%s", fast, slow)
		}
	})
}

// Header blocks the Framer rejects or marks truncated, on the fast path.
func TestFastPathBadHeaders(t *testing.T) {
	bad := map[string][]string{
		"uppercase name":   reqHeaders(pathVersion, "Bad", "x"),
		"pseudo after":     append(reqHeaders(pathVersion), ":method", "GET"),
		"unknown pseudo":   append([]string{":foo", "x"}, reqHeaders(pathVersion)...),
		"duplicate pseudo": append([]string{":path", pathVersion}, reqHeaders(pathVersion)...),
		"mixed pseudo":     append([]string{":status", "200"}, reqHeaders(pathVersion)...),
		"bad value":        reqHeaders(pathVersion, "x-bin", "a\x00b"),
		"bad name and val": reqHeaders(pathVersion, "a b", "a\x01b", "c", "d"),
		"empty":            {},
		"trailer field":    reqHeaders(pathVersion, "trailer", "a, b,c"),
		"space in name":    reqHeaders(pathVersion, "x y", "z"),
		"non-ascii name":   reqHeaders(pathVersion, "é", "z"),
		"sensitive":        reqHeaders(pathVersion, "authorization", "secret"),
		"no path":          {":method", "POST"},
		"big":              reqHeaders(pathVersion, "x-big", strings.Repeat("v", 40000)),
	}
	for name, kv := range bad {
		for _, noRedact := range []bool{false, true} {
			var chunks []capture.Chunk
			now := t0
			w := newH2(t, 1, &now, &chunks)
			w.headers(c2s, 1, false, kv...)
			w.data(c2s, 1, true, grpcMsg(t, &runtimeapi.VersionRequest{}))
			w.headers(s2c, 1, false, ":status", "200", "content-type", "application/grpc")
			w.headers(s2c, 1, true, append([]string{"grpc-status", "0"}, kv...)...)
			w.unary(3, pathVersion, &runtimeapi.VersionRequest{}, &runtimeapi.VersionResponse{RuntimeName: "x"})
			w.headers(s2c, 5, true, ":status", "200", "grpc-status", "0")
			fast, slow := decodeBoth(t, func(d *Decoder) {
				for _, c := range chunks {
					d.Feed(c)
				}
			}, Options{NoRedact: noRedact})
			if testing.Verbose() && !noRedact {
				t.Logf("%s: %s", name, fast)
			}
			if fast != slow {
				t.Errorf("%s: fast path differs:\n%s\nframer:\n%s", name, fast, slow)
			}
		}
	}
}
