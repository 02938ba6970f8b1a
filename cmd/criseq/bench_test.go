package main

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/criseq/criseq/capture"
)

// largeCapture writes a capture of about size bytes by replaying a real one
// again and again, each copy with new connections and later times, as a
// node recorded for hours would give.
func largeCapture(b *testing.B, from string, size int64) string {
	b.Helper()
	src, err := capture.OpenFile(from)
	if err != nil {
		b.Fatal(err)
	}
	var chunks []capture.Chunk
	for {
		c, err := src.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			b.Fatal(err)
		}
		c.Data = append([]byte(nil), c.Data...)
		chunks = append(chunks, c)
	}
	src.Close()
	if len(chunks) == 0 {
		b.Fatalf("%s holds no chunks", from)
	}
	span := chunks[len(chunks)-1].Time.Sub(chunks[0].Time) + time.Second
	path := filepath.Join(b.TempDir(), "large.pcapng")
	f, err := capture.CreateFile(path)
	if err != nil {
		b.Fatal(err)
	}
	w := capture.NewPcapngWriter(f)
	var written int64
	for k := uint64(0); written < size; k++ {
		for _, c := range chunks {
			c.Conn += k * 100
			c.Time = c.Time.Add(time.Duration(k) * span)
			if err := w.Write(c); err != nil {
				b.Fatal(err)
			}
			written += int64(len(c.Data))
		}
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	return path
}

// BenchmarkPipeline measures criseq render (read, decode, group, draw every
// flow in every format) on a large capture made of real kubelet traffic.
// MB/s is of capture file bytes, on one core.
func BenchmarkPipeline(b *testing.B) {
	path := largeCapture(b, filepath.Join("..", "..", "testdata", "kubelet-pull", "capture.pcapng"), 200<<20)
	st, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	out := b.TempDir()
	b.SetBytes(st.Size())
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := run(b.Context(), []string{"render", "-o", out, path}, io.Discard, io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}
