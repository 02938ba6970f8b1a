package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/criseq/criseq/capture"
)

const recordUsage = `Usage: criseq record --upstream SOCKET --listen SOCKET -w FILE

Relays a CRI unix socket and records every connection's bytes, both ways, to a
pcapng file (0600). Point kubelet or crictl at the listen socket; the bytes
reach the runtime unchanged, and if recording falls behind or the disk fails,
traffic keeps flowing and the file marks the gap. Ctrl-C or SIGTERM stops it:
the file is flushed and the listen socket removed.

The listen socket gets the upstream socket's owner and mode. In the file, each
unix connection is a TCP flow from 127.0.0.1:40000+N to 127.0.0.1:10010, so
Wireshark decodes it with:  tshark -r FILE -d tcp.port==10010,http2 -Y grpc

Examples:
  sudo criseq record --upstream /run/containerd/containerd.sock \
      --listen /run/criseq.sock -w cri.pcapng
  # then, in another shell:
  sudo crictl -r unix:///run/criseq.sock pods
  # or start kubelet with --container-runtime-endpoint=unix:///run/criseq.sock
  #                       --image-service-endpoint=unix:///run/criseq.sock
  criseq render cri.pcapng
`

func runRecord(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("record", recordUsage, stderr)
	upstream := fs.String("upstream", "/run/containerd/containerd.sock", "the runtime's socket")
	listen := fs.String("listen", "", "socket to create for kubelet or crictl (required)")
	out := fs.String("w", "", "pcapng file to write, created 0600 (required)")
	quiet := fs.Bool("q", false, "print only errors")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(pos) != 0:
		return fmt.Errorf("%w: record takes no arguments (got %q)", errUsage, pos)
	case *listen == "":
		return fmt.Errorf("%w: record needs --listen SOCKET, the socket kubelet or crictl will use", errUsage)
	case *out == "":
		return fmt.Errorf("%w: record needs -w FILE, the pcapng file to write", errUsage)
	case *listen == *upstream:
		return fmt.Errorf("%w: --listen and --upstream are the same socket", errUsage)
	}
	logf := func(format string, args ...any) {
		fmt.Fprintf(stderr, "criseq record: "+format+"\n", args...)
	}
	f, err := capture.CreateFile(*out)
	if err != nil {
		return fmt.Errorf("record: %w", err)
	}
	rec := capture.NewRecorder(capture.NewPcapngWriter(f), capture.RecorderOptions{Log: logf})
	p := &capture.Proxy{Upstream: *upstream, Listen: *listen, Recorder: rec, Log: logf}
	if !*quiet {
		p.Ready = func() {
			logf("relaying %s → %s, recording to %s; Ctrl-C to stop", *listen, *upstream, *out)
		}
	}
	start := time.Now()
	// Run closes the recorder, which flushes and closes the file.
	err = p.Run(ctx)
	st := rec.Stats()
	if !*quiet || st.DroppedChunks > 0 {
		logf("recorded %d bytes in %d chunks over %s to %s", st.Bytes, st.Chunks, time.Since(start).Round(time.Millisecond), *out)
	}
	if st.DroppedChunks > 0 {
		logf("%d chunks (%d bytes) could not be recorded and are marked as gaps", st.DroppedChunks, st.DroppedBytes)
	}
	return err
}
