package zzattr

import (
	"fmt"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/criseq/criseq/capture"
	"github.com/criseq/criseq/decode"
	"github.com/criseq/criseq/flow"
)

func trace(c *decode.Call) string {
	for _, h := range c.RequestHeaders {
		if h.Name == "traceparent" {
			return strings.Split(h.Value, "-")[1]
		}
	}
	return ""
}

func TestBurst(t *testing.T) {
	for _, f := range []string{"kubelet-burst", "kubelet-burst-containerd2"} {
		for _, ignore := range []bool{false, true} {
			src, err := capture.OpenFile("/tmp/burst/" + f + ".pcapng")
			if err != nil {
				t.Fatal(err)
			}
			var calls []*decode.Call
			g := flow.NewGrouper(flow.Options{IgnoreTraceparent: ignore})
			var flows []*flow.Flow
			d := decode.New(decode.Options{OnCall: func(c *decode.Call) { calls = append(calls, c); flows = append(flows, g.Add(c)...) }, OnStreamMessage: g.Event})
			for {
				c, err := src.Next()
				if err != nil {
					break
				}
				d.Feed(c)
			}
			d.Close()
			flows = append(flows, g.Flush()...)
			// truth: trace id -> pod from RunPodSandbox/Create/Start
			tracePod := map[string]string{}
			sbPod := map[string]string{}
			for _, c := range calls {
				if r, ok := c.Request().(*runtimeapi.RunPodSandboxRequest); ok {
					if resp, ok := c.Response().(*runtimeapi.RunPodSandboxResponse); ok {
						sbPod[resp.PodSandboxId] = r.Config.Metadata.Name
					}
					tracePod[trace(c)] = r.Config.Metadata.Name
				}
			}
			for _, c := range calls {
				if r, ok := c.Request().(*runtimeapi.CreateContainerRequest); ok {
					tracePod[trace(c)] = sbPod[r.PodSandboxId]
				}
			}
			in := map[*decode.Call][]string{}
			by := map[*decode.Call]string{}
			events := 0
			for _, fl := range flows {
				events += len(fl.Events)
				for _, s := range fl.Steps {
					if s.Method == "ImageStatus" || s.Method == "PullImage" {
						in[s.Call] = append(in[s.Call], fl.Pod.Name)
						by[s.Call] = s.Attr.By
					}
				}
			}
			counts := map[string]int{}
			wrong, missing := 0, 0
			for _, c := range calls {
				if c.Name != "ImageStatus" && c.Name != "PullImage" {
					continue
				}
				truth := tracePod[trace(c)]
				ok := false
				for _, p := range in[c] {
					ok = ok || p == truth
				}
				switch {
				case len(in[c]) == 0:
					missing++
				case !ok:
					wrong++
					fmt.Printf("WRONG %s %s truth %s in %v by %s\n", c.Name, c.Start.Format("05.000"), truth, in[c], by[c])
				default:
					counts[by[c]]++
				}
			}
			fmt.Printf("%s ignore=%v: flows %d events %d wrong %d missing %d %v\n", f, ignore, len(flows), events, wrong, missing, counts)
		}
	}
}

func TestEvents(t *testing.T) {
	src, _ := capture.OpenFile("/tmp/burst/kubelet-burst-containerd2.pcapng")
	g := flow.NewGrouper(flow.Options{})
	var flows []*flow.Flow
	all := map[string]int{}
	d := decode.New(decode.Options{OnCall: func(c *decode.Call) { flows = append(flows, g.Add(c)...) }, OnStreamMessage: func(c *decode.Call, m decode.Message) {
		ev := m.Proto.(*runtimeapi.ContainerEventResponse)
		all[ev.ContainerEventType.String()+" "+ev.ContainerId[:8]+" "+m.Time.Format("05.000")]++
		g.Event(c, m)
	}})
	for {
		c, err := src.Next()
		if err != nil {
			break
		}
		d.Feed(c)
	}
	d.Close()
	flows = append(flows, g.Flush()...)
	for _, f := range flows {
		for _, e := range f.Events {
			delete(all, e.Type+"_EVENT "+e.ContainerID[:8]+" "+e.Time.Format("05.000"))
		}
	}
	fmt.Println(all)
}
