package zipfs

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"io/fs"
	"time"
)

// scanLocal finds the members of a zip archive whose central directory
// is lost by walking the local headers from the start. Modes are not in
// local headers: files are 0644, directories 0755. A member cut by the end
// of the file is listed and gives EIO; the scan stops where no further
// header can be found and says why.
func scanLocal(r io.ReaderAt, size int64) ([]entry, error) {
	var out []entry
	for p := int64(0); ; {
		var h [30]byte
		if n, _ := r.ReadAt(h[:], p); n < 30 {
			return out, fmt.Errorf("ends at byte %d", size)
		}
		if binary.LittleEndian.Uint32(h[:]) != 0x04034b50 {
			return out, fmt.Errorf("no member header at byte %d", p)
		}
		le := binary.LittleEndian
		flags, method := le.Uint16(h[6:]), le.Uint16(h[8:])
		dosTime, dosDate := le.Uint16(h[10:]), le.Uint16(h[12:])
		crc, csize, usize := le.Uint32(h[14:]), int64(le.Uint32(h[18:])), int64(le.Uint32(h[22:]))
		nlen, xlen := int64(le.Uint16(h[26:])), int64(le.Uint16(h[28:]))
		nx := make([]byte, nlen+xlen)
		if n, _ := r.ReadAt(nx, p+30); int64(n) < nlen+xlen {
			return out, fmt.Errorf("ends inside a member header at byte %d", p)
		}
		name, extra := string(nx[:nlen]), nx[nlen:]
		if flags&8 != 0 {
			// Sizes follow the data (a streamed zip): the next header
			// cannot be found without inflating; stop here.
			return out, fmt.Errorf("member %s at byte %d has its sizes after its data", name, p)
		}
		data := p + 30 + nlen + xlen
		e := entry{name: name, extra: extra, mtime: localTime(dosDate, dosTime, extra), size: usize, mode: 0o644}
		if bytes.HasSuffix(nx[:nlen], []byte("/")) {
			e.mode = fs.ModeDir | 0o755
		}
		cut := data+csize > size
		e.open = func() (io.ReadCloser, error) {
			if cut {
				return nil, errors.New("cut by the end of the archive")
			}
			var rd io.Reader = io.NewSectionReader(r, data, csize)
			switch method {
			case 0:
			case 8:
				rd = flate.NewReader(rd)
			default:
				return nil, fmt.Errorf("compression method %d", method)
			}
			return &checked{r: rd, crc: crc, h: crc32.NewIEEE(), left: usize}, nil
		}
		out = append(out, e)
		if cut {
			return out, fmt.Errorf("ends inside member %s", name)
		}
		p = data + csize
	}
}

// localTime is the member's mtime: the "UT" extra field's, else the DOS
// date and time (local time, two-second steps).
func localTime(date, tm uint16, extra []byte) time.Time {
	for len(extra) >= 4 {
		tag, n := binary.LittleEndian.Uint16(extra), int(binary.LittleEndian.Uint16(extra[2:]))
		if 4+n > len(extra) {
			break
		}
		body := extra[4 : 4+n]
		extra = extra[4+n:]
		if tag == 0x5455 && len(body) >= 5 && body[0]&1 != 0 {
			return time.Unix(int64(int32(binary.LittleEndian.Uint32(body[1:]))), 0)
		}
	}
	return time.Date(1980+int(date>>9), time.Month(date>>5&0xf), int(date&0x1f),
		int(tm>>11), int(tm>>5&0x3f), int(tm&0x1f)*2, 0, time.Local)
}

// checked reads a member and checks its size and CRC at the end.
type checked struct {
	r    io.Reader
	crc  uint32
	h    hash.Hash32
	left int64
}

func (c *checked) Read(p []byte) (int, error) {
	if int64(len(p)) > c.left+1 {
		p = p[:c.left+1]
	}
	n, err := c.r.Read(p)
	c.h.Write(p[:n])
	c.left -= int64(n)
	switch {
	case c.left < 0:
		return n, errors.New("member longer than its header says")
	case err == io.EOF && (c.left != 0 || c.h.Sum32() != c.crc):
		return n, errors.New("member damaged (size or checksum)")
	case err == io.EOF:
		return n, io.EOF
	case err != nil:
		return n, err
	}
	return n, nil
}

func (c *checked) Close() error { return nil }
