package decode

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/criseq/criseq/capture"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The reference capture of real kubelet → containerd traffic, made before
// criseq had a recorder (see testdata/reference/README.md).
// benchcap.Reference names it too; this package is below benchcap.
var kubeletPcap = filepath.Join("..", "testdata", "reference", "kubelet-1.37-two-containers.pcap")

// readPcap turns a pcap of in-order TCP segments (one per chunk, as the
// capture's script wrote it) into chunks: the connection is the client
// port, the direction follows the server port. No reassembly: test only.
func readPcap(t testing.TB, path string, serverPort layers.TCPPort) []capture.Chunk {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err) // in the repository: never missing
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	off := map[[2]uint64]int64{}
	var chunks []capture.Chunk
	for {
		data, ci, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		p := gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.Default)
		tcp, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if !ok {
			continue
		}
		dir, port := c2s, tcp.SrcPort
		if tcp.SrcPort == serverPort {
			dir, port = s2c, tcp.DstPort
		}
		key := [2]uint64{uint64(port), uint64(dir)}
		c := capture.Chunk{Conn: uint64(port), Dir: dir, Time: ci.Timestamp, Offset: off[key]}
		if len(tcp.Payload) > 0 {
			c.Data = tcp.Payload
			off[key] += int64(len(tcp.Payload))
			chunks = append(chunks, c)
		}
		if tcp.FIN || tcp.RST {
			c.Kind, c.Data = capture.Close, nil
			chunks = append(chunks, c)
		}
	}
	return chunks
}

func TestKubeletCapture(t *testing.T) {
	chunks := readPcap(t, kubeletPcap, 10010)
	calls, errs, err := DecodeAll(&sliceSource{chunks: chunks}, Options{})
	if err != nil || len(errs) > 0 {
		t.Fatalf("err %v, conn errors %v", err, errs)
	}
	// The README says 246 calls, but its per-method counts add up to 245,
	// and tshark finds 245 request HEADERS (245 distinct client streams).
	if len(calls) != 245 {
		t.Errorf("%d calls, want 245", len(calls))
	}
	want := map[string]int{
		"RunPodSandbox": 1, "PodSandboxStatus": 4, "ImageStatus": 4, "CreateContainer": 2, "StartContainer": 2,
		"ContainerStatus": 14, "StopContainer": 2, "StopPodSandbox": 1, "ListPodSandbox": 84, "ListContainers": 90,
		"Status": 11, "Version": 11, "ImageFsInfo": 9, "ListContainerStats": 5, "ListImages": 4, "RuntimeConfig": 1,
	}
	got := byName(calls)
	for name, n := range want {
		if got[name] != n {
			t.Errorf("%s: %d calls, want %d", name, got[name], n)
		}
	}
	if len(got) != len(want) {
		t.Errorf("methods %v", got)
	}
	for _, c := range calls {
		wantStatus := 0
		if c.Name == "RuntimeConfig" {
			wantStatus = 12 // Unimplemented in containerd 1.6
		}
		if !c.Known || c.Status != wantStatus || c.Flags&^TrailersOnly != 0 || len(c.Errors) > 0 || c.Request() == nil {
			t.Errorf("%s", summary(c))
		}
		if wantStatus == 0 && c.Response() == nil {
			t.Errorf("no response: %s", summary(c))
		}
		if c.Conn == 40002 && c.Service != "runtime.v1.ImageService" || c.Conn == 40001 && c.Service != "runtime.v1.RuntimeService" {
			t.Errorf("%s on connection %d", c.Method, c.Conn)
		}
	}
	// The pod start, as the README tells it.
	for _, c := range calls {
		switch r := c.Request().(type) {
		case *runtimeapi.RunPodSandboxRequest:
			if md := r.GetConfig().GetMetadata(); md.GetName() != "hello-kfeas-node" || md.GetNamespace() != "default" {
				t.Errorf("RunPodSandbox of %v", md)
			}
		case *runtimeapi.CreateContainerRequest:
			name := r.GetConfig().GetMetadata().GetName()
			if name != "web" && name != "sidecar" {
				t.Errorf("CreateContainer of %q", name)
			}
			for _, e := range r.GetConfig().GetEnvs() {
				if string(e.Value) != Redacted && len(e.Value) > 0 {
					t.Errorf("env %s not redacted", e.Key)
				}
			}
		}
	}
	// Redaction off: the sidecar's env value is there.
	calls, _, _ = DecodeAll(&sliceSource{chunks: chunks}, Options{NoRedact: true})
	var envs int
	for _, c := range calls {
		if r, ok := c.Request().(*runtimeapi.CreateContainerRequest); ok {
			for _, e := range r.GetConfig().GetEnvs() {
				if len(e.Value) > 0 && string(e.Value) != Redacted {
					envs++
				}
			}
			if raw, _ := proto.Marshal(r); len(raw) != c.Requests[0].Size {
				t.Errorf("size %d, raw %d", c.Requests[0].Size, len(raw))
			}
		}
	}
	if envs == 0 {
		t.Errorf("NoRedact: no env value seen")
	}
}
