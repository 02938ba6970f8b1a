package decode

import (
	"fmt"
	"math/bits"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/criseq/criseq/capture"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// Method inference: the CRI is a closed set of methods, and a message
// says much about its type. A call whose :path is unknown (its HPACK
// entry was inserted before decoding began) is named by the methods
// whose request and response types fit its messages, when exactly one
// fits. A message fits a type when it reads as that type written by a
// protobuf marshaller: every field number is the type's, with the wire
// type of the field's kind; nested messages fit their types; strings are
// UTF-8; enums hold defined values; a singular field appears once, and
// not with its default value (proto3 does not write those).
//
// Several types may fit: bytes fields read anything, a string field reads
// a nested message whose bytes happen to be UTF-8, and an empty message
// fits every type. A fit is scored by how much of the message it reads
// as checked values (a nested message, enum, bool, number, string: one
// each; bytes: none), and a method wins only if it scores at least
// winMargin above every other that fits. Methods that tie stay
// ambiguous: StartContainer, StopContainer, RemoveContainer all take a
// container ID and answer an empty message; ListContainers with one
// container reads the same as StreamContainers' one message.

// methodSet is a set of CRI methods, by index in criMethods.
type methodSet uint64

func (s methodSet) len() int { return bits.OnesCount64(uint64(s)) }

// only returns the method of a set of one.
func (s methodSet) only() *method {
	if s.len() != 1 {
		return nil
	}
	return criMethods[bits.TrailingZeros64(uint64(s))]
}

// criServices are the services whose methods inference chooses from.
var criServices = []protoreflect.FullName{criPackage + ".RuntimeService", criPackage + ".ImageService"}

// criMethods are the methods of criServices, with their types.
var criMethods = func() []*method {
	var ms []*method
	for _, name := range criServices {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(name)
		if err != nil {
			panic("decode: CRI service " + string(name) + " not registered")
		}
		sd := d.(protoreflect.ServiceDescriptor)
		for i := range sd.Methods().Len() {
			m := lookupMethod("/" + string(name) + "/" + string(sd.Methods().Get(i).Name()))
			if !m.known {
				panic("decode: CRI method " + m.path + " not found")
			}
			m.index = len(ms)
			m.inShape, m.outShape = shapeOf(m.in.Descriptor()), shapeOf(m.out.Descriptor())
			m.names, m.gives = namedBy[m.name], givenBy[m.name]
			ms = append(ms, m)
		}
	}
	if len(ms) > 64 {
		panic("decode: more CRI methods than a methodSet holds")
	}
	return ms
}()

// allMethods is the set of every CRI method.
var allMethods = methodSet(1<<len(criMethods) - 1)

// streamLists are KEP-5825's Stream* list methods (StreamContainers, ...):
// each reads as its List* twin but for an empty list, so only a client
// known not to call them (Options.ListsUnary) tells the two apart.
var streamLists = func() methodSet {
	var set methodSet
	for _, m := range criMethods {
		if m.serverStream && strings.HasPrefix(m.name, "Stream") {
			set |= 1 << m.index
		}
	}
	return set
}()

// inferable is the set of methods a call may be inferred to be.
func (d *Decoder) inferable() methodSet {
	if d.opts.ListsUnary {
		return allMethods &^ streamLists
	}
	return allMethods
}

// winMargin is how much more of a call's messages the winning method
// must read as checked values than any other; a method scoring nearMargin
// below the best is no candidate for the call's :path slot.
const (
	winMargin  = 2
	nearMargin = 4
)

// fitScores holds, for each CRI method, whether a call's messages fit
// its types and how well.
type fitScores struct {
	fit   methodSet
	score [64]int32
}

// candidates returns the methods whose types fit a call's messages
// (each nil entry, a message that could not be read, is skipped). A CRI
// request is one message; a unary response too.
func candidates(reqs, resps [][]byte) methodSet {
	var fs fitScores
	fs.compute(reqs, resps)
	return fs.fit
}

func (fs *fitScores) compute(reqs, resps [][]byte) {
	fs.fit = 0
	if len(reqs) > 1 {
		return
	}
	for _, m := range criMethods {
		if len(resps) > 1 && !m.serverStream {
			continue
		}
		total := int32(0)
		ok := true
		for _, r := range reqs {
			if r == nil {
				continue
			}
			n := m.inShape.fits(r, 0)
			ok = ok && n >= 0
			total += n
		}
		for _, r := range resps {
			if !ok {
				break
			}
			if r == nil {
				continue
			}
			if m.serverStream && len(r) == 0 {
				// A stream's messages hold something: the Stream* methods
				// send "lists of at least one item" (KEP-5825), events an
				// event. An empty one is a unary answer.
				ok = false
				break
			}
			n := m.outShape.fits(r, 0)
			ok = ok && n >= 0
			total += n
		}
		if ok && m.names != nil && answered(resps) && len(reqs) == 1 && reqs[0] != nil && !nonEmptyAt(reqs[0], m.names) {
			// An answer about an object whose name the request lacks: a
			// runtime answers such a request with an error, not this.
			ok = false
		}
		if ok && m.gives != nil && len(resps) == 1 && resps[0] != nil && !nonEmptyAt(resps[0], m.gives) {
			ok = false // kubelet fails such an answer: runtimes never give one
		}
		if ok {
			fs.fit |= 1 << m.index
			fs.score[m.index] = total
		}
	}
}

// namedBy is, for the methods that ask about one object, the path of
// request fields that names it (ImageStatus: image.image). A runtime
// answers such a call with a message only when the name is there (an
// empty name is an error: containerd cannot resolve "", nor find the
// container ""). ListImages' answer with one image reads as an
// ImageStatus answer; its request (an empty filter) names nothing.
var namedBy = map[string][]protowire.Number{
	"ImageStatus":      {1, 1},
	"PullImage":        {1, 1},
	"ContainerStatus":  {1},
	"PodSandboxStatus": {1},
	"ContainerStats":   {1},
	"PodSandboxStats":  {1},
}

// givenBy is, for the methods whose answer names what they made, the
// path of that name in the response: kubelet fails a RunPodSandbox
// answer without a sandbox ID, a CreateContainer answer without a
// container ID, a PullImage answer without an image ref.
var givenBy = map[string][]protowire.Number{
	"RunPodSandbox":   {1},
	"CreateContainer": {1},
	"PullImage":       {1},
}

// answered reports whether a response message with something in it was
// read.
func answered(resps [][]byte) bool {
	for _, r := range resps {
		if len(r) > 0 {
			return true
		}
	}
	return false
}

// nonEmptyAt reports whether the message b holds a non-empty value at
// path (each step a length-delimited field; the first occurrence is
// followed).
func nonEmptyAt(b []byte, path []protowire.Number) bool {
	for _, want := range path {
		var found []byte
		ok := false
		for len(b) > 0 && !ok {
			num, typ, n := protowire.ConsumeTag(b)
			if n < 0 {
				return false
			}
			b = b[n:]
			if num == want && typ == protowire.BytesType {
				found, n = protowire.ConsumeBytes(b)
				ok = n >= 0
			} else {
				n = protowire.ConsumeFieldValue(num, typ, b)
			}
			if n < 0 {
				return false
			}
			b = b[n:]
		}
		if !ok {
			return false
		}
		b = found
	}
	return len(b) > 0
}

// near returns the methods that fit and score within nearMargin of the
// best.
func (fs *fitScores) near() methodSet {
	top := int32(-1)
	for _, m := range criMethods {
		if fs.fit&(1<<m.index) != 0 {
			top = max(top, fs.score[m.index])
		}
	}
	var set methodSet
	for _, m := range criMethods {
		if fs.fit&(1<<m.index) != 0 && fs.score[m.index] > top-nearMargin {
			set |= 1 << m.index
		}
	}
	return set
}

// best returns the winner among the methods of within that fit: the one
// scoring winMargin above all others, or nil.
func (fs *fitScores) best(within methodSet) *method {
	set := fs.fit & within
	var top *method
	var topScore, second int32 = -1, -1
	for _, m := range criMethods {
		if set&(1<<m.index) == 0 {
			continue
		}
		switch sc := fs.score[m.index]; {
		case sc > topScore:
			second, topScore, top = topScore, sc, m
		case sc > second:
			second = sc
		}
	}
	if top == nil || topScore-second < winMargin && second >= 0 {
		return nil
	}
	return top
}

// shape is a message type as inference reads it.
type shape struct {
	fields map[protowire.Number]*fieldShape
	// entry: a map entry, whose key and value are written even when
	// they hold their defaults.
	entry bool
}

type fieldShape struct {
	kind     protoreflect.Kind
	list     bool // repeated (a map is a list of entries)
	presence bool // a default value may be written
	msg      *shape
	enum     protoreflect.EnumValueDescriptors
}

// shapes caches the shape of every message type reached; built at init
// and read-only after, so Decoders may share it.
var shapes = map[protoreflect.FullName]*shape{}

func shapeOf(md protoreflect.MessageDescriptor) *shape {
	if s := shapes[md.FullName()]; s != nil {
		return s
	}
	s := &shape{fields: map[protowire.Number]*fieldShape{}, entry: md.IsMapEntry()}
	shapes[md.FullName()] = s
	fds := md.Fields()
	for i := range fds.Len() {
		fd := fds.Get(i)
		f := &fieldShape{kind: fd.Kind(), list: fd.IsList() || fd.IsMap(), presence: fd.HasPresence()}
		switch fd.Kind() {
		case protoreflect.MessageKind, protoreflect.GroupKind:
			f.msg = shapeOf(fd.Message())
		case protoreflect.EnumKind:
			f.enum = fd.Enum().Values()
		}
		s.fields[fd.Number()] = f
	}
	return s
}

// maxShapeDepth bounds the nesting inference follows.
const maxShapeDepth = 32

// fits reports whether b reads as a message of shape s: -1 if not,
// else its score (the values it reads as checked values).
func (s *shape) fits(b []byte, depth int) int32 {
	if depth > maxShapeDepth {
		return -1
	}
	score := int32(0)
	var once uint64 // singular fields seen, numbers below 64
	var onceMore map[protowire.Number]bool
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return -1
		}
		b = b[n:]
		f := s.fields[num]
		if f == nil {
			return -1
		}
		if !f.list {
			if num < 64 {
				if once&(1<<num) != 0 {
					return -1
				}
				once |= 1 << num
			} else {
				if onceMore[num] {
					return -1
				}
				if onceMore == nil {
					onceMore = map[protowire.Number]bool{}
				}
				onceMore[num] = true
			}
		}
		defaults := f.presence || f.list || s.entry
		if typ == protowire.BytesType && f.list && packable(f.kind) {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return -1
			}
			k := f.packed(v)
			if k < 0 {
				return -1
			}
			score += k
			b = b[n:]
			continue
		}
		n, k := f.value(b, typ, defaults, depth)
		if n < 0 {
			return -1
		}
		score += k
		b = b[n:]
	}
	return score
}

