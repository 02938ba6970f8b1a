package main

import (
	"context"
	_ "embed"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// demoCapture is a real capture of kubelet starting and stopping pods
// through criseq record (see testdata/demo/README.md).
//
//go:embed demo.pcapng
var demoCapture []byte

const demoUsage = `Usage: criseq demo [flags]

Draws the diagrams of a real capture bundled in criseq: kubelet starting and
stopping pods on containerd, recorded with criseq record. Needs no root and no
node; a quick way to see what criseq makes.

Examples:
  criseq demo                       # diagrams into ./out
  criseq demo -o /tmp/d --format svg
  criseq demo --save demo.pcapng    # also keep the capture, to try criseq calls on it
`

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("demo", demoUsage, stderr)
	var o renderOptions
	o.register(fs, "out")
	save := fs.String("save", "", "also write the bundled capture to this file")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return fmt.Errorf("%w: demo takes no arguments", errUsage)
	}
	path := *save
	if path == "" {
		dir, err := os.MkdirTemp("", "criseq-demo-")
		if err != nil {
			return fmt.Errorf("demo: %w", err)
		}
		defer os.RemoveAll(dir)
		path = filepath.Join(dir, "demo.pcapng")
	}
	if err := os.WriteFile(path, demoCapture, 0o600); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	return renderFile(path, o, stdout, stderr)
}
