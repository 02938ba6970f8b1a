// Package decode turns the byte chunks of CRI connections into Calls.
//
// In: capture.Chunks (per connection and direction, in time order), fed to
// a Decoder one by one (Feed) or read from a capture.Source (DecodeAll).
// Out: Calls: one per gRPC stream, with the method, times, decoded CRI
// request(s) and response(s), status and headers, and ConnErrors for
// connections whose bytes could not be decoded.
// It knows HTTP/2, HPACK, gRPC and the CRI protobuf types; nothing of
// sockets or pcap files.
//
// Decoding is layered as HTTP/2 is: frames (frame.go: boundaries, and
// the resync of a stream cut anywhere), header blocks (headers.go, and
// hpacktable.go for a table whose older entries are unknown), gRPC
// messages (message.go), CRI types (cri.go, redact.go, and infer.go,
// which names a call by the shape of its messages), and the calls and
// connections that hold them together (stream.go, decoder.go).
//
// Message types come from the CRI descriptors registered by
// k8s.io/cri-api (runtime.v1; runtime.v1alpha2 paths decode with them);
// calls of other services are kept with Known false and undecoded bodies.
// Output is redacted unless Options.NoRedact is set: registry
// credentials, container environment values, verbose info maps and
// authorization headers read "<redacted>", and no raw message bytes are
// kept.
package decode