// printable reports whether a string field's bytes are text: UTF-8
// without control characters other than tab and line breaks. (CRI
// strings are IDs, names, paths, labels, messages, JSON; a nested
// message read as a string is rarely text.)
func printable(v []byte) bool {
	for _, c := range v {
		if c < 0x20 && c != '\t' && c != '\n' && c != '\r' || c == 0x7f {
			return false
		}
	}
	return utf8.Valid(v)
}

// packable reports whether a repeated field of kind k may be packed.
func packable(k protoreflect.Kind) bool {
	switch k {
	case protoreflect.StringKind, protoreflect.BytesKind, protoreflect.MessageKind, protoreflect.GroupKind:
		return false
	}
	return true
}

// packed scores v as packed elements of f's kind, -1 if it is not.
func (f *fieldShape) packed(v []byte) int32 {
	typ := WireType(f.kind)
	score := int32(0)
	for len(v) > 0 {
		n, k := f.value(v, typ, true, 0)
		if n < 0 {
			return -1
		}
		score += k
		v = v[n:]
	}
	return score
}

// WireType is the wire type of a kind's values.
func WireType(k protoreflect.Kind) protowire.Type {
	switch k {
	case protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind, protoreflect.FloatKind:
		return protowire.Fixed32Type
	case protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind, protoreflect.DoubleKind:
		return protowire.Fixed64Type
	case protoreflect.StringKind, protoreflect.BytesKind, protoreflect.MessageKind:
		return protowire.BytesType
	case protoreflect.GroupKind:
		return protowire.StartGroupType
	}
	return protowire.VarintType
}

