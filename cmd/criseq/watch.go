package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/criseq/criseq/capture"
	"github.com/criseq/criseq/capture/ebpf"
	"github.com/criseq/criseq/decode"
	"github.com/criseq/criseq/flow"
	"github.com/criseq/criseq/internal/termtext"
	"github.com/criseq/criseq/render"
)

const watchUsage = `Usage: criseq watch [flags]

Records, decodes and draws live: each pod start or stop is written to a
diagram the moment it is complete (a start: every container's StartContainer
returned, plus a short grace for the status calls; a stop: the pod down,
StopPodSandbox returned, plus the grace), with one line per flow on stdout. A
flow that grows after (the container after an init container; kubelet's
clean-up removing the stopped pod, up to a minute later) is written again,
marked (updated). Flows still open when watch ends are written marked
incomplete.

Capture modes:
  --listen SOCK [--upstream SOCK]   relay a second socket (point kubelet or crictl at it)
  --swap SOCK                       take over the runtime's socket in place, as
                                    criseq record --swap does (see its -h), and put it back
  --attach [--pid N] [--socket SOCK]  trace the running kubelet with eBPF, as
                                    criseq record --attach does (see its -h)
  -r FILE                           replay a capture file as if live (- reads standard input)

Exit codes: 0 done (Ctrl-C, or --pods flows written); 1 error; 2 bad usage;
3 --timeout passed before --pods flows were written.

Examples:
  sudo criseq watch --listen /run/criseq.sock -o diagrams
  # CI: wait for the pod start, at most 2 minutes, then exit
  sudo criseq watch --listen /run/criseq.sock --pods 1 --pod nginx --timeout 2m -o artifacts
  criseq watch -r cri.pcapng --format svg
  sudo criseq watch --attach -o diagrams     # nothing restarted or reconfigured
`

// maxRecentFlows is how many flows watch remembers to rewrite them before
// it first forgets those the grouper no longer holds (flow.Grouper.Holds): a
// start grows within the grouper's InitWait, a stop until kubelet's
// clean-up removes its pod; either way the grouper holds them.
const maxRecentFlows = 256

