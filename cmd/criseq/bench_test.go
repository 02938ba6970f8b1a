package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
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
// criseq watch, run as its own process (the criseq binary, built here), and
// reports watch's peak RSS, not the test process's, which built the capture.
// CRISEQ_HEAPPROFILE=FILE also writes a heap profile of the same replay,
// in process, taken at watch's peak of live heap.
func BenchmarkWatchDay(b *testing.B) {
	path, size := sharedLargeCapture(b)
	bin := filepath.Join(b.TempDir(), "criseq")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0") // as make build: the binary a user installs
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	out := b.TempDir()
	b.SetBytes(size)
	b.ResetTimer()
	var peak int64
	for i := 0; i < b.N; i++ {
		cmd := exec.Command(bin, "watch", "-r", path, "-o", out, "--format", "svg")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			b.Fatalf("criseq watch: %v\n%s", err, stderr.String())
		}
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			peak = max(peak, ru.Maxrss)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(peak)/1024, "watch-maxrss-MiB")
	if prof := os.Getenv("CRISEQ_HEAPPROFILE"); prof != "" {
		heapProfileAtPeak(b, prof, func() error {
			return run(b.Context(), []string{"watch", "-r", path, "-o", out, "--format", "svg"}, io.Discard, io.Discard)
		})
	}
}

// heapProfileAtPeak runs f and writes a heap profile taken when the live
// heap was largest (sampled every 50 ms).
func heapProfileAtPeak(b *testing.B, path string, f func() error) {
	var mu sync.Mutex
	var best bytes.Buffer
	var bestHeap uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > bestHeap {
				var buf bytes.Buffer
				if err := pprof.Lookup("heap").WriteTo(&buf, 0); err == nil {
					mu.Lock()
					bestHeap, best = ms.HeapAlloc, buf
					mu.Unlock()
				}
			}
		}
	}()
	runtime.MemProfileRate = 64 << 10
	err := f()
	close(stop)
	<-done
	if err != nil {
		b.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if err := os.WriteFile(path, best.Bytes(), 0o644); err != nil {
		b.Fatal(err)
	}
	b.Logf("heap profile at a live heap of %.1f MiB: %s", float64(bestHeap)/(1<<20), path)
}
