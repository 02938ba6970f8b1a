package benchcap

import (
	"bufio"
	"time"

	"github.com/criseq/criseq/capture"
)

// WriteUnclosed writes a capture of about size bytes to path: copies of
// the real capture src, one after the other in time (a second apart), each
// with connection IDs of its own and no Close chunk: connections never
// seen to close, as a capture holds whose clients were killed or that was
// cut. crictl's captures open a connection per command, so a capture of
// crictl makes many.
func WriteUnclosed(path, src string, size int64) (Stats, error) {
	chunks, maxConn, err := readUnclosed(src)
	if err != nil {
		return Stats{}, err
	}
	f, err := capture.CreateFile(path)
	if err != nil {
		return Stats{}, err
	}
	cw := &countWriter{w: bufio.NewWriterSize(f, 1<<20)}
	w := capture.NewPcapngWriter(cw)
	span := chunks[len(chunks)-1].Time.Sub(chunks[0].Time) + time.Second
	var st Stats
	// The pcapng's framing about doubles small chunks: aim by file size.
	for st.Bytes = 0; cw.n < size; st.Rounds++ {
		for _, c := range chunks {
			c.Conn += uint64(st.Rounds) * (maxConn + 1)
			c.Time = c.Time.Add(time.Duration(st.Rounds) * span)
			if c.Kind == capture.Open {
				st.Conns++
			}
			st.Payload += int64(len(c.Data))
			if err = w.Write(c); err != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	return finish(w, cw, f, st, err)
}
