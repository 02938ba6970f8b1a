package capture

import (
	"os"

	"golang.org/x/sys/unix"
)

// Write-behind bounds: every writeBehindWindow bytes the kernel is asked to
// start writing them out, and what lies dropBehind bytes back is dropped
// from the page cache, written by then (a page still dirty is kept).
const (
	writeBehindWindow = 8 << 20
	dropBehind        = 64 << 20
)

// WriteBehind is a capture file written while traffic flows. Left to the
// kernel, a long recording fills the node's page cache with bytes nobody
// reads back soon, pushing out what the node's workloads read, and every
// write takes a fresh page: on a 2-core VM, writing 1.5 GB cost 3.2–4.4 s
// of CPU that way, and 0.7–1.0 s written behind. Nothing here waits for the
// disk: a slow disk makes the kernel keep more pages, as it would anyway.
type WriteBehind struct {
	f       *os.File
	fd      int
	off     int64 // bytes written
	started int64 // the kernel was asked to write out [0, started)
	dropped int64 // [0, dropped) was dropped from the cache
	noHints bool  // the file refused a hint: no more
}

// NewWriteBehind writes f behind; closing it closes f.
func NewWriteBehind(f *os.File) *WriteBehind { return &WriteBehind{f: f, fd: int(f.Fd())} }

func (w *WriteBehind) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.off += int64(n)
	if !w.noHints && w.off-w.started >= writeBehindWindow {
		w.behind()
	}
	return n, err
}

// behind starts writing out what was written since the last call, and
// drops what is far enough behind. Hints only: an error ends the hints,
// never the recording.
func (w *WriteBehind) behind() {
	end := w.off &^ (4<<10 - 1) // whole pages: the last one is still filling
	if err := unix.SyncFileRange(w.fd, w.started, end-w.started, unix.SYNC_FILE_RANGE_WRITE); err != nil {
		w.noHints = true
		return
	}
	w.started = end
	if upTo := end - dropBehind; upTo > w.dropped {
		if err := unix.Fadvise(w.fd, w.dropped, upTo-w.dropped, unix.FADV_DONTNEED); err != nil {
			w.noHints = true
			return
		}
		w.dropped = upTo
	}
}

// Close closes the file.
func (w *WriteBehind) Close() error { return w.f.Close() }