// value checks one value of field f at b, of wire type typ: its length
// (-1 if it does not fit) and score. defaults says a default value may
// be written.
func (f *fieldShape) value(b []byte, typ protowire.Type, defaults bool, depth int) (int, int32) {
	if typ != WireType(f.kind) || typ == protowire.StartGroupType {
		return -1, 0
	}
	switch typ {
	case protowire.VarintType:
		v, n := protowire.ConsumeVarint(b)
		if n < 0 || (v == 0 && !defaults) {
			return -1, 0
		}
		switch f.kind {
		case protoreflect.BoolKind:
			if v > 1 {
				return -1, 0
			}
		case protoreflect.EnumKind:
			if f.enum.ByNumber(protoreflect.EnumNumber(int32(v))) == nil {
				return -1, 0
			}
		case protoreflect.Int32Kind, protoreflect.Uint32Kind, protoreflect.Sint32Kind:
			// A negative int32 is sign-extended to 64 bits.
			if v > 1<<32-1 && (f.kind != protoreflect.Int32Kind || int64(v) < -1<<31) {
				return -1, 0
			}
		}
		return n, 1
	case protowire.Fixed32Type:
		v, n := protowire.ConsumeFixed32(b)
		if n < 0 || (v == 0 && !defaults) {
			return -1, 0
		}
		return n, 1
	case protowire.Fixed64Type:
		v, n := protowire.ConsumeFixed64(b)
		if n < 0 || (v == 0 && !defaults) {
			return -1, 0
		}
		return n, 1
	}
	v, n := protowire.ConsumeBytes(b)
	if n < 0 {
		return -1, 0
	}
	switch f.kind {
	case protoreflect.StringKind:
		if (len(v) == 0 && !defaults) || !printable(v) {
			return -1, 0
		}
		return n, 1
	case protoreflect.BytesKind:
		if len(v) == 0 && !defaults {
			return -1, 0
		}
		return n, 0
	}
	k := f.msg.fits(v, depth+1)
	if k < 0 {
		return -1, 0
	}
	return n, 1 + k
}

