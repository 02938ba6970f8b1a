package decode

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/criseq/criseq/capture"
)

// kubeletCaptures lists the real kubelet captures: testdata/kubelet-*
// and the reference capture (testdata/reference).
func kubeletCaptures(t testing.TB) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "testdata", "kubelet-*", "capture.pcapng"))
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, kubeletPcap)
	if len(files) == 1 {
		if os.Getenv("CI") == "true" {
			t.Fatal("no kubelet captures under testdata/")
		}
		t.Skip("no kubelet captures under testdata/")
	}
	return files
}

// captureName names a capture file for subtests.
// kubeletCapture is the path of one of kubeletCaptures, by name.
func kubeletCapture(t testing.TB, name string) string {
	t.Helper()
	for _, f := range kubeletCaptures(t) {
		if captureName(f) == name {
			return f
		}
	}
	t.Fatalf("capture %s not found", name)
	return ""
}

func captureName(path string) string {
	if filepath.Base(path) == "capture.pcapng" {
		return filepath.Base(filepath.Dir(path))
	}
	return strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
}

// readChunks reads every chunk of a capture file, with its own copy of
// the bytes.
func readChunks(t testing.TB, path string) []capture.Chunk {
	t.Helper()
	src, err := capture.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var chunks []capture.Chunk
	for {
		c, err := src.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		c.Data = slices.Clone(c.Data)
		chunks = append(chunks, c)
	}
	return chunks
}

// dirStreams joins the bytes of each connection and direction.
func dirStreams(chunks []capture.Chunk) map[[2]uint64][]byte {
	out := map[[2]uint64][]byte{}
	for _, c := range chunks {
		if c.Kind == capture.Data {
			k := [2]uint64{c.Conn, uint64(c.Dir)}
			out[k] = append(out[k], c.Data...)
		}
	}
	return out
}
