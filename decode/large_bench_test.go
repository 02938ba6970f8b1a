package decode_test

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/criseq/criseq/capture"
	"github.com/criseq/criseq/decode"
	"github.com/criseq/criseq/internal/benchcap"
)

var (
	largeOnce   sync.Once
	largeChunks []capture.Chunk
	largeSize   int64
	largeErr    error
)

// largeCapture reads the benchmarks' large capture (internal/benchcap, 32
// MB: copies of the real testdata captures and an event stream open
// throughout) into memory once, so that only decoding is timed.
func largeCapture(b *testing.B) ([]capture.Chunk, int64) {
	largeOnce.Do(func() {
		dir, err := os.MkdirTemp("", "criseq-decode-bench-")
		if err != nil {
			largeErr = err
			return
		}
		defer os.RemoveAll(dir)
		path := filepath.Join(dir, "large.pcapng")
		if _, largeErr = benchcap.Write(path, benchcap.DefaultSources(filepath.Join("..")), 32<<20); largeErr != nil {
			return
		}
		st, err := os.Stat(path)
		if err != nil {
			largeErr = err
			return
		}
		largeSize = st.Size()
		src, err := capture.OpenFile(path)
		if err != nil {
			largeErr = err
			return
		}
		defer src.Close()
		for {
			c, err := src.Next()
			if errors.Is(err, io.EOF) {
				return
			}
			if err != nil {
				largeErr = err
				return
			}
			c.Data = slices.Clone(c.Data)
			largeChunks = append(largeChunks, c)
		}
	})
	if largeErr != nil {
		b.Fatal(largeErr)
	}
	return largeChunks, largeSize
}

// BenchmarkDecodeLarge decodes the large capture as the commands do: every
// body (calls), polling bodies skipped (render, watch), no body at all (the
// layers below protobuf). MB/s is of capture file bytes.
func BenchmarkDecodeLarge(b *testing.B) {
	chunks, size := largeCapture(b)
	polling := map[string]bool{"ListPodSandbox": true, "ListContainers": true, "Status": true, "Version": true,
		"ImageFsInfo": true, "ListContainerStats": true, "ListImages": true, "RuntimeConfig": true}
	for _, bc := range []struct {
		name string
		skip func(_, method string) bool
	}{
		{"all-bodies", nil},
		{"no-polling-bodies", func(_, m string) bool { return polling[m] }},
		{"no-bodies", func(_, _ string) bool { return true }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(size)
			b.ReportAllocs()
			for b.Loop() {
				calls := 0
				d := decode.New(decode.Options{SkipBodies: bc.skip, OnCall: func(*decode.Call) { calls++ },
					OnStreamMessage: func(*decode.Call, decode.Message) {}})
				for _, c := range chunks {
					d.Feed(c)
				}
				d.Close()
				if calls == 0 {
					b.Fatal("no calls")
				}
			}
		})
	}
}
