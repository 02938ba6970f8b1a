package main

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// writeAtomic writes a file whole or not at all: a reader (a CI step, a
// browser watching the directory, watch rewriting a diagram) sees the old
// file or the new one, never half of one. The mode is 0644 less the umask,
// as os.Create gives.
//
// A new name is written as an unnamed file (O_TMPFILE) and then linked in:
// no temporary name ever shows, none is left if criseq is killed, and the
// kernel does a third less work than for a temporary file and a rename
// (render writes thousands). A name that exists, or a file system without
// O_TMPFILE, takes a temporary name beside it and a rename.
//
// A name that already holds data, byte for byte, is left as it is: a
// render into the directory of an earlier run replaces nothing that did
// not change (replacing a file frees its inode, and on ext4 the next
// files made then cost the kernel several times more), and a reader
// watching the directory sees no change where there is none.
func writeAtomic(name string, data []byte) error {
	if holds(name, data) {
		return nil
	}
	if unnamedFiles.Load() {
		done, err := writeLinked(name, data)
		if done {
			return err
		}
	}
	return writeRenamed(name, data, -1)
}

// holds reports whether name is a regular file (not through a symbolic
// link) whose bytes are data. Any error reading it: no.
func holds(name string, data []byte) bool {
	fd, err := unix.Open(name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size != int64(len(data)) {
		return false
	}
	buf := holdsBuf.Get().(*[]byte)
	defer holdsBuf.Put(buf)
	for rest := data; ; {
		n, err := unix.Read(fd, *buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n > len(rest) || !bytes.Equal((*buf)[:n], rest[:n]) {
			return false
		}
		rest = rest[n:]
		if n == 0 {
			return len(rest) == 0
		}
	}
}

var holdsBuf = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// unnamedFiles is cleared once the file system says it has no O_TMPFILE.
var unnamedFiles atomic.Bool

// openUnnamed opens a new unnamed file in dir for writing, mode 0644
// (O_TMPFILE). Where that is not supported (EOPNOTSUPP; EISDIR or EINVAL
// from kernels before 3.11), unnamedFiles is cleared: not asked again.
func openUnnamed(dir string) (int, error) {
	fd, err := unix.Open(dir, unix.O_WRONLY|unix.O_TMPFILE|unix.O_CLOEXEC, 0o644)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EISDIR) || errors.Is(err, unix.EINVAL) {
		unnamedFiles.Store(false)
	}
	return fd, err
}

func init() {
	unnamedFiles.Store(true)
	linkByFd.Store(true)
}

// writeLinked writes data into an unnamed file in name's directory and
// links it as name; if name exists, it renames it into place. done is
// false where the caller should write it another way.
func writeLinked(name string, data []byte) (done bool, err error) {
	fd, err := openUnnamed(filepath.Dir(name))
	if err != nil {
		// Other errors than no O_TMPFILE (a directory not writable, say)
		// are reported by the other way, by name.
		return false, nil
	}
	defer unix.Close(fd)
	for b := data; len(b) > 0; {
		n, err := unix.Write(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return true, &fs.PathError{Op: "write", Path: name, Err: err}
		}
		b = b[n:]
	}
	err = linkFd(fd, name)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, unix.EEXIST):
		return true, writeRenamed(name, nil, fd)
	}
	// No /proc (ENOENT), or a link refused: the data is written again,
	// under a temporary name, and so are the next files.
	unnamedFiles.Store(false)
	return false, nil
}

// linkFd links the open file fd as name: by the descriptor itself
// (AT_EMPTY_PATH, which needs CAP_DAC_READ_SEARCH: root), else through
// /proc, which needs nothing but costs a path lookup.
func linkFd(fd int, name string) error {
	if linkByFd.Load() {
		err := unix.Linkat(fd, "", unix.AT_FDCWD, name, unix.AT_EMPTY_PATH)
		if err == nil || errors.Is(err, unix.EEXIST) || !(errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.EINVAL)) {
			return err
		}
		linkByFd.Store(false)
	}
	return unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), unix.AT_FDCWD, name, unix.AT_SYMLINK_FOLLOW)
}

// linkByFd is cleared once AT_EMPTY_PATH is refused.
var linkByFd atomic.Bool

// writeRenamed writes data (or links the unnamed file fd, if fd >= 0)
// under a temporary name beside name, then renames it into place. The
// temporary name is hidden and ends in .tmp, out of globs like *.svg.
func writeRenamed(name string, data []byte, fd int) error {
	return writeRenamedFunc(name, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	}, fd)
}

