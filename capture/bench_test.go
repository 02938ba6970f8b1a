package capture

import (
	"context"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// benchCapture writes a pcapng file of about size payload bytes on four
// connections, with chunk sizes like kubelet's CRI traffic: small requests,
// answers from a hundred bytes to tens of kilobytes.
func benchCapture(b *testing.B, size int, small bool) (path string, payload int64) {
	b.Helper()
	rng := rand.New(rand.NewSource(1))
	pick := func(d Dir) int {
		if small { // polling only: List* requests and short answers
			return 60 + rng.Intn(400)
		}
		r := rng.Intn(100)
		if d == ClientToServer {
			switch {
			case r < 60:
				return 80 + rng.Intn(220)
			case r < 90:
				return 300 + rng.Intn(1700)
			default:
				return 2000 + rng.Intn(6000)
			}
		}
		switch {
		case r < 50:
			return 100 + rng.Intn(400)
		case r < 85:
			return 1000 + rng.Intn(7000)
		default:
			return 16000 + rng.Intn(48000)
		}
	}
	buf := pattern(64000, 1)
	chunks := []Chunk{}
	var off [5][2]int64
	ts := t0
	for id := uint64(1); id <= 4; id++ {
		chunks = append(chunks, Chunk{Conn: id, Kind: Open, Time: ts},
			Chunk{Conn: id, Dir: ClientToServer, Kind: Data, Time: ts, Data: []byte(h2Preface)})
		off[id][0] = int64(len(h2Preface))
		payload += int64(len(h2Preface))
	}
	for payload < int64(size) {
		id := uint64(1 + rng.Intn(4))
		for _, d := range []Dir{ClientToServer, ServerToClient} {
			n := pick(d)
			ts = ts.Add(time.Duration(20+rng.Intn(500)) * time.Microsecond)
			chunks = append(chunks, Chunk{Conn: id, Dir: d, Kind: Data, Time: ts, Data: buf[:n], Offset: off[id][d]})
			off[id][d] += int64(n)
			payload += int64(n)
		}
	}
	return writePcapng(b, chunks), payload
}

// BenchmarkOpenFile reads a capture written by PcapngWriter; MB/s counts
// file bytes. "mixed" has kubelet-like sizes (avg ~4 KB a chunk), "small"
// only chunks of 60-460 bytes, the worst case per byte.
func BenchmarkOpenFile(b *testing.B) {
	for _, bc := range []struct {
		name  string
		size  int
		small bool
	}{{"mixed", 64 << 20, false}, {"small", 16 << 20, true}} {
		b.Run(bc.name, func(b *testing.B) {
			path, payload := benchCapture(b, bc.size, bc.small)
			st, err := os.Stat(path)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(st.Size())
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				src, err := OpenFile(path)
				if err != nil {
					b.Fatal(err)
				}
				var n int64
				for {
					c, err := src.Next()
					if err != nil {
						break
					}
					n += int64(len(c.Data))
				}
				src.Close()
				if n != payload {
					b.Fatalf("read %d payload bytes, wrote %d", n, payload)
				}
			}
			b.ReportMetric(float64(payload)*float64(b.N)/b.Elapsed().Seconds()/1e6, "payload-MB/s")
		})
	}
}

// BenchmarkPcapngWriter: what the Recorder's goroutine spends per chunk.
func BenchmarkPcapngWriter(b *testing.B) {
	f, err := CreateFile(filepath.Join(b.TempDir(), "w.pcapng"))
	if err != nil {
		b.Fatal(err)
	}
	w := NewPcapngWriter(f)
	defer w.Close()
	data := pattern(1000, 2)
	w.Write(Chunk{Conn: 1, Kind: Open, Time: t0})
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if err := w.Write(Chunk{Conn: 1, Dir: Dir(i & 1), Kind: Data, Time: t0, Data: data}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkProxyUnary measures the latency of a small unary CRI call (Version)
// made directly and through the proxy (recording to a pcapng file).
func BenchmarkProxyUnary(b *testing.B) {
	dir := b.TempDir()
	upstream, _ := startCRIServer(b, dir, 1)
	f, err := CreateFile(filepath.Join(dir, "rec.pcapng"))
	if err != nil {
		b.Fatal(err)
	}
	p := &Proxy{Upstream: upstream, Listen: filepath.Join(dir, "proxy.sock"), Recorder: NewRecorder(NewPcapngWriter(f), RecorderOptions{})}
	startProxy(b, p)
	for _, bc := range []struct{ name, sock string }{{"direct", upstream}, {"proxy", p.Listen}} {
		b.Run(bc.name, func(b *testing.B) {
			cl := newCRIClient(b, bc.sock)
			defer cl.close()
			ctx := context.Background()
			req := &runtimeapi.VersionRequest{Version: "v1"}
			for range 100 { // connect and warm up
				if _, err := cl.runtime.Version(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for b.Loop() {
				start := time.Now()
				if _, err := cl.runtime.Version(ctx, req); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1e3, "p99-µs")
		})
	}
}

// BenchmarkPcapngWriterLarge: a 16 MiB response recorded as the relay hands
// it over, in reads of its buffer's size.
func BenchmarkPcapngWriterLarge(b *testing.B) {
	f, err := CreateFile(filepath.Join(b.TempDir(), "w.pcapng"))
	if err != nil {
		b.Fatal(err)
	}
	w := NewPcapngWriter(f)
	defer w.Close()
	data := pattern(relayBufSize, 3)
	const chunks = 16 << 20 / relayBufSize
	w.Write(Chunk{Conn: 1, Kind: Open, Time: t0})
	b.SetBytes(chunks * relayBufSize)
	b.ReportAllocs()
	for b.Loop() {
		for range chunks {
			if err := w.Write(Chunk{Conn: 1, Dir: ServerToClient, Kind: Data, Time: t0, Data: data}); err != nil {
				b.Fatal(err)
			}
		}
		if err := w.Flush(); err != nil {
			b.Fatal(err)
		}
		// The file is not what is measured: start it again.
		if _, err := f.Seek(0, 0); err != nil {
			b.Fatal(err)
		}
	}
}
