package sanitize

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding/gzip"
	"google.golang.org/protobuf/encoding/protowire"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/criseq/criseq/capture"
)

// listRuntime answers list calls with lists of about 200 KB, their
// elements holding labels and annotations. The filter's "case" label asks
// for an answer the element-wise check must leave to the whole-message
// path: an element with a field unknown to the CRI API, a top-level
// unknown field, or an element whose ID is not UTF-8 (it does not parse).
type listRuntime struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	runtimeapi.UnimplementedImageServiceServer
}

const listLen = 700

func labels(i int) map[string]string {
	return map[string]string{
		"io.kubernetes.pod.name":      fmt.Sprintf("web-%d", i),
		"io.kubernetes.pod.namespace": "default",
		"app":                         "web",
		"tier":                        strings.Repeat("t", i%17),
	}
}

func annotations(i int) map[string]string {
	return map[string]string{
		"io.kubernetes.container.hash":  fmt.Sprintf("%08x", i*2654435761),
		"io.kubernetes.container.ports": `[{"containerPort":8080,"protocol":"TCP"}]`,
	}
}

func (listRuntime) ListContainers(_ context.Context, r *runtimeapi.ListContainersRequest) (*runtimeapi.ListContainersResponse, error) {
	resp := &runtimeapi.ListContainersResponse{}
	for i := range listLen {
		resp.Containers = append(resp.Containers, &runtimeapi.Container{
			Id: fmt.Sprintf("%064x", i), PodSandboxId: fmt.Sprintf("%064x", i/3),
			Metadata: &runtimeapi.ContainerMetadata{Name: fmt.Sprintf("app-%d", i), Attempt: uint32(i % 3)},
			Image:    &runtimeapi.ImageSpec{Image: "registry.example/app:1"}, ImageRef: "sha256:" + strings.Repeat("ab", 32),
			State: runtimeapi.ContainerState_CONTAINER_RUNNING, CreatedAt: int64(i) << 30,
			Labels: labels(i), Annotations: annotations(i),
		})
	}
	mid := resp.Containers[listLen/2].ProtoReflect()
	switch r.GetFilter().GetLabelSelector()["case"] {
	case "unknown":
		mid.SetUnknown(protowire.AppendBytes(protowire.AppendTag(nil, 99, protowire.BytesType), []byte("from a newer API")))
	case "top":
		resp.ProtoReflect().SetUnknown(protowire.AppendBytes(protowire.AppendTag(nil, 77, protowire.BytesType), []byte("from a newer API")))
	case "bad":
		mid.SetUnknown(protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), []byte("\xff\xfe")))
	}
	return resp, nil
}

// StreamContainers sends the list in three messages.
func (r listRuntime) StreamContainers(req *runtimeapi.StreamContainersRequest, s grpc.ServerStreamingServer[runtimeapi.StreamContainersResponse]) error {
	all, _ := r.ListContainers(s.Context(), &runtimeapi.ListContainersRequest{})
	for part := range slices.Chunk(all.Containers, listLen/3+1) {
		if err := s.Send(&runtimeapi.StreamContainersResponse{Containers: part}); err != nil {
			return err
		}
	}
	return nil
}

func (listRuntime) ListPodSandbox(context.Context, *runtimeapi.ListPodSandboxRequest) (*runtimeapi.ListPodSandboxResponse, error) {
	resp := &runtimeapi.ListPodSandboxResponse{}
	for i := range listLen {
		resp.Items = append(resp.Items, &runtimeapi.PodSandbox{
			Id:       fmt.Sprintf("%064x", i),
			Metadata: &runtimeapi.PodSandboxMetadata{Name: fmt.Sprintf("web-%d", i), Namespace: "default", Uid: fmt.Sprintf("u-%d", i)},
			State:    runtimeapi.PodSandboxState_SANDBOX_READY, CreatedAt: int64(i) << 30,
			Labels: labels(i), Annotations: annotations(i),
		})
	}
	return resp, nil
}

