package capture

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Swapping a runtime socket in place.
//
// Swap(P) puts a relay socket at P, the runtime's socket path, so that
// clients that connect to P (kubelet, crictl) reach criseq with no change to
// their configuration. The names involved, all in P's directory:
//
//	P                   the path clients use: criseq's relay socket while swapped
//	P.criseq-orig       the runtime's own socket while swapped (AsideName)
//	P.criseq-orig.json  the note: P, the aside name, criseq's pid and the relay
//	                    socket's device and inode (NoteName)
//	P.criseq-new        the relay socket for an instant, before it takes P's place
//
// The aside name is the marker: while it exists, P is swapped (or a swap was
// interrupted) and Swap refuses to run; Restore and RestoreStale put it back.
// The note tells them which socket at P is criseq's own, so that a socket the
// runtime recreated at P (a restart) is never overwritten.
//
// P is never missing: the relay socket and the runtime's socket trade places
// with one renameat2(RENAME_EXCHANGE), and trade back the same way.

const (
	asideSuffix = ".criseq-orig"
	noteSuffix  = ".criseq-orig.json"
	tempSuffix  = ".criseq-new"

	// sunPathMax is the longest path a unix socket can be bound to or dialed at.
	sunPathMax = len(syscall.RawSockaddrUnix{}.Path) - 1

	probeTimeout = time.Second
)

// AsideName is where Swap moves the socket at path, and the marker of a swap.
func AsideName(path string) string { return path + asideSuffix }

// NoteName is the JSON note Swap writes next to the aside name.
func NoteName(path string) string { return path + noteSuffix }

func tempName(path string) string { return path + tempSuffix }

// ErrNotSwapped is returned by RestoreStale when there is nothing to restore.
var ErrNotSwapped = errors.New("not swapped")

// fileID identifies a file: the same path may later name another one.
type fileID struct {
	Dev uint64 `json:"dev"`
	Ino uint64 `json:"ino"`
}

// swapNote is the content of NoteName(path).
type swapNote struct {
	Path    string    `json:"path"`
	Aside   string    `json:"aside"`
	PID     int       `json:"pid"`
	Relay   fileID    `json:"relay"` // criseq's relay socket
	Started time.Time `json:"started"`
}

// renameExchange atomically swaps the names a and b. A variable so that tests
// can play a file system without RENAME_EXCHANGE.
var renameExchange = func(a, b string) error {
	return unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE)
}

// noExchange tells whether err means the file system cannot exchange names.
func noExchange(err error) bool {
	return errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP)
}

// SwapState is a socket swapped by Swap. Serve Listener with a Proxy whose
// Upstream is Aside; call Restore when done.
type SwapState struct {
	Path  string // the runtime's socket path, where the relay socket now is
	Aside string // where the runtime's socket is until Restore

	ln    *net.UnixListener
	relay fileID
	log   func(format string, args ...any)

	mu       sync.Mutex
	restored bool
	err      error
}

// Listener accepts the connections made to Path since the swap. Closing it
// removes no file.
func (s *SwapState) Listener() *net.UnixListener { return s.ln }

