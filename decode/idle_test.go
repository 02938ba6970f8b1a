package decode

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/criseq/criseq/capture"
)

// copiesNeverClosed is copies of a real capture's chunks, one after the
// other `every` apart, with new connection IDs and no Close chunk: the
// connections of a capture stopped (or clients killed) before they ended.
func copiesNeverClosed(chunks []capture.Chunk, n int, every time.Duration) []capture.Chunk {
	var maxConn uint64
	for _, c := range chunks {
		maxConn = max(maxConn, c.Conn)
	}
	var out []capture.Chunk
	for i := range n {
		for _, c := range chunks {
			if c.Kind == capture.Close {
				continue
			}
			c.Conn += uint64(i) * (maxConn + 1)
			c.Time = c.Time.Add(time.Duration(i) * every)
			out = append(out, c)
		}
	}
	return out
}

type connStream struct {
	conn   uint64
	stream uint32
}

// decodeWatching decodes chunks and returns the calls by connection and
// stream, and the most connections the Decoder held at once.
func decodeWatching(t *testing.T, chunks []capture.Chunk, opts Options) (map[connStream]*Call, int) {
	t.Helper()
	calls := map[connStream]*Call{}
	opts.OnCall = func(c *Call) { calls[connStream{c.Conn, c.Stream}] = c }
	d := New(opts)
	most := 0
	for _, c := range chunks {
		d.Feed(c)
		most = max(most, len(d.conns))
	}
	d.Close()
	return calls, most
}

// TestIdleConnectionsForgotten: connections never seen to close are
// forgotten once idle (or when there are too many), and nothing decoded
// changes: they were done.
func TestIdleConnectionsForgotten(t *testing.T) {
	chunks := readChunks(t, filepath.Join("..", "testdata", "crictl-lifecycle", "capture.pcapng"))
	span := chunks[len(chunks)-1].Time.Sub(chunks[0].Time)
	perCopy := map[uint64]bool{}
	for _, c := range chunks {
		perCopy[c.Conn] = true
	}
	for _, tc := range []struct {
		name   string
		copies int
		every  time.Duration
		most   int // connections held at once, at most
	}{
		// A copy a minute: only the last ten minutes' connections stay
		// (and a minute's more, between sweeps).
		{"idle", 40, time.Minute, 11 * len(perCopy)},
		// Copies close together: the bound on connections decides.
		{"many", 2 * maxConns / len(perCopy), span + time.Second, maxConns + 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := copiesNeverClosed(chunks, tc.copies, tc.every)
			all := tc.copies * len(perCopy)
			kept, keptMost := decodeWatching(t, in, Options{noForget: true})
			got, most := decodeWatching(t, in, Options{})
			t.Logf("%d connections never closed; held at most %d (%d without forgetting); %d calls", all, most, keptMost, len(got))
			if keptMost != all {
				t.Fatalf("without forgetting, %d connections held at most, want all %d", keptMost, all)
			}
			if most > tc.most {
				t.Errorf("held %d connections at once, want at most %d", most, tc.most)
			}
			if len(got) != len(kept) || len(got) < tc.copies*5 {
				t.Fatalf("%d calls, %d without forgetting", len(got), len(kept))
			}
			for k, want := range kept {
				c := got[k]
				if c == nil || c.Method != want.Method || c.Flags != want.Flags || !c.End.Equal(want.End) || len(c.Responses) != len(want.Responses) {
					t.Fatalf("conn %d stream %d: got %+v, want %+v", k.conn, k.stream, c, want)
				}
			}
		})
	}
}

// TestForgottenConnectionResumes: a connection idle past IdleConn is
// forgotten; when it carries bytes again it is decoded as one caught
// midway: every call named is named right, and an ErrForgotten says why.
func TestForgottenConnectionResumes(t *testing.T) {
	chunks := readChunks(t, kubeletCapture(t, "kubelet-warm"))
	// An hour of silence halfway through (kubelet paused), then the rest.
	mid := chunks[len(chunks)/2].Time
	var in []capture.Chunk
	for _, c := range chunks {
		if c.Time.After(mid) {
			c.Time = c.Time.Add(time.Hour)
		}
		in = append(in, c)
	}
	truth, _ := decodeWatching(t, in, Options{noForget: true})
	var errs []*ConnError
	got, _ := decodeWatching(t, in, Options{OnConnError: func(ce *ConnError) { errs = append(errs, ce) }})
	forgotten := map[uint64]bool{}
	for _, ce := range errs {
		if errors.Is(ce.Err, ErrForgotten) {
			forgotten[ce.Conn] = true
			t.Logf("%v", ce)
		}
	}
	if len(forgotten) == 0 {
		t.Fatalf("no connection was forgotten over an hour of silence (errors: %v)", errs)
	}
	var named, inferred, unknown int
	for k, want := range truth {
		if want.Start.Before(mid) || !forgotten[k.conn] {
			continue
		}
		c := got[k]
		switch {
		case c == nil:
			// A call whose request headers came before the first frame
			// boundary after the silence: not seen as a call.
			unknown++
		case c.Method == "":
			unknown++
		case c.Method != want.Method:
			t.Errorf("conn %d stream %d: named %s, was %s", k.conn, k.stream, c.Method, want.Method)
		case c.Flags&Inferred != 0:
			inferred++
		default:
			named++
		}
	}
	t.Logf("after the silence: %d named exactly, %d inferred, %d unknown", named, inferred, unknown)
	if named+inferred == 0 {
		t.Error("no call after the silence was named")
	}
	// Calls before the silence are the same.
	for k, want := range truth {
		if c := got[k]; want.End.Before(mid) && (c == nil || c.Method != want.Method) {
			t.Errorf("before the silence, conn %d stream %d: %v, want %s", k.conn, k.stream, c, want.Method)
		}
	}
}
