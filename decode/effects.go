package decode

import (
	"slices"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// Naming by effect. StartContainer, RemoveContainer, StopPodSandbox and
// RemovePodSandbox (and StopContainer without a timeout) all take an ID
// and answer nothing: caught midway, their bytes are alike. What each
// does to the runtime's state tells them apart, and kubelet keeps
// looking at that state (ListContainers and ListPodSandbox every second,
// the status calls):
//   - a container seen CREATED before the call and RUNNING after it was
//     started: StartContainer;
//   - a container seen before and gone after (missing from a full list,
//     or NotFound): RemoveContainer;
//   - a sandbox seen before and still there after: StopPodSandbox
//     (kubelet stops a sandbox again and again; RemovePodSandbox is the
//     only other such call a sandbox's ID takes, and it leaves none;
//     UpdatePodSandboxResources carries resources);
//   - a sandbox seen before and gone after: RemovePodSandbox.
// But for the first, the call must be the only one about that ID between
// the two looks (no other call that could have changed it); the look
// after must begin once the call has ended, and the method must fit the
// call's messages.

// idKind is what an ID names.
type idKind uint8

const (
	kindContainer idKind = iota + 1
	kindSandbox
)

// idState is an ID's state as a call saw it: a ContainerState or
// PodSandboxState value, or stateGone.
const stateGone = -1

// idLook is one look at an ID's state, by a call begun at start and
// answered at end.
type idLook struct {
	state      int32
	start, end time.Time
}

// idHistory is what the decoder saw of one ID.
type idHistory struct {
	kind       idKind
	last, prev idLook
	// acts are the starts of the calls about this ID that may change it,
	// noted when their requests are seen; a call that turns out only to
	// look (a status call) is taken out when it ends.
	acts []time.Time
}

// maxIDs bounds the IDs remembered; past it they are forgotten at once.
const maxIDs = 1 << 14

var (
	mStartContainer   = methodByPath["/runtime.v1.RuntimeService/StartContainer"]
	mRemoveContainer  = methodByPath["/runtime.v1.RuntimeService/RemoveContainer"]
	mStopPodSandbox   = methodByPath["/runtime.v1.RuntimeService/StopPodSandbox"]
	mRemovePodSandbox = methodByPath["/runtime.v1.RuntimeService/RemovePodSandbox"]
)

// lookOnly are the methods that take an ID and change nothing of its
// state.
var lookOnly = map[string]bool{
	"ContainerStatus": true, "PodSandboxStatus": true, "ContainerStats": true, "PodSandboxStats": true,
	"ExecSync": true, "Exec": true, "Attach": true, "PortForward": true, "ReopenContainerLog": true,
}

// history returns the history of id, made if needed.
func (d *Decoder) history(id string) *idHistory {
	h := d.ids[id]
	if h == nil {
		if d.ids == nil || len(d.ids) >= maxIDs {
			d.ids = make(map[string]*idHistory)
		}
		h = &idHistory{}
		d.ids[id] = h
	}
	return h
}

// look notes that a call saw id in state (or gone), and names the parked
// calls about id that this look explains.
func (d *Decoder) look(id string, kind idKind, state int32, start, end time.Time) {
	if !isID(id) {
		return
	}
	h := d.history(id)
	if h.kind == 0 {
		h.kind = kind
	}
	if h.kind != kind {
		return // seen as a container and as a sandbox: trust neither
	}
	l := idLook{state, start, end}
	if d.explain(id, h, l) {
		d.unpark(func(p *parkedCall) bool { return p.named != nil })
	}
	h.prev, h.last = h.last, l
}

// before returns the last look at id that ended before t.
func (h *idHistory) before(t time.Time) idLook {
	for _, l := range []idLook{h.last, h.prev} {
		if !l.end.IsZero() && !l.end.After(t) {
			return l
		}
	}
	return idLook{}
}

// act notes a call about id, begun at start, that may change it.
func (d *Decoder) act(id string, start time.Time) {
	h := d.history(id)
	h.acts = append(h.acts, start)
	if len(h.acts) > 64 {
		h.acts = slices.Delete(h.acts, 0, 32)
	}
}

// unact takes back the act of a call that only looked.
func (d *Decoder) unact(id string, start time.Time) {
	if h := d.ids[id]; h != nil {
		if i := slices.IndexFunc(h.acts, start.Equal); i >= 0 {
			h.acts = slices.Delete(h.acts, i, i+1)
		}
	}
}

// explain names the parked calls about id that a look after them tells,
// and reports whether it named any.
func (d *Decoder) explain(id string, h *idHistory, after idLook) bool {
	named := false
	for _, p := range d.parked {
		if p.id != id || p.named != nil || after.start.Before(p.s.call.End) || p.before.end.IsZero() {
			continue
		}
		// Is it the only call about id between the look before and this
		// one?
		n := 0
		for _, t := range h.acts {
			if !t.Before(p.before.start) && !t.After(after.start) {
				n++
			}
		}
		var m *method
		switch b, a := p.before.state, after.state; {
		case h.kind == kindSandbox && b != stateGone && a != stateGone:
			// Still there, so not removed, whatever else happened:
			// stopped, again maybe (kubelet repeats it).
			m = mStopPodSandbox
		case n != 1:
		case h.kind == kindContainer && b == 0 && a == 1: // CREATED, then RUNNING
			m = mStartContainer
		case h.kind == kindContainer && b != stateGone && a == stateGone:
			m = mRemoveContainer
		case h.kind == kindSandbox && b != stateGone && a == stateGone:
			m = mRemovePodSandbox
		}
		if m != nil && candidates(p.s.rs.raw[c2s], p.s.rs.raw[s2c])&(1<<m.index) != 0 {
			p.named, named = m, true
		}
	}
	return named
}

// idOnly returns the ID of a call whose request is an ID alone (field 1,
// a string) and whose answer is one empty message: the calls only their
// effect can name.
func idOnly(reqs, resps [][]byte) string {
	if len(reqs) != 1 || len(resps) != 1 || len(resps[0]) != 0 || reqs[0] == nil {
		return ""
	}
	num, typ, n := protowire.ConsumeTag(reqs[0])
	if n < 0 || num != 1 || typ != protowire.BytesType {
		return ""
	}
	v, k := protowire.ConsumeBytes(reqs[0][n:])
	if k < 0 || n+k != len(reqs[0]) || !isID(string(v)) {
		return ""
	}
	return string(v)
}

// isID reports whether s looks like a runtime's ID: containerd's and
// CRI-O's are 64 hex digits.
func isID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// request notes what a call's first request says: the ID it acts on
// (taken back if it turns out only to look) and whether a list is
// filtered.
func (d *Decoder) request(s *stream, raw []byte) {
	if id := string(firstString(raw, 1)); isID(id) {
		s.actID = id
		d.act(id, s.call.Start)
	}
	s.filtered = filtered(raw)
}

// answer notes the states a call's answer shows: lists, statuses,
// creations. end is when it came.
func (d *Decoder) answer(s *stream, m *method, resp []byte, end time.Time) {
	c := s.call
	if !readsAnswer(m) {
		return
	}
	switch m.name {
	case "ListContainers", "ListPodSandbox":
		l := d.newListAnswer(s, m, end)
		eachField(resp, 1, l.item)
		l.done()
	case "ContainerStatus", "PodSandboxStatus":
		kind := kindContainer
		if m.name == "PodSandboxStatus" {
			kind = kindSandbox
		}
		var status []byte
		eachField(resp, 1, func(b []byte) { status = b })
		if status != nil {
			if _, state := idAndState(status, 3); s.actID != "" {
				d.look(s.actID, kind, state, c.Start, end)
			}
		}
	case "CreateContainer", "RunPodSandbox":
		kind := kindContainer
		if m.name == "RunPodSandbox" {
			kind = kindSandbox
		}
		d.look(string(firstString(resp, 1)), kind, 0, c.Start, end) // CREATED, READY
	}
}

// listAnswer reads what a list's answer shows, item by item (answer, or
// a list too large to hold, as its bytes come): the states of those
// listed and, of a full list, those gone. It notes them when done, as one
// answer.
type listAnswer struct {
	d          *Decoder
	s          *stream
	kind       idKind
	stateField protowire.Number
	end        time.Time
	items      []listed
}

type listed struct {
	id    string
	state int32
}

// readsAnswer says whether answer reads anything of m's answer: the
// cases of its switch.
func readsAnswer(m *method) bool {
	if m == nil || !m.known || m.serverStream {
		return false
	}
	switch m.name {
	case "ListContainers", "ListPodSandbox", "ContainerStatus", "PodSandboxStatus", "CreateContainer", "RunPodSandbox":
		return true
	}
	return false
}

// answersList says whether answer reads m's answer as a list.
func answersList(m *method) bool {
	return m != nil && m.known && !m.serverStream && (m.name == "ListContainers" || m.name == "ListPodSandbox")
}

func (d *Decoder) newListAnswer(s *stream, m *method, end time.Time) *listAnswer {
	l := &listAnswer{d: d, s: s, kind: kindContainer, stateField: 6, end: end}
	if m.name == "ListPodSandbox" {
		l.kind, l.stateField = kindSandbox, 3
	}
	return l
}

// item takes one listed Container or PodSandbox message.
func (l *listAnswer) item(b []byte) {
	id, state := idAndState(b, l.stateField)
	l.items = append(l.items, listed{id, state})
}

// done notes the list's items, and of a full list what is gone.
func (l *listAnswer) done() {
	d, c := l.d, l.s.call
	seen := make(map[string]bool, len(l.items))
	for _, it := range l.items {
		seen[it.id] = true
		d.look(it.id, l.kind, it.state, c.Start, l.end)
	}
	if l.s.filtered { // only a full list also says what is gone
		return
	}
	var gone []string
	for id, h := range d.ids {
		// Seen before this list began: one made meanwhile may be
		// missing from it.
		if h.kind == l.kind && !seen[id] && !h.last.end.IsZero() && h.last.end.Before(c.Start) && h.last.state != stateGone {
			gone = append(gone, id)
		}
	}
	slices.Sort(gone) // calls named in the same order every time
	for _, id := range gone {
		d.look(id, l.kind, stateGone, c.Start, l.end)
	}
}

// endedNamed notes what a call says once it has ended and been named:
// the answer of an inferred call (kept raw until now); a status call
// looked and changed nothing; NotFound says an ID is gone.
func (d *Decoder) endedNamed(s *stream) {
	c := s.call
	if !c.Known {
		return
	}
	if rs := s.rs; rs != nil && rs.deferred && len(rs.raw[s2c]) == 1 && rs.raw[s2c][0] != nil && c.Flags&Inferred != 0 {
		d.answer(s, s.m, rs.raw[s2c][0], c.End)
	}
	if s.actID == "" {
		return
	}
	if lookOnly[c.Name] {
		d.unact(s.actID, c.Start)
	}
	if c.Status == 5 && !c.End.IsZero() { // NotFound
		switch c.Name {
		case "ContainerStatus":
			d.look(s.actID, kindContainer, stateGone, c.Start, c.End)
		case "PodSandboxStatus":
			d.look(s.actID, kindSandbox, stateGone, c.Start, c.End)
		}
	}
}

// filtered reports whether a List request carries a filter with
// anything in it.
func filtered(req []byte) bool {
	f := false
	eachField(req, 1, func(b []byte) { f = f || len(b) > 0 })
	return f
}

// walk calls fn with each field of b: its number, wire type and value (a
// length-delimited field's content, else its encoded bytes). It reports
// whether b was read to its end.
func walk(b []byte, fn func(n protowire.Number, typ protowire.Type, v []byte)) bool {
	for len(b) > 0 {
		n, typ, k := protowire.ConsumeTag(b)
		if k < 0 {
			return false
		}
		b = b[k:]
		k = protowire.ConsumeFieldValue(n, typ, b)
		if k < 0 {
			return false
		}
		v := b[:k]
		if typ == protowire.BytesType {
			v, _ = protowire.ConsumeBytes(v)
		}
		fn(n, typ, v)
		b = b[k:]
	}
	return true
}

// eachField calls fn with each length-delimited field num of b.
func eachField(b []byte, num protowire.Number, fn func([]byte)) {
	walk(b, func(n protowire.Number, typ protowire.Type, v []byte) {
		if n == num && typ == protowire.BytesType {
			fn(v)
		}
	})
}

// firstString returns the first string field num of b, or nil.
func firstString(b []byte, num protowire.Number) []byte {
	var s []byte
	eachField(b, num, func(v []byte) {
		if s == nil {
			s = v
		}
	})
	return s
}

// idAndState reads a Container, PodSandbox or status message's id (field
// 1) and state enum (stateField; absent is 0, as proto3 omits it); no id
// if the message cannot be read whole.
func idAndState(b []byte, stateField protowire.Number) (string, int32) {
	var id string
	var state int32
	ok := walk(b, func(n protowire.Number, typ protowire.Type, v []byte) {
		switch {
		case n == 1 && typ == protowire.BytesType:
			id = string(v)
		case n == stateField && typ == protowire.VarintType:
			x, _ := protowire.ConsumeVarint(v)
			state = int32(x)
		}
	})
	if !ok {
		return "", 0
	}
	return id, state
}
