package decode

import (
	"strings"
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

// set gives field n its action.
func (p *prunePlan) set(num protoreflect.FieldNumber, act pruneAct, sub *prunePlan) {
	n := int(num)
	if n >= len(p.act) {
		p.act = append(p.act, make([]pruneAct, n+1-len(p.act))...)
		p.sub = append(p.sub, make([]*prunePlan, n+1-len(p.sub))...)
	}
	p.act[n], p.sub[n] = act, sub
}

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
		p.set(fd.Number(), act, sub)
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

// fieldPruner drops from messages' wire bytes the fields that
// Options.Fields does not list.
type fieldPruner struct {
	mapPruner
	plans map[protoreflect.FullName]*prunePlan // nil plan: the type is decoded whole
}

// prune returns b with only the fields fields lists for md, in a buffer
// reused by the next call; b itself if md is not listed or b is not
// well-formed (Unmarshal then reports it). listed says whether md is.
func (fp *fieldPruner) prune(md protoreflect.MessageDescriptor, fields map[protoreflect.FullName][]string, b []byte) (out []byte, listed bool) {
	plan := fp.plan(md, fields)
	if plan == nil {
		return b, false
	}
	out, ok := fp.mapPruner.prune(plan, b)
	if !ok {
		return b, true
	}
	return out, true
}

// plan is md's plan for fields, made once; nil if fields does not list md.
func (fp *fieldPruner) plan(md protoreflect.MessageDescriptor, fields map[protoreflect.FullName][]string) *prunePlan {
	plan, ok := fp.plans[md.FullName()]
	if !ok {
		if paths, found := fields[md.FullName()]; found {
			plan = keepPlan(md, paths)
		}
		if fp.plans == nil {
			fp.plans = map[protoreflect.FullName]*prunePlan{}
		}
		fp.plans[md.FullName()] = plan
	}
	return plan
}

// keepPlan drops every length-delimited field of md that paths does not
// name or lead into. Scalars are kept: they cost little to decode.
func keepPlan(md protoreflect.MessageDescriptor, paths []string) *prunePlan {
	p := &prunePlan{}
	fields := md.Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		name := string(fd.Name())
		act := pruneDrop
		var sub *prunePlan
		var under []string
		for _, path := range paths {
			if path == name {
				act, under = pruneKeep, nil
				break
			}
			if rest, ok := strings.CutPrefix(path, name+"."); ok {
				under = append(under, rest)
			}
		}
		if act == pruneDrop && len(under) > 0 && fd.Kind() == protoreflect.MessageKind && !fd.IsMap() {
			act, sub = pruneInto, keepPlan(fd.Message(), under)
		}
		p.set(fd.Number(), act, sub)
	}
	return p
}
