package capture

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/criseq/criseq/internal/testpeer"
)

func needTshark(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("tshark")
	if err != nil {
		testpeer.Missing(t, "tshark not installed: apt-get install tshark")
	}
	return p
}

// tshark runs tshark on file and returns its output lines.
func tshark(t *testing.T, file string, args ...string) []string {
	t.Helper()
	cmd := exec.Command(needTshark(t), append([]string{"-n", "-r", file, "-d", fmt.Sprintf("tcp.port==%d,http2", ServerPort)}, args...)...)
	out, err := cmd.Output()
	if err != nil {
		stderr := ""
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("tshark %v: %v\n%s", args, err, stderr)
	}
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

// TestTsharkDecodesRecording records real grpc-go CRI calls through the proxy
// into a pcapng file and checks that Wireshark sees the same method calls,
// valid checksums and no malformed packets.
func TestTsharkDecodesRecording(t *testing.T) {
	needTshark(t)
	dir := t.TempDir()
	upstream, _ := startCRIServer(t, dir, 400) // ListContainers spans several segments
	path := filepath.Join(dir, "rec.pcapng")
	f, err := CreateFile(path)
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{Upstream: upstream, Listen: filepath.Join(dir, "proxy.sock"), Recorder: NewRecorder(NewPcapngWriter(f), RecorderOptions{})}
	stop := startProxy(t, p)
	var want []string
	for i := range 2 { // two connections
		cl := newCRIClient(t, p.Listen)
		for r := range 3 {
			paths, err := cl.callAll(context.Background(), fmt.Sprintf("pod-%d-%d", i, r))
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, paths...)
		}
		cl.close()
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	// Request HEADERS frames carry :path (a HEADERS packet without its DATA is
	// not marked grpc, so filter on the path); tshark prints one line per packet,
	// with several paths comma-separated when a packet holds several frames.
	var got []string
	for _, l := range tshark(t, path, "-Y", "http2.headers.path", "-T", "fields", "-e", "http2.headers.path") {
		got = append(got, strings.Split(l, ",")...)
	}
	if !slices.Equal(got, want) {
		t.Errorf("tshark sees paths\n%v\nclient called\n%v", got, want)
	}
	bad := tshark(t, path, "-o", "tcp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE",
		"-Y", "tcp.checksum.status == 0 || ip.checksum.status == 0 || _ws.malformed || tcp.analysis.lost_segment || tcp.analysis.retransmission")
	if len(bad) > 0 {
		t.Errorf("tshark flags %d packets:\n%s", len(bad), strings.Join(bad, "\n"))
	}

	// And criseq reads its own file back with the same bytes per connection.
	src, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if got := streams(t, readAll(t, src)); len(got) != 2 {
		t.Errorf("read back %d connections, want 2", len(got))
	}
}

// TestTsharkSeesGaps: a Gap shows as "previous segment not captured", with
// the comment on the packet after it.
func TestTsharkSeesGaps(t *testing.T) {
	needTshark(t)
	path := writePcapng(t, roundTripChunks())
	lost := tshark(t, path, "-Y", "tcp.analysis.lost_segment", "-T", "fields", "-e", "tcp.srcport", "-e", "frame.comment")
	if len(lost) != 1 || !strings.Contains(lost[0], "40001") || !strings.Contains(lost[0], "1000 bytes of client→server lost") {
		t.Errorf("tshark lost segments: %q", lost)
	}
	conns := tshark(t, path, "-q", "-z", "conv,tcp")
	if n := strings.Count(strings.Join(conns, "\n"), fmt.Sprintf("127.0.0.1:%d", ServerPort)); n != 3 {
		t.Errorf("tshark sees %d TCP conversations, want 3:\n%s", n, strings.Join(conns, "\n"))
	}
}

// TestReadTsharkRewrites: files rewritten by tshark in other formats (pcap
// with micro- or nanoseconds, pcapng with its own blocks and options) read
// back as the original.
func TestReadTsharkRewrites(t *testing.T) {
	bin := needTshark(t)
	orig := writePcapng(t, roundTripChunks())
	for _, format := range []string{"pcap", "nsecpcap", "pcapng"} {
		t.Run(format, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "x."+format)
			if b, err := exec.Command(bin, "-r", orig, "-F", format, "-w", out).CombinedOutput(); err != nil {
				t.Fatalf("tshark -F %s: %v\n%s", format, err, b)
			}
			src, err := OpenFile(out)
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			want := roundTripChunks()
			if format == "pcap" { // microseconds
				for i := range want {
					want[i].Time = want[i].Time.Truncate(time.Microsecond)
				}
			}
			compareChunks(t, want, readAll(t, src))
		})
	}
}
