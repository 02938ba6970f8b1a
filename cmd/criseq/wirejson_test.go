package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/criseq/criseq/internal/benchcap"
)

// TestCallsJSONFromWire: calls --json writes the messages from their wire
// bytes, decoding them only to what labels read; its lines are byte for
// byte those written from the messages decoded whole, on every testdata
// capture and the reference kubelet 1.37 one, redacted and
// not, and with --hide-polling.
func TestCallsJSONFromWire(t *testing.T) {
	files := append(captures(t), "demo.pcapng", benchcap.Reference(filepath.Join("..", "..")))
	var wrote, declined int
	onWireJSON = func(ok bool) {
		if ok {
			wrote++
		} else {
			declined++
		}
	}
	defer func() { onWireJSON, jsonFromWire = nil, true }()
	out := func(args []string, wire bool) string {
		jsonFromWire = wire
		var stdout, stderr bytes.Buffer
		if err := run(context.Background(), args, &stdout, &stderr); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		return stdout.String() + "\nstderr:\n" + stderr.String()
	}
	for _, f := range files {
		for _, extra := range [][]string{nil, {"--no-redact"}, {"--hide-polling"}} {
			args := append(append([]string{"calls", "--json"}, extra...), f)
			got, want := out(args, true), out(args, false)
			if got == want {
				continue
			}
			g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
			for i := range min(len(g), len(w)) {
				if g[i] != w[i] {
					t.Fatalf("%v: line %d:\n got %s\nwant %s", args, i+1, g[i], w[i])
				}
			}
			t.Fatalf("%v: %d lines, want %d", args, len(g), len(w))
		}
	}
	if wrote == 0 || declined > wrote/100 {
		t.Errorf("%d messages written from the wire, %d declined: the wire path is not taken", wrote, declined)
	}
	t.Logf("%d messages written from the wire, %d declined", wrote, declined)
}

// listServer answers ListContainers with n containers, labelled.
type listServer struct {
	*criServer
	n int
}

func (s listServer) ListContainers(context.Context, *runtimeapi.ListContainersRequest) (*runtimeapi.ListContainersResponse, error) {
	resp := &runtimeapi.ListContainersResponse{}
	for i := range s.n {
		resp.Containers = append(resp.Containers, &runtimeapi.Container{
			Id: fmt.Sprintf("%064x", i+1), PodSandboxId: fmt.Sprintf("%064x", 1<<40+i/2),
			Metadata: &runtimeapi.ContainerMetadata{Name: fmt.Sprint("c-", i)}, State: runtimeapi.ContainerState(i % 4),
			Labels: map[string]string{"io.kubernetes.pod.name": fmt.Sprint("pod-", i/2), "io.kubernetes.pod.namespace": "default\x1b]0;x\a\u202e"},
		})
	}
	return resp, nil
}

// Large messages (ListContainers answers of 0.2 to 4 MB, written to the
// output without being copied into their line; those over 1 MiB kept as
// they came and written as they are printed, in pieces), recorded
// between real grpc-go peers: the lines are those written from the
// messages decoded whole, and each is one JSON object.
func TestCallsJSONLargeMessages(t *testing.T) {
	srv := listServer{&criServer{}, 0}
	var files []string
	for _, n := range []int{1000, 20000} {
		srv.n = n
		dir, upstream := serveCRIWith(t, srv, srv)
		files = append(files, recordSession(t, dir, upstream, func(ctx context.Context, rt runtimeapi.RuntimeServiceClient, _ runtimeapi.ImageServiceClient) {
			for range 2 {
				if _, err := rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{}, grpc.MaxCallRecvMsgSize(16<<20)); err != nil {
					t.Fatal(err)
				}
			}
		}))
	}
	kept := 0
	onWireKept = func() { kept++ }
	defer func() { jsonFromWire, onWireKept = true, nil }()
	for fi, f := range files {
		for _, extra := range [][]string{nil, {"--no-redact"}} {
			args := append(append([]string{"calls", "--json"}, extra...), f)
			var lines [2][]byte
			kept = 0
			for i, wire := range []bool{true, false} {
				jsonFromWire = wire
				var stdout, stderr bytes.Buffer
				if err := run(context.Background(), args, &stdout, &stderr); err != nil {
					t.Fatalf("%v: %v", args, err)
				}
				lines[i] = stdout.Bytes()
			}
			if want := []int{0, 2}[fi]; kept != want {
				t.Errorf("%v: %d messages kept to be written as printed, want %d", args, kept, want)
			}
			if !bytes.Equal(lines[0], lines[1]) {
				t.Fatalf("%v: from the wire (%d bytes) and decoded whole (%d bytes) differ", args, len(lines[0]), len(lines[1]))
			}
			big := 0
			for _, l := range bytes.Split(bytes.TrimSpace(lines[0]), []byte("\n")) {
				var v map[string]any
				if err := json.Unmarshal(l, &v); err != nil {
					t.Fatalf("%v: a line of %d bytes is not one JSON object: %v", args, len(l), err)
				}
				if len(l) > 64<<10 {
					big++
				}
				if bytes.Contains(l, []byte("\x1b")) || bytes.Contains(l, []byte("\u202e")) {
					t.Errorf("%v: a terminal control reached the output", args)
				}
			}
			if big < 2 {
				t.Errorf("%v: %d lines over 64 KiB, want the 2 answers", args, big)
			}
		}
	}
}
