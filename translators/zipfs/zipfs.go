// Package zipfs is the zipfs translator: a zip archive served as a
// read-only directory tree. Members are decompressed when read (stored ones
// are read in place); a member whose data is corrupt (a bad checksum, a
// broken deflate stream, data past the end of a truncated file) gives EIO,
// and the rest of the tree is served.
package zipfs

import (
	"archive/zip"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"sync"
	"syscall"
	"time"

	"herd/proto"
	"herd/translators/kit"
)

// Translator is zipfs, for kit.Main.
func Translator() kit.Translator {
	return kit.Translator{
		Name: "zipfs",
		Args: "[ARCHIVE]",
		Doc: "Serves the zip archive ARCHIVE as a read-only directory. Without ARCHIVE it serves the node it\n" +
			"sits on (settrans -p x.zip zipfs).",
		FileSystem: func(args []string) (proto.FileSystem, error) {
			var f *os.File
			switch {
			case len(args) > 1:
				return nil, kit.Usagef("one ARCHIVE only")
			case len(args) == 1:
				var err error
				if f, err = os.Open(args[0]); err != nil {
					return nil, err
				}
			case kit.Underlying() != nil:
				f = kit.Underlying()
			default:
				return nil, kit.Usagef("no ARCHIVE, and no node beneath to read it from")
			}
			mem, err := Load(f, func(format string, args ...any) {
				fmt.Fprintf(os.Stderr, "zipfs: "+format+"\n", args...)
			})
			if err != nil {
				return nil, err
			}
			return ReadOnly(kit.NewFS(mem.Root())), nil
		},
	}
}

// Load reads the zip archive f's directory into a MemFS whose files read
// their data from f when read. logf is told about members left out.
func Load(f *os.File, logf func(string, ...any)) (*kit.MemFS, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", f.Name())
	}
	var members []entry
	zr, err := zip.NewReader(f, fi.Size())
	switch {
	case err == nil:
		for _, zf := range zr.File {
			members = append(members, entry{name: zf.Name, mode: zf.Mode(), extra: zf.Extra,
				mtime: zf.Modified, size: int64(zf.UncompressedSize64), open: zf.Open})
		}
	case errors.Is(err, zip.ErrFormat):
		// No central directory (a truncated archive): the members can
		// still be found from the front, as zip -FF does.
		var damage error
		members, damage = scanLocal(f, fi.Size())
		if len(members) == 0 {
			return nil, fmt.Errorf("%s: not a zip archive", f.Name())
		}
		logf("%s: the central directory is lost (%v): serving the %d members found from the front, without their modes", f.Name(), damage, len(members))
	default:
		return nil, fmt.Errorf("%s: %v", f.Name(), err)
	}
	mem := kit.NewMemFSOwned(kit.MemOptions{})
	uid, gid := uint32(os.Geteuid()), uint32(os.Getegid())
	type dirTimes struct {
		n *kit.MemNode
		e *entry
	}
	var later []dirTimes
	for i := range members {
		zf := &members[i]
		name := path.Clean("/" + zf.name)[1:]
		if strings.Contains("/"+zf.name+"/", "/../") {
			logf("skipping %q: it names a place outside the archive", zf.name)
			continue
		}
		if name == "" {
			continue
		}
		parent, err := mem.Root().MkdirAll(path.Dir(name), kit.Attrs{Mode: 0o755, Uid: uid, Gid: gid})
		if err != nil {
			logf("skipping %s: a parent is not a directory", name)
			continue
		}
		base := path.Base(name)
		mode := zf.mode
		a := kit.Attrs{Mode: uint32(mode.Perm()), Uid: uid, Gid: gid, Mtime: zf.mtime}
		if mode&fs.ModeSetuid != 0 {
			a.Mode |= syscall.S_ISUID
		}
		if mode&fs.ModeSetgid != 0 {
			a.Mode |= syscall.S_ISGID
		}
		if mode&fs.ModeSticky != 0 {
			a.Mode |= syscall.S_ISVTX
		}
		if u, g, ok := unixOwner(zf.extra); ok {
			a.Uid, a.Gid = u, g
		}
		if old := parent.Child(base); old != nil {
			if old.Attr().Mode&syscall.S_IFMT == syscall.S_IFDIR {
				if mode.IsDir() {
					later = append(later, dirTimes{old, zf})
				}
				continue
			}
			parent.Unlink(context.Background(), base)
		}
		switch {
		case mode.IsDir():
			var d *kit.MemNode
			if d, err = parent.AddDir(base, a); err == nil {
				later = append(later, dirTimes{d, zf})
			}
		case mode&fs.ModeSymlink != 0:
			target, rerr := readAll(zf)
			if rerr != nil {
				logf("skipping symlink %s: %v", name, rerr)
				continue
			}
			_, err = parent.AddSymlink(base, string(target), a)
		default:
			_, err = parent.AddLazyFile(base, &deflated{e: zf}, zf.size, a)
		}
		if err != nil {
			logf("skipping %s: %v", name, err)
		}
	}
	for _, d := range later {
		var out proto.Attr
		d.n.Setattr(context.Background(), nil, proto.SetAttrIn{Valid: proto.SetAttrMtime, Mtime: proto.Timespec{Sec: d.e.mtime.Unix()}}, &out)
	}
	return mem, nil
}

