package decode

import (
	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
)

// Redacted replaces secret values in redacted output.
const Redacted = "<redacted>"

// What the redactor blanks, by descriptor rather than by Go type so that it
// follows the CRI API as it grows:
//   - every string of an AuthConfig (registry credentials), and any field
//     marked [debug_redact = true];
//   - the value of each element of a repeated field named "envs"
//     (KeyValue: container environment);
//   - every value of a map field named "info": the verbose status maps
//     hold the container spec, environment included.

type action uint8

const (
	actSecret    action = iota // string/bytes (or a list of them)
	actEnvs                    // repeated message: blank its "value" field
	actMapValues               // map with string/bytes values: blank them all
	actSub                     // message field with secrets further down
)

type step struct {
	fd  protoreflect.FieldDescriptor
	act action
}

// redactor caches a plan per message type, so types without secrets (most
// of the traffic: List* polling) cost one map lookup.
type redactor struct {
	plans map[protoreflect.FullName][]step
	needs map[protoreflect.FullName]bool
}

func isText(k protoreflect.Kind) bool {
	return k == protoreflect.StringKind || k == protoreflect.BytesKind
}

func redactedValue(k protoreflect.Kind) protoreflect.Value {
	if k == protoreflect.BytesKind {
		return protoreflect.ValueOfBytes([]byte(Redacted))
	}
	return protoreflect.ValueOfString(Redacted)
}

// direct reports the rule that applies to field fd of md itself, if any.
func direct(md protoreflect.MessageDescriptor, fd protoreflect.FieldDescriptor) (action, bool) {
	switch {
	case fd.IsMap():
		if fd.Name() == "info" && isText(fd.MapValue().Kind()) {
			return actMapValues, true
		}
	case isText(fd.Kind()):
		if md.Name() == "AuthConfig" {
			return actSecret, true
		}
		if o, ok := fd.Options().(*descriptorpb.FieldOptions); ok && o.GetDebugRedact() {
			return actSecret, true
		}
	case fd.Name() == "envs" && fd.IsList() && fd.Message() != nil:
		if v := fd.Message().Fields().ByName("value"); v != nil && isText(v.Kind()) && !v.IsList() {
			return actEnvs, true
		}
	}
	return 0, false
}

// child is the message type a field leads to, if any.
func child(fd protoreflect.FieldDescriptor) protoreflect.MessageDescriptor {
	if fd.IsMap() {
		return fd.MapValue().Message()
	}
	return fd.Message()
}

// reaches reports whether md or a type below it has something to redact.
func reaches(md protoreflect.MessageDescriptor, seen map[protoreflect.FullName]bool) bool {
	if seen[md.FullName()] {
		return false
	}
	seen[md.FullName()] = true
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if _, ok := direct(md, fd); ok {
			return true
		}
		if c := child(fd); c != nil && reaches(c, seen) {
			return true
		}
	}
	return false
}

func (r *redactor) needsRedaction(md protoreflect.MessageDescriptor) bool {
	v, ok := r.needs[md.FullName()]
	if !ok {
		if r.needs == nil {
			r.needs = make(map[protoreflect.FullName]bool)
		}
		v = reaches(md, make(map[protoreflect.FullName]bool))
		r.needs[md.FullName()] = v
	}
	return v
}

func (r *redactor) plan(md protoreflect.MessageDescriptor) []step {
	p, ok := r.plans[md.FullName()]
	if ok {
		return p
	}
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if act, ok := direct(md, fd); ok {
			p = append(p, step{fd, act})
		} else if c := child(fd); c != nil && r.needsRedaction(c) {
			p = append(p, step{fd, actSub})
		}
	}
	if r.plans == nil {
		r.plans = make(map[protoreflect.FullName][]step)
	}
	r.plans[md.FullName()] = p
	return p
}

// redact blanks the secrets of m in place.
func (r *redactor) redact(m protoreflect.Message) {
	for _, st := range r.plan(m.Descriptor()) {
		fd := st.fd
		if !m.Has(fd) {
			continue
		}
		switch st.act {
		case actSecret:
			if fd.IsList() {
				l := m.Mutable(fd).List()
				for i := range l.Len() {
					l.Set(i, redactedValue(fd.Kind()))
				}
			} else {
				m.Set(fd, redactedValue(fd.Kind()))
			}
		case actEnvs:
			l := m.Mutable(fd).List()
			for i := range l.Len() {
				e := l.Get(i).Message()
				if v := e.Descriptor().Fields().ByName("value"); e.Has(v) {
					e.Set(v, redactedValue(v.Kind()))
				}
			}
		case actMapValues:
			mp := m.Mutable(fd).Map()
			var keys []protoreflect.MapKey
			mp.Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
				keys = append(keys, k)
				return true
			})
			for _, k := range keys {
				mp.Set(k, redactedValue(fd.MapValue().Kind()))
			}
		case actSub:
			switch {
			case fd.IsList():
				l := m.Mutable(fd).List()
				for i := range l.Len() {
					r.redact(l.Get(i).Message())
				}
			case fd.IsMap():
				m.Mutable(fd).Map().Range(func(_ protoreflect.MapKey, v protoreflect.Value) bool {
					r.redact(v.Message())
					return true
				})
			default:
				r.redact(m.Mutable(fd).Message())
			}
		}
	}
}

// redactHeaders blanks credentials in header fields, in place.
func redactHeaders(fields []hpack.HeaderField) {
	for i := range fields {
		f := &fields[i]
		if f.Value != "" && (f.Sensitive || f.Name == "authorization" || f.Name == "proxy-authorization") {
			f.Value = Redacted
		}
	}
}