// pathSlots notes, for a request block decoded with a partial table,
// which unknown slots may hold its :path, and returns the :path to use
// ("" until the call ends and inference tells). HTTP/2 puts pseudo-header
// fields first, and a block has one :path: an unknown slot after a known
// regular field, or in a block whose :path is known, is not a :path.
func (d *Decoder) pathSlots(cn *conn, h *half, s *stream, path string, fields []hpack.HeaderField, bf *blockFields) string {
	tab := h.hb.part
	rs := s.resync()
	rs.tab, rs.viaErr = tab, h.lastErr
	if path != "" {
		for _, u := range bf.unknown {
			if u.slot >= 0 {
				tab.slot(u.slot).notPath = true
			}
		}
		if bf.filled {
			// The :path came from a slot filled by inference: checked
			// against the messages when the call ends.
			rs.deferred, rs.via = true, methodByPath[path]
		}
		return path
	}
	// The :path entries known now are not in the unknown slots.
	for i := range tab.ents {
		if e := &tab.ents[i]; e.name == ":path" {
			if pm := methodByPath[e.value]; pm != nil {
				rs.notPaths |= 1 << pm.index
			}
		}
	}
	firstRegular := len(fields)
	for i := range fields {
		if !fields[i].IsPseudo() {
			firstRegular = i
			break
		}
	}
	for _, u := range bf.unknown {
		if u.slot < 0 {
			continue
		}
		st := tab.slot(u.slot)
		if u.at > firstRegular {
			st.notPath = true
		}
		if !st.notPath && !slices.Contains(rs.slots, u.slot) {
			rs.slots = append(rs.slots, u.slot)
		}
	}
	rs.deferred = true
	return ""
}

// methodByPath finds a CRI method by its :path.
var methodByPath = func() map[string]*method {
	m := make(map[string]*method, len(criMethods))
	for _, cm := range criMethods {
		m[cm.path] = cm
	}
	return m
}()

