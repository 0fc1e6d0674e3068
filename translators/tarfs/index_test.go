package tarfs

import (
	"archive/tar"
	"bytes"
	"io"
	"testing"
)

// FuzzReadIndex: the index builder never panics on any input, and what it
// calls sound is inside the archive and reads as the tar reader reads it.
func FuzzReadIndex(f *testing.F) {
	for _, seed := range seeds() {
		f.Add(seed)
	}
	maxSparse = 1 << 20
	f.Fuzz(func(t *testing.T, data []byte) {
		idx, err := ReadIndex(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		for _, e := range idx.Entries {
			if e.Offset < 0 || e.Offset > int64(len(data)) {
				t.Fatalf("%s: offset %d outside %d bytes", e.Header.Name, e.Offset, len(data))
			}
			if isData(e.Header) && !e.Damaged && !isSparse(e.Header) && e.Offset+e.Header.Size > int64(len(data)) {
				t.Fatalf("%s: %d bytes at %d past the end (%d), not marked damaged", e.Header.Name, e.Header.Size, e.Offset, len(data))
			}
		}
	})
}

// seeds are archives the fuzzer starts from: plain members, PAX and GNU
// long names, links, a sparse file, and their truncations.
func seeds() [][]byte {
	var out [][]byte
	for _, format := range []tar.Format{tar.FormatUSTAR, tar.FormatPAX, tar.FormatGNU} {
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		long := string(bytes.Repeat([]byte("n"), 120))
		if format == tar.FormatUSTAR {
			long = "short"
		}
		tw.WriteHeader(&tar.Header{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o755, Format: format})
		tw.WriteHeader(&tar.Header{Name: "d/" + long, Typeflag: tar.TypeReg, Mode: 0o644, Size: 5, Format: format})
		tw.Write([]byte("hello"))
		tw.WriteHeader(&tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "d/" + long, Format: format})
		tw.WriteHeader(&tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "d/" + long, Format: format})
		tw.Close()
		out = append(out, b.Bytes(), b.Bytes()[:b.Len()/2], b.Bytes()[:700])
	}
	return out
}

func TestIndex(t *testing.T) {
	data := seeds()[3] // PAX, whole
	idx, err := ReadIndex(bytes.NewReader(data), int64(len(data)))
	if err != nil || idx.Err != nil || len(idx.Entries) != 4 {
		t.Fatalf("index: %v, %v, %d entries", err, idx.Err, len(idx.Entries))
	}
	e := idx.Entries[1]
	got, _ := io.ReadAll(io.NewSectionReader(bytes.NewReader(data), e.Offset, e.Header.Size))
	if string(got) != "hello" {
		t.Errorf("data at the indexed offset: %q", got)
	}
	if _, err := ReadIndex(bytes.NewReader([]byte("not a tar")), 9); err != ErrNotTar {
		t.Errorf("not a tar: %v", err)
	}
	if idx, err := ReadIndex(bytes.NewReader(nil), 0); err != nil || len(idx.Entries) != 0 {
		t.Errorf("empty: %v", err)
	}
}
