package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"

	"github.com/yuin/goldmark"
	"github.com/yuin/goldmark/extension"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestDiffMarkdownRendersAsText: diff --format md of two pods whose names
// hold Markdown (emphasis, a link, an image, HTML, strikethrough), recorded
// between real grpc-go peers, rendered by a GitHub-flavoured Markdown
// renderer (goldmark, tables and strikethrough on): the names show as
// text, and the page gets no markup but diff's own.
func TestDiffMarkdownRendersAsText(t *testing.T) {
	pods := []string{"my_pod_x *bold* ~~gone~~ &amp;", "[click](http://t.example/a) ![i](http://t.example/i.png) <img src=http://t.example/h>"}
	dir, upstream, _ := serveCRI(t)
	file := recordSession(t, dir, upstream, func(ctx context.Context, rt runtimeapi.RuntimeServiceClient, img runtimeapi.ImageServiceClient) {
		must := must(t)
		for i, name := range pods {
			cfg := &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "default", Uid: "u-" + name}}
			sb, err := rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
			must(sb, err)
			spec := &runtimeapi.ImageSpec{Image: "registry.local/my_org/app_" + string(rune('a'+i)) + ":1"}
			must(img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: spec}))
			ct, err := rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: sb.PodSandboxId, SandboxConfig: cfg,
				Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "c"}, Image: spec}})
			must(ct, err)
			must(rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: ct.ContainerId}))
		}
	})
	var md, stderr bytes.Buffer
	if err := run(context.Background(), []string{"diff", "--format", "md", file, "--pod", "default/" + pods[0], "--pod", "default/" + pods[1]}, &md, &stderr); err != nil {
		t.Fatalf("diff: %v\n%s", err, stderr.String())
	}
	var html bytes.Buffer
	if err := goldmark.New(goldmark.WithExtensions(extension.Table, extension.Strikethrough)).Convert(md.Bytes(), &html); err != nil {
		t.Fatal(err)
	}
	page := html.String()
	for _, tag := range []string{"<em>", "<a ", "<img", "<del>"} {
		if strings.Contains(page, tag) {
			t.Errorf("the rendered page holds %s from a pod's name:\n%s", tag, page)
		}
	}
	if n := strings.Count(page, "<strong>"); n != 4 { // A:, B:, Only in A, Only in B
		t.Errorf("%d <strong> in the page, want diff's own 4:\n%s", n, page)
	}
	text := regexp.MustCompile(`<[^>]*>`).ReplaceAllString(page, "")
	for _, name := range pods {
		want := strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(name)
		if !strings.Contains(text, want) {
			t.Errorf("the page does not show %q as text:\n%s", name, page)
		}
	}
	if t.Failed() {
		t.Logf("markdown:\n%s", md.String())
	}
}
