package capture

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/criseq/criseq/internal/testpeer"
)

// A capture's notes are its section comments: read back by criseq, and
// shown by Wireshark's capinfos as the capture comment.
func TestNotesRoundTrip(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []Notes{{}, {NoListStreaming: true, Why: "kubelet v1.37.2, CRIListStreaming not set: off by default"}} {
		path := filepath.Join(dir, "notes.pcapng")
		f, err := CreateFile(path)
		if err != nil {
			t.Fatal(err)
		}
		w := NewPcapngWriterNotes(f, n)
		t0 := time.Unix(1700000000, 0)
		for _, c := range []Chunk{
			{Conn: 1, Kind: Open, Midway: true, Time: t0},
			{Conn: 1, Dir: ClientToServer, Kind: Data, Data: []byte("x"), Time: t0},
		} {
			if err := w.Write(c); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		src, err := OpenFile(path)
		if err != nil {
			t.Fatal(err)
		}
		got := NotesOf(src)
		src.Close()
		if got != n {
			t.Errorf("notes read back %+v, want %+v", got, n)
		}
		bin := testpeer.Need(t, "capinfos", "apt-get install tshark")
		out, err := exec.Command(bin, path).CombinedOutput()
		if err != nil {
			t.Fatalf("capinfos: %v\n%s", err, out)
		}
		if has := strings.Contains(string(out), "criseq: no list streaming: "+n.Why); has != n.NoListStreaming {
			t.Errorf("capinfos shows the note: %v, want %v:\n%s", has, n.NoListStreaming, out)
		}
	}
}