// resolve names a deferred call when it ends, from its messages and what
// its :path slots have learnt, fills the slot when it is known to be the
// :path, and unmarshals the messages kept. A call left unnamed returns
// the unknown slots its :path may still be as park: a later call may
// name one of them (see park.go). filled is the slot this call filled,
// if any.
func (d *Decoder) resolve(s *stream) (park []*slotState, filled *slotState) {
	c, rs := s.call, s.rs
	var fs fitScores
	fs.compute(rs.raw[c2s], rs.raw[s2c])
	var m *method
	var within methodSet // the methods the call may be, by its :path
	switch {
	case rs.via != nil:
		within = 1 << rs.via.index
		if fs.fit&(1<<rs.via.index) != 0 {
			m = rs.via
		} else {
			c.Errors = append(c.Errors, fmt.Sprintf("messages do not fit %s, inferred for its :path from an earlier call", rs.via.name))
		}
	case rs.tab != nil:
		// A table holds a field once (encoders index an exact match rather
		// than insert it again): methods whose :path is in another entry
		// are not this call's.
		allowed := d.inferable()
		near := fs.near() & allowed &^ rs.tab.filledMethods &^ rs.notPaths
		var live []*slotState
		for _, k := range rs.slots {
			st := rs.tab.slot(k)
			if st.filled {
				// Filled since, by a call whose only :path it could be: it
				// is this block's :path too.
				live = append(live[:0], st)
				break
			}
			if st.notPath {
				continue
			}
			if !st.seen {
				st.cands, st.seen = near, true
			} else {
				st.cands &= near
			}
			if st.cands == 0 {
				st.notPath = true
				continue
			}
			live = append(live, st)
		}
		within = allowed &^ rs.tab.filledMethods &^ rs.notPaths
		if len(live) == 1 {
			if st := live[0]; st.filled {
				within = 0
				if pm := methodByPath[st.field.Value]; pm != nil {
					within = 1 << pm.index
				}
			} else {
				within = st.cands
			}
		}
		m = fs.best(within)
		if m == nil && len(live) > 0 && !live[0].filled && !d.opts.noPark {
			park = live
		}
		if len(live) == 1 && !live[0].filled {
			if m != nil {
				live[0].filled = true
				live[0].field = hpack.HeaderField{Name: ":path", Value: m.path}
				rs.tab.filledMethods |= 1 << m.index
				filled = live[0]
			}
		}
	default:
		within = d.inferable()
		m = fs.best(within)
	}
	if m == nil {
		c.Method, c.Service, c.Name, c.Known = "", "", "", false
		if park == nil {
			c.Candidates = candidateNames(fs.fit & within)
		}
		if rs.viaErr != nil && park == nil {
			rs.viaErr.Unknown++
		}
		return park, nil
	}
	d.name(s, m)
	return nil, filled
}

// maxCandidates bounds Call.Candidates: more would say little (an empty
// message fits most methods).
const maxCandidates = 6

// candidateNames lists set's methods, or nil if it holds one or more than
// maxCandidates.
func candidateNames(set methodSet) []string {
	if n := set.len(); n < 2 || n > maxCandidates {
		return nil
	}
	var out []string
	for _, m := range criMethods {
		if set&(1<<m.index) != 0 {
			out = append(out, m.name)
		}
	}
	return out
}

// name gives a deferred call its inferred method and unmarshals the
// messages kept.
func (d *Decoder) name(s *stream, m *method) {
	c, rs := s.call, s.rs
	s.m = d.method(m.path)
	c.Method, c.Service, c.Name, c.Known = m.path, m.service, m.name, true
	c.Flags |= Inferred
	for dir, raws := range rs.raw {
		list := c.Requests
		if capture.Dir(dir) == s2c {
			list = c.Responses
		}
		for i, raw := range raws {
			if raw == nil || i >= len(list) || list[i].Err != "" {
				continue
			}
			if err := d.unmarshal(s, capture.Dir(dir), &list[i], raw, true); err != nil {
				d.messageError(c, capture.Dir(dir), &list[i], i+1, err)
			}
		}
	}
}

// inferStatus handles a call whose trailers were not known: a unary
// call that got its response message got status OK (a gRPC server sends
// a unary response only with OK); and trailers made of the same unknown
// fields as those of a call whose status is known carry that status.
// Otherwise the status stays unknown.
func (d *Decoder) inferStatus(s *stream) {
	c, rs := s.call, s.rs
	if rs.stab != nil {
		if st, ok := rs.stab.statuses[rs.trailerKey]; ok {
			c.Status = st
			c.Flags |= InferredStatus
			return
		}
	}
	if c.Known && !s.m.serverStream && len(c.Responses) == 1 && c.Responses[0].Err == "" &&
		c.Flags&(Reset|Malformed|Gap|Incomplete) == 0 && !c.End.IsZero() {
		c.Status = 0
		c.Flags |= InferredStatus
		if rs.stab != nil {
			if rs.stab.statuses == nil {
				rs.stab.statuses = make(map[string]int)
			}
			rs.stab.statuses[rs.trailerKey] = 0
		}
		return
	}
	c.Errors = append(c.Errors, "grpc-status not read: its header table entry predates decoding")
}

// unknownKey names a block's unknown fields: equal keys in one table are
// equal fields.
func unknownKey(bf *blockFields) string {
	var b []byte
	for _, u := range bf.unknown {
		b = fmt.Appendf(b, "%d/%d/%d/%q;", u.at, u.slot, u.nameSlot, u.value)
	}
	return string(b)
}
