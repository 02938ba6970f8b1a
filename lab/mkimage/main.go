// Command mkimage packs one static binary as a one-layer OCI image-layout
// tar that `ctr images import` and `skopeo copy oci-archive:` accept, so the
// lab needs no registry on the internet.
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"
)

func main() {
	bin := flag.String("bin", "", "static binary to put at /app")
	name := flag.String("name", "", "image name, e.g. 127.0.0.1:5000/criseq/app:1")
	out := flag.String("o", "", "output tar")
	flag.Parse()
	if *bin == "" || *name == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "usage: mkimage -bin FILE -name IMAGE -o OUT.tar")
		os.Exit(2)
	}
	if err := build(*bin, *name, *out); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

// Fixed times keep the image digest the same from run to run.
var epoch = time.Unix(0, 0).UTC()

func build(bin, name, out string) error {
	exe, err := os.ReadFile(bin)
	if err != nil {
		return err
	}
	var layerTar bytes.Buffer
	tw := tar.NewWriter(&layerTar)
	if err := tw.WriteHeader(&tar.Header{Name: "app", Mode: 0o755, Size: int64(len(exe)), ModTime: epoch, Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	if _, err := tw.Write(exe); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	var layerGz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&layerGz, gzip.BestSpeed)
	zw.Write(layerTar.Bytes())
	zw.Close()

	config, _ := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux", "created": epoch.Format(time.RFC3339),
		// The name in the config gives each image its own ID: kubelet 1.37
		// tracks pulls by image ID, and two names sharing one ID make it
		// re-pull the preloaded one.
		"config": map[string]any{"Entrypoint": []string{"/app"}, "Env": []string{"PATH=/", "CRISEQ_IMAGE=" + name}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{digest(layerTar.Bytes())}},
	})
	blobs := map[string][]byte{}
	desc := func(mt string, b []byte) map[string]any {
		d := digest(b)
		blobs[d] = b
		return map[string]any{"mediaType": mt, "digest": d, "size": len(b)}
	}
	manifest, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": desc("application/vnd.oci.image.config.v1+json", config),
		"layers": []any{desc("application/vnd.oci.image.layer.v1.tar+gzip", layerGz.Bytes())},
	})
	md := desc("application/vnd.oci.image.manifest.v1+json", manifest)
	md["annotations"] = map[string]string{"io.containerd.image.name": name, "org.opencontainers.image.ref.name": refName(name)}
	index, _ := json.Marshal(map[string]any{"schemaVersion": 2, "manifests": []any{md}})

	f, err := os.Create(out)
	if err != nil {
		return err
	}
	ow := tar.NewWriter(f)
	add := func(n string, b []byte) {
		ow.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(b)), ModTime: epoch, Typeflag: tar.TypeReg})
		ow.Write(b)
	}
	add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	add("index.json", index)
	for _, d := range []string{digest(config), digest(layerGz.Bytes()), md["digest"].(string)} {
		add("blobs/sha256/"+d[len("sha256:"):], blobs[d])
	}
	if err := ow.Close(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// refName is the tag part of an image name ("1" for "reg/app:1").
func refName(name string) string {
	for i := len(name) - 1; i >= 0 && name[i] != '/'; i-- {
		if name[i] == ':' {
			return name[i+1:]
		}
	}
	return "latest"
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}