// exitError carries a process exit code other than 1.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func runWatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("watch", watchUsage, stderr)
	var o renderOptions
	o.register(fs, "out")
	upstream := fs.String("upstream", "/run/containerd/containerd.sock", "the runtime's socket")
	listen := fs.String("listen", "", "socket to create for kubelet or crictl")
	swap := fs.String("swap", "", "the runtime's socket to take over in place (kubelet's new connections go through criseq)")
	replay := fs.String("r", "", "replay this capture file instead of relaying a socket")
	record := fs.String("w", "", "also record the traffic to this pcapng file (0600)")
	pods := fs.Int("pods", 0, "exit after this many flows are written (0: run until Ctrl-C)")
	timeout := fs.Duration("timeout", 0, "with --pods: give up after this long, exit code 3")
	namespace := fs.String("namespace", "", "only flows of pods in this namespace")
	var at attachFlags
	at.register(fs)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if err := at.check(set); err != nil {
		return err
	}
	switch {
	case len(pos) != 0:
		return fmt.Errorf("%w: watch takes no arguments (got %q)", errUsage, pos)
	case btoi(*listen != "")+btoi(*replay != "")+btoi(*swap != "")+btoi(at.on) != 1:
		return fmt.Errorf("%w: watch needs exactly one of --listen SOCKET, --swap SOCKET, --attach or -r FILE", errUsage)
	case *timeout > 0 && *pods == 0:
		return fmt.Errorf("%w: --timeout needs --pods N, the number of flows to wait for", errUsage)
	}
	formats, err := parseFormats(o.formats)
	if err != nil {
		return err
	}
	roomForGraphs(formats)
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	logf := func(format string, args ...any) { fmt.Fprintf(stderr, "criseq watch: "+format+"\n", args...) }
	var tr *ebpf.Tracer
	var notes capture.Notes
	var replaySrc capture.Source
	switch {
	case at.on:
		tr = at.tracer(nil, logf)
		a, err := tr.Attach()
		if err != nil {
			return fmt.Errorf("watch: %w", err)
		}
		logf("%s", attachedMessage(a, "drawn into "+o.out))
		notes = attachNotes(a)
	case *replay != "":
		// Opened now: its notes say how to read list calls, and standard
		// input can be read only once.
		src, err := capture.OpenFile(*replay)
		if err != nil {
			return fmt.Errorf("watch: %w", err)
		}
		defer src.Close()
		replaySrc, notes = src, capture.NotesOf(src)
	}
	w := newWatcher(o, formats, *namespace, *pods, o.lists.unary(notes), stdout)
	if *record != "" {
		f, err := capture.CreateFile(*record)
		if err != nil {
			if tr != nil {
				tr.Close()
			}
			return fmt.Errorf("watch: %w", err)
		}
		w.file = capture.NewPcapngWriterNotes(capture.NewWriteBehind(f), notes)
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func(done <-chan struct{}) { // runCtx is replaced below when --timeout is set
		select {
		case <-w.enough:
			cancel()
		case <-done:
		}
	}(runCtx.Done())
	start := time.Now()
	if *timeout > 0 {
		var stopT context.CancelFunc
		runCtx, stopT = context.WithTimeout(runCtx, *timeout)
		defer stopT()
	}

	newProxy := func() (*capture.Proxy, error) {
		return &capture.Proxy{Log: logf, Recorder: capture.NewRecorder(w, capture.RecorderOptions{Log: logf})}, nil
	}
	switch {
	case *replay != "":
		err = w.replay(runCtx, replaySrc, stderr)
	case at.on:
		go w.ticker(runCtx, stderr)
		tr.Recorder = capture.NewRecorder(w, attachRecorder(logf))
		start := time.Now()
		err = tr.Run(runCtx) // closes the Recorder, which closes w
		reportTracer(tr, true, start, logf)
		if err != nil {
			err = fmt.Errorf("watch: %w", err)
		}
	case *swap != "":
		go w.ticker(runCtx, stderr)
		_, err = swapRelay(runCtx, "watch", *swap, "drawn into "+o.out, false, logf, newProxy)
	default:
		go w.ticker(runCtx, stderr)
		p, _ := newProxy()
		p.Upstream, p.Listen = *upstream, *listen
		p.Ready = func() { logf("relaying %s → %s; diagrams into %s; Ctrl-C to stop", *listen, *upstream, o.out) }
		err = p.Run(runCtx) // closes the Recorder, which closes w
	}
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if *pods > 0 && w.count() < *pods {
		if *timeout > 0 && time.Since(start) >= *timeout {
			return &exitError{3, fmt.Errorf("watch: %d of %d flows written before the %v timeout", w.count(), *pods, *timeout)}
		}
	}
	if *replay != "" && w.count() == 0 && ctx.Err() == nil {
		return noFlow("watch", *replay, o.pod, *namespace, w.calls) // as render: nothing drawn is no success
	}
	return nil
}

// watcher is the live pipeline: it takes chunks (as a capture.Sink, on the
// recorder's goroutine, never on the relay's), decodes, groups and writes
// each flow as it completes.
type watcher struct {
	mu      sync.Mutex
	dec     *decode.Decoder
	g       *flow.Grouper
	file    *capture.PcapngWriter
	o       renderOptions
	formats []string
	ns      string
	out     io.Writer
	fw      fileWriter

	names   map[*flow.Flow]string // file base of the flows written lately
	recent  []*flow.Flow          // those flows, oldest first
	pruneAt int                   // recent is pruned past this length, and maxRecentFlows
	used    map[string]int
	written int
	want    int
	enough  chan struct{}
	conns   int
	calls   int
	err     error
	closed  bool
	now     time.Time // the latest chunk's time
}

// liveNameWait bounds how long a call caught midway waits to be named
// before it is drawn unnamed: kubelet's relist names most within a second
// or two, and a live diagram should not wait longer.
const liveNameWait = 3 * time.Second

func newWatcher(o renderOptions, formats []string, ns string, want int, listsUnary bool, out io.Writer) *watcher {
	w := &watcher{o: o, formats: formats, ns: ns, want: want, out: out,
		names: map[*flow.Flow]string{}, used: map[string]int{}, enough: make(chan struct{})}
	fopts := flow.Options{All: o.all, Client: o.client, Live: true}
	dopts := decode.Options{NoRedact: o.noRedact, OnCall: func(c *decode.Call) {
		w.calls++
		kept := keptLists(c)
		w.emit(w.g.Add(c))
		recycleLists(w.dec, c, kept)
	}, OnStreamMessage: func(c *decode.Call, m decode.Message) { w.g.Event(c, m) }, ListsUnary: listsUnary,
		NameWait: liveNameWait}
	messagesShown(slices.Contains(formats, "html"), &dopts, &fopts)
	w.g = flow.NewGrouper(fopts)
	if !o.all {
		dopts.SkipBodies = flow.SkipBody
	}
	w.dec = decode.New(dopts)
	return w
}

