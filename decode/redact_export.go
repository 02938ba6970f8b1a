package decode

import (
	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Redaction applies the redaction of decoded output to raw traffic, for
// tools that rewrite captures (criseq sanitize): the same rules, by the same
// descriptors, so that what decoded output blanks is what a rewritten
// capture no longer holds. Not safe for concurrent use.
type Redaction struct {
	red     redactor
	methods map[string]*method
}

// MessageType is the CRI message type of a gRPC message on path (the :path
// of its call), sent by the client (response false) or the server; ok is
// false for paths that are not CRI methods.
func (r *Redaction) MessageType(path string, response bool) (mt protoreflect.MessageType, ok bool) {
	m, found := r.methods[path]
	if !found {
		m = lookupMethod(path)
		if r.methods == nil {
			r.methods = make(map[string]*method)
		}
		if len(r.methods) < maxMethods {
			r.methods[path] = m
		}
	}
	if !m.known {
		return nil, false
	}
	if response {
		return m.out, true
	}
	return m.in, true
}

// Needs reports whether messages of type md can hold secrets.
func (r *Redaction) Needs(md protoreflect.MessageDescriptor) bool {
	return r.red.needsRedaction(md)
}

// Message blanks the secrets of m in place, as decoded output shows them
// (Redacted), and reports whether its type holds any.
func (r *Redaction) Message(m proto.Message) bool {
	pm := m.ProtoReflect()
	if !r.red.needsRedaction(pm.Descriptor()) {
		return false
	}
	r.red.redact(pm)
	return true
}

// Headers blanks credentials in header fields in place (authorization,
// proxy-authorization and fields sent never-indexed), as decoded output
// does, and reports whether it changed any.
func (r *Redaction) Headers(fields []hpack.HeaderField) bool {
	changed := false
	for i := range fields {
		v := fields[i].Value
		redactHeaders(fields[i : i+1])
		changed = changed || fields[i].Value != v
	}
	return changed
}
