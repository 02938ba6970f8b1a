package decode

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/criseq/criseq/capture"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func (fakeImages) ListImages(context.Context, *runtimeapi.ListImagesRequest) (*runtimeapi.ListImagesResponse, error) {
	resp := &runtimeapi.ListImagesResponse{}
	for i := range 30 {
		resp.Images = append(resp.Images, &runtimeapi.Image{
			Id:          fmt.Sprintf("sha256:%064x", i),
			RepoTags:    []string{fmt.Sprintf("registry.example/team/app-%d:v1.%d", i, i)},
			RepoDigests: []string{fmt.Sprintf("registry.example/team/app-%d@sha256:%064x", i, i+1000)},
			Size:        uint64(10_000_000 + i), Spec: &runtimeapi.ImageSpec{Image: fmt.Sprintf("sha256:%064x", i)},
		})
	}
	return resp, nil
}

var (
	pollOnce   sync.Once
	pollChunks []capture.Chunk
)

// kubeletPolling records real grpc-go traffic shaped like kubelet's
// polling of a node with 40 containers in 20 pods: rounds of
// ListPodSandbox, ListContainers, ContainerStatus, Status, Version,
// ImageFsInfo, ListImages.
func kubeletPolling(b *testing.B) []capture.Chunk {
	pollOnce.Do(func() {
		cc, rec := criPeers(b, fakeRuntime{containers: 40})
		rt := runtimeapi.NewRuntimeServiceClient(cc)
		img := runtimeapi.NewImageServiceClient(cc)
		ctx := context.Background()
		state := &runtimeapi.ContainerFilter{State: &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING}}
		for round := range 200 {
			must := func(_ any, err error) {
				if err != nil {
					b.Fatal(err)
				}
			}
			must(rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{}))
			must(rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: state}))
			must(rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{}))
			for i := range 3 {
				must(rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: fmt.Sprintf("%064x", round*3+i)}))
			}
			if round%5 == 0 {
				must(rt.Status(ctx, &runtimeapi.StatusRequest{Verbose: true}))
				must(rt.Version(ctx, &runtimeapi.VersionRequest{}))
			}
			if round%10 == 0 {
				must(img.ImageFsInfo(ctx, &runtimeapi.ImageFsInfoRequest{}))
			}
			if round%30 == 0 {
				must(img.ListImages(ctx, &runtimeapi.ListImagesRequest{}))
			}
		}
		cc.Close()
		pollChunks = rec.take()
	})
	return pollChunks
}

// replay repeats one recorded connection as n connections, one after the
// other, to make a large capture without holding n copies of the bytes.
func replay(chunks []capture.Chunk, n int) ([]capture.Chunk, int64) {
	var out []capture.Chunk
	var size int64
	span := chunks[len(chunks)-1].Time.Sub(chunks[0].Time) + time.Second
	for i := range n {
		for _, c := range chunks {
			c.Conn = uint64(i + 1)
			c.Time = c.Time.Add(time.Duration(i) * span)
			size += int64(len(c.Data))
			out = append(out, c)
		}
	}
	return out, size
}

func BenchmarkDecode(b *testing.B) {
	one := kubeletPolling(b)
	chunks, size := replay(one, 8)
	benchChunks(b, chunks, size)
}

// BenchmarkDecodeKubelet replays the real kubelet capture (two
// connections, 245 calls) as 400 fresh connection pairs.
func BenchmarkDecodeKubelet(b *testing.B) {
	one := readPcap(b, kubeletPcap, 10010)
	// Renumber the two connections so that replays do not collide.
	for i := range one {
		one[i].Conn -= 40000
	}
	var chunks []capture.Chunk
	var size int64
	span := one[len(one)-1].Time.Sub(one[0].Time) + time.Second
	for r := range 400 {
		for _, c := range one {
			c.Conn += uint64(r) * 2
			c.Time = c.Time.Add(time.Duration(r) * span)
			size += int64(len(c.Data))
			chunks = append(chunks, c)
		}
	}
	benchChunks(b, chunks, size)
}

// benchChunks decodes chunks, with and without redaction, and without
// protobuf decoding to show what the layers below it cost.
func benchChunks(b *testing.B, chunks []capture.Chunk, size int64) {
	for _, bc := range []struct {
		name    string
		opts    Options
		noProto bool
	}{{"redact", Options{}, false}, {"noredact", Options{NoRedact: true}, false}, {"noproto", Options{}, true}} {
		b.Run(bc.name, func(b *testing.B) {
			var calls int
			bc.opts.OnCall = func(*Call) { calls++ }
			b.SetBytes(size)
			b.ReportAllocs()
			for b.Loop() {
				calls = 0
				d := New(bc.opts)
				d.noProto = bc.noProto
				for _, c := range chunks {
					d.Feed(c)
				}
				d.Close()
				if len(d.Errors()) > 0 {
					b.Fatal(d.Errors())
				}
			}
			b.ReportMetric(float64(calls), "calls/op")
			b.ReportMetric(float64(size)/float64(calls), "B/call")
		})
	}
}