func (listRuntime) ListImages(context.Context, *runtimeapi.ListImagesRequest) (*runtimeapi.ListImagesResponse, error) {
	resp := &runtimeapi.ListImagesResponse{}
	for i := range listLen {
		resp.Images = append(resp.Images, &runtimeapi.Image{
			Id: fmt.Sprintf("sha256:%064x", i), RepoTags: []string{fmt.Sprintf("registry.example/app-%d:1", i)},
			RepoDigests: []string{fmt.Sprintf("registry.example/app-%d@sha256:%064x", i, i)}, Size: uint64(i) << 20,
			Spec: &runtimeapi.ImageSpec{Image: fmt.Sprintf("registry.example/app-%d:1", i), Annotations: annotations(i)},
		})
	}
	return resp, nil
}

func (listRuntime) UpdateContainerResources(context.Context, *runtimeapi.UpdateContainerResourcesRequest) (*runtimeapi.UpdateContainerResourcesResponse, error) {
	return &runtimeapi.UpdateContainerResourcesResponse{}, nil
}

func (listRuntime) PullImage(context.Context, *runtimeapi.PullImageRequest) (*runtimeapi.PullImageResponse, error) {
	return &runtimeapi.PullImageResponse{ImageRef: "sha256:" + strings.Repeat("ab", 32)}, nil
}

// largePlain is the number of large messages of recordLarge that hold
// nothing to change: the element-wise check keeps them.
const largePlain = 10

// recordLarge records, between a real grpc-go client and server through
// criseq's relay, large list answers on one connection: plain ones (one
// gzip-compressed; three on one stream, asked at once with three others so
// that their frames interleave), the
// three cases listRuntime leaves to the whole-message path, a large
// PullImage whose credentials must be replaced (its type holds secrets),
// and a large UpdateContainerResources (a map at its top level).
func recordLarge(t *testing.T) string {
	t.Helper()
	listen, file, stop := relayed(t, "large.pcapng", listRuntime{}, listRuntime{})

	cc, err := grpc.NewClient("unix://"+listen, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	rt, img := runtimeapi.NewRuntimeServiceClient(cc), runtimeapi.NewImageServiceClient(cc)
	bg := context.Background()
	list := func(c string) (*runtimeapi.ListContainersResponse, error) {
		return rt.ListContainers(bg, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{LabelSelector: map[string]string{"case": c}}})
	}
	if r, err := list("plain"); err != nil || len(r.Containers) != listLen {
		t.Fatalf("ListContainers: %v", err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 3 {
		wg.Go(func() {
			_, err := list("plain")
			errs <- err
		})
	}
	wg.Go(func() {
		st, err := rt.StreamContainers(bg, &runtimeapi.StreamContainersRequest{})
		for err == nil {
			_, err = st.Recv()
		}
		if err != io.EOF {
			errs <- err
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("ListContainers: %v", err)
		}
	}
	if _, err := rt.ListPodSandbox(bg, &runtimeapi.ListPodSandboxRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := img.ListImages(bg, &runtimeapi.ListImagesRequest{}, grpc.UseCompressor(gzip.Name)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"unknown", "top"} {
		if _, err := list(c); err != nil {
			t.Fatalf("ListContainers %s: %v", c, err)
		}
	}
	if _, err := list("bad"); err == nil {
		t.Fatal("an ID that is not UTF-8 parsed")
	}
	ann := map[string]string{}
	for i := range 2000 {
		ann[fmt.Sprintf("example.com/a%d", i)] = strings.Repeat("v", 60)
	}
	cfg := &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "web", Namespace: "default", Uid: "u"}, Annotations: ann}
	auth := &runtimeapi.AuthConfig{Username: secretUser, Password: secretPassword}
	if _, err := img.PullImage(bg, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "registry.example/app:1"}, Auth: auth, SandboxConfig: cfg}); err != nil {
		t.Fatal(err)
	}
	// A map at the top level (no ID given, so it comes right after a
	// message): left to the whole-message path, which keeps it.
	if _, err := rt.UpdateContainerResources(bg, &runtimeapi.UpdateContainerResourcesRequest{Linux: &runtimeapi.LinuxContainerResources{CpuShares: 512}, Annotations: ann}); err != nil {
		t.Fatal(err)
	}
	// The last plain answer, after the cases above.
	if _, err := list("plain"); err != nil {
		t.Fatal(err)
	}
	cc.Close()
	stop()
	return file
}

