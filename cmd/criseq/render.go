package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/criseq/criseq/capture"
	"github.com/criseq/criseq/decode"
	"github.com/criseq/criseq/flow"
	"github.com/criseq/criseq/internal/termtext"
	"github.com/criseq/criseq/render"
)

const renderUsage = `Usage: criseq render [flags] FILE

Draws each pod start and stop found in a capture as a sequence diagram, one
file per flow and format, named after the pod (e.g. default_nginx_start.svg);
html is one viewer for the whole capture, named after it (cri.html). FILE -
reads the capture from standard input (files named after "stdin").

Examples:
  criseq render cri.pcapng                          # SVG, PlantUML and Mermaid into ./out
  criseq render -o site/img --format svg cri.pcapng
  criseq render --format html cri.pcapng            # one page, out/cri.html, to browse every flow
  criseq render --pod default/nginx --all cri.pcapng  # one pod, with kubelet's polling
  criseq render --format json cri.pcapng            # each flow as data: phases, waits, calls, events
`

// renderOptions are the flags render and demo share.
type renderOptions struct {
	out       string
	formats   string
	all       bool
	noRedact  bool
	pod       string
	client    string
	timescale pxPerSecond
	lists     listStreaming
}

func (o *renderOptions) register(fs interface {
	StringVar(*string, string, string, string)
	BoolVar(*bool, string, bool, string)
	Var(flag.Value, string, string)
}, defaultOut string) {
	fs.StringVar(&o.out, "o", defaultOut, "directory to write the diagrams to (created if missing)")
	fs.StringVar(&o.formats, "format", "svg,puml,mmd", "comma-separated formats: "+strings.Join(render.Formats(), ", "))
	fs.BoolVar(&o.all, "all", false, "keep kubelet's periodic calls (List*, Status, Version, ImageFsInfo, stats) in the diagrams")
	fs.BoolVar(&o.noRedact, "no-redact", false, "show registry credentials and environment values (redacted by default)")
	fs.StringVar(&o.pod, "pod", "", "only the flows of this pod (NAMESPACE/NAME or NAME)")
	fs.Var(&o.timescale, "timescale", "space SVG/PNG rows in proportion to time, in `pixels` per second (e.g. 200), so a slow pull looks slow; 0: evenly")
	fs.StringVar(&o.client, "client", "", `name of the CRI client's lifeline (default "kubelet", or "crictl" when each call has its own connection)`)
	registerListStreaming(fs, &o.lists)
}

// pxPerSecond is --timescale: pixels per second, a number, 0 or more.
type pxPerSecond float64

func (p *pxPerSecond) String() string { return strconv.FormatFloat(float64(*p), 'g', -1, 64) }

func (p *pxPerSecond) Set(s string) error {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		return errors.New("want pixels per second, 0 or more (e.g. 200; 0: rows evenly spaced)")
	}
	*p = pxPerSecond(v)
	return nil
}

func runRender(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("render", renderUsage, stderr)
	var o renderOptions
	o.register(fs, "out")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return fmt.Errorf("%w: render takes one capture file, got %d arguments", errUsage, len(pos))
	}
	return renderFile(pos[0], o, stdout, stderr)
}

