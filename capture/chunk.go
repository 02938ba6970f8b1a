// Package capture turns CRI traffic into timestamped byte chunks per connection
// and direction, and writes and reads them as pcap/pcapng files.
//
// In: a live unix-socket relay (Proxy, on its own socket or, with Swap, in
// place of the runtime's) or a capture file (OpenFile, NewReader).
// Out: Chunks, in time order per connection and direction, and pcapng files.
// Live chunks go from the Proxy through a Recorder (a bounded queue that
// drops rather than stall the relay) to a Sink such as PcapngWriter.
// It knows sockets and packet formats, and nothing of HTTP/2 beyond the
// connection preface that tells a capture's client from its server.
package capture

import (
	"fmt"
	"time"
)

// Dir is the direction of a chunk on its connection.
type Dir uint8

const (
	// ClientToServer is traffic from the CRI client (kubelet, crictl) to the runtime.
	ClientToServer Dir = iota
	// ServerToClient is traffic from the runtime back to its client.
	ServerToClient
)

func (d Dir) String() string {
	if d == ClientToServer {
		return "client→server"
	}
	return "server→client"
}

// Kind says what a Chunk carries.
type Kind uint8

const (
	// Data carries bytes of the connection.
	Data Kind = iota
	// Open marks the start of a connection; Data is empty.
	Open
	// Close marks the end of one direction of a connection (FIN or close); Data is empty.
	Close
)

// Chunk is a run of bytes seen on one direction of one connection.
type Chunk struct {
	Conn uint64    // connection number, unique within one capture
	Dir  Dir       // direction of the bytes
	Kind Kind      // Data, Open or Close
	Time time.Time // when the bytes were seen
	// Gap is the number of bytes known lost just before Data (recorder
	// overload, a capture that missed segments); -1 if the size is unknown.
	Gap int
	// Data is the payload. A Source's chunk is valid until its next call to Next.
	Data []byte
	// Offset is the position of Data[0] in this direction's byte stream.
	Offset int64
	// Midway, on an Open chunk, says the connection was already open when
	// capture began (an attached tracer, a packet capture that missed the
	// handshake): its first Data is not its first byte, and a decoder must
	// resynchronise. Offsets then count from the first byte seen.
	Midway bool

	// Done, if set, is called once a Recorder is done with Data (written
	// or dropped): its source may then reuse the memory.
	Done func()

	// shared, if set, is the relay buffer Data lies in, given back when
	// the Recorder is done with the chunk.
	shared *relayBuf
}

// ConnInfo describes a connection, for error messages and output.
type ConnInfo struct {
	ID     uint64
	Client string // e.g. "127.0.0.1:40001" or "unix:/run/criseq.sock#3"
	Server string
}

// Source yields the chunks of a capture in time order.
// Next returns io.EOF at the end.
type Source interface {
	Next() (Chunk, error)
	// Conn describes a connection seen so far.
	Conn(id uint64) ConnInfo
	Close() error
}

// FormatError reports bytes that could not be read as a capture.
type FormatError struct {
	File   string
	Offset int64 // byte offset in the file, -1 if unknown
	Err    error
}

func (e *FormatError) Error() string {
	if e.Offset >= 0 {
		return fmt.Sprintf("%s: offset %d: %v", e.File, e.Offset, e.Err)
	}
	return fmt.Sprintf("%s: %v", e.File, e.Err)
}

func (e *FormatError) Unwrap() error { return e.Err }