// Swap puts a relay socket at path and moves the socket that was there to
// AsideName(path). The relay socket gets the original's owner, group and
// mode, and is never more open than it, not even while being set up.
//
// Connections made to path before the swap are not affected: they stay
// connected to the runtime directly. Only new connections reach the relay.
//
// Swap refuses a path that is not a socket, a socket nobody accepts on, and a
// path already swapped (its aside name or note exists, as after a criseq that
// was killed: RestoreStale repairs that). log receives what was done; nil
// discards it.
func Swap(path string, log func(format string, args ...any)) (*SwapState, error) {
	if log == nil {
		log = func(string, ...any) {}
	}
	aside, note, tmp := AsideName(path), NoteName(path), tempName(path)
	if len(tmp) > sunPathMax {
		return nil, fmt.Errorf("swap: %s is too long: the names criseq needs next to it exceed %d bytes, the limit of a unix socket path", path, sunPathMax)
	}
	st, err := os.Lstat(path)
	if err != nil {
		return nil, fmt.Errorf("swap: %w", err)
	}
	if st.Mode()&fs.ModeSymlink != 0 {
		return nil, fmt.Errorf("swap: %s is a symbolic link; give the socket's own path (readlink -f %s)", path, path)
	}
	if st.Mode()&fs.ModeSocket == 0 {
		return nil, fmt.Errorf("swap: %s is not a unix socket (%v); refusing to move it", path, st.Mode().Type())
	}
	for _, name := range []string{aside, note} {
		if _, err := os.Lstat(name); err == nil {
			return nil, fmt.Errorf("swap: %s is already swapped (%s exists): another criseq record --swap runs, or one was killed before it could put the socket back; if none runs, repair it with: criseq restore %s", path, name, path)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("swap: %w", err)
		}
	}
	if !answers(path) {
		return nil, fmt.Errorf("swap: nobody accepts connections on %s: is the runtime running? (refusing to swap a dead socket)", path)
	}
	if err := removeDeadSocket(tmp, log); err != nil {
		return nil, fmt.Errorf("swap: %w", err)
	}
	sys := st.Sys().(*syscall.Stat_t)
	ln, err := listenPrivate(tmp, st.Mode().Perm())
	if err != nil {
		return nil, fmt.Errorf("swap: %w", err)
	}
	// The file goes with the swap, not with the listener.
	ln.SetUnlinkOnClose(false)
	fail := func(err error) (*SwapState, error) {
		ln.Close()
		os.Remove(tmp)
		os.Remove(note)
		return nil, fmt.Errorf("swap: %w", err)
	}
	if err := os.Lchown(tmp, int(sys.Uid), int(sys.Gid)); err != nil {
		// Owner-only would lock out the runtime's clients: refuse instead.
		return fail(fmt.Errorf("cannot give the relay socket %s's owner %d:%d (run as root or as its owner): %w", path, sys.Uid, sys.Gid, err))
	}
	if err := os.Chmod(tmp, st.Mode().Perm()); err != nil {
		return fail(err)
	}
	relay, err := identify(tmp)
	if err != nil {
		return fail(err)
	}
	// The note goes first, so that an interruption at any later point leaves
	// enough for RestoreStale.
	if err := writeNote(note, swapNote{Path: path, Aside: aside, PID: os.Getpid(), Relay: relay, Started: time.Now()}); err != nil {
		return fail(err)
	}

	err = renameExchange(tmp, path)
	switch {
	case err == nil:
		// tmp is now the runtime's socket; give it its documented name.
		if err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, aside, unix.RENAME_NOREPLACE); err != nil {
			if noExchange(err) {
				err = os.Rename(tmp, aside) // aside was checked absent above
			}
			if err != nil {
				if uerr := renameExchange(tmp, path); uerr != nil {
					ln.Close()
					return nil, fmt.Errorf("swap: rename %s to %s: %v; and undoing the swap failed too: %w; run: criseq restore %s", tmp, aside, err, uerr, path)
				}
				return fail(fmt.Errorf("rename %s to %s: %w", tmp, aside, err))
			}
		}
	case noExchange(err):
		// A second name for the runtime's socket, then replace path: still
		// no instant without a socket at path.
		linked := os.Link(path, aside)
		if linked == nil {
			log("swap: the file system of %s cannot exchange names (%v); linked and renamed instead", path, err)
		} else {
			log("swap: the file system of %s can neither exchange names (%v) nor link (%v); renaming twice: for an instant %s does not exist", path, err, linked, path)
			if err := os.Rename(path, aside); err != nil {
				return fail(err)
			}
		}
		if err := os.Rename(tmp, path); err != nil {
			undo := os.Remove // path still is the runtime's socket
			if linked != nil {
				undo = func(string) error { return os.Rename(aside, path) }
			}
			if uerr := undo(aside); uerr != nil {
				ln.Close()
				return nil, fmt.Errorf("swap: rename %s to %s: %v; and undoing the swap failed too: %w; run: criseq restore %s", tmp, path, err, uerr, path)
			}
			return fail(err)
		}
	default:
		return fail(fmt.Errorf("exchange %s and %s: %w", tmp, path, err))
	}
	return &SwapState{Path: path, Aside: aside, ln: ln, relay: relay, log: log}, nil
}