func renderFile(path string, o renderOptions, stdout, stderr io.Writer) error {
	formats, err := parseFormats(o.formats)
	if err != nil {
		return err
	}
	roomForGraphs(formats)
	// html is one viewer per capture, with every flow, not one per flow:
	// only it keeps them all.
	var perFlow []string
	html := false
	for _, f := range formats {
		if f == "html" {
			html = true
		} else {
			perFlow = append(perFlow, f)
		}
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return fmt.Errorf("render: %w", err)
	}
	fw := &flowFiles{formats: perFlow, dir: o.out, ro: render.Options{TimeScale: float64(o.timescale)}, stdout: stdout, seen: map[string]int{}}
	var page *render.HTMLPage
	if html {
		// The viewer is written flow by flow into unnamed files beside it,
		// then put together: its memory does not grow with the capture.
		var spills []*fileSpill
		defer func() {
			for _, s := range spills {
				s.f.Close()
			}
		}()
		page = render.NewHTMLPage(filepath.Base(path), func() (render.Spill, error) {
			f, err := unnamedFile(o.out)
			if err != nil {
				return nil, err
			}
			s := &fileSpill{f: f, w: bufio.NewWriterSize(f, renderBufSize)}
			spills = append(spills, s)
			return s, nil
		})
	}
	n := 0
	wanted := func(f *flow.Flow) bool { return ofPod(f, o.pod) }
	ahead := !html && fw.drawsAhead()
	hold := func(f *flow.Flow) heldFlow {
		switch {
		case !wanted(f):
			return heldFlow{f: stubOf(f)}
		case !ahead:
			return heldWhole(f)
		}
		h := heldWhole(f)
		h.f, h.drawn = stubOf(f), fw.draw(f)
		return h
	}
	dopts := decode.Options{NoRedact: o.noRedact}
	fopts := flow.Options{All: o.all, Client: o.client}
	messagesShown(html, &dopts, &fopts)
	calls, err := streamHeld(path, dopts, o.lists, fopts, stderr, hold, func(h heldFlow) error {
		if !wanted(h.f) {
			return nil
		}
		n++
		if h.drawn != nil {
			return fw.writeDrawn(h.drawn)
		}
		if html {
			if err := page.Add(h.f); err != nil {
				return err
			}
		}
		return fw.write(h.f)
	})
	if err != nil {
		return err
	}
	if n == 0 {
		return noFlow("render", path, o.pod, "", calls)
	}
	if !html {
		return nil
	}
	base := strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	if path == capture.Stdin {
		base = "stdin"
	}
	name := filepath.Join(o.out, base+".html")
	if err := writeAtomicFunc(name, page.Write); err != nil {
		return fmt.Errorf("render: %w", err)
	}
	fmt.Fprintf(stdout, "%-32s %d flows  → %s\n", "viewer", n, name)
	return nil
}

// noFlow is the error of a command that found no flow to draw in path
// (of pod, or in namespace ns, when given).
func noFlow(cmd, path, pod, ns string, calls int) error {
	what := "no pod start or stop"
	switch {
	case pod != "":
		what = "no flow of pod " + pod
	case ns != "":
		what = "no flow in namespace " + ns
	}
	return fmt.Errorf("%s: %s found in %s (%d calls); try criseq calls %s", cmd, what, path, calls, path)
}

// fileSpill is a part of the HTML viewer kept in an unnamed file until the
// page is written.
type fileSpill struct {
	f *os.File
	w *bufio.Writer
}

func (s *fileSpill) Write(p []byte) (int, error) { return s.w.Write(p) }

func (s *fileSpill) Contents() (io.Reader, error) {
	if err := s.w.Flush(); err != nil {
		return nil, err
	}
	if _, err := s.f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return bufio.NewReaderSize(s.f, renderBufSize), nil
}

func parseFormats(s string) ([]string, error) {
	var out []string
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		ok := false
		for _, k := range render.Formats() {
			ok = ok || k == f
		}
		if !ok {
			return nil, fmt.Errorf("%w: unknown format %q (valid: %s)", errUsage, f, strings.Join(render.Formats(), ", "))
		}
		if !slices.Contains(out, f) { // "svg,svg": one file, written once
			out = append(out, f)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: --format is empty (valid: %s)", errUsage, strings.Join(render.Formats(), ", "))
	}
	return out, nil
}

func filterPod(flows []*flow.Flow, pod string) []*flow.Flow {
	if pod == "" {
		return flows
	}
	var out []*flow.Flow
	for _, f := range flows {
		if ofPod(f, pod) {
			out = append(out, f)
		}
	}
	return out
}

// ofPod says whether f is pod's (NAMESPACE/NAME or NAME; "": any pod's).
func ofPod(f *flow.Flow, pod string) bool {
	return pod == "" || f.Pod.String() == pod || f.Pod.Name == pod
}

// flowFiles writes one file per flow and format, as flows come, and a
// line per flow.
type flowFiles struct {
	formats []string
	dir     string
	ro      render.Options
	stdout  io.Writer
	seen    map[string]int
	fw      fileWriter
}

func (w *flowFiles) write(f *flow.Flow) error {
	base := w.base(f)
	var names []string
	for _, format := range w.formats {
		written, err := w.fw.diagram(w.dir, base, format, f, w.ro)
		names = append(names, written...)
		if err != nil {
			return err
		}
	}
	w.line(f.Pod, summary(f), names)
	return nil
}

// base names f's files: a pod started twice gets -2, -3… so no file
// overwrites another.
func (w *flowFiles) base(f *flow.Flow) string {
	base := strings.TrimSuffix(render.FileName(f, ""), ".")
	w.seen[base]++
	if n := w.seen[base]; n > 1 {
		base = fmt.Sprintf("%s-%d", base, n)
	}
	return base
}

