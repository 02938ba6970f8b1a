package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/criseq/criseq/decode"
	"github.com/criseq/criseq/flow"
	"github.com/criseq/criseq/internal/termtext"
)

// tabTable is the calls table as text/tabwriter prints it: the reference
// tableWriter must match byte for byte.
type tabTable struct {
	tw                *tabwriter.Writer
	t0                time.Time
	rows              int
	inferred, unknown bool
}

func (w *tabTable) write(c *decode.Call, s flow.Step, late bool) {
	if w.rows == 0 {
		w.t0 = c.Start
		io.WriteString(w.tw, "TIME\tCONN\tSTREAM\tMETHOD\tDURATION\tSTATUS\tDETAIL\n")
	}
	method := s.Method
	if c.Known {
		method = s.Service + "/" + s.Method
	}
	switch {
	case !c.Known && c.Method == "":
		method, w.unknown = "(unknown)", true
	case c.Flags&decode.Inferred != 0:
		method += "~"
	}
	dur := "-"
	if s.Done {
		dur = fmtDuration(s.Duration)
	}
	status := statusText(c)
	if c.Flags&decode.InferredStatus != 0 {
		status += "~"
	}
	w.inferred = w.inferred || c.Flags&(decode.Inferred|decode.InferredStatus) != 0
	var parts []string
	if c.Method == "" && len(c.Candidates) > 0 {
		parts = append(parts, "one of "+strings.Join(c.Candidates, ", "))
	}
	if s.Arg != "" {
		parts = append(parts, s.Arg)
	}
	if s.Err != "" {
		parts = append(parts, "✗ "+oneLine(c.Message))
	} else if s.Result != "" {
		parts = append(parts, "→ "+s.Result)
	}
	parts = append(parts, c.Errors...)
	det := ""
	if late {
		det = "late"
	}
	if d := strings.Join(parts, " "); d != "" {
		if late {
			det += " · "
		}
		det += termtext.String(d)
	}
	fmt.Fprintf(w.tw, "%s\t%d\t%d\t%s\t%s\t%s\t%s\n", appendOffset(nil, c.Start.Sub(w.t0)), c.Conn, c.Stream,
		termtext.String(method), dur, status, det)
	if w.rows++; w.rows%tableBlock == 0 {
		w.tw.Flush()
	}
}

func (w *tabTable) flush() {
	w.tw.Flush()
	if w.inferred {
		fmt.Fprintln(w.tw, "~ inferred from the messages: the :path or grpc-status was in a header table entry older than the capture")
	}
	if w.unknown {
		fmt.Fprintln(w.tw, "(unknown): the :path was not read and no single method fits the messages; \"one of\" lists those that may")
	}
	w.tw.Flush()
}

