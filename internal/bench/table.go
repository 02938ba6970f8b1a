package main

import (
	"context"
	"io"
)

func runTable(ctx context.Context, args []string, stdout, stderr io.Writer) error { return nil }
func runCRIServer(ctx context.Context, args []string) error                       { return nil }
