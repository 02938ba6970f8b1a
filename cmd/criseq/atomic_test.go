package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/criseq/criseq/internal/testpeer"
)

// TestDiagramsReplacedWhole: while render draws the same capture into a
// directory again and again, each time with the client named otherwise, a
// reader never finds a diagram shorter or other than one of the two whole;
// no temporary file is left, and the files have the usual mode.
func TestDiagramsReplacedWhole(t *testing.T) {
	out := t.TempDir()
	capPath := filepath.Join("..", "..", "testdata", "kubelet-init", "capture.pcapng")
	args := func(client string) []string {
		return []string{"render", "-o", out, "--format", "svg,puml,mmd,html", "--client", client, capPath}
	}
	var wants [2]map[string][]byte
	for i, client := range []string{"kubelet", "the-kubelet"} {
		if err := run(context.Background(), args(client), io.Discard, io.Discard); err != nil {
			t.Fatal(err)
		}
		wants[i] = map[string][]byte{}
		ents, _ := os.ReadDir(out)
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join(out, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			wants[i][e.Name()] = b
		}
	}
	want := wants[0]
	if len(want) < 7 || len(wants[1]) != len(want) {
		t.Fatalf("render wrote %d files, then %d", len(want), len(wants[1]))
	}
	for name, b := range want {
		if bytes.Equal(b, wants[1][name]) {
			t.Fatalf("%s: the same with the client named otherwise: the test would not replace it", name)
		}
	}

	var stop atomic.Bool
	var reads, torn atomic.Int64
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				for name, w := range want {
					b, err := os.ReadFile(filepath.Join(out, name))
					reads.Add(1)
					if err != nil || !bytes.Equal(b, w) && !bytes.Equal(b, wants[1][name]) {
						if torn.Add(1) == 1 {
							t.Errorf("%s read as %d bytes (err %v), the whole file is %d", name, len(b), err, len(w))
						}
					}
				}
			}
		}()
	}
	for i := range 20 {
		if err := run(context.Background(), args([]string{"kubelet", "the-kubelet"}[i%2]), io.Discard, io.Discard); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	t.Logf("%d reads during 20 rewrites, %d torn", reads.Load(), torn.Load())

	old := syscall.Umask(0o022)
	syscall.Umask(old)
	ents, _ := os.ReadDir(out)
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".tmp") || strings.HasPrefix(e.Name(), ".") {
			t.Errorf("left behind: %s", e.Name())
		}
		info, _ := e.Info()
		if m := info.Mode().Perm(); m != 0o644&^os.FileMode(old) {
			t.Errorf("%s has mode %v, want 0644 less the umask %03o", e.Name(), m, old)
		}
	}
}

// TestNewDiagramsLinkedWhole: into a new directory, every diagram appears
// under its own name, whole: no temporary name is ever created (inotify
// sees every name made in the directory), and the files are the same bytes
// and mode as those written the other way (a temporary name and a
// rename), which a file system without O_TMPFILE takes.
func TestNewDiagramsLinkedWhole(t *testing.T) {
	capPath := filepath.Join("..", "..", "testdata", "kubelet-burst", "capture.pcapng")
	renderInto := func(out string) []string {
		ifd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(ifd)
		if _, err := unix.InotifyAddWatch(ifd, out, unix.IN_CREATE|unix.IN_MOVED_TO); err != nil {
			t.Fatal(err)
		}
		args := []string{"render", "-o", out, "--format", "svg,puml,mmd,json", capPath}
		if err := run(context.Background(), args, io.Discard, io.Discard); err != nil {
			t.Fatal(err)
		}
		var made []string
		buf := make([]byte, 1<<20)
		for {
			n, err := unix.Read(ifd, buf)
			if err != nil || n <= 0 {
				break
			}
			for b := buf[:n]; len(b) >= unix.SizeofInotifyEvent; {
				ev := (*unix.InotifyEvent)(unsafe.Pointer(&b[0]))
				name := b[unix.SizeofInotifyEvent : unix.SizeofInotifyEvent+int(ev.Len)]
				made = append(made, strings.TrimRight(string(name), "\x00"))
				if ev.Mask&unix.IN_Q_OVERFLOW != 0 {
					t.Fatal("inotify queue overflowed")
				}
				b = b[unix.SizeofInotifyEvent+int(ev.Len):]
			}
		}
		return made
	}

	probe := t.TempDir()
	fd, err := unix.Open(probe, unix.O_WRONLY|unix.O_TMPFILE|unix.O_CLOEXEC, 0o644)
	if err != nil {
		testpeer.Missing(t, "the file system of %s has no O_TMPFILE (%v): diagrams take temporary names there", probe, err)
	}
	unix.Close(fd)

	renamed := t.TempDir()
	unnamedFiles.Store(false)
	made := renderInto(renamed)
	unnamedFiles.Store(true)
	want := readDir(t, renamed)
	if len(want) < 20 {
		t.Fatalf("render wrote %d files", len(want))
	}
	if len(made) <= len(want) {
		t.Errorf("written by rename, %d names were made for %d diagrams: the test would not see temporary names", len(made), len(want))
	}

	// Linked by the descriptor (as root), then through /proc (as any user).
	defer linkByFd.Store(true)
	for _, byFd := range []bool{true, false} {
		linkByFd.Store(byFd)
		linked := t.TempDir()
		made := renderInto(linked)
		got := readDir(t, linked)
		for _, name := range made {
			if _, ok := got[name]; !ok {
				t.Errorf("by fd %v: a name other than a diagram's was made in the directory: %q", byFd, name)
			}
		}
		if len(made) != len(want) || len(got) != len(want) {
			t.Errorf("by fd %v: %d names made for %d diagrams (%d renamed)", byFd, len(made), len(got), len(want))
		}
		for name, w := range want {
			g, ok := got[name]
			if !ok || !bytes.Equal(g.data, w.data) || g.mode != w.mode {
				t.Errorf("by fd %v: %s: linked %d bytes mode %v, renamed %d bytes mode %v", byFd, name, len(g.data), g.mode, len(w.data), w.mode)
			}
		}
	}
}

