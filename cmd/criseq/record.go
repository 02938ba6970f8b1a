package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"syscall"
	"time"

	"github.com/criseq/criseq/capture"
)

const recordUsage = `Usage: criseq record --upstream SOCKET --listen SOCKET -w FILE
       criseq record --swap SOCKET -w FILE
       criseq record --attach [--pid N] [--socket SOCKET] -w FILE

Relays a CRI unix socket and records every connection's bytes, both ways, to a
pcapng file (0600). Point kubelet or crictl at the listen socket; the bytes
reach the runtime unchanged, and if recording falls behind or the disk fails,
traffic keeps flowing and the file marks the gap. Ctrl-C or SIGTERM stops it:
the file is flushed and the listen socket removed.

The listen socket gets the upstream socket's owner and mode. In the file, each
unix connection is a TCP flow from 127.0.0.1:40000+N to 127.0.0.1:10010, so
Wireshark decodes it with:  tshark -r FILE -d tcp.port==10010,http2 -Y grpc

--swap SOCKET records in place, with no change to kubelet's configuration:
criseq moves the runtime's socket to SOCKET.criseq-orig (writing a note,
SOCKET.criseq-orig.json), listens on SOCKET with the same owner and mode, and
relays to the moved socket. The two trade places in one atomic rename, so
SOCKET never goes missing. Only NEW connections pass through criseq: kubelet
keeps its connections open, so restart kubelet (systemctl restart kubelet) to
record its calls. On Ctrl-C, SIGTERM, SIGHUP, an error or a crash, criseq puts
the runtime's socket back the same way. If criseq is killed with SIGKILL (or
the machine loses power), the socket stays swapped and nothing answers on it:
run "criseq restore SOCKET"; criseq record --swap refuses to start until then.
If the runtime restarts meanwhile, it recreates SOCKET itself: criseq sees its
socket replaced, leaves the new one alone, removes the stale moved-aside one
and stops recording.

--attach records a running kubelet with eBPF, touching nothing: no restart,
no socket moved. criseq finds kubelet (or --pid N) and its connections to the
runtime socket (--socket, else kubelet's --container-runtime-endpoint or
config, else /run/containerd/containerd.sock), and copies every byte kubelet
writes to and reads from them, in the kernel, from syscall tracepoints.
Connections already open are recorded from the moment criseq attaches (the
file marks them as caught mid-connection); new ones from their first byte.
If kubelet restarts, its new process is followed (not with --pid). Needs root
and Linux 5.17+ with BTF. Bytes the kernel could not hand over in time are
counted, reported and marked as gaps in the file, never silently lost.

Examples:
  sudo criseq record --upstream /run/containerd/containerd.sock \
      --listen /run/criseq.sock -w cri.pcapng
  # then, in another shell:
  sudo crictl -r unix:///run/criseq.sock pods
  # or start kubelet with --container-runtime-endpoint=unix:///run/criseq.sock
  #                       --image-service-endpoint=unix:///run/criseq.sock
  criseq render cri.pcapng

  # in place: kubelet keeps its configuration
  sudo criseq record --swap /run/containerd/containerd.sock -w cri.pcapng
  sudo systemctl restart kubelet   # so that kubelet reconnects through criseq
  # after a "kill -9" of criseq:
  sudo criseq restore /run/containerd/containerd.sock

  # attach to the running kubelet: nothing restarted or reconfigured
  sudo criseq record --attach -w cri.pcapng
  sudo criseq record --attach --pid 1234 --socket /run/containerd/containerd.sock -w cri.pcapng
`

func runRecord(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("record", recordUsage, stderr)
	upstream := fs.String("upstream", "/run/containerd/containerd.sock", "the runtime's socket")
	listen := fs.String("listen", "", "socket to create for kubelet or crictl (required, unless --swap)")
	swap := fs.String("swap", "", "the runtime's socket to swap in place: record without changing kubelet's configuration")
	out := fs.String("w", "", "pcapng file to write, created 0600 (required)")
	quiet := fs.Bool("q", false, "print only errors")
	var at attachFlags
	at.register(fs)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	switch {
	case len(pos) != 0:
		return fmt.Errorf("%w: record takes no arguments (got %q)", errUsage, pos)
	case *out == "" && at.on:
		return fmt.Errorf("%w: record needs -w FILE, the pcapng file to write", errUsage)
	}
	if err := at.check(set); err != nil {
		return err
	}
	logf := func(format string, args ...any) {
		fmt.Fprintf(stderr, "criseq record: "+format+"\n", args...)
	}
	if at.on {
		return recordAttached(ctx, &at, *out, *quiet, logf)
	}
	switch {
	case *swap != "" && (set["listen"] || set["upstream"]):
		return fmt.Errorf("%w: --swap replaces --listen and --upstream; give either --swap SOCKET or both of those", errUsage)
	case *swap == "" && *listen == "":
		return fmt.Errorf("%w: record needs --listen SOCKET, the socket kubelet or crictl will use (or --swap SOCKET)", errUsage)
	case *out == "":
		return fmt.Errorf("%w: record needs -w FILE, the pcapng file to write", errUsage)
	case *swap == "" && *listen == *upstream:
		return fmt.Errorf("%w: --listen and --upstream are the same socket; to record in place use --swap %s", errUsage, *upstream)
	}
	r := &recording{out: *out, quiet: *quiet, logf: logf}
	if *swap != "" {
		return r.swapped(ctx, *swap)
	}
	p, err := r.proxy()
	if err != nil {
		return err
	}
	p.Upstream, p.Listen = *upstream, *listen
	if !*quiet {
		p.Ready = func() {
			r.logf("relaying %s → %s, recording to %s; Ctrl-C to stop", *listen, *upstream, *out)
		}
	}
	// Run closes the recorder, which flushes and closes the file.
	err = p.Run(ctx)
	r.report(p)
	return err
}