// TestTableMatchesTabwriter: the calls table is what text/tabwriter prints
// of the same rows, on real captures (one caught midway: unknown and
// inferred methods, candidates) and on rows of hostile, wide and long
// strings over several blocks.
func TestTableMatchesTabwriter(t *testing.T) {
	compare := func(t *testing.T, feed func(row func(c *decode.Call, s flow.Step, late bool))) {
		var got, want bytes.Buffer
		bw := bufio.NewWriter(&got)
		gw := &tableWriter{w: bw}
		ww := &tabTable{tw: tabwriter.NewWriter(&want, 0, 0, 2, ' ', 0)}
		rows := 0
		feed(func(c *decode.Call, s flow.Step, late bool) {
			rows++
			if err := gw.write(c, s, late); err != nil {
				t.Fatal(err)
			}
			ww.write(c, s, late)
		})
		if err := gw.flush(); err != nil {
			t.Fatal(err)
		}
		bw.Flush()
		ww.flush()
		if rows == 0 || want.Len() == 0 {
			t.Fatal("no rows")
		}
		if !bytes.Equal(got.Bytes(), want.Bytes()) {
			g, w := strings.Split(got.String(), "\n"), strings.Split(want.String(), "\n")
			for i := range min(len(g), len(w)) {
				if g[i] != w[i] {
					t.Fatalf("%d rows; line %d:\n got %q\nwant %q", rows, i+1, g[i], w[i])
				}
			}
			t.Fatalf("%d rows: %d lines, want %d", rows, len(g), len(w))
		}
	}
	captures, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "*", "capture.pcapng"))
	if len(captures) < 5 {
		t.Fatalf("testdata captures: %v", captures)
	}
	captures = append(captures, midwayCapture(t, filepath.Join("..", "..", "testdata", "kubelet-pull", "capture.pcapng")))
	for _, file := range captures {
		t.Run(filepath.Base(filepath.Dir(file)), func(t *testing.T) {
			compare(t, func(row func(*decode.Call, flow.Step, bool)) {
				labels := flow.NewLabeler(flow.Options{})
				err := streamCalls(file, decode.Options{}, "", nil, false, io.Discard, func(it *heldItem, late bool) error {
					row(it.c, labels.Label(it.c), late)
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
			})
		})
	}
	texts := []string{"", "", "web", "default/nginx", "ünïcødé", "日本語の名前", "\x1b[31mred\x1b[0m", "a\tb", `back\slash`,
		"\xff\xfe", strings.Repeat("long", 40), "→ arrow", "\u202eevil", "bell\a", "two\nlines", "~"}
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func() string { return texts[rng.IntN(len(texts))] }
	t.Run("hostile", func(t *testing.T) {
		compare(t, func(row func(*decode.Call, flow.Step, bool)) {
			t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
			for i := range 3*tableBlock + 17 {
				c := &decode.Call{
					Start:  t0.Add(time.Duration(rng.IntN(1e12)) - 1e9),
					Conn:   uint64(rng.IntN(1 << uint(rng.IntN(40)))),
					Stream: uint32(rng.IntN(1 << uint(rng.IntN(31)))),
					Known:  rng.IntN(4) > 0,
					Method: pick(),
					Flags:  decode.Flags(rng.IntN(1 << 10)),
					Status: rng.IntN(20) - 1,
				}
				if rng.IntN(3) == 0 {
					c.Method = ""
					for range rng.IntN(3) {
						c.Candidates = append(c.Candidates, pick())
					}
				}
				for range rng.IntN(2) {
					c.Errors = append(c.Errors, pick())
				}
				if rng.IntN(2) == 0 {
					c.End = c.Start.Add(time.Duration(rng.IntN(1e10)))
					c.Message = pick() + strings.Repeat(" x", rng.IntN(80))
				}
				s := flow.Step{Service: pick(), Method: pick() + strconv.Itoa(i%3), Arg: pick(), Result: pick(), Done: rng.IntN(3) > 0,
					Duration: time.Duration(rng.IntN(1 << uint(rng.IntN(45))))}
				if rng.IntN(4) == 0 {
					s.Err = pick()
				}
				row(c, s, rng.IntN(8) == 0)
			}
		})
	})
}

// TestHeldItemOrder: held items compare by time as time.Time does, for
// times before 1970 and past 2262 (a damaged capture's) too.
func TestHeldItemOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	bases := []int64{-1 << 40, -1, 0, 1, 1796063347, 1 << 40}
	at := func() time.Time {
		return time.Unix(bases[rng.IntN(len(bases))]+int64(rng.IntN(3)-1), int64(rng.IntN(3))*(1e9-1)/2)
	}
	for range 10000 {
		ta, tb := at(), at()
		var a, b heldItem
		a.sec, a.nsec = ta.Unix(), int32(ta.Nanosecond())
		b.sec, b.nsec = tb.Unix(), int32(tb.Nanosecond())
		a.seq, b.seq = 1, 2
		if got, want := a.less(&b), ta.Before(tb) || ta.Equal(tb); got != want {
			t.Fatalf("%v less %v: %v", ta, tb, got)
		}
		if got, want := a.before(tb), ta.Before(tb); got != want {
			t.Fatalf("%v before %v: %v", ta, tb, got)
		}
	}
}
