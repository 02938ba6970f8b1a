package ebpf

import (
	"encoding/binary"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// The unix sock_diag interface (linux/unix_diag.h); golang.org/x/sys has
// the netlink basics but not these.
const (
	udiagShowName = 0x1
	udiagShowVFS  = 0x2
	udiagShowPeer = 0x4

	unixDiagName = 0
	unixDiagVFS  = 1
	unixDiagPeer = 2
)

// unixSock is what sock_diag says about one unix socket.
type unixSock struct {
	peer   uint32 // inode of the peer socket, 0 if none
	vfs    bool   // bound to a file (the listener, and sockets it accepted)
	vfsDev uint32 // that file's device, in the kernel's encoding (major<<20 | minor)
	vfsIno uint32
	name   string
}

// fileID identifies a file by device and inode, whatever its path.
type fileID struct {
	major, minor uint32
	ino          uint64
}

func (f fileID) String() string { return fmt.Sprintf("%d:%d inode %d", f.major, f.minor, f.ino) }

// kernelDev splits a device number in the kernel's internal encoding.
func kernelDev(dev uint32, ino uint64) fileID {
	return fileID{major: dev >> 20, minor: dev & 0xfffff, ino: ino}
}

// unixSockets lists the unix sockets of this network namespace by inode,
// with each one's peer and the file it is bound to.
func unixSockets() (map[uint32]unixSock, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("sock_diag: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("sock_diag: %w", err)
	}
	// nlmsghdr + unix_diag_req
	req := make([]byte, unix.NLMSG_HDRLEN+24)
	le := binary.LittleEndian
	le.PutUint32(req[0:], uint32(len(req)))
	le.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	le.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	le.PutUint32(req[8:], 1) // seq
	r := req[unix.NLMSG_HDRLEN:]
	r[0] = unix.AF_UNIX
	le.PutUint32(r[4:], 0xffffffff) // every state
	le.PutUint32(r[12:], udiagShowName|udiagShowVFS|udiagShowPeer)
	le.PutUint32(r[16:], 0xffffffff) // no cookie
	le.PutUint32(r[20:], 0xffffffff)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("sock_diag: send: %w", err)
	}
	out := map[uint32]unixSock{}
	buf := make([]byte, 64<<10)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return nil, fmt.Errorf("sock_diag: receive: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return nil, fmt.Errorf("sock_diag: %w", err)
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return out, nil
			case unix.NLMSG_ERROR:
				code := int32(0)
				if len(m.Data) >= 4 {
					code = -int32(le.Uint32(m.Data))
				}
				return nil, fmt.Errorf("sock_diag: %w", syscall.Errno(code))
			}
			if len(m.Data) < 16 {
				continue
			}
			ino := le.Uint32(m.Data[4:])
			s := unixSock{}
			for a := m.Data[16:]; len(a) >= 4; {
				l := int(le.Uint16(a))
				if l < 4 || l > len(a) {
					break
				}
				v := a[4:l]
				switch le.Uint16(a[2:]) {
				case unixDiagPeer:
					if len(v) >= 4 {
						s.peer = le.Uint32(v)
					}
				case unixDiagVFS:
					if len(v) >= 8 {
						s.vfs, s.vfsIno, s.vfsDev = true, le.Uint32(v), le.Uint32(v[4:])
					}
				case unixDiagName:
					s.name = string(v)
				}
				a = a[min((l+3)&^3, len(a)):]
			}
			out[ino] = s
		}
	}
}

// peerFile is the file the peer of socket ino is bound to: for a client
// connected to a runtime, the runtime's socket file (an accepted socket
// carries its listener's). ok is false if ino or its peer is unknown or
// the peer is bound to no file.
func peerFile(socks map[uint32]unixSock, ino uint32) (id fileID, ok bool) {
	s, ok := socks[ino]
	if !ok || s.peer == 0 {
		return id, false
	}
	p, ok := socks[s.peer]
	if !ok || !p.vfs {
		return id, false
	}
	return kernelDev(p.vfsDev, uint64(p.vfsIno)), true
}
