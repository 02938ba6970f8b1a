package decode

import (
	"reflect"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// mapFiller unmarshals a message with map fields (labels, annotations,
// info) in two steps: protobuf-go without the maps (mapPruner's bytes),
// then the maps straight from the wire into the Go maps. protobuf-go builds
// maps by reflection, four allocations per entry; here an entry costs its
// two strings, often none: label keys and values repeat call after call,
// so strings are shared from a small table. Anything unusual in a map's
// bytes gives up, and the message is unmarshalled whole by protobuf-go:
// the result is always what proto.Unmarshal gives.
type mapFiller struct {
	pruner mapPruner
	strs   map[string]string // shared strings, cleared when full
	counts [][]int           // repeated fields' next element, by depth
}

// maxShared bounds the shared strings; longer strings are not shared.
const (
	maxShared    = 8192
	maxSharedLen = 128
)

// fillPlan is prunePlan with where each field lives in the Go struct.
type fillPlan struct {
	prune  *prunePlan
	fields []fillField // by field number, as prune.act
}

type fillField struct {
	index int // of the Go struct field
	list  bool
	sub   *fillPlan
}

// fillPlans caches plans by Go type; a nil plan: no maps, or a shape this
// does not handle (unmarshalled whole).
var fillPlans sync.Map // reflect.Type -> *fillPlan

func fillPlanFor(m proto.Message) *fillPlan {
	t := reflect.TypeOf(m)
	if p, ok := fillPlans.Load(t); ok {
		return p.(*fillPlan)
	}
	p, ok := buildFill(planFor(m.ProtoReflect().Descriptor()), t)
	if !ok {
		p = nil
	}
	fillPlans.Store(t, p)
	return p
}

// buildFill matches a prune plan to the Go type t (a pointer to a
// generated struct). ok is false for a field it cannot find (a oneof).
func buildFill(pp *prunePlan, t reflect.Type) (*fillPlan, bool) {
	if pp == nil {
		return nil, true
	}
	if t.Kind() != reflect.Pointer || t.Elem().Kind() != reflect.Struct {
		return nil, false
	}
	st := t.Elem()
	byNum := map[int]int{}
	for i := 0; i < st.NumField(); i++ {
		tag := st.Field(i).Tag.Get("protobuf")
		if tag == "" {
			continue
		}
		parts := strings.Split(tag, ",")
		if len(parts) < 2 {
			continue
		}
		if n, err := strconv.Atoi(parts[1]); err == nil {
			byNum[n] = i
		}
	}
	p := &fillPlan{prune: pp, fields: make([]fillField, len(pp.act))}
	for n, act := range pp.act {
		if act == pruneKeep {
			continue
		}
		i, ok := byNum[n]
		if !ok {
			return nil, false
		}
		ft := st.Field(i).Type
		f := fillField{index: i}
		switch act {
		case pruneDrop:
			if ft != reflect.TypeOf(map[string]string(nil)) {
				return nil, false
			}
		case pruneInto:
			et := ft
			if ft.Kind() == reflect.Slice {
				f.list, et = true, ft.Elem()
			}
			sub, ok := buildFill(pp.sub[n], et)
			if !ok || sub == nil {
				return nil, false
			}
			f.sub = sub
		}
		p.fields[n] = f
	}
	return p, true
}

// unmarshal decodes b into a new message of typ: the same message
// proto.Unmarshal makes, or its error.
func (mf *mapFiller) unmarshal(typ protoreflect.MessageType, b []byte) (proto.Message, error) {
	msg := typ.New().Interface()
	plan := fillPlanFor(msg)
	if plan == nil {
		return msg, proto.Unmarshal(b, msg)
	}
	if body, changed, ok := mf.pruner.pruneAt(0, plan.prune, b); ok && changed {
		if proto.Unmarshal(body, msg) == nil && mf.fill(plan, reflect.ValueOf(msg).Elem(), b, 0) {
			return msg, nil
		}
		msg = typ.New().Interface()
	}
	return msg, proto.Unmarshal(b, msg)
}

// fill walks b beside v, the struct protobuf-go made from b less its maps,
// and sets the maps. false: bytes protobuf-go may read otherwise.
func (mf *mapFiller) fill(plan *fillPlan, v reflect.Value, b []byte, depth int) bool {
	if depth >= 32 {
		return false
	}
	for len(mf.counts) <= depth {
		mf.counts = append(mf.counts, nil)
	}
	counts := mf.counts[depth]
	if cap(counts) < len(plan.fields) {
		counts = make([]int, len(plan.fields))
	}
	counts = counts[:len(plan.fields)]
	clear(counts)
	mf.counts[depth] = counts
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return false
		}
		field := b[n : n+m]
		b = b[n+m:]
		if int(num) >= len(plan.fields) || typ != protowire.BytesType || plan.prune.act[num] == pruneKeep {
			continue
		}
		val, _ := protowire.ConsumeBytes(field)
		f := plan.fields[num]
		fv := v.Field(f.index)
		if f.sub == nil {
			if !mf.entry(fv.Addr().Interface().(*map[string]string), val) {
				return false
			}
			continue
		}
		k := counts[num]
		counts[num]++
		if f.list {
			if k >= fv.Len() {
				return false
			}
			fv = fv.Index(k)
		} else if k > 0 {
			// A message given twice is merged: its lists run on from
			// the first, which this walk does not follow.
			return false
		}
		if fv.IsNil() || !mf.fill(f.sub, fv.Elem(), val, depth+1) {
			return false
		}
	}
	return true
}

// entry adds one map entry: key 1 and value 2, both strings, as protoc
// writes them; anything else is left to protobuf-go.
func (mf *mapFiller) entry(mp *map[string]string, b []byte) bool {
	var key, val []byte
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || typ != protowire.BytesType || num != 1 && num != 2 {
			return false
		}
		v, m := protowire.ConsumeBytes(b[n:])
		// Each string given is checked, as protobuf-go does, not only
		// the last one.
		if m < 0 || !utf8.Valid(v) {
			return false
		}
		b = b[n+m:]
		if num == 1 {
			key = v
		} else {
			val = v
		}
	}
	if *mp == nil {
		*mp = map[string]string{}
	}
	(*mp)[mf.str(key)] = mf.str(val)
	return true
}

// str is string(b), shared with earlier equal strings.
func (mf *mapFiller) str(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if len(b) > maxSharedLen {
		return string(b)
	}
	if s, ok := mf.strs[string(b)]; ok {
		return s
	}
	if mf.strs == nil || len(mf.strs) >= maxShared {
		mf.strs = make(map[string]string, 256)
	}
	s := string(b)
	mf.strs[s] = s
	return s
}
