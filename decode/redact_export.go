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

// A Rule is what redacted output does to the values of one field.
type Rule uint8

const (
	Keep          Rule = iota
	Secret             // a string or bytes field, or a list of them: each value given is Redacted
	SecretValue        // a list of messages (envs): the "value" field of each, when set, is Redacted
	SecretEntries      // a map with string or bytes values (info): every value is Redacted
)

// FieldRule is the rule for field fd of message md itself, for tools that
// write messages from their wire bytes. A field it keeps may lead to
// messages with rules of their own; the messages of a field with a rule
// have none but the one it says.
func FieldRule(md protoreflect.MessageDescriptor, fd protoreflect.FieldDescriptor) Rule {
	act, ok := direct(md, fd)
	if !ok {
		return Keep
	}
	switch act {
	case actEnvs:
		return SecretValue
	case actMapValues:
		return SecretEntries
	}
	return Secret
}
