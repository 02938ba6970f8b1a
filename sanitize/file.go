package sanitize

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"

	"github.com/criseq/criseq/capture"
)

// ErrPartial marks a File whose input was damaged part way: the output holds
// what was read before the damage.
var ErrPartial = errors.New("the output holds what was read before the damage")

// File sanitizes the capture at in (pcap or pcapng, as capture.OpenFile
// reads them) into a pcapng file at out, created 0600 under a temporary
// name beside it and renamed into place once complete, so out is never half
// written and in may be out. Connections are written as criseq records
// them (capture.PcapngWriter): synthetic TCP flows 127.0.0.1:40000+N to
// 127.0.0.1:10010, whatever their addresses in the input.
//
// An input that cannot be opened, or an output that cannot be written,
// leaves no file. An input damaged part way gives an error wrapping
// ErrPartial and the input's error, with out written.
//
// in "-" is standard input (capture.Stdin).
func File(in, out string, opts Options) (Stats, error) {
	src, err := capture.OpenFile(in)
	if err != nil {
		return Stats{}, fmt.Errorf("sanitize: %w", err)
	}
	defer src.Close()
	if st, err := os.Stat(out); err == nil && !st.Mode().IsRegular() {
		return Stats{}, fmt.Errorf("sanitize: %s exists and is not a regular file", out)
	}
	tmp := filepath.Join(filepath.Dir(out), "."+filepath.Base(out)+"."+strconv.FormatUint(rand.Uint64(), 36)+".tmp")
	f, err := capture.CreateFile(tmp)
	if err != nil {
		return Stats{}, fmt.Errorf("sanitize: %w", err)
	}
	w := capture.NewPcapngWriter(f)
	st, err := Rewrite(src, w, opts)
	var readErr error
	var werr error
	var re *readError
	switch {
	case err == nil:
	case errors.As(err, &re):
		readErr = re.err
	default:
		werr = err
	}
	if cerr := w.Close(); werr == nil && cerr != nil {
		werr = fmt.Errorf("sanitize: writing %s: %w", out, cerr)
	}
	if werr == nil {
		if rerr := os.Rename(tmp, out); rerr != nil {
			werr = fmt.Errorf("sanitize: %w", rerr)
		}
	}
	if werr != nil {
		os.Remove(tmp)
		return st, werr
	}
	if readErr != nil {
		return st, fmt.Errorf("sanitize: %w; %w", readErr, ErrPartial)
	}
	return st, nil
}

// Stream sanitizes the capture at in ("-": standard input) into w as it
// goes, as File does into a file. w is not closed.
func Stream(in string, w io.Writer, opts Options) (Stats, error) {
	src, err := capture.OpenFile(in)
	if err != nil {
		return Stats{}, fmt.Errorf("sanitize: %w", err)
	}
	defer src.Close()
	pw := capture.NewPcapngWriter(struct{ io.Writer }{w}) // hides a Close
	st, err := Rewrite(src, pw, opts)
	var re *readError
	partial := errors.As(err, &re)
	if err != nil && !partial {
		return st, err
	}
	if ferr := pw.Close(); ferr != nil {
		return st, fmt.Errorf("sanitize: writing: %w", ferr)
	}
	if partial {
		return st, fmt.Errorf("sanitize: %w; %w", re.err, ErrPartial)
	}
	return st, nil
}
