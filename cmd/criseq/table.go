package main

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/criseq/criseq/decode"
	"github.com/criseq/criseq/flow"
	"github.com/criseq/criseq/internal/termtext"
)

// tableWriter prints the aligned table of calls: what text/tabwriter
// prints with padding 2, at a fraction of its cost per row (it was a
// tenth of calls). Rows are kept a block of tableBlock at a time, so
// memory stays bounded: columns align within a block, and CRI method
// names are short enough that blocks rarely differ.
type tableWriter struct {
	w        *bufio.Writer
	t0       time.Time
	rows     int
	block    []byte            // the block's rows: cells ended by '\t', rows by '\n'
	widths   [tableColumns]int // the widest cell of each padded column, in runes
	scratch  []byte            // a row's detail
	inferred bool              // a row was marked ~
	unknown  bool              // a row's method is (unknown)
}

const (
	tableBlock   = 4096
	tableColumns = 6 // padded; DETAIL, the last, is not
	tablePadding = 2
)

var tableHeader = []string{"TIME", "CONN", "STREAM", "METHOD", "DURATION", "STATUS"}

func (w *tableWriter) write(c *decode.Call, s flow.Step, late bool) error {
	b := w.block
	if w.rows == 0 {
		w.t0 = c.Start
		for i, h := range tableHeader {
			b = w.cell(b, len(b), i, h)
		}
		b = append(b, "DETAIL\n"...)
	}
	start := len(b)
	b = appendOffset(b, c.Start.Sub(w.t0))
	b = w.end(b, start, 0)
	start = len(b)
	b = strconv.AppendUint(b, c.Conn, 10)
	b = w.end(b, start, 1)
	start = len(b)
	b = strconv.AppendUint(b, uint64(c.Stream), 10)
	b = w.end(b, start, 2)
	start = len(b)
	switch {
	case !c.Known && c.Method == "":
		b = append(b, "(unknown)"...) // flow's label says so too
		w.unknown = true
	case c.Known && termtext.Clean(s.Service) && termtext.Clean(s.Method):
		b = append(b, s.Service...)
		b = append(b, '/')
		b = append(b, s.Method...)
	case c.Known:
		b = append(b, termtext.String(s.Service+"/"+s.Method)...)
	default:
		b = append(b, termtext.String(s.Method)...)
	}
	if c.Flags&decode.Inferred != 0 && (c.Known || c.Method != "") {
		b = append(b, '~')
	}
	b = w.end(b, start, 3)
	start = len(b)
	if s.Done {
		b = append(b, fmtDuration(s.Duration)...)
	} else {
		b = append(b, '-')
	}
	b = w.end(b, start, 4)
	start = len(b)
	b = append(b, statusText(c)...)
	if c.Flags&decode.InferredStatus != 0 {
		b = append(b, '~')
	}
	b = w.end(b, start, 5)
	w.inferred = w.inferred || c.Flags&(decode.Inferred|decode.InferredStatus) != 0
	if late {
		b = append(b, "late"...)
	}
	if det := w.detail(s, c); len(det) > 0 {
		if late {
			b = append(b, " · "...)
		}
		b = append(b, det...)
	}
	b = append(b, '\n')
	w.block = b
	w.rows++
	if w.rows%tableBlock == 0 {
		return w.flushBlock()
	}
	return nil
}

// cell appends text as column i's cell.
func (w *tableWriter) cell(b []byte, start, i int, text string) []byte {
	return w.end(append(b, text...), start, i)
}

// end ends column i's cell, b[start:].
func (w *tableWriter) end(b []byte, start, i int) []byte {
	w.widths[i] = max(w.widths[i], runes(b[start:]))
	return append(b, '\t')
}

// detail is what the call was about: the candidates of an unknown method,
// the step's argument, its result or error, the decoding errors; escaped
// for the terminal as one text, as termtext.String would.
func (w *tableWriter) detail(s flow.Step, c *decode.Call) []byte {
	b := w.scratch[:0]
	clean := true
	part := func(prefix, text string) {
		if len(b) > 0 {
			b = append(b, ' ')
		}
		b = append(b, prefix...)
		b = append(b, text...)
		clean = clean && termtext.Clean(text)
	}
	if c.Method == "" && len(c.Candidates) > 0 {
		part("one of ", strings.Join(c.Candidates, ", "))
	}
	if s.Arg != "" {
		part("", s.Arg)
	}
	if s.Err != "" {
		part("✗ ", oneLine(c.Message))
	} else if s.Result != "" {
		part("→ ", s.Result)
	}
	for _, e := range c.Errors {
		part("", e)
	}
	if !clean {
		b = append(b[:0], termtext.String(string(b))...)
	}
	w.scratch = b
	return b
}

// flushBlock prints the block's rows, each padded cell as wide as its
// column's widest plus tablePadding.
func (w *tableWriter) flushBlock() error {
	var spaces [64]byte
	for i := range spaces {
		spaces[i] = ' '
	}
	for rest := w.block; len(rest) > 0; {
		for i := 0; i < tableColumns; i++ {
			n := bytes.IndexByte(rest, '\t')
			cell := rest[:n]
			rest = rest[n+1:]
			w.w.Write(cell)
			for pad := w.widths[i] + tablePadding - runes(cell); pad > 0; pad -= len(spaces) {
				w.w.Write(spaces[:min(pad, len(spaces))])
			}
		}
		n := bytes.IndexByte(rest, '\n') + 1
		w.w.Write(rest[:n])
		rest = rest[n:]
	}
	w.block = w.block[:0]
	w.widths = [tableColumns]int{}
	_, err := w.w.Write(nil) // bufio's error, if any write failed
	return err
}

func (w *tableWriter) flush() error {
	if err := w.flushBlock(); err != nil {
		return err
	}
	if w.inferred {
		if _, err := fmt.Fprintln(w.w, "~ inferred from the messages: the :path or grpc-status was in a header table entry older than the capture"); err != nil {
			return err
		}
	}
	if w.unknown {
		if _, err := fmt.Fprintln(w.w, "(unknown): the :path was not read and no single method fits the messages; \"one of\" lists those that may"); err != nil {
			return err
		}
	}
	return nil
}

// runes is the width text/tabwriter gives a cell: its runes.
func runes(b []byte) int {
	for i, c := range b {
		if c >= utf8.RuneSelf {
			return i + utf8.RuneCount(b[i:])
		}
	}
	return len(b)
}