// line prints a flow's line: its pod, its summary and its files.
func (w *flowFiles) line(pod flow.Pod, summary string, names []string) {
	if len(names) == 0 { // html only: the viewer is written after
		fmt.Fprintf(w.stdout, "%-32s %s\n", termtext.String(pod.String()), summary)
		return
	}
	fmt.Fprintf(w.stdout, "%-32s %s  → %s\n", termtext.String(pod.String()), summary, strings.Join(names, ", "))
}

// drawn is a flow drawn in every format, its files not yet named: flows
// wait for their turn (start order) behind one still being built, up to
// maxHeldCalls' worth, and their bytes cost the collector nothing to hold
// where their calls and messages cost a sixth of render's CPU.
type drawn struct {
	stub  *flow.Flow // what names its files (stubOf)
	line  string     // its summary
	parts [][][]byte // by format: its file, or its Mermaid parts
	err   error      // why the format after the parts drawn failed
}

// drawsAhead says whether w's flows are drawn as they are built: not in
// formats whose bytes are many times the flow's (images). The ID-flow
// graph is held as its DOT text and laid out in its turn: held as flows,
// the bench capture's graphs kept 23 MB of flows live and peaked at 70 MB.
func (w *flowFiles) drawsAhead() bool {
	for _, f := range w.formats {
		switch f {
		case "svg", "puml", "mmd", "json", "graph", "graph-png":
		default:
			return false
		}
	}
	return true
}

// isGraph says whether format is the ID-flow graph's.
func isGraph(format string) bool { return format == "graph" || format == "graph-png" }

// draw draws f in each of w's formats, up to the first that fails; an
// ID-flow graph is drawn as far as its DOT text (writeDrawn lays it out).
func (w *flowFiles) draw(f *flow.Flow) *drawn {
	d := &drawn{stub: stubOf(f), line: summary(f)}
	for _, format := range w.formats {
		draw := w.fw.draw
		if isGraph(format) {
			draw = w.fw.dot
		}
		p, err := draw(format, f, w.ro, true)
		if err != nil {
			d.err = err
			break
		}
		d.parts = append(d.parts, p)
	}
	return d
}

// writeDrawn names d's files, writes them and prints d's line.
func (w *flowFiles) writeDrawn(d *drawn) error {
	base := w.base(d.stub)
	var names []string
	for i, format := range w.formats {
		if i == len(d.parts) {
			if format == "mmd" {
				return d.err
			}
			return fmt.Errorf("render: %s: %w", filepath.Join(w.dir, base+render.Ext(format)), d.err)
		}
		parts := d.parts[i]
		if isGraph(format) {
			var err error
			if parts, err = w.fw.layOut(format, parts[0]); err != nil {
				return fmt.Errorf("render: %s: %w", filepath.Join(w.dir, base+render.Ext(format)), err)
			}
		}
		written, err := w.fw.put(w.dir, base, format, parts)
		names = append(names, written...)
		if err != nil {
			return err
		}
	}
	w.line(d.stub.Pod, d.line, names)
	return nil
}

// listsByItemsAbove: a list answer larger is read item by item
// (decode.Options.ListsAbove), twice (checked, then learnt from): at
// 17 MB, 1.2–1.5× the CPU of decoding it to a message per item, for 37 MB
// less; at 1.8 MB, 1.7× for nothing saved.
var listsByItemsAbove = 4 << 20 // a variable for tests

// messagesShown sets what a decoder decodes and a grouper keeps of the
// messages: for an output that shows them (html), all of them, whole up to
// the viewer's limit (render.MaxShownMessage) and past it only what
// grouping reads, its size shown; else only what grouping reads. A list
// answer past listsByItemsAbove is not decoded: grouping reads it item by
// item.
func messagesShown(html bool, d *decode.Options, f *flow.Options) {
	d.SkipResponseMaps = !html
	d.RequestHeader = headersRead(html)
	d.Fields = flow.ReadsFields
	d.ListsAbove, f.DropLists = listsByItemsAbove, true
	if html {
		d.FieldsAbove, f.ShownMessages = render.MaxShownMessage, render.MaxShownMessage
	}
}

// headersRead is what a decoder keeps of request headers: all of them
// for an output that shows them (html), else what grouping reads.
func headersRead(shown bool) func(string) bool {
	if shown {
		return nil
	}
	return flow.ReadsHeader
}

// summary is the line printed for each flow (render, watch, demo): its
// time split into phases and waits that add up (render.Summary).
func summary(f *flow.Flow) string { return render.Summary(f) }

