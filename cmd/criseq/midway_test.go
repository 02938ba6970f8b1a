package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/criseq/criseq/capture"
)

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
			return chunks
		}
		if err != nil {
			t.Fatal(err)
		}
		c.Data = append([]byte(nil), c.Data...)
		chunks = append(chunks, c)
	}
}

// midwayCapture writes the calls of a real capture from its middle on, as
// a capture that began then would hold them: each direction's first byte
// is not its connection's first byte.
func midwayCapture(t *testing.T, from string) string {
	t.Helper()
	return midwayCaptureNotes(t, from, capture.Notes{})
}

// midwayCaptureNotes is midwayCapture writing a file with notes.
func midwayCaptureNotes(t *testing.T, from string, notes capture.Notes) string {
	t.Helper()
	chunks := readChunks(t, from)
	path := filepath.Join(t.TempDir(), "midway.pcapng")
	f, err := capture.CreateFile(path)
	if err != nil {
		t.Fatal(err)
	}
	w := capture.NewPcapngWriterNotes(f, notes)
	for _, c := range chunks[len(chunks)/3:] {
		if c.Kind == capture.Open {
			continue
		}
		if err := w.Write(c); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// criseq calls on a capture that began midway: calls are listed, those
// whose method was inferred marked ~, and none named otherwise than the
// whole capture names it.
func TestCallsMidway(t *testing.T) {
	file := filepath.Join("..", "..", "testdata", "kubelet-pull", "capture.pcapng")
	path := midwayCapture(t, file)
	truth := callsTruth(t, file)
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"calls", "--json", path}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	exact, inferred, unknown, hinted := midwayCounts(t, &stdout, truth)
	if inferred == 0 || exact+inferred < 4*unknown {
		t.Errorf("%d exact, %d inferred, %d unknown", exact, inferred, unknown)
	}
	// The table marks them.
	stdout.Reset()
	if err := run(context.Background(), []string{"calls", path}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	out := stdout.String()
	if !strings.Contains(out, "RuntimeService/ListPodSandbox~") || !strings.Contains(out, "~ inferred from the messages") ||
		(unknown > 0) != strings.Contains(out, "(unknown): the :path was not read") || (hinted > 0) != strings.Contains(out, "one of ") {
		t.Errorf("calls table:\n%s", out)
	}
	// The file shows no handshake for connections whose first bytes are
	// from their middle: they are read as caught midway, which is no error.
	if s := stderr.String(); strings.Contains(s, "preface") || strings.Contains(s, "bad frame") || strings.Contains(s, "skipped") {
		t.Errorf("stderr: %s", s)
	}
	if testing.Verbose() {
		t.Logf("%s", out)
	}
	os.Remove(path)
}

// callsTruth maps each call of a whole capture, by connection and stream,
// to its method, as criseq calls --json prints it.
func callsTruth(t *testing.T, file string) map[[2]float64]string {
	t.Helper()
	var whole, stderr bytes.Buffer
	if err := run(context.Background(), []string{"calls", "--json", file}, &whole, &stderr); err != nil {
		t.Fatal(err)
	}
	truth := map[[2]float64]string{}
	for _, line := range strings.Split(strings.TrimSpace(whole.String()), "\n") {
		var j map[string]any
		if err := json.Unmarshal([]byte(line), &j); err != nil {
			t.Fatal(err)
		}
		truth[[2]float64{j["conn"].(float64), j["stream"].(float64)}] = j["method"].(string)
	}
	return truth
}

// midwayCounts reads calls --json output and counts the calls named
// exactly, inferred and unknown, and the unknown ones given candidates; a
// call named otherwise than the truth, or whose candidates leave out the
// truth, fails the test.
func midwayCounts(t *testing.T, out io.Reader, truth map[[2]float64]string) (exact, inferred, unknown, hinted int) {
	t.Helper()
	sc := bufio.NewScanner(out)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var j struct {
			Conn       float64
			Stream     float64
			Method     string
			Candidates []string
			Flags      []string
		}
		if err := json.Unmarshal(sc.Bytes(), &j); err != nil {
			t.Fatal(err)
		}
		want, ok := truth[[2]float64{j.Conn, j.Stream}]
		isInferred := strings.Contains(strings.Join(j.Flags, ","), "inferred")
		switch {
		case !ok:
			t.Errorf("conn %v stream %v: a call the whole capture does not have", j.Conn, j.Stream)
		case j.Method == "":
			unknown++
			if len(j.Candidates) > 0 {
				hinted++
				if !slices.Contains(j.Candidates, path.Base(want)) {
					t.Errorf("conn %v stream %v: unknown, one of %v, but it is %s", j.Conn, j.Stream, j.Candidates, want)
				}
			}
		case j.Method != want:
			t.Errorf("conn %v stream %v: %s, want %s", j.Conn, j.Stream, j.Method, want)
		case isInferred:
			inferred++
		default:
			exact++
		}
	}
	return exact, inferred, unknown, hinted
}

// --cri-list-streaming, and the note record --attach leaves in a capture:
// a kubelet that never streams lists has its List* calls caught midway
// named, where the bytes alone leave them unknown; "on" overrides the note.
func TestCallsMidwayListStreaming(t *testing.T) {
	file := filepath.Join("..", "..", "testdata", "kubelet-warm", "capture.pcapng")
	truth := callsTruth(t, file)
	plain := midwayCapture(t, file)
	noted := midwayCaptureNotes(t, file, capture.Notes{NoListStreaming: true, Why: "kubelet v1.37.2, CRIListStreaming not set: off by default"})
	unknowns := func(args ...string) int {
		t.Helper()
		var stdout, stderr bytes.Buffer
		if err := run(context.Background(), append([]string{"calls", "--json"}, args...), &stdout, &stderr); err != nil {
			t.Fatal(err)
		}
		_, _, unknown, _ := midwayCounts(t, &stdout, truth)
		return unknown
	}
	bytesAlone := unknowns(plain)
	off := unknowns("--cri-list-streaming=off", plain)
	noteSays := unknowns(noted)
	overridden := unknowns("--cri-list-streaming=on", noted)
	t.Logf("unknown calls: %d from the bytes alone, %d with --cri-list-streaming=off, %d from the note, %d with the note overridden", bytesAlone, off, noteSays, overridden)
	if off >= bytesAlone || noteSays != off || overridden != bytesAlone {
		t.Errorf("unknown calls: %d from the bytes alone, %d with --cri-list-streaming=off, %d from the note, %d with the note overridden", bytesAlone, off, noteSays, overridden)
	}
	var stderr bytes.Buffer
	if err := run(context.Background(), []string{"calls", "--cri-list-streaming=maybe", plain}, io.Discard, &stderr); err == nil || !strings.Contains(stderr.String(), "give auto, off or on") {
		t.Errorf("--cri-list-streaming=maybe: err %v, stderr %s", err, stderr.String())
	}
}