// setLarge sets largeMessage for a test, and counts the messages the
// element-wise check keeps.
func setLarge(t *testing.T, n int) *int {
	t.Helper()
	old, oldHook := largeMessage, checkedByElements
	t.Cleanup(func() { largeMessage, checkedByElements = old, oldHook })
	largeMessage = n
	var count int
	checkedByElements = func() { count++ }
	return &count
}

// rewriteFile rewrites chunks into a pcapng file's bytes, as File does.
func rewriteFile(t testing.TB, chunks []capture.Chunk) ([]byte, Stats, []string) {
	t.Helper()
	var buf bytes.Buffer
	w := capture.NewPcapngWriter(&buf)
	var notes []string
	st, err := Rewrite(&sliceSource{chunks: slices.Clone(chunks)}, w, Options{Log: func(f string, a ...any) { notes = append(notes, fmt.Sprintf(f, a...)) }})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), st, notes
}

// TestLargeAnswersByElements: a user sanitizing large list answers gets,
// byte for byte, the file the whole-message path writes (every message
// parsed whole, framed and joined in memory), with the same counts and
// notes; the plain answers are kept by the element-wise check, and those
// it cannot show unchanged are rewritten or sent empty as before. So too
// when the capture's chunks cut frames anywhere, and when queued bytes go
// out early (maxQueued).
func TestLargeAnswersByElements(t *testing.T) {
	in := recordLarge(t)
	src, err := capture.OpenFile(in)
	if err != nil {
		t.Fatal(err)
	}
	var chunks []capture.Chunk
	for {
		c, err := src.Next()
		if err != nil {
			break
		}
		c.Data = bytes.Clone(c.Data)
		chunks = append(chunks, c)
	}
	src.Close()

	type variant struct {
		name   string
		chunks []capture.Chunk
		queued int
	}
	variants := []variant{{"recorded", chunks, maxQueued}}
	for _, max := range []int{700, 20000, 150000} {
		variants = append(variants, variant{fmt.Sprintf("rechunked-%d", max), rechunk(t, in, max, uint64(max)), maxQueued})
	}
	for _, q := range []int{64 << 10, 256 << 10} {
		variants = append(variants, variant{fmt.Sprintf("queue-%d", q), chunks, q},
			variant{fmt.Sprintf("queue-%d-rechunked", q), rechunk(t, in, 20000, uint64(q)), q})
	}
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			oldQ := maxQueued
			defer func() { maxQueued = oldQ }()
			maxQueued = v.queued
			n := setLarge(t, math.MaxInt)
			want, wst, wnotes := rewriteFile(t, v.chunks)
			if *n != 0 {
				t.Fatalf("%d messages checked by elements with no message large", *n)
			}
			n = setLarge(t, 64<<10)
			got, gst, gnotes := rewriteFile(t, v.chunks)
			if *n != largePlain {
				t.Errorf("%d messages kept by the element-wise check, want %d", *n, largePlain)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("the file differs: %d bytes, %d by the whole-message path", len(got), len(want))
			}
			if gst != wst {
				t.Errorf("stats %+v, by the whole-message path %+v", gst, wst)
			}
			if !slices.Equal(gnotes, wnotes) {
				t.Errorf("notes:\n%s\nby the whole-message path:\n%s", strings.Join(gnotes, "\n"), strings.Join(wnotes, "\n"))
			}
			// The cases left to the whole-message path are in the capture.
			if wst.Rewritten != 3 || wst.Blanked != 1 {
				t.Errorf("stats %+v: want 3 rewritten (unknown fields, credentials) and 1 sent empty (not UTF-8)", wst)
			}
			if !bytes.Contains(want, []byte(fmt.Sprintf("%064x", listLen-1))) || bytes.Contains(want, []byte(secretPassword)) {
				t.Error("the lists are not kept, or the password is")
			}
		})
	}
}

