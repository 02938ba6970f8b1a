package decode

import (
	"sync"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// mapPruner removes map fields (labels, annotations, info), at any depth,
// from a message's wire bytes before it is unmarshalled: protobuf builds
// Go maps by reflection, one allocation per entry, and a status response
// is mostly maps that no diagram shows (Options.SkipResponseMaps).
type mapPruner struct {
	scratch [][]byte // by depth
}

// prunePlan says what to do with each field number of one message type.
type prunePlan struct {
	act []pruneAct // by field number; past its end: keep
	sub []*prunePlan
}

type pruneAct uint8

const (
	pruneKeep pruneAct = iota
	pruneDrop          // a map field
	pruneInto          // a message field holding maps somewhere
)

// prunePlans caches plans by message type; nil: nothing to remove.
var prunePlans sync.Map // protoreflect.FullName -> *prunePlan

func planFor(md protoreflect.MessageDescriptor) *prunePlan {
	if p, ok := prunePlans.Load(md.FullName()); ok {
		return p.(*prunePlan)
	}
	p := buildPlan(md, map[protoreflect.FullName]bool{})
	prunePlans.Store(md.FullName(), p)
	return p
}

// buildPlan returns nil for a message with no maps under it. CRI types
// do not recurse; a type seen on the way down is kept whole.
func buildPlan(md protoreflect.MessageDescriptor, onPath map[protoreflect.FullName]bool) *prunePlan {
	if onPath[md.FullName()] {
		return nil
	}
	onPath[md.FullName()] = true
	defer delete(onPath, md.FullName())
	var p *prunePlan
	fields := md.Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		var act pruneAct
		var sub *prunePlan
		switch {
		case fd.IsMap():
			act = pruneDrop
		case fd.Message() != nil && fd.Kind() == protoreflect.MessageKind:
			if sub = buildPlan(fd.Message(), onPath); sub != nil {
				act = pruneInto
			}
		}
		if act == pruneKeep {
			continue
		}
		if p == nil {
			p = &prunePlan{}
		}
		n := int(fd.Number())
		if n >= len(p.act) {
			p.act = append(p.act, make([]pruneAct, n+1-len(p.act))...)
			p.sub = append(p.sub, make([]*prunePlan, n+1-len(p.sub))...)
		}
		p.act[n], p.sub[n] = act, sub
	}
	return p
}

// prune returns b without the map fields plan names, in a buffer reused by
// the next call, or b itself when it has none. ok is false when b is not
// well-formed protobuf: the caller unmarshals b as it is, for the error.
func (mp *mapPruner) prune(plan *prunePlan, b []byte) (out []byte, ok bool) {
	if plan == nil {
		return b, true
	}
	out, changed, ok := mp.pruneAt(0, plan, b)
	if !ok || !changed {
		return b, ok
	}
	return out, true
}

func (mp *mapPruner) pruneAt(depth int, plan *prunePlan, b []byte) (out []byte, changed, ok bool) {
	if depth >= 32 {
		return b, false, true // deeper than CRI goes: leave it to Unmarshal
	}
	for len(mp.scratch) <= depth {
		mp.scratch = append(mp.scratch, nil)
	}
	out = mp.scratch[depth][:0]
	for rest := b; len(rest) > 0; {
		num, typ, n := protowire.ConsumeTag(rest)
		if n < 0 {
			return b, false, false
		}
		m := protowire.ConsumeFieldValue(num, typ, rest[n:])
		if m < 0 {
			return b, false, false
		}
		field := rest[:n+m]
		rest = rest[n+m:]
		act := pruneKeep
		if int(num) < len(plan.act) && typ == protowire.BytesType {
			act = plan.act[num]
		}
		switch act {
		case pruneDrop:
			changed = true
		case pruneInto:
			v, _ := protowire.ConsumeBytes(field[n:])
			sub, subChanged, subOK := mp.pruneAt(depth+1, plan.sub[num], v)
			if !subOK {
				return b, false, false
			}
			if !subChanged {
				out = append(out, field...)
				continue
			}
			changed = true
			out = protowire.AppendTag(out, num, protowire.BytesType)
			out = protowire.AppendBytes(out, sub)
		default:
			out = append(out, field...)
		}
	}
	mp.scratch[depth] = out
	return out, changed, true
}