// fileWriter writes the files of flowFiles. Each is drawn into memory
// first, so a failed drawing leaves no file, then written with one open:
// thousands of small files cost three system calls each.
type fileWriter struct {
	buf bytes.Buffer
	bw  *bufio.Writer // draw's, into buf
	sbw *bufio.Writer // diagram's, into a file or buf
}

// renderBufSize is the buffer size render's writers ask for: a
// *bufio.Writer this large is used as it is, not wrapped in another.
const renderBufSize = 64 << 10

// diagram writes f in format to dir/base+ext, and the further parts of a
// diagram that is split to stay within its renderer's limits (Mermaid:
// base_2.mmd, …). It returns the names written.
func (fw *fileWriter) diagram(dir, base, format string, f *flow.Flow, ro render.Options) ([]string, error) {
	if format != "mmd" {
		// Past spillAt, drawn on into an unnamed file: a tall PNG's
		// bytes are not held (a 1,201-call flow's were 12.5 MB, and
		// 32 MB of buffer growth).
		name := filepath.Join(dir, base+render.Ext(format))
		if fw.sbw == nil {
			fw.sbw = bufio.NewWriterSize(nil, renderBufSize)
		}
		drawErr, err := writeAtomicDrawn(name, &fw.buf, fw.sbw, func(w io.Writer) error {
			return render.WriteWith(w, format, f, ro)
		})
		if drawErr != nil {
			return nil, fmt.Errorf("render: %s: %w", name, drawErr)
		}
		if err != nil {
			return nil, fmt.Errorf("render: %w", err)
		}
		return []string{name}, nil
	}
	parts, err := fw.draw(format, f, ro, false)
	if err != nil {
		if format == "mmd" {
			return nil, err
		}
		return nil, fmt.Errorf("render: %s: %w", filepath.Join(dir, base+render.Ext(format)), err)
	}
	return fw.put(dir, base, format, parts)
}

// draw draws f in format: one file's bytes, or Mermaid's parts. The bytes
// are fw's until its next draw, unless keep.
func (fw *fileWriter) draw(format string, f *flow.Flow, ro render.Options, keep bool) ([][]byte, error) {
	if format == "mmd" {
		return render.MermaidParts(f)
	}
	fw.buf.Reset()
	if fw.bw == nil {
		fw.bw = bufio.NewWriterSize(&fw.buf, renderBufSize)
	}
	fw.bw.Reset(&fw.buf)
	err := render.WriteWith(fw.bw, format, f, ro)
	if err == nil {
		err = fw.bw.Flush()
	}
	if err != nil {
		return nil, err
	}
	if keep {
		return [][]byte{bytes.Clone(fw.buf.Bytes())}, nil
	}
	return [][]byte{fw.buf.Bytes()}, nil
}

// dot writes f's ID-flow graph as DOT text, kept: what layOut draws in
// format later.
func (fw *fileWriter) dot(_ string, f *flow.Flow, _ render.Options, _ bool) ([][]byte, error) {
	var b bytes.Buffer
	if err := render.GraphDOT(&b, f); err != nil {
		return nil, err
	}
	return [][]byte{b.Bytes()}, nil
}

// layOut draws the DOT text dot wrote in format (graph or graph-png); the
// bytes are fw's until its next draw.
func (fw *fileWriter) layOut(format string, dot []byte) ([][]byte, error) {
	fw.buf.Reset()
	if err := render.DrawGraphDOT(&fw.buf, dot, format); err != nil {
		return nil, err
	}
	return [][]byte{fw.buf.Bytes()}, nil
}

// put writes what draw drew to dir/base+ext (Mermaid: its parts); it
// returns the names written.
func (fw *fileWriter) put(dir, base, format string, parts [][]byte) ([]string, error) {
	if format != "mmd" {
		name := filepath.Join(dir, base+render.Ext(format))
		if err := writeAtomic(name, parts[0]); err != nil {
			return nil, fmt.Errorf("render: %w", err)
		}
		return []string{name}, nil
	}
	var names []string
	for k, p := range parts {
		name := filepath.Join(dir, base+render.PartExt(format, k))
		if err := writeAtomic(name, p); err != nil {
			return names, fmt.Errorf("render: %w", err)
		}
		names = append(names, name)
	}
	// A diagram drawn again with fewer parts (watch, or render into the
	// same directory) must not leave the old tail behind.
	for k := len(parts); ; k++ {
		if err := os.Remove(filepath.Join(dir, base+render.PartExt(format, k))); err != nil {
			break
		}
	}
	return names, nil
}
