package capture

import "strings"

// Notes is what a capture says of itself beyond its packets, kept as
// comments of its pcapng section header (shown by Wireshark's capture
// file properties).
type Notes struct {
	// NoListStreaming: the clients recorded never call KEP-5825's Stream*
	// list methods (kubelet's CRIListStreaming gate is off), so calls
	// caught midway that read as StreamContainers or ListContainers are
	// ListContainers. Why says how that was found.
	NoListStreaming bool
	Why             string
}

// noListStreamingNote starts the comment that says NoListStreaming.
const noListStreamingNote = "criseq: no list streaming: "

// comments are the section comments that say n.
func (n Notes) comments() []string {
	if !n.NoListStreaming {
		return nil
	}
	return []string{noListStreamingNote + n.Why}
}

// notesOf reads Notes from section comments.
func notesOf(comments []string) Notes {
	var n Notes
	for _, c := range comments {
		for line := range strings.Lines(c) {
			if why, ok := strings.CutPrefix(strings.TrimRight(line, "\n"), noListStreamingNote); ok {
				n.NoListStreaming, n.Why = true, why
			}
		}
	}
	return n
}

// Noted is a Source that carries Notes: the files OpenFile reads.
type Noted interface {
	Notes() Notes
}

// Notes returns what the file's first section says of the capture.
func (s *fileSource) Notes() Notes { return notesOf(s.pr.comments) }

// NotesOf returns src's Notes, if it has any.
func NotesOf(src Source) Notes {
	if n, ok := src.(Noted); ok {
		return n.Notes()
	}
	return Notes{}
}