// unixOwner reads the uid and gid Info-ZIP's zip stores in its "ux" extra
// field (0x7875: version 1, then size-prefixed little-endian ids).
func unixOwner(extra []byte) (uid, gid uint32, ok bool) {
	for len(extra) >= 4 {
		tag, size := binary.LittleEndian.Uint16(extra), int(binary.LittleEndian.Uint16(extra[2:]))
		if 4+size > len(extra) {
			return 0, 0, false
		}
		body := extra[4 : 4+size]
		extra = extra[4+size:]
		if tag != 0x7875 || len(body) < 2 || body[0] != 1 {
			continue
		}
		id := func(b []byte) (uint32, []byte, bool) {
			if len(b) < 1 || len(b) < 1+int(b[0]) || b[0] > 8 {
				return 0, nil, false
			}
			var v uint64
			for i := int(b[0]); i >= 1; i-- {
				v = v<<8 | uint64(b[i])
			}
			return uint32(v), b[1+int(b[0]):], true
		}
		u, rest, ok1 := id(body[1:])
		g, _, ok2 := id(rest)
		if ok1 && ok2 {
			return u, g, true
		}
	}
	return 0, 0, false
}

// entry is a member: from the central directory, or found by scanning.
type entry struct {
	name  string
	mode  fs.FileMode
	extra []byte
	mtime time.Time
	size  int64
	open  func() (io.ReadCloser, error) // inflates and checks the CRC
}

func readAll(zf *entry) ([]byte, error) {
	if zf.size > 4096 {
		return nil, errors.New("too long for a symlink")
	}
	rc, err := zf.open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// deflated is a member's data as an io.ReaderAt: one reader (inflating,
// and checking the CRC at the end) that reads on from where the last read
// stopped, as the kernel reads files front to back, and starts again for a
// read behind it.
type deflated struct {
	e   *entry
	mu  sync.Mutex
	rc  io.ReadCloser
	pos int64
}

func (d *deflated) ReadAt(p []byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	size := d.e.size
	if off >= size {
		return 0, io.EOF
	}
	if d.rc == nil || off < d.pos {
		if d.rc != nil {
			d.rc.Close()
		}
		rc, err := d.e.open()
		if err != nil {
			d.rc = nil
			return 0, syscall.EIO
		}
		d.rc, d.pos = rc, 0
	}
	if off > d.pos {
		k, err := io.CopyN(io.Discard, d.rc, off-d.pos)
		d.pos += k
		if err != nil {
			return d.fail()
		}
	}
	n, err := io.ReadFull(d.rc, p[:min(int64(len(p)), size-off)])
	d.pos += int64(n)
	if err != nil {
		return d.fail()
	}
	if d.pos == size {
		// The end: the reader checks the CRC when asked for more.
		if k, err := io.CopyN(io.Discard, d.rc, 1); k != 0 || err != io.EOF {
			return d.fail()
		}
		d.rc.Close()
		d.rc = nil
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (d *deflated) fail() (int, error) {
	if d.rc != nil {
		d.rc.Close()
		d.rc = nil
	}
	return 0, syscall.EIO
}