// recording is one run of criseq record.
type recording struct {
	out   string
	quiet bool
	logf  func(format string, args ...any)
	start time.Time
}

// proxy creates the capture file and a Proxy that records into it.
func (r *recording) proxy() (*capture.Proxy, error) {
	f, err := capture.CreateFile(r.out)
	if err != nil {
		return nil, fmt.Errorf("record: %w", err)
	}
	r.start = time.Now()
	rec := capture.NewRecorder(capture.NewPcapngWriter(capture.NewWriteBehind(f)), capture.RecorderOptions{Log: r.logf})
	return &capture.Proxy{Recorder: rec, Log: r.logf}, nil
}

func (r *recording) report(p *capture.Proxy) {
	st := p.Recorder.Stats()
	if !r.quiet || st.DroppedChunks > 0 {
		r.logf("recorded %d bytes in %d chunks over %s to %s", st.Bytes, st.Chunks, time.Since(r.start).Round(time.Millisecond), r.out)
	}
	if st.DroppedChunks > 0 {
		r.logf("%d chunks (%d bytes) could not be recorded and are marked as gaps", st.DroppedChunks, st.DroppedBytes)
	}
}

// swapWatchInterval is how often record --swap checks that the runtime has
// not recreated its socket over criseq's.
const swapWatchInterval = 250 * time.Millisecond

// swapped swaps path, records on it and puts the socket back.
func (r *recording) swapped(ctx context.Context, path string) error {
	p, err := swapRelay(ctx, "record", path, "recorded to "+r.out, r.quiet, r.logf, r.proxy)
	if p != nil {
		r.report(p)
	}
	return err
}

// swapRelay swaps path, relays on it with the Proxy makeProxy returns
// (Listener, Listen and Upstream are set here), and puts the socket back
// whatever happens: end of ctx, SIGHUP, an error, a panic, or the runtime
// recreating its socket. cmd names the command in messages; what says
// where the traffic goes ("recorded to cri.pcapng").
func swapRelay(ctx context.Context, cmd, path, what string, quiet bool, logf func(string, ...any),
	makeProxy func() (*capture.Proxy, error)) (p *capture.Proxy, err error) {
	ctx, stopSignals := signal.NotifyContext(ctx, syscall.SIGHUP)
	defer stopSignals()
	// Before makeProxy creates any file: a refusal leaves an earlier capture
	// of the same name alone.
	sw, err := capture.Swap(path, logf)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cmd, err)
	}
	defer func() {
		v := recover()
		if rerr := sw.Restore(); rerr != nil {
			logf("%v", rerr)
			err = errors.Join(err, fmt.Errorf("%s: %w", cmd, rerr))
		}
		if v != nil {
			panic(v) // after the socket is back
		}
	}()
	p, err = makeProxy()
	if err != nil {
		return nil, err
	}
	p.Listener, p.Listen, p.Upstream = sw.Listener(), path, sw.Aside
	if !quiet {
		p.Ready = func() {
			logf("swapped %s: the runtime's socket is now %s; new connections to %s are relayed and %s; Ctrl-C to stop and put it back", path, sw.Aside, path, what)
			logf("connections opened before the swap (kubelet's) still go straight to the runtime: restart kubelet to see its calls")
		}
	}

	// The relay stops only once the socket is back, so that new connections
	// to path always find a listener.
	relayCtx, stopRelay := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRelay()
	watchCtx, stopWatch := context.WithCancel(ctx)
	lost := sw.Watch(watchCtx, swapWatchInterval)
	var replaced bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer stopRelay()
		select {
		case <-ctx.Done():
			if !quiet {
				logf("stopping: putting the runtime's socket back at %s", path)
			}
		case <-lost:
			replaced = true
			logf("%s is no longer criseq's socket: removed or replaced, as when the runtime restarts; stopping", path)
		case <-relayCtx.Done():
		}
		sw.Restore() // an error is reported by the deferred Restore
	}()
	// Run closes the recorder, which flushes and closes its sink.
	err = p.Run(relayCtx)
	stopRelay()
	stopWatch()
	<-done
	if replaced && err == nil {
		err = fmt.Errorf("%s: stopped because %s was removed or replaced (the runtime stopped or restarted); the capture is complete up to then; run criseq %s --swap again to go on", cmd, path, cmd)
	}
	return p, err
}
