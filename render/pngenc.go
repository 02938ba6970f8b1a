package render

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"hash/crc32"
	"image"
	"io"
	"sync"

	"golang.org/x/image/vector"
)

// pngEncoder writes an 8-bit RGB PNG row by row; image/png needs the whole
// image at once, which a long flow at 2x would make gigabytes.
type pngEncoder struct {
	w         *bufio.Writer
	err       error
	idat      *bufio.Writer // cuts the zlib stream into IDAT chunks
	zw        *zlib.Writer
	prev, cur []byte
	filtered  [5][]byte
	rowsLeft  int
	chunkHdr  [8]byte
	chunkCRC  [4]byte
}

func newPNGEncoder(w io.Writer, width, height int, b *pngBufs) (*pngEncoder, error) {
	if b.w == nil {
		b.w = bufio.NewWriterSize(w, 64<<10)
	}
	b.w.Reset(w)
	e := &pngEncoder{w: b.w, rowsLeft: height}
	n := 3 * width
	if cap(b.rows) < 7*n+5 {
		b.rows = make([]byte, 7*n+5)
	}
	rows := b.rows[:7*n+5]
	clear(rows)
	e.prev, e.cur, rows = rows[:n:n], rows[n:2*n:2*n], rows[2*n:]
	for i := range e.filtered {
		e.filtered[i], rows = rows[:1+n:1+n], rows[1+n:]
		e.filtered[i][0] = byte(i)
	}
	e.w.WriteString("\x89PNG\r\n\x1a\n")
	var hdr [13]byte
	binary.BigEndian.PutUint32(hdr[0:], uint32(width))
	binary.BigEndian.PutUint32(hdr[4:], uint32(height))
	hdr[8], hdr[9] = 8, 2 // 8 bits per sample, truecolour; no interlace
	e.chunk("IHDR", hdr[:])
	if b.idat == nil {
		b.idat = bufio.NewWriterSize(chunkWriter{e}, 32<<10)
	}
	b.idat.Reset(chunkWriter{e})
	e.idat = b.idat
	// Default compression, as image/png; diagrams are mostly flat colour.
	if b.zw == nil {
		b.zw = zlib.NewWriter(e.idat)
	}
	b.zw.Reset(e.idat)
	e.zw = b.zw
	return e, e.err
}

// pngBufs are the buffers drawing a PNG takes, kept for the next one (a
// zlib writer alone is about 800 KB): the band, its rasterizer, the rows
// and the writers.
type pngBufs struct {
	w, idat *bufio.Writer
	zw      *zlib.Writer
	rows    []byte
	pix     []byte
	z       vector.Rasterizer
}

var pngPool = sync.Pool{New: func() any { return new(pngBufs) }}

type chunkWriter struct{ e *pngEncoder }

func (c chunkWriter) Write(b []byte) (int, error) {
	c.e.chunk("IDAT", b)
	if c.e.err != nil {
		return 0, c.e.err
	}
	return len(b), nil
}

func (e *pngEncoder) chunk(typ string, data []byte) {
	if e.err != nil {
		return
	}
	binary.BigEndian.PutUint32(e.chunkHdr[:4], uint32(len(data)))
	copy(e.chunkHdr[4:], typ)
	crc := crc32.NewIEEE()
	crc.Write(e.chunkHdr[4:])
	crc.Write(data)
	binary.BigEndian.PutUint32(e.chunkCRC[:], crc.Sum32())
	e.w.Write(e.chunkHdr[:])
	e.w.Write(data)
	if _, err := e.w.Write(e.chunkCRC[:]); err != nil {
		e.err = err
	}
}

// rows appends the rows of m, which must be opaque and as wide as the image.
func (e *pngEncoder) rows(m *image.RGBA) error {
	for y := m.Rect.Min.Y; y < m.Rect.Max.Y && e.err == nil; y++ {
		src := m.Pix[(y-m.Rect.Min.Y)*m.Stride:]
		for i, j := 0, 0; i < len(e.cur); i, j = i+3, j+4 {
			e.cur[i], e.cur[i+1], e.cur[i+2] = src[j], src[j+1], src[j+2]
		}
		if _, err := e.zw.Write(e.filter()); err != nil && e.err == nil {
			e.err = err
		}
		e.prev, e.cur = e.cur, e.prev
		e.rowsLeft--
	}
	return e.err
}

// filter picks, like image/png, the PNG filter whose output has the least
// sum of absolute values (as signed bytes), and returns the filtered row.
func (e *pngEncoder) filter() []byte {
	const bpp = 3
	cur, prev := e.cur, e.prev
	f := &e.filtered
	if bytes.Equal(cur, prev) {
		// Common between arrows: Up makes the row all zeros, the best score.
		clear(f[2][1:])
		return f[2]
	}
	var sums [5]int
	f0, f1, f2, f3, f4 := f[0][1:len(cur)+1], f[1][1:len(cur)+1], f[2][1:len(cur)+1], f[3][1:len(cur)+1], f[4][1:len(cur)+1]
	prev = prev[:len(cur)]
	for i, v := range cur {
		var a, c int
		if i >= bpp {
			a, c = int(cur[i-bpp]), int(prev[i-bpp])
		}
		b := int(prev[i])
		f0[i] = v
		f1[i] = v - byte(a)
		f2[i] = v - byte(b)
		f3[i] = v - byte((a+b)/2)
		f4[i] = v - byte(paeth(a, b, c))
		sums[0] += int(absByte[f0[i]])
		sums[1] += int(absByte[f1[i]])
		sums[2] += int(absByte[f2[i]])
		sums[3] += int(absByte[f3[i]])
		sums[4] += int(absByte[f4[i]])
	}
	best := 0
	for k := range sums {
		if sums[k] < sums[best] {
			best = k
		}
	}
	return f[best]
}

// absByte is |int8(v)|, the cost image/png gives a filtered byte.
var absByte = func() (t [256]uint8) {
	for v := range t {
		t[v] = uint8(abs(int(int8(v))))
	}
	return t
}()

func paeth(a, b, c int) int {
	p := a + b - c
	pa, pb, pc := abs(p-a), abs(p-b), abs(p-c)
	switch {
	case pa <= pb && pa <= pc:
		return a
	case pb <= pc:
		return b
	}
	return c
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// close ends the image data and the file.
func (e *pngEncoder) close() error {
	if e.err == nil && e.rowsLeft != 0 {
		return io.ErrShortWrite
	}
	if err := e.zw.Close(); err != nil && e.err == nil {
		e.err = err
	}
	if err := e.idat.Flush(); err != nil && e.err == nil {
		e.err = err
	}
	e.chunk("IEND", nil)
	if err := e.w.Flush(); err != nil && e.err == nil {
		e.err = err
	}
	return e.err
}