import (
	"fmt"
	"strings"
	"time"

	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Flags note what is unusual about a call.
type Flags uint32

const (
	// Incomplete: the capture ended before the call's trailers.
	Incomplete Flags = 1 << iota
	// Reset: the stream was reset (RST_STREAM) or the connection went away.
	Reset
	// Compressed: at least one message was compressed.
	Compressed
	// Gap: bytes were lost on the connection while the call was open, or
	// skipped because they could not be decoded: its messages in that
	// direction from then on are not read.
	Gap
	// Malformed: a message of the call could not be decoded.
	Malformed
	// TrailersOnly: the server answered with a single HEADERS frame
	// holding the status (no response headers, no messages).
	TrailersOnly
	// Inferred: the method was not read from the :path (its HPACK entry
	// predates decoding: a connection caught midway, or bytes lost) but
	// inferred from the shape of the call's messages.
	Inferred
	// InferredStatus: the grpc-status could not be read (same cause) and
	// is 0 because a unary call got its response message: a gRPC server
	// sends one only with OK.
	InferredStatus
)

var flagNames = [...]string{"incomplete", "reset", "compressed", "gap", "malformed", "trailers-only", "inferred", "inferred-status"}

// String lists the set flags as "a|b", in bit order; "" for none.
func (f Flags) String() string {
	var b []byte
	for i, n := range flagNames {
		if f&(1<<i) != 0 {
			if len(b) > 0 {
				b = append(b, '|')
			}
			b = append(b, n...)
		}
	}
	if rest := f &^ (1<<len(flagNames) - 1); rest != 0 {
		if len(b) > 0 {
			b = append(b, '|')
		}
		b = fmt.Appendf(b, "0x%x", uint32(rest))
	}
	return string(b)
}

// Message is one gRPC message of a call.
type Message struct {
	Time  time.Time
	Raw   []byte        // the uncompressed protobuf bytes (nil when redacted output is asked for)
	Proto proto.Message // decoded message, nil if the method's type is unknown
	// Encoded is what Options.Encode made of the message, if it did;
	// Proto then holds only the fields Options.Fields lists.
	Encoded []byte
	// Wire is the message's wire bytes (uncompressed) and type, kept
	// for the output to write as it prints it where Options.KeepWire
	// said so; Proto then holds only the fields Options.Fields lists.
	Wire       *WireMessage
	Size       int // length of the uncompressed message, also when Raw is nil
	Compressed bool
	Err        string // why the message could not be decoded, if so
}

// WireMessage is a message kept as it came (Message.Wire).
type WireMessage struct {
	Type  protoreflect.MessageDescriptor
	Bytes []byte
	items *itemPruner // what Items prunes each item to (Options.Fields)
}

// Call is one gRPC call (one HTTP/2 stream).
type Call struct {
	Conn   uint64
	Stream uint32
	// Method is the :path, e.g. "/runtime.v1.RuntimeService/RunPodSandbox",
	// or, with Flags Inferred, the path of the method inferred; Method,
	// Service and Name are empty when the :path could not be read (see
	// Inferred) and inference found no single method.
	Method  string
	Service string // e.g. "runtime.v1.RuntimeService"
	Name    string // e.g. "RunPodSandbox"
	Known   bool   // request/response types found in the CRI descriptors
	// Candidates, for a call inference left unnamed, are the few CRI
	// methods (names, e.g. "ListContainers") it may be: those its
	// messages fit and its :path entry allows. Nil when there are more
	// than maxCandidates, or when the call is named.
	Candidates []string

	Start time.Time // request headers seen
	End   time.Time // trailers (or reset) seen; zero if incomplete

	Requests  []Message
	Responses []Message
	// Streamed counts the response messages handed to
	// Options.OnStreamMessage instead of kept in Responses.
	Streamed int

	Status  int    // grpc-status; -1 if none was seen (or it could not be read)
	Message string // grpc-message

	// Header lists, redacted unless Options.NoRedact. Calls may share
	// them (most calls have the same response headers and trailers): read
	// them, don't modify them.
	RequestHeaders  []hpack.HeaderField
	ResponseHeaders []hpack.HeaderField
	Trailers        []hpack.HeaderField

	Flags  Flags
	Errors []string // stream-level problems, shown in output
}

// Duration is End-Start, or 0 for an incomplete call.
func (c *Call) Duration() time.Duration {
	if c.End.IsZero() {
		return 0
	}
	return c.End.Sub(c.Start)
}

// OK reports whether the call finished with grpc-status 0.
func (c *Call) OK() bool { return c.Status == 0 }

// Request returns the first decoded request, or nil.
func (c *Call) Request() proto.Message {
	if len(c.Requests) == 0 {
		return nil
	}
	return c.Requests[0].Proto
}

// Response returns the first decoded response, or nil.
func (c *Call) Response() proto.Message {
	if len(c.Responses) == 0 {
		return nil
	}
	return c.Responses[0].Proto
}

// ConnError is a connection-level decoding failure in one direction:
// bytes lost or not decodable. Decoding of that direction resumes at the
// next frame boundary found after it, with the HPACK table unknown; the
// other connections go on.
type ConnError struct {
	Conn   uint64
	Dir    string
	Offset int64     // byte offset in that direction's stream
	Time   time.Time // when the bytes were seen; zero if at the end of the capture
	Err    error
	// Resumed is the offset where decoding resumed, -1 if it did not.
	Resumed int64
	// Lost counts the calls open when it happened (their messages in this
	// direction may be missing; flagged Gap when bytes were lost).
	// Unknown counts the calls after it whose method could be neither read
	// nor inferred; the Decoder updates it as they end.
	Lost, Unknown int
	searched      int64 // bytes looked through for a frame boundary
}

func (e *ConnError) Error() string {
	s := fmt.Sprintf("connection %d %s: offset %d: %v", e.Conn, e.Dir, e.Offset, e.Err)
	switch {
	case e.Resumed >= 0:
		s += fmt.Sprintf("; decoding resumed at offset %d", e.Resumed)
	case e.searched > 0:
		s += fmt.Sprintf("; no frame boundary found in the %d bytes after it", e.searched)
	}
	var counts []string
	if e.Lost > 0 {
		counts = append(counts, plural(e.Lost, "call")+" cut")
	}
	if e.Unknown > 0 {
		counts = append(counts, plural(e.Unknown, "call")+" unnamed after it")
	}
	if len(counts) > 0 {
		s += " (" + strings.Join(counts, ", ") + ")"
	}
	return s
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

func (e *ConnError) Unwrap() error { return e.Err }
