package main

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/criseq/criseq/capture"
	"github.com/criseq/criseq/decode"
	"github.com/criseq/criseq/flow"
)

// largeCapture writes a capture of about size bytes by replaying a real one
// again and again, each copy with new connections and later times, as a
// node recorded for hours would give.
func largeCapture(b *testing.B, from string, size int64) string {
	b.Helper()
	chunks := readChunks(b, from)
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

// The large capture is made once per test binary: the benchmarks below
// share it.
var (
	largeOnce sync.Once
	largeDir  string
	largePath string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if largeDir != "" {
		os.RemoveAll(largeDir)
	}
	os.Exit(code)
}

// sharedLargeCapture returns the path and size of a ~400 MB capture of
// replayed real kubelet traffic.
func sharedLargeCapture(b *testing.B) (string, int64) {
	largeOnce.Do(func() {
		dir, err := os.MkdirTemp("", "criseq-bench-")
		if err != nil {
			b.Fatal(err)
		}
		largeDir = dir
		path := largeCapture(b, filepath.Join("..", "..", "testdata", "kubelet-pull", "capture.pcapng"), 200<<20)
		dst := filepath.Join(dir, "large.pcapng")
		if err := os.Rename(path, dst); err != nil {
			b.Fatal(err)
		}
		largePath = dst
	})
	if largePath == "" {
		b.Fatal("no large capture")
	}
	st, err := os.Stat(largePath)
	if err != nil {
		b.Fatal(err)
	}
	return largePath, st.Size()
}

// BenchmarkPipeline measures criseq render (read, decode, group, draw every
// flow in every format) on a large capture made of real kubelet traffic.
// MB/s is of capture file bytes, on one core.
func BenchmarkPipeline(b *testing.B) {
	path, size := sharedLargeCapture(b)
	out := b.TempDir()
	b.SetBytes(size)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := run(b.Context(), []string{"render", "-o", out, path}, io.Discard, io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPipelineDecode is the part of BenchmarkPipeline before drawing:
// read the capture, decode it and group its calls into flows, as render
// does.
func BenchmarkPipelineDecode(b *testing.B) {
	path, size := sharedLargeCapture(b)
	b.SetBytes(size)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		flows, _, err := loadFlows(path, decode.Options{}, flow.Options{Client: "kubelet"}, io.Discard)
		if err != nil {
			b.Fatal(err)
		}
		if len(flows) == 0 {
			b.Fatal("no flows")
		}
	}
}

// BenchmarkPipelineRead is the part of BenchmarkPipelineDecode before
// decoding: read the capture and reassemble its TCP streams into chunks.
func BenchmarkPipelineRead(b *testing.B) {
	path, size := sharedLargeCapture(b)
	b.SetBytes(size)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		src, err := capture.OpenFile(path)
		if err != nil {
			b.Fatal(err)
		}
		for {
			if _, err = src.Next(); err != nil {
				break
			}
		}
		src.Close()
		if !errors.Is(err, io.EOF) {
			b.Fatal(err)
		}
	}
}

// BenchmarkWatchDay replays the large capture (over a day of real kubelet
// traffic: polling, and a pod started and stopped every minute) through
// criseq watch, and reports the process's peak RSS. Run it alone
// (-bench WatchDay) so the peak is watch's.
func BenchmarkWatchDay(b *testing.B) {
	path, size := sharedLargeCapture(b)
	out := b.TempDir()
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := run(b.Context(), []string{"watch", "-r", path, "-o", out, "--format", "svg"}, io.Discard, io.Discard); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		b.ReportMetric(float64(ru.Maxrss)/1024, "maxrss-MiB")
	}
}
