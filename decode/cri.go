package decode

import (
	"bytes"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	// Registers the CRI services and messages in the global registries.
	_ "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// criPackage is the protobuf package whose services are decoded. Other
// services on the socket (containerd's API, health, reflection) stay
// unknown even when their descriptors happen to be linked in.
const criPackage = "runtime.v1"

// method is what a :path resolves to.
type method struct {
	path          string
	service, name string
	known         bool
	in, out       protoreflect.MessageType // nil unless known
	skip          bool                     // Options.SkipBodies said so
	encodeOnly    bool                     // Options.EncodeOnly said so
	serverStream  bool                     // the server sends a stream of messages
	// For inference (criMethods only): the index in criMethods and the
	// shapes of the types.
	index             int
	inShape, outShape *shape
	names, gives      []protowire.Number // namedBy, givenBy
}

// noMethod stands for a stream whose request headers were not seen.
var noMethod method

// maxMethods bounds the path cache: a corrupt capture may invent paths.
const maxMethods = 4096

// method resolves a :path through the cache.
func (d *Decoder) method(path string) *method {
	if m, ok := d.methods[path]; ok {
		return m
	}
	m := lookupMethod(path)
	if d.opts.SkipBodies != nil && m.known && d.opts.SkipBodies(m.service, m.name) {
		c := *m
		c.skip = true
		m = &c
	}
	if d.opts.EncodeOnly != nil && d.opts.Encode != nil && m.known && d.opts.EncodeOnly(m.service, m.name) {
		c := *m
		c.encodeOnly = true
		m = &c
	}
	if len(d.methods) < maxMethods {
		d.methods[path] = m
	}
	return m
}

// lookupMethod finds the request and response types of a gRPC path
// "/package.Service/Method" in the CRI descriptors. The retired
// runtime.v1alpha2 package is wire-compatible and decoded as runtime.v1.
func lookupMethod(path string) *method {
	m := &method{path: path}
	rest, ok := strings.CutPrefix(path, "/")
	i := strings.LastIndexByte(rest, '/')
	if !ok || i <= 0 || i == len(rest)-1 {
		return m
	}
	m.service, m.name = rest[:i], rest[i+1:]
	svc := m.service
	if name, ok := strings.CutPrefix(svc, "runtime.v1alpha2."); ok {
		svc = criPackage + "." + name
	}
	if !strings.HasPrefix(svc, criPackage+".") {
		return m
	}
	desc, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(svc))
	if err != nil {
		return m
	}
	sd, ok := desc.(protoreflect.ServiceDescriptor)
	if !ok {
		return m
	}
	md := sd.Methods().ByName(protoreflect.Name(m.name))
	if md == nil {
		return m
	}
	in, err := protoregistry.GlobalTypes.FindMessageByName(md.Input().FullName())
	if err != nil {
		return m
	}
	out, err := protoregistry.GlobalTypes.FindMessageByName(md.Output().FullName())
	if err != nil {
		return m
	}
	m.in, m.out, m.known = in, out, true
	m.serverStream = md.IsStreamingServer()
	return m
}

// Items unmarshals each item of a list answer kept as it came (its
// repeated field 1) into item, reset first, and calls fn after each: an
// answer of thousands of containers is read one item at a time. Other
// fields are skipped; of each item, only the fields Options.Fields
// names are read, as when the answer is decoded whole.
func (w *WireMessage) Items(item proto.Message, fn func()) error {
	b := w.Bytes
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if num == 1 && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			if w.items != nil {
				if pruned, ok := w.items.pruner.prune(w.items.plan, v); ok {
					v = pruned
				}
			}
			proto.Reset(item)
			if err := proto.Unmarshal(v, item); err != nil {
				return err
			}
			fn()
			b = b[n:]
			continue
		}
		if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
	}
	return nil
}

// itemPruner prunes a list answer's items to what Options.Fields names
// of them (WireMessage.Items).
type itemPruner struct {
	plan   *prunePlan
	pruner mapPruner
}

// readByItems: the list answers Options.ListsAbove keeps as they came.
func readByItems(md protoreflect.MessageDescriptor) bool {
	switch md.FullName() {
	case "runtime.v1.ListContainersResponse", "runtime.v1.ListPodSandboxResponse":
		return true
	}
	return false
}

// keepByItems keeps raw, a list answer of type md, as it came (m.Wire),
// its items pruned as Options.Fields says when they are read, once it has
// read each of them into a message it reuses: what is wrong in it, as
// decoding it whole would find, says to decode it whole instead.
func (d *Decoder) keepByItems(m *Message, md protoreflect.MessageDescriptor, raw []byte, owned bool) bool {
	w := &WireMessage{Type: md, Bytes: raw}
	if plan := d.fields.plan(md, d.opts.Fields); plan != nil && 1 < len(plan.sub) && plan.sub[1] != nil {
		w.items = &itemPruner{plan: plan.sub[1]}
	}
	item := d.items[md.FullName()]
	if item == nil {
		mt, err := protoregistry.GlobalTypes.FindMessageByName(md.Fields().ByNumber(1).Message().FullName())
		if err != nil {
			return false
		}
		item = mt.New().Interface()
		if d.items == nil {
			d.items = map[protoreflect.FullName]proto.Message{}
		}
		d.items[md.FullName()] = item
	}
	if w.Items(item, func() {}) != nil {
		return false
	}
	if !owned {
		w.Bytes = bytes.Clone(raw)
	}
	m.Wire = w
	return true
}