// Write takes one chunk (capture.Sink).
func (w *watcher) Write(c capture.Chunk) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if c.Kind == capture.Open {
		w.conns++
	}
	if c.Time.After(w.now) {
		w.now = c.Time
	}
	if w.file != nil {
		if err := w.file.Write(c); err != nil && w.err == nil {
			w.err = fmt.Errorf("watch: recording: %w", err)
		}
	}
	w.dec.Feed(c)
	return nil
}

// Close ends the run: open calls end incomplete and the flows still open
// are written (capture.Sink).
func (w *watcher) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return w.err
	}
	w.closed = true
	w.dec.Close()
	w.emit(w.g.Flush())
	if w.file != nil {
		if err := w.file.Close(); err != nil && w.err == nil {
			w.err = fmt.Errorf("watch: recording: %w", err)
		}
	}
	return w.err
}

// Flush is called by the Recorder when its queue is empty (capture.Flusher).
func (w *watcher) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.file != nil {
		return w.file.Flush()
	}
	return nil
}

// emit writes flows that passed the filters, up to --pods; w.mu is held.
func (w *watcher) emit(flows []*flow.Flow) {
	for _, f := range flows {
		if w.want > 0 && w.written >= w.want {
			return // a burst (or a replay) completes many flows at once
		}
		if w.ns != "" && f.Pod.Namespace != w.ns {
			continue
		}
		if !ofPod(f, w.o.pod) {
			continue
		}
		base, again := w.names[f]
		if !again {
			base = strings.TrimSuffix(render.FileName(f, ""), ".")
			w.used[base]++
			if n := w.used[base]; n > 1 {
				base = fmt.Sprintf("%s-%d", base, n)
			}
			// Only a flow the grouper holds can grow and be written
			// again: remember those while it does, so a run of days
			// keeps its memory.
			if w.g.Holds(f) {
				w.names[f] = base
				w.recent = append(w.recent, f)
			}
		}
		if len(w.recent) > max(maxRecentFlows, w.pruneAt) {
			kept := w.recent[:0]
			for _, r := range w.recent {
				if w.g.Holds(r) {
					kept = append(kept, r)
				} else {
					delete(w.names, r)
				}
			}
			clear(w.recent[len(kept):])
			w.recent = kept
			w.pruneAt = 2 * len(kept) // each flow looked at about once
		}
		var first string
		for _, format := range w.formats {
			names, err := w.fw.diagram(w.o.out, base, format, f, render.Options{TimeScale: float64(w.o.timescale)})
			if err != nil && w.err == nil {
				w.err = err
			}
			if first == "" && len(names) > 0 {
				first = names[0]
			}
		}
		note := ""
		if again {
			note = " (updated)"
		}
		fmt.Fprintf(w.out, "%-32s %s  → %s%s\n", termtext.String(f.Pod.String()), summary(f), first, note)
		if !again {
			w.written++
			if w.want > 0 && w.written == w.want {
				close(w.enough)
			}
		}
	}
}

func (w *watcher) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.written
}

// ticker moves the grouper's clock when no call comes, and shows a status
// line: redrawn in place on a terminal, every 30s otherwise.
func (w *watcher) ticker(ctx context.Context, stderr io.Writer) {
	tty := isTerminal(stderr)
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			if tty {
				fmt.Fprint(stderr, "\r\033[K")
			}
			return
		case now := <-t.C:
			w.mu.Lock()
			if !w.closed {
				w.emit(w.g.Tick(now))
			}
			status := fmt.Sprintf("%d connections, %d calls, %d flows open, %d written", w.conns, w.calls, w.g.Open(), w.written)
			w.mu.Unlock()
			switch {
			case tty:
				fmt.Fprintf(stderr, "\r\033[K%s", status)
			case now.Sub(last) >= 30*time.Second:
				fmt.Fprintf(stderr, "criseq watch: %s\n", status)
				last = now
			}
		}
	}
}

// replay feeds a capture file through the live pipeline. A file damaged
// part way (a capture copied while it was written) is drawn up to the
// damage, as render draws it.
func (w *watcher) replay(ctx context.Context, src capture.Source, stderr io.Writer) error {
	for n := 0; ctx.Err() == nil; n++ {
		c, err := src.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			if n == 0 {
				return err
			}
			fmt.Fprintf(stderr, "criseq: %s (showing what was read before it)\n", termtext.String(err.Error()))
			return nil
		}
		w.Write(c)
	}
	return nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && termtext.IsTerminal(f)
}