// Replaced tells whether Path no longer is the relay socket: removed, or
// replaced by another process (a runtime that restarts recreates its socket).
func (s *SwapState) Replaced() bool {
	id, err := identify(s.Path)
	return err != nil || id != s.relay
}

// Watch checks every interval whether Path is still the relay socket and
// closes the returned channel when it is not. It stops when ctx ends.
func (s *SwapState) Watch(ctx context.Context, interval time.Duration) <-chan struct{} {
	lost := make(chan struct{})
	go func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if s.Replaced() {
					close(lost)
					return
				}
			}
		}
	}()
	return lost
}

// Restore puts the runtime's socket back at Path and removes the relay
// socket's file and the note. If Path was replaced since the swap (the
// runtime restarted), it is left alone and only the stale aside socket is
// removed. It may be called more than once; it does not close Listener.
func (s *SwapState) Restore() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.restored {
		s.err = restore(s.Path, &s.relay, true, s.log)
		s.restored = true
	}
	return s.err
}

// RestoreStale repairs a swap whose criseq is gone (killed with SIGKILL, out
// of memory, power loss): it puts the socket back as Restore would. It refuses
// while the relay socket at path still accepts connections, that is while
// criseq runs. It returns ErrNotSwapped when path was not swapped.
func RestoreStale(path string, log func(format string, args ...any)) error {
	if log == nil {
		log = func(string, ...any) {}
	}
	var relay *fileID
	n, err := readNote(NoteName(path))
	switch {
	case err == nil:
		relay = &n.Relay
	case errors.Is(err, fs.ErrNotExist):
	default:
		log("restore: ignoring %s: %v", NoteName(path), err)
	}
	err = restore(path, relay, false, log)
	if errors.Is(err, errRelayLive) && relay != nil && n.PID > 0 {
		return fmt.Errorf("restore: %s is still served by criseq (pid %d, per %s): stop that criseq (kill -TERM %d) and it puts the socket back itself", path, n.PID, NoteName(path), n.PID)
	}
	return err
}

// errRelayLive: the relay socket still accepts connections.
var errRelayLive = errors.New("the criseq record that swapped it still runs")