// TestFramingLikeFramer: a message's frames, read in pieces of any size,
// are the bytes http2.Framer writes for them.
func TestFramingLikeFramer(t *testing.T) {
	for _, n := range []int{0, 1, frameSize - 6, frameSize - 5, frameSize - 4, 3*frameSize - 5, 3*frameSize + 100} {
		for _, end := range []bool{false, true} {
			payload := make([]byte, n)
			for i := range payload {
				payload[i] = byte(i * 7)
			}
			out := append([]byte{1, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}, payload...)
			var want bytes.Buffer
			fr := http2.NewFramer(&want, nil)
			for first := true; first || len(out) > 0; first = false {
				k := min(len(out), frameSize)
				fr.WriteData(0x7654321, end && k == len(out), out[:k])
				out = out[k:]
			}
			for _, step := range []int{1, 8, 9, 10, 4096, frameSize + 9, 1 << 20} {
				fm := &framing{sid: 0x7654321, end: end, flag: 1, payload: payload, size: framedSize(n)}
				got := make([]byte, fm.size)
				for at := 0; at < len(got); at += step {
					fm.read(got[at:min(at+step, len(got))])
				}
				if !bytes.Equal(got, want.Bytes()) {
					t.Fatalf("payload %d end %v read by %d: frames differ from the Framer's", n, end, step)
				}
			}
		}
	}
}

// TestLargeRunSamePackets: a run of pieces holding a large message, written
// in chunks of whole segments, makes the very packets the one chunk joining
// them makes (capture.PcapngWriter cuts its segments every 65000 bytes).
func TestLargeRunSamePackets(t *testing.T) {
	payload := bytes.Repeat([]byte("0123456789abcdef"), 70000)
	fm := &framing{sid: 3, end: true, payload: payload, size: framedSize(len(payload))}
	joined := make([]byte, fm.size)
	fm.read(joined)
	fm.pos = 0
	head, tail := []byte("a HEADERS frame, say"), []byte("trailers")
	t0 := time.Unix(1700000000, 0)

	var want bytes.Buffer
	w := capture.NewPcapngWriter(&want)
	w.Write(capture.Chunk{Conn: 1, Kind: capture.Open, Time: t0})
	w.Write(capture.Chunk{Conn: 1, Dir: capture.ServerToClient, Kind: capture.Data, Time: t0, Data: slices.Concat(head, joined, tail)})
	w.Close()

	var got bytes.Buffer
	w = capture.NewPcapngWriter(&got)
	rw := newRewriter(w, Options{})
	k := key{seq: 1, t: t0}
	rw.push(k, 1, capture.ClientToServer, capture.Open, nil)
	rw.push(k, 1, capture.ServerToClient, capture.Data, head)
	rw.pushItem(&item{k: k, conn: 1, dir: capture.ServerToClient, kind: capture.Data, msg: fm})
	rw.push(k, 1, capture.ServerToClient, capture.Data, tail)
	rw.release(true)
	w.Close()
	if rw.werr != nil {
		t.Fatal(rw.werr)
	}
	if !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Fatalf("written in segments, the file differs (%d bytes, joined %d)", got.Len(), want.Len())
	}
}

