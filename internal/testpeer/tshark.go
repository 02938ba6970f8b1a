package testpeer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"testing"
)

// Request is one request header block: the HTTP/2 stream and its :path.
type Request struct {
	Stream uint32
	Path   string
}

func (r Request) String() string { return fmt.Sprintf("%d %s", r.Stream, r.Path) }

// TsharkRequests runs real tshark on file, decoding TCP port port as
// HTTP/2, and returns the request header blocks it finds, in the order
// they come, per connection (keyed by the client's "ip:port").
func TsharkRequests(tb testing.TB, file string, port int) map[string][]Request {
	tb.Helper()
	bin := Need(tb, "tshark", "apt-get install tshark; lab/test-deps.sh installs it")
	cmd := exec.Command(bin, "-n", "-r", file, "-d", fmt.Sprintf("tcp.port==%d,http2", port),
		"-Y", fmt.Sprintf("tcp.dstport==%d && http2.headers.path", port), "-T", "json",
		"-e", "ip.src", "-e", "ipv6.src", "-e", "tcp.srcport", "-e", "http2.type", "-e", "http2.streamid", "-e", "http2.headers.path")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		tb.Fatalf("tshark on %s: %v\n%s", file, err, stderr.String())
	}
	var pkts []struct {
		Source struct {
			Layers map[string][]string `json:"layers"`
		} `json:"_source"`
	}
	if err := json.Unmarshal(out, &pkts); err != nil {
		tb.Fatalf("tshark -T json on %s: %v", file, err)
	}
	got := map[string][]Request{}
	for i, p := range pkts {
		l := p.Source.Layers
		ip := first(l["ip.src"])
		if ip == "" {
			ip = "[" + first(l["ipv6.src"]) + "]"
		}
		client := ip + ":" + first(l["tcp.srcport"])
		types, ids, paths := l["http2.type"], l["http2.streamid"], l["http2.headers.path"]
		// The frames of a packet are listed in order; each request HEADERS
		// frame (type 1) has one :path.
		var streams []string
		for k, typ := range types {
			if typ == "1" && k < len(ids) {
				streams = append(streams, ids[k])
			}
		}
		if len(streams) != len(paths) {
			tb.Fatalf("tshark on %s: packet %d of the filtered list has %d request HEADERS frames (streams %v) and %d paths %v",
				file, i+1, len(streams), streams, len(paths), paths)
		}
		for k, path := range paths {
			var sid uint32
			fmt.Sscan(streams[k], &sid)
			got[client] = append(got[client], Request{Stream: sid, Path: path})
		}
	}
	return got
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}