// restore repairs path. relay identifies criseq's relay socket if known; self
// is set when the caller is the criseq that owns it (so its answering is no
// sign of another criseq running).
func restore(path string, relay *fileID, self bool, log func(format string, args ...any)) error {
	aside, note, tmp := AsideName(path), NoteName(path), tempName(path)
	removeNote := func() error {
		if err := os.Remove(note); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("restore: %w", err)
		}
		return nil
	}
	isRelay := func(id fileID) bool { return relay != nil && id == *relay }

	// The runtime's socket is at the aside name, or still at the temporary
	// name if a swap was interrupted.
	real := ""
	var realID fileID
	for _, name := range []string{aside, tmp} {
		id, err := identify(name)
		if err == nil {
			real, realID = name, id
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("restore: %w", err)
		}
	}
	if real == "" {
		if _, err := os.Lstat(note); err == nil {
			log("restore: %s was not moved aside; removed the leftover note %s", path, note)
			return removeNote()
		}
		return fmt.Errorf("restore: %w: neither %s nor %s exists", ErrNotSwapped, aside, note)
	}
	if isRelay(realID) {
		// Interrupted while swapping or restoring: path has the runtime's socket.
		if err := os.Remove(real); err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		log("restore: %s already is the runtime's socket; removed criseq's leftover socket %s", path, real)
		return removeNote()
	}

	for attempt := 0; ; attempt++ {
		cur, err := identify(path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			// The runtime stopped and removed "its" socket, which was the relay's.
			if !answers(real) {
				if err := os.Remove(real); err != nil {
					return fmt.Errorf("restore: %w", err)
				}
				log("restore: %s is gone and nobody accepts on %s (the runtime stopped); removed it: the runtime recreates %s when it starts", path, real, path)
				return removeNote()
			}
			// No-replace: a socket that appeared meanwhile wins.
			err := unix.Renameat2(unix.AT_FDCWD, real, unix.AT_FDCWD, path, unix.RENAME_NOREPLACE)
			if noExchange(err) {
				if err = os.Link(real, path); err == nil {
					os.Remove(real)
				}
			}
			if err != nil {
				return fmt.Errorf("restore: put %s back at %s: %w", real, path, err)
			}
			log("restore: %s was missing; put the runtime's socket back from %s", path, real)
			return removeNote()
		case err != nil:
			return fmt.Errorf("restore: %w", err)
		}

		ours := isRelay(cur)
		if relay == nil {
			// No note: a socket at path that nobody accepts on is taken for
			// the dead relay of a killed criseq.
			ours = !answers(path)
		}
		if !ours {
			// Replaced since the swap: the runtime restarted and recreated
			// its socket at its address. Leave that alone.
			if answers(real) {
				return fmt.Errorf("restore: %s is not criseq's socket any more and %s still accepts connections: left both alone; find out which process serves %s (ss -xlp | grep %s) and remove it once it is unused", path, real, real, real)
			}
			if err := os.Remove(real); err != nil {
				return fmt.Errorf("restore: %w", err)
			}
			log("restore: %s was replaced since the swap (the runtime restarted and recreated it); left it alone and removed the stale %s", path, real)
			return removeNote()
		}
		if !self && answers(path) {
			return fmt.Errorf("restore: %s still accepts connections: %w; stop it and it puts the socket back itself", path, errRelayLive)
		}

		err = renameExchange(real, path)
		if noExchange(err) {
			// rename replaces path atomically too; only the re-check below is lost.
			log("restore: the file system of %s cannot exchange names (%v); renaming %s over it", path, err, real)
			if err := os.Rename(real, path); err != nil {
				return fmt.Errorf("restore: %w", err)
			}
			log("restore: put the runtime's socket back at %s", path)
			return removeNote()
		}
		if err != nil {
			return fmt.Errorf("restore: exchange %s and %s: %w", real, path, err)
		}
		// Path may have changed between the check and the exchange.
		if moved, err := identify(real); err != nil || moved != cur {
			if err := renameExchange(real, path); err != nil {
				return fmt.Errorf("restore: %s changed while being restored, and undoing failed: %w; run: criseq restore %s", path, err, path)
			}
			if attempt < 3 {
				continue
			}
			return fmt.Errorf("restore: %s keeps changing; try again: criseq restore %s", path, path)
		}
		if err := os.Remove(real); err != nil {
			return fmt.Errorf("restore: remove criseq's socket %s: %w", real, err)
		}
		log("restore: put the runtime's socket back at %s", path)
		return removeNote()
	}
}

// identify returns the identity of the file at path, not following links.
func identify(path string) (fileID, error) {
	st, err := os.Lstat(path)
	if err != nil {
		return fileID{}, err
	}
	sys := st.Sys().(*syscall.Stat_t)
	return fileID{Dev: uint64(sys.Dev), Ino: sys.Ino}, nil
}

// answers tells whether something accepts connections on the socket at path.
func answers(path string) bool {
	c, err := net.DialTimeout("unix", path, probeTimeout)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// removeDeadSocket removes a socket nobody accepts on at path (the relay
// socket of a swap interrupted before its note was written).
func removeDeadSocket(path string, log func(format string, args ...any)) error {
	st, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if st.Mode()&fs.ModeSocket == 0 || answers(path) {
		return fmt.Errorf("%s exists and is not a leftover of criseq; remove it if it is unused", path)
	}
	if err := os.Remove(path); err != nil {
		return err
	}
	log("swap: removed leftover socket %s", path)
	return nil
}

func writeNote(path string, n swapNote) error {
	b, err := json.MarshalIndent(n, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func readNote(path string) (swapNote, error) {
	var n swapNote
	b, err := os.ReadFile(path)
	if err != nil {
		return n, err
	}
	if err := json.Unmarshal(b, &n); err != nil {
		return n, fmt.Errorf("%s: %w", path, err)
	}
	return n, nil
}
