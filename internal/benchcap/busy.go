package benchcap

import (
	"bufio"
	"container/heap"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"time"

	"github.com/criseq/criseq/capture"
)

// WriteBusy writes a capture of about size bytes to path: copies of the
// real captures srcs, in turn, starting every apart, so that they overlap
// as the pods of a busy node do, merged in time order. Each copy has connection IDs
// of its own and no Close chunk (as WriteUnclosed), and IDs of its own:
// every 64-digit hex ID (sandboxes, containers, image digests) and pod
// UID has its first 8 digits replaced by the copy's number, in place, so
// no length changes. An ID split across two HTTP/2 frames keeps the source's.
func WriteBusy(path string, srcs []string, size int64, apart time.Duration) (Stats, error) {
	var sources [][]capture.Chunk
	var at [][][]int
	var maxConn uint64
	for _, src := range srcs {
		chunks, m, err := readUnclosed(src)
		if err != nil {
			return Stats{}, err
		}
		sources = append(sources, chunks)
		at = append(at, findIDs(chunks))
		maxConn = max(maxConn, m)
	}
	if len(sources) == 0 {
		return Stats{}, fmt.Errorf("benchcap: no capture to copy")
	}
	f, err := capture.CreateFile(path)
	if err != nil {
		return Stats{}, err
	}
	cw := &countWriter{w: bufio.NewWriterSize(f, 1<<20)}
	w := capture.NewPcapngWriter(cw)
	var st Stats
	// Copies start apart and last longer: a heap of each copy's next chunk.
	var h copyHeap
	start := sources[0][0].Time
	buf := make([]byte, 0, 1<<16)
	for err == nil {
		// The next copy begins when its first chunk is the earliest.
		if cw.n < size && (h.Len() == 0 || !h[0].t.Before(start.Add(time.Duration(st.Rounds)*apart))) {
			src := st.Rounds % len(sources)
			shift := start.Sub(sources[src][0].Time) + time.Duration(st.Rounds)*apart
			heap.Push(&h, &copyCursor{k: st.Rounds, src: src, shift: shift, t: sources[src][0].Time.Add(shift)})
			st.Rounds++
			continue
		}
		if h.Len() == 0 {
			break
		}
		cc := h[0]
		chunks := sources[cc.src]
		c := chunks[cc.i]
		c.Time = cc.t
		c.Conn += uint64(cc.k) * (maxConn + 1)
		if c.Kind == capture.Open {
			st.Conns++
		}
		if len(c.Data) > 0 {
			buf = append(buf[:0], c.Data...)
			ownIDs(buf, at[cc.src][cc.i], cc.k)
			c.Data = buf
		}
		st.Payload += int64(len(c.Data))
		err = w.Write(c)
		if cc.i++; cc.i == len(chunks) {
			heap.Pop(&h)
		} else {
			cc.t = chunks[cc.i].Time.Add(cc.shift)
			heap.Fix(&h, 0)
		}
	}
	return finish(w, cw, f, st, err)
}

// readUnclosed reads src's chunks but its Close ones, with their own
// bytes, and the largest connection ID.
func readUnclosed(src string) ([]capture.Chunk, uint64, error) {
	s, err := capture.OpenFile(src)
	if err != nil {
		return nil, 0, err
	}
	defer s.Close()
	var chunks []capture.Chunk
	var maxConn uint64
	var bytes int64
	for {
		c, err := s.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, 0, err
		}
		if c.Kind == capture.Close {
			continue
		}
		c.Data = slices.Clone(c.Data)
		maxConn = max(maxConn, c.Conn)
		bytes += int64(len(c.Data))
		chunks = append(chunks, c)
	}
	if len(chunks) == 0 || bytes == 0 {
		return nil, 0, fmt.Errorf("benchcap: %s holds no bytes", src)
	}
	return chunks, maxConn, nil
}

// ids are 64-digit hex IDs and pod UIDs.
var ids = regexp.MustCompile(`[0-9a-f]{64}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)

// findIDs gives, by chunk, the offsets of the IDs in its bytes.
func findIDs(chunks []capture.Chunk) [][]int {
	out := make([][]int, len(chunks))
	for i, c := range chunks {
		for _, m := range ids.FindAllIndex(c.Data, -1) {
			out[i] = append(out[i], m[0])
		}
	}
	return out
}

// ownIDs gives the IDs at offsets in b those of copy k: their first 8
// digits become k's, so that copies of one capture do not share sandboxes,
// containers, images or pods, as no two pods of a node do.
func ownIDs(b []byte, at []int, k int) {
	d := fmt.Sprintf("%08x", k)
	for _, i := range at {
		copy(b[i:i+8], d)
	}
}

type copyCursor struct {
	k, i  int // the copy, its next chunk
	src   int // its source
	shift time.Duration
	t     time.Time // the next chunk's time
}

// copyHeap orders the copies by the time of their next chunk.
type copyHeap []*copyCursor

func (h copyHeap) Len() int { return len(h) }

func (h copyHeap) Less(i, j int) bool { return h[i].t.Before(h[j].t) }

func (h copyHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *copyHeap) Push(x any)   { *h = append(*h, x.(*copyCursor)) }
func (h *copyHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
