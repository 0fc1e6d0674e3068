package tarfs

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Entry is one member of a tar archive as the index found it.
type Entry struct {
	Header *tar.Header
	// Offset is where the member's data starts in the archive. Data of
	// a regular file is the Header.Size bytes from there, unless Data is
	// set (sparse members, whose holes the tar reader fills in).
	Offset int64
	Data   []byte
	// Damaged: the archive ends (or breaks) inside this member's data.
	// Its name and attributes are known, its contents are not: reads give
	// EIO.
	Damaged bool
}

// Index is what ReadIndex found: the members up to the end of the archive
// or up to damage it could not get past.
type Index struct {
	Entries []Entry
	// Err describes the damage (a bad header, a truncated archive), nil
	// for a sound archive. Entries before it, and after it where a later
	// header could be found again, are still listed.
	Err error
}

// maxSparse bounds the size of a sparse member, which the index expands in
// memory: a header can claim any size.
var maxSparse int64 = 256 << 20

// ErrNotTar says the data does not start with a tar header.
var ErrNotTar = errors.New("not a tar archive")

// ReadIndex lists the members of the uncompressed tar archive in r (size
// bytes) without reading their data: it reads each header, notes where the
// data starts and seeks past it, so a big archive costs one read per
// member. An empty input is an empty archive. A corrupt header makes it
// look for the next valid header (as GNU tar's "skipping to next header"),
// a truncated archive marks the member it cuts as damaged.
func ReadIndex(r io.ReaderAt, size int64) (*Index, error) {
	idx := &Index{}
	if size == 0 {
		return idx, nil
	}
	var first [blockSize]byte
	if n, _ := r.ReadAt(first[:], 0); n < blockSize || !(isZero(first[:]) || validHeader(first[:])) {
		return nil, ErrNotTar
	}
	for base := int64(0); base < size; {
		next, err := idx.scan(r, base, size)
		if err == nil {
			break
		}
		if idx.Err == nil {
			idx.Err = err
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			break // nothing beyond the end to resynchronize to
		}
		// Look for the next block that is a valid header.
		next = max(next, base+blockSize)
		base = -1
		for p := next; p+blockSize <= size; p += blockSize {
			var b [blockSize]byte
			if n, _ := r.ReadAt(b[:], p); n == blockSize && validHeader(b[:]) {
				base = p
				break
			}
		}
		if base < 0 {
			break
		}
	}
	return idx, nil
}

// scan reads members from base until the end of the archive (nil) or an
// error, returning the block-aligned position to search on from.
func (idx *Index) scan(r io.ReaderAt, base, size int64) (int64, error) {
	sr := io.NewSectionReader(r, base, size-base)
	tr := tar.NewReader(sr)
	for {
		hdr, err := tr.Next()
		pos, _ := sr.Seek(0, io.SeekCurrent)
		if err == io.EOF {
			return 0, nil
		}
		if err != nil {
			at := base + pos
			if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
				return at, fmt.Errorf("truncated at byte %d: %w", size, io.ErrUnexpectedEOF)
			}
			return (at + blockSize - 1) / blockSize * blockSize, fmt.Errorf("bad header before byte %d: %v", at, err)
		}
		e := Entry{Header: hdr, Offset: base + pos}
		if isSparse(hdr) {
			if hdr.Size > maxSparse {
				e.Damaged = true
			} else if e.Data, err = io.ReadAll(tr); err != nil {
				e.Data, e.Damaged = nil, true
			}
		} else if isData(hdr) && e.Offset+hdr.Size > size {
			e.Damaged = true
		}
		idx.Entries = append(idx.Entries, e)
		if e.Damaged && !isSparse(hdr) {
			return size, fmt.Errorf("truncated at byte %d, inside %s: %w", size, hdr.Name, io.ErrUnexpectedEOF)
		}
	}
}

// isData says the member's Size bytes of data follow its header.
func isData(h *tar.Header) bool {
	return h.Typeflag == tar.TypeReg || h.Typeflag == '\x00' || h.Typeflag == tar.TypeCont
}

// isSparse: GNU sparse members (old GNU 'S' type, or PAX GNU.sparse
// records), whose data in the archive is not the file's bytes.
func isSparse(h *tar.Header) bool {
	if h.Typeflag == tar.TypeGNUSparse {
		return true
	}
	for k := range h.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}

const blockSize = 512

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// validHeader checks a header block's checksum (field at 148..156, octal,
// computed with the field as spaces; unsigned or, as old tars did, signed
// bytes).
func validHeader(b []byte) bool {
	if len(b) < blockSize || isZero(b) {
		return false
	}
	field := strings.TrimRight(strings.TrimLeft(string(b[148:156]), " \x00"), " \x00")
	var want int64
	if field == "" {
		return false
	}
	for _, c := range field {
		if c < '0' || c > '7' {
			return false
		}
		want = want*8 + int64(c-'0')
	}
	var u, s int64
	for i, c := range b[:blockSize] {
		if i >= 148 && i < 156 {
			c = ' '
		}
		u += int64(c)
		s += int64(int8(c))
	}
	return want == u || want == s
}