// writeRenamedFunc is writeRenamed with the file written by fill.
func writeRenamedFunc(name string, fill func(io.Writer) error, fd int) error {
	var f *os.File
	var tmp string
	var err error
	if fd >= 0 {
		for range 100 {
			tmp = tempName(name)
			if err = linkFd(fd, tmp); err != nil {
				err = &fs.PathError{Op: "link", Path: tmp, Err: err}
			}
			if !errors.Is(err, fs.ErrExist) {
				break
			}
		}
	} else {
		f, tmp, err = createTemp(name)
	}
	if err != nil {
		return err
	}
	if f != nil {
		err = fill(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err == nil {
		err = os.Rename(tmp, name)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// writeAtomicFunc is writeAtomic for a file written as it is made (the
// HTML viewer, too large to hold in memory): fill writes it, through a
// buffer.
func writeAtomicFunc(name string, fill func(io.Writer) error) error {
	buffered := func(w io.Writer) error {
		bw := bufio.NewWriterSize(w, renderBufSize)
		if err := fill(bw); err != nil {
			return err
		}
		return bw.Flush()
	}
	if unnamedFiles.Load() {
		fd, err := openUnnamed(filepath.Dir(name))
		if err == nil {
			f := os.NewFile(uintptr(fd), name)
			defer f.Close()
			if err := buffered(f); err != nil {
				return err
			}
			err = linkFd(fd, name)
			if errors.Is(err, unix.EEXIST) {
				return writeRenamedFunc(name, nil, fd)
			}
			if err != nil {
				unnamedFiles.Store(false)
				return &fs.PathError{Op: "link", Path: name, Err: err}
			}
			return nil
		}
	}
	return writeRenamedFunc(name, buffered, -1)
}

// spillAt is how much of a drawing writeAtomicDrawn holds in memory
// (a variable for tests).
var spillAt = 4 << 20

// writeAtomicDrawn writes to name what draw writes, as writeAtomic does:
// held in buf (emptied first) up to spillAt, so that a file that holds it
// already is left alone; past that, drawn on into a file with no name yet
// (or a temporary one), linked or renamed into place once whole. drawErr
// is draw's error (or the spill file's); then nothing is written. bw, if
// not nil, is the buffer draw writes through, reset for this file: watch
// writes thousands, and a new 64 KiB buffer each was 45 % of what it
// allocated.
func writeAtomicDrawn(name string, buf *bytes.Buffer, bw *bufio.Writer, draw func(io.Writer) error) (drawErr, err error) {
	buf.Reset()
	sw := &spillWriter{buf: buf, name: name}
	defer sw.close()
	if bw == nil {
		bw = bufio.NewWriterSize(sw, renderBufSize)
	} else {
		bw.Reset(sw)
		defer bw.Reset(nil) // not holding sw, nor its file
	}
	if drawErr = draw(bw); drawErr == nil {
		drawErr = bw.Flush()
	}
	if drawErr != nil {
		return drawErr, nil
	}
	if sw.f == nil {
		return nil, writeAtomic(name, buf.Bytes())
	}
	if sw.tmp != "" {
		err := sw.f.Close()
		sw.f = nil
		if err == nil {
			err = os.Rename(sw.tmp, name)
		}
		if err != nil {
			os.Remove(sw.tmp)
		}
		return nil, err
	}
	err = linkFd(int(sw.f.Fd()), name)
	if errors.Is(err, unix.EEXIST) {
		return nil, writeRenamedFunc(name, nil, int(sw.f.Fd()))
	}
	if err != nil {
		return nil, &fs.PathError{Op: "link", Path: name, Err: err}
	}
	return nil, nil
}

// spillWriter holds what is written in buf until it passes spillAt, then
// writes it all into a file beside name: unnamed (O_TMPFILE), or under a
// temporary name where the file system has no unnamed files.
type spillWriter struct {
	buf  *bytes.Buffer
	name string
	f    *os.File
	tmp  string // the temporary name, if the file has one
}

func (sw *spillWriter) Write(p []byte) (int, error) {
	if sw.f == nil && sw.buf.Len()+len(p) <= spillAt {
		return sw.buf.Write(p)
	}
	if sw.f == nil {
		if err := sw.open(); err != nil {
			return 0, err
		}
		if _, err := sw.f.Write(sw.buf.Bytes()); err != nil {
			return 0, err
		}
		sw.buf.Reset()
	}
	return sw.f.Write(p)
}

func (sw *spillWriter) open() error {
	if unnamedFiles.Load() {
		if fd, err := openUnnamed(filepath.Dir(sw.name)); err == nil {
			sw.f = os.NewFile(uintptr(fd), sw.name)
			return nil
		}
	}
	var err error
	if sw.f, sw.tmp, err = createTemp(sw.name); err != nil {
		sw.f, sw.tmp = nil, ""
	}
	return err
}

// tempName is a hidden temporary name beside name, ending in .tmp, out of
// globs like *.svg.
func tempName(name string) string {
	dir, base := filepath.Split(name)
	return filepath.Join(dir, "."+base+"."+strconv.FormatUint(uint64(rand.Uint32()), 36)+".tmp")
}

// createTemp creates a new file under a temporary name beside name.
func createTemp(name string) (f *os.File, tmp string, err error) {
	for range 100 {
		tmp = tempName(name)
		f, err = os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if !errors.Is(err, fs.ErrExist) {
			break
		}
	}
	return f, tmp, err
}

// close drops what was not linked or renamed into place.
func (sw *spillWriter) close() {
	if sw.f != nil {
		sw.f.Close()
		if sw.tmp != "" {
			os.Remove(sw.tmp)
		}
	}
}

// unnamedFile is a new file in dir that has no name, and so goes away
// with criseq, whatever happens to it: O_TMPFILE, or a file created and
// removed at once. Mode 0600: what it holds is for criseq alone.
func unnamedFile(dir string) (*os.File, error) {
	if unnamedFiles.Load() {
		fd, err := unix.Open(dir, unix.O_RDWR|unix.O_TMPFILE|unix.O_CLOEXEC, 0o600)
		if err == nil {
			return os.NewFile(uintptr(fd), filepath.Join(dir, "(unnamed)")), nil
		}
	}
	f, err := os.CreateTemp(dir, ".criseq-*.tmp")
	if err != nil {
		return nil, err
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