// interleavedCapture builds one connection on which the server answers
// three ListContainers calls at once, their DATA frames taking turns as
// grpc-go's do, then a StreamContainers call's three messages beside a
// fourth ListContainers answer, then a fifth alone; the server's bytes
// come in chunks of every bytes. It returns the chunks and the number of
// answers.
func interleavedCapture(t *testing.T, every int) ([]capture.Chunk, int) {
	t.Helper()
	var cs, sc bytes.Buffer
	cfr, sfr := http2.NewFramer(&cs, nil), http2.NewFramer(&sc, nil)
	var cbuf, sbuf bytes.Buffer
	cenc, senc := hpack.NewEncoder(&cbuf), hpack.NewEncoder(&sbuf)
	cs.WriteString(http2.ClientPreface)
	cfr.WriteSettings()
	sfr.WriteSettings()
	var lr listRuntime
	// answer lists n containers from the from-th: answers differ.
	answer := func(from, n int) []byte {
		resp, _ := lr.ListContainers(context.Background(), &runtimeapi.ListContainersRequest{})
		return grpcMessage(t, &runtimeapi.ListContainersResponse{Containers: resp.Containers[from : from+n]})
	}
	call := func(sid uint32, method string) {
		cfr.WriteHeaders(http2.HeadersFrameParam{StreamID: sid, EndHeaders: true, BlockFragment: block(t, cenc, &cbuf,
			hpack.HeaderField{Name: ":method", Value: "POST"}, hpack.HeaderField{Name: ":path", Value: "/runtime.v1.RuntimeService/" + method},
			hpack.HeaderField{Name: "content-type", Value: "application/grpc"})})
		cfr.WriteData(sid, true, []byte{0, 0, 0, 0, 0})
		sfr.WriteHeaders(http2.HeadersFrameParam{StreamID: sid, EndHeaders: true, BlockFragment: block(t, senc, &sbuf,
			hpack.HeaderField{Name: ":status", Value: "200"}, hpack.HeaderField{Name: "content-type", Value: "application/grpc"})})
	}
	// send writes the streams' messages, a frame of each in turn.
	send := func(msgs map[uint32][][]byte) {
		for len(msgs) > 0 {
			for _, sid := range slices.Sorted(maps.Keys(msgs)) {
				m := msgs[sid]
				n := min(len(m[0]), frameSize)
				sfr.WriteData(sid, false, m[0][:n])
				if m[0] = m[0][n:]; len(m[0]) == 0 {
					m = m[1:]
				}
				if msgs[sid] = m; len(m) == 0 {
					delete(msgs, sid)
					sfr.WriteHeaders(http2.HeadersFrameParam{StreamID: sid, EndHeaders: true, EndStream: true, BlockFragment: block(t, senc, &sbuf,
						hpack.HeaderField{Name: "grpc-status", Value: "0"})})
				}
			}
		}
	}
	call(1, "ListContainers")
	call(3, "ListContainers")
	call(5, "ListContainers")
	send(map[uint32][][]byte{1: {answer(0, listLen)}, 3: {answer(1, listLen/2)}, 5: {answer(2, listLen/3)}})
	call(7, "StreamContainers")
	call(9, "ListContainers")
	send(map[uint32][][]byte{7: {answer(3, listLen/3), answer(4, listLen/3), answer(5, listLen/3)}, 9: {answer(6, listLen-6)}})
	// Alone, so that it grows into the buffer of one written before.
	call(11, "ListContainers")
	send(map[uint32][][]byte{11: {answer(7, listLen-7)}})

	t0 := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	chunks := []capture.Chunk{{Conn: 1, Kind: capture.Open, Time: t0}, {Conn: 1, Kind: capture.Data, Time: t0, Data: cs.Bytes()}}
	for off, b := 0, sc.Bytes(); off < len(b); off += every {
		chunks = append(chunks, capture.Chunk{Conn: 1, Dir: capture.ServerToClient, Kind: capture.Data,
			Time: t0.Add(time.Duration(len(chunks)) * time.Microsecond), Data: b[off:min(off+every, len(b))], Offset: int64(off)})
	}
	return chunks, 8
}

// TestLargeAnswersInterleaved: answers whose frames interleave, cut into
// chunks of any size, with any bound on queued bytes, give a user the
// file the whole-message path writes.
func TestLargeAnswersInterleaved(t *testing.T) {
	oldQ := maxQueued
	defer func() { maxQueued = oldQ }()
	for _, every := range []int{1000, 4096, frameSize + 9, 40000} {
		chunks, answers := interleavedCapture(t, every)
		for _, q := range []int{oldQ, 16 << 10, 70 << 10, 100 << 10, 150 << 10, 200 << 10, 300 << 10} {
			maxQueued = q
			n := setLarge(t, math.MaxInt)
			want, wst, wnotes := rewriteFile(t, chunks)
			n = setLarge(t, 64<<10)
			got, gst, gnotes := rewriteFile(t, chunks)
			if *n != answers {
				t.Errorf("chunks of %d, queue %d: %d messages kept by the element-wise check, want %d", every, q, *n, answers)
			}
			if !bytes.Equal(got, want) || gst != wst || !slices.Equal(gnotes, wnotes) {
				t.Errorf("chunks of %d, queue %d: %d bytes, %+v, notes %q; by the whole-message path %d bytes, %+v, notes %q",
					every, q, len(got), gst, gnotes, len(want), wst, wnotes)
			}
		}
	}
}
