package capture

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestWriteBehind: a file written behind holds every byte written, in
// writes of any size, and what lies far enough behind is no longer in the
// page cache.
func TestWriteBehind(t *testing.T) {
	dir := t.TempDir()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	if st.Type == unix.TMPFS_MAGIC {
		t.Skipf("%s is on tmpfs, whose pages are the file itself: set TMPDIR to a disk file system", dir)
	}
	path := filepath.Join(dir, "w.pcapng")
	f, err := CreateFile(path)
	if err != nil {
		t.Fatal(err)
	}
	w := NewWriteBehind(f)
	rng := rand.New(rand.NewPCG(11, 7))
	sum := sha256.New()
	var total, synced int64
	buf := make([]byte, 300<<10)
	for total < dropBehind+3*writeBehindWindow {
		b := buf[:1+rng.IntN(len(buf))]
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		n, err := w.Write(b)
		if err != nil || n != len(b) {
			t.Fatalf("write %d bytes: %d, %v", len(b), n, err)
		}
		sum.Write(b)
		total += int64(n)
		// On disk well before their turn to be dropped: pages still
		// dirty then are kept, and the test would hang on the disk's speed.
		if total-synced >= 4<<20 {
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
			synced = total
		}
	}
	if w.noHints {
		t.Fatalf("the file refused a hint")
	}
	if w.dropped < 16<<20 {
		t.Fatalf("dropped the first %d bytes of %d, want at least 16 MiB", w.dropped, total)
	}

	// Resident pages of what was dropped, before reading brings them back.
	r, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	m, err := unix.Mmap(int(r.Fd()), 0, int(w.dropped), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	vec := make([]byte, (len(m)+os.Getpagesize()-1)/os.Getpagesize())
	_, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0])))
	unix.Munmap(m)
	if errno != 0 {
		t.Fatalf("mincore: %v", errno)
	}
	resident := 0
	for _, v := range vec {
		resident += int(v & 1)
	}
	if resident > len(vec)/20 {
		t.Errorf("%d of the %d pages dropped behind are still cached", resident, len(vec))
	}

	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got := sha256.New()
	n, err := io.Copy(got, r)
	if err != nil {
		t.Fatal(err)
	}
	if n != total || !bytes.Equal(got.Sum(nil), sum.Sum(nil)) {
		t.Fatalf("file holds %d bytes, not the %d written", n, total)
	}
}

// TestWriteBehindRefused: a file that takes no hint (a character device)
// is written all the same.
func TestWriteBehindRefused(t *testing.T) {
	f, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	w := NewWriteBehind(f)
	defer w.Close()
	b := make([]byte, 1<<20)
	for range 3 * writeBehindWindow >> 20 {
		if n, err := w.Write(b); err != nil || n != len(b) {
			t.Fatalf("write: %d, %v", n, err)
		}
	}
	if !w.noHints {
		t.Errorf("%s took the hints; the test needs a file that refuses them", os.DevNull)
	}
}

// TestProxyRecordsWrittenBehind: real grpc-go calls through the relay,
// recorded as record records them, into a file written behind: far more
// than is kept cached, and the file holds every byte each peer saw.
func TestProxyRecordsWrittenBehind(t *testing.T) {
	if testing.Short() {
		t.Skip("relays 80 MB (a minute under -race); not in -short runs")
	}
	dir := t.TempDir()
	upstream, srvTees := startCRIServer(t, dir, 10000) // about 2 MB a ListContainers
	path := filepath.Join(dir, "rec.pcapng")
	f, err := CreateFile(path)
	if err != nil {
		t.Fatal(err)
	}
	wb := NewWriteBehind(f)
	p := &Proxy{Upstream: upstream, Listen: filepath.Join(dir, "proxy.sock"), Recorder: NewRecorder(NewPcapngWriter(wb), RecorderOptions{})}
	stop := startProxy(t, p)
	cl := newCRIClient(t, p.Listen)
	for p.Recorder.Stats().Bytes+p.Recorder.Stats().DroppedBytes < dropBehind+2*writeBehindWindow {
		if _, err := cl.runtime.ListContainers(context.Background(), &runtimeapi.ListContainersRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	cl.close()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if wb.noHints || wb.dropped == 0 {
		t.Fatalf("wrote %d bytes: hints refused %v, %d bytes dropped behind", wb.off, wb.noHints, wb.dropped)
	}
	if s := p.Recorder.Stats(); s.DroppedChunks != 0 {
		t.Fatalf("dropped %d chunks", s.DroppedChunks)
	}
	src, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	checkRecording(t, readAll(t, src), cl.connections(), srvTees.accepted())
}