type fileOf struct {
	data []byte
	mode os.FileMode
}

func readDir(t *testing.T, dir string) map[string]fileOf {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]fileOf{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = fileOf{b, info.Mode()}
	}
	return out
}

// TestUnchangedDiagramsLeftAlone: rendering again into the same directory
// leaves each file that already holds the diagram as it is (same inode,
// same time); a file changed since, even at the same size, and a symbolic
// link in a diagram's place are replaced by the diagram.
func TestUnchangedDiagramsLeftAlone(t *testing.T) {
	out := t.TempDir()
	capPath := filepath.Join("..", "..", "testdata", "kubelet-burst", "capture.pcapng")
	args := []string{"render", "-o", out, "--format", "svg,puml,mmd,json", capPath}
	if err := run(context.Background(), args, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	want := readDir(t, out)
	if len(want) < 8 {
		t.Fatalf("render wrote %d files", len(want))
	}
	inodes := func() map[string]unix.Stat_t {
		m := map[string]unix.Stat_t{}
		for name := range want {
			var st unix.Stat_t
			if err := unix.Lstat(filepath.Join(out, name), &st); err != nil {
				t.Fatal(err)
			}
			m[name] = st
		}
		return m
	}
	var changed, linked string
	for name := range want {
		switch {
		case changed == "":
			changed = name
		case linked == "":
			linked = name
		}
	}
	b := bytes.Clone(want[changed].data)
	b[len(b)/2] ^= 1
	if err := os.WriteFile(filepath.Join(out, changed), b, 0o644); err != nil {
		t.Fatal(err)
	}
	elsewhere := filepath.Join(t.TempDir(), "same.txt")
	if err := os.WriteFile(elsewhere, want[linked].data, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(out, linked))
	if err := os.Symlink(elsewhere, filepath.Join(out, linked)); err != nil {
		t.Fatal(err)
	}
	before := inodes()
	if err := run(context.Background(), args, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	after := inodes()
	for name, st := range after {
		was := before[name]
		replaced := st.Ino != was.Ino
		if replaced != (name == changed || name == linked) {
			t.Errorf("%s: replaced %v", name, replaced)
		}
		if !replaced && st.Mtim != was.Mtim {
			t.Errorf("%s: the same file, its time changed", name)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFREG {
			t.Errorf("%s: mode %o, not a regular file", name, st.Mode)
		}
	}
	same := func(a, b fileOf) bool { return bytes.Equal(a.data, b.data) && a.mode == b.mode }
	if got := readDir(t, out); !maps.EqualFunc(got, want, same) {
		t.Error("the files are not the diagrams")
	}
	if b, _ := os.ReadFile(elsewhere); !bytes.Equal(b, want[linked].data) {
		t.Error("the file the link pointed to changed")
	}
}

// A drawing past spillAt goes on into a file with no name, or a temporary
// one where unnamed files are off, and shows whole: new, replacing an
// older file, or the same bytes again. One whose drawing fails leaves
// neither the file nor a temporary one.
func TestDrawingsSpilledWhole(t *testing.T) {
	defer func(n int) { spillAt = n }(spillAt)
	spillAt = renderBufSize + 1000 // past what the bufio.Writer holds
	drawing := bytes.Repeat([]byte("0123456789abcdef"), 20000)
	draw := func(b []byte, fail bool) func(io.Writer) error {
		return func(w io.Writer) error {
			for p := b; len(p) > 0; p = p[min(len(p), 777):] {
				if _, err := w.Write(p[:min(len(p), 777)]); err != nil {
					return err
				}
			}
			if fail {
				return io.ErrUnexpectedEOF
			}
			return nil
		}
	}
	for _, unnamed := range []bool{true, false} {
		unnamedFiles.Store(unnamed)
		dir := t.TempDir()
		name := filepath.Join(dir, "a.png")
		var buf bytes.Buffer
		// A buffer of its own (nil), or the one kept across files, as
		// watch keeps it: a failed drawing's bytes left in it must not
		// reach the next file.
		bw := bufio.NewWriterSize(nil, renderBufSize)
		for i, want := range [][]byte{drawing, drawing[:len(drawing)/2], drawing[:len(drawing)/2], drawing[:spillAt-1], drawing[:1000], drawing[:300]} {
			var w *bufio.Writer
			if i%2 == 1 {
				w = bw
			}
			if i == 4 {
				if drawErr, _ := writeAtomicDrawn(filepath.Join(dir, "c.png"), &buf, bw, draw(drawing[:5000], true)); drawErr == nil {
					t.Fatalf("unnamed %v: a failed drawing reported no error", unnamed)
				}
				w = bw
			}
			if drawErr, err := writeAtomicDrawn(name, &buf, w, draw(want, false)); drawErr != nil || err != nil {
				t.Fatalf("unnamed %v, write %d: %v, %v", unnamed, i, drawErr, err)
			}
			got, err := os.ReadFile(name)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("unnamed %v, write %d: %d bytes, want %d (%v)", unnamed, i, len(got), len(want), err)
			}
			if st, _ := os.Stat(name); st.Mode().Perm()&^0o022 != 0o644&^0o022 || st.Mode().Perm()&0o600 != 0o600 {
				t.Errorf("unnamed %v: mode %v", unnamed, st.Mode())
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 1 {
				t.Fatalf("unnamed %v, write %d: %d entries in the directory, want the file alone", unnamed, i, len(ents))
			}
		}
		if drawErr, _ := writeAtomicDrawn(filepath.Join(dir, "b.png"), &buf, bw, draw(drawing, true)); drawErr == nil {
			t.Fatalf("unnamed %v: a failed drawing reported no error", unnamed)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 1 {
			t.Fatalf("unnamed %v: a failed drawing left %d entries", unnamed, len(ents)-1)
		}
	}
	unnamedFiles.Store(true)
}

// A flow drawn as PNG past spillAt is the PNG drawn in memory, byte for
// byte (a real kubelet capture).
func TestPNGSpilledSameBytes(t *testing.T) {
	capPath := filepath.Join("..", "..", "testdata", "kubelet-pull", "capture.pcapng")
	draw := func(spill int) map[string]fileOf {
		defer func(n int) { spillAt = n }(spillAt)
		spillAt = spill
		out := t.TempDir()
		if err := run(context.Background(), []string{"render", "-o", out, "--format", "png", capPath}, io.Discard, io.Discard); err != nil {
			t.Fatal(err)
		}
		return readDir(t, out)
	}
	const at = renderBufSize + 1000 // past what the bufio.Writer holds
	held, spilled := draw(1<<30), draw(at)
	big := 0
	for _, f := range held {
		if len(f.data) > at {
			big++
		}
	}
	if big == 0 {
		t.Fatalf("no PNG over %d bytes: none spilled", at)
	}
	same := func(a, b fileOf) bool { return bytes.Equal(a.data, b.data) && a.mode == b.mode }
	if len(held) == 0 || !maps.EqualFunc(held, spilled, same) {
		t.Fatalf("%d PNGs held, %d spilled: they differ", len(held), len(spilled))
	}
}
