package tarfs

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"herd/proto"
	"herd/translators/kit"
)

// Archive is a tar archive served as a kit.MemFS. Members' data stays in
// the archive (or, for a compressed one, in an unlinked temporary file
// holding the decompressed tar) and is read when a file is read; a file
// is copied into memory only when it is changed. Sync writes the tree back
// as a new archive.
//
// Locking: syncMu serializes Sync. mu guards where lazy members' data lives
// (store and each lazy's file and offset): readers hold it for reading
// while they read, Sync for writing while it points them at the new
// archive. Sync reads the tree (MemFS's own lock) without holding mu.
type Archive struct {
	Mem  *kit.MemFS
	path string   // the archive's name; "" when it came as a descriptor
	file *os.File // the archive as given (a descriptor is rewritten in place)
	comp Compression
	logf func(format string, args ...any)

	dotSlash       bool // members were named ./x: write them back so
	unames, gnames map[uint32]string

	mu     sync.RWMutex
	store  *os.File // the uncompressed tar lazy members read from
	old    []*os.File
	lazies map[*kit.MemNode]*lazy

	syncMu  sync.Mutex
	written uint64 // the MemFS generation the archive holds
}

// Options say where the archive is.
type Options struct {
	Path string   // the archive's file name, written back by rename
	File *os.File // or the archive as an open file, rewritten in place
	// Compression: Auto tells it from the data (an empty archive is
	// written uncompressed); another value insists on it.
	Compression Compression
	Logf        func(format string, args ...any) // damage reports; nil: quiet
}

// Open reads the archive's index and builds the tree. A damaged archive is
// not an error: the members before the damage are served, damaged ones
// give EIO, and Logf says what was wrong. A file that is not an archive is.
func Open(opts Options) (*Archive, error) {
	a := &Archive{path: opts.Path, file: opts.File, comp: opts.Compression, logf: opts.Logf,
		unames: map[uint32]string{}, gnames: map[uint32]string{}, lazies: map[*kit.MemNode]*lazy{}}
	if a.logf == nil {
		a.logf = func(string, ...any) {}
	}
	name := opts.Path
	if a.file == nil {
		f, err := os.Open(opts.Path)
		if err != nil {
			return nil, err
		}
		a.file = f
	} else if name == "" {
		name = a.file.Name()
	}
	fi, err := a.file.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", name)
	}
	head := make([]byte, 8)
	n, _ := a.file.ReadAt(head, 0)
	found, err := detect(head[:n])
	if err != nil {
		return nil, fmt.Errorf("%s: %v", name, err)
	}
	if fi.Size() > 0 {
		if a.comp != Auto && a.comp != found {
			return nil, fmt.Errorf("%s: not %s-compressed (leave out -z/-j/-J to tell from the data)", name, a.comp)
		}
		a.comp = found
	} else if a.comp == Auto {
		a.comp = None
	}
	if a.comp == None {
		a.store = a.file
	} else {
		if a.store, err = tempFile(""); err != nil {
			return nil, err
		}
		if err := decompress(a.comp, io.NewSectionReader(a.file, 0, fi.Size()), a.store); err != nil {
			a.logf("%s: %v: members past the damage are lost", name, err)
		}
		if a.path != "" { // read from the copy from now on; write back by name
			a.file.Close()
			a.file = nil
		}
	}
	size, err := a.store.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, err
	}
	idx, err := ReadIndex(a.store, size)
	if err != nil {
		if errors.Is(err, ErrNotTar) && a.comp != None {
			err = fmt.Errorf("%s-compressed but not a tar archive inside", a.comp)
		}
		a.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if idx.Err != nil {
		a.logf("%s: %v: damaged members give EIO", name, idx.Err)
	}
	a.Mem = kit.NewMemFSOwned(kit.MemOptions{})
	a.load(idx)
	a.written = a.Mem.Generation()
	return a, nil
}

// Close lets go of the archive's files.
func (a *Archive) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, f := range append(a.old, a.store) {
		if f != nil && f != a.file {
			f.Close()
		}
	}
	if a.path != "" && a.file != nil {
		a.file.Close()
	}
	a.old, a.store = nil, nil
	return nil
}

// tempFile makes an unlinked temporary file in dir ("" = $TMPDIR).
func tempFile(dir string) (*os.File, error) {
	f, err := os.CreateTemp(dir, "tarfs-*")
	if err != nil {
		return nil, err
	}
	os.Remove(f.Name())
	return f, nil
}

// cleanName turns a member name into a path relative to the root ("" for
// the root itself), refusing names that climb out of it.
func cleanName(name string) (string, bool) {
	p := path.Clean("/" + name)[1:]
	return p, !strings.HasPrefix(name, "../") && name != ".." && !strings.Contains(name, "/../") && !strings.HasSuffix(name, "/..")
}

// lazy is a member's data, read from the archive when the file is read.
type lazy struct {
	a   *Archive
	f   *os.File
	off int64
}

func (l *lazy) ReadAt(p []byte, off int64) (int, error) {
	l.a.mu.RLock()
	defer l.a.mu.RUnlock()
	return l.f.ReadAt(p, l.off+off)
}

// damaged is the data of a member the archive lost.
type damaged struct{}

func (damaged) ReadAt([]byte, int64) (int, error) { return 0, syscall.EIO }

// load builds the tree from the index, as tar x would: parents a member
// implies are made, a later member of the same name replaces an earlier
// one, and directories get their own times last (adding children changes
// them).
func (a *Archive) load(idx *Index) {
	ctx := context.Background()
	root := a.Mem.Root()
	uid, gid := uint32(os.Geteuid()), uint32(os.Getegid())
	nodes := map[string]*kit.MemNode{}
	type dirAttrs struct {
		n *kit.MemNode
		h *tar.Header
	}
	var later []dirAttrs
	for i, e := range idx.Entries {
		h := e.Header
		name, ok := cleanName(h.Name)
		if !ok {
			a.logf("skipping %q: it names a place outside the archive", h.Name)
			continue
		}
		if i == 0 {
			a.dotSlash = strings.HasPrefix(h.Name, "./")
		}
		a.unames[uint32(h.Uid)], a.gnames[uint32(h.Gid)] = h.Uname, h.Gname
		if name == "" {
			if h.Typeflag == tar.TypeDir {
				later = append(later, dirAttrs{root, h})
			}
			continue
		}
		parent, err := root.MkdirAll(path.Dir(name), kit.Attrs{Mode: 0o755, Uid: uid, Gid: gid})
		if err != nil {
			a.logf("skipping %s: a parent is not a directory", name)
			continue
		}
		base := path.Base(name)
		if old := parent.Child(base); old != nil {
			isDir := old.Attr().Mode&syscall.S_IFMT == syscall.S_IFDIR
			switch {
			case isDir && h.Typeflag == tar.TypeDir:
				later = append(later, dirAttrs{old, h})
				continue
			case isDir:
				a.logf("skipping %s: a directory of that name came first", name)
				continue
			}
			parent.Unlink(ctx, base)
		}
		attrs := kit.Attrs{Mode: uint32(h.Mode) & 0o7777, Uid: uint32(h.Uid), Gid: uint32(h.Gid),
			Mtime: h.ModTime, Atime: h.AccessTime, Ctime: h.ChangeTime}
		if attrs.Ctime.IsZero() {
			attrs.Ctime = h.ModTime
		}
		var n *kit.MemNode
		switch h.Typeflag {
		case tar.TypeDir:
			n, err = parent.AddDir(base, attrs)
			if err == nil {
				later = append(later, dirAttrs{n, h})
			}
		case tar.TypeReg, '\x00', tar.TypeCont, tar.TypeGNUSparse:
			switch {
			case e.Damaged:
				n, err = parent.AddLazyFile(base, damaged{}, h.Size, attrs)
			case isSparse(h):
				n, err = parent.AddFile(base, e.Data, attrs)
			default:
				l := &lazy{a: a, f: a.store, off: e.Offset}
				if n, err = parent.AddLazyFile(base, l, h.Size, attrs); err == nil {
					a.lazies[n] = l
				}
			}
		case tar.TypeSymlink:
			n, err = parent.AddSymlink(base, h.Linkname, attrs)
		case tar.TypeLink:
			target, _ := cleanName(h.Linkname)
			if n = nodes[target]; n == nil || n.Attr().Mode&syscall.S_IFMT == syscall.S_IFDIR {
				a.logf("skipping %s: hard link to %s, which is not an earlier file", name, h.Linkname)
				continue
			}
			err = parent.AddLink(base, n)
		case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
			mode := map[byte]uint32{tar.TypeChar: syscall.S_IFCHR, tar.TypeBlock: syscall.S_IFBLK, tar.TypeFifo: syscall.S_IFIFO}[h.Typeflag]
			attrs.Rdev = unix.Mkdev(uint32(h.Devmajor), uint32(h.Devminor))
			n, err = parent.AddNode(base, mode, attrs)
		default:
			a.logf("skipping %s: member type %q is not a file", name, h.Typeflag)
			continue
		}
		if err != nil {
			a.logf("skipping %s: %v", name, err)
			continue
		}
		nodes[name] = n
		if x := xattrs(h); x != nil {
			n.SetXattrs(x)
		}
	}
	for _, d := range later {
		h := d.h
		in := proto.SetAttrIn{Valid: proto.SetAttrMode | proto.SetAttrMtime, Mode: uint32(h.Mode) & 0o7777, Mtime: ts(h.ModTime)}
		if d.n != root { // the root stays the translator's, so its user can write in it
			in.Valid |= proto.SetAttrUid | proto.SetAttrGid
			in.Uid, in.Gid = uint32(h.Uid), uint32(h.Gid)
		}
		if !h.AccessTime.IsZero() {
			in.Valid |= proto.SetAttrAtime
			in.Atime = ts(h.AccessTime)
		}
		var out proto.Attr
		d.n.Setattr(ctx, nil, in, &out)
	}
}

const xattrPrefix = "SCHILY.xattr."

func xattrs(h *tar.Header) map[string][]byte {
	var x map[string][]byte
	for k, v := range h.PAXRecords {
		if name, ok := strings.CutPrefix(k, xattrPrefix); ok {
			if x == nil {
				x = map[string][]byte{}
			}
			x[name] = []byte(v)
		}
	}
	return x
}

func ts(t time.Time) proto.Timespec {
	return proto.Timespec{Sec: t.Unix(), Nsec: uint32(t.Nanosecond())}
}

// Sync writes the tree back if it changed since it was read or last
// written: a new tar is written to a temporary file (beside the archive
// when it has a name and is not compressed, so a rename puts it in place);
// a compressed archive is compressed from it. A named archive is replaced
// by rename, so readers see the old or the new one; a descriptor (the
// node beneath, fd 4) is rewritten in place. Unchanged members then read
// from the new tar, and the old one is let go.
func (a *Archive) Sync() error {
	a.syncMu.Lock()
	defer a.syncMu.Unlock()
	gen := a.Mem.Generation()
	if gen == a.written {
		return nil
	}
	name := a.path
	if name == "" {
		name = a.file.Name()
	}
	renameStore := a.path != "" && a.comp == None
	var t *os.File
	var err error
	if renameStore {
		t, err = os.CreateTemp(filepath.Dir(a.path), "."+filepath.Base(a.path)+".tarfs-*")
	} else {
		t, err = tempFile("")
	}
	if err != nil {
		return fmt.Errorf("write back %s: %v", name, err)
	}
	fail := func(err error) error {
		if renameStore {
			os.Remove(t.Name())
		}
		t.Close()
		return fmt.Errorf("write back %s: %v (the archive is unchanged)", name, err)
	}
	offsets, err := a.writeTar(t)
	if err != nil {
		return fail(err)
	}
	size, err := t.Seek(0, io.SeekCurrent)
	if err != nil {
		return fail(err)
	}
	switch {
	case renameStore:
		if err := a.replace(t); err != nil {
			return fail(err)
		}
	case a.path != "":
		out, err := os.CreateTemp(filepath.Dir(a.path), "."+filepath.Base(a.path)+".tarfs-*")
		if err != nil {
			return fail(err)
		}
		bw := bufio.NewWriterSize(out, 1<<20)
		err = compress(a.comp, io.NewSectionReader(t, 0, size), bw)
		if err == nil {
			err = bw.Flush()
		}
		if err != nil {
			out.Close()
			os.Remove(out.Name())
			return fail(err)
		}
		err = a.replace(out)
		out.Close()
		if err != nil {
			os.Remove(out.Name())
			return fail(err)
		}
	default:
		if fl, err := unix.FcntlInt(a.file.Fd(), unix.F_GETFL, 0); err == nil && fl&unix.O_ACCMODE == unix.O_RDONLY {
			t.Close()
			return fmt.Errorf("write back %s: the archive was handed over read-only, so changes cannot be written back", name)
		}
		// In place: members may be reading from this very file, so they
		// wait until it is rewritten and they are pointed at t.
		a.mu.Lock()
		ow := &offsetWriter{f: a.file}
		bw := bufio.NewWriterSize(ow, 1<<20)
		err := compress(a.comp, io.NewSectionReader(t, 0, size), bw)
		if err == nil {
			err = bw.Flush()
		}
		if err == nil {
			err = a.file.Truncate(ow.off)
		}
		if err == nil {
			err = a.file.Sync()
		}
		if err != nil {
			a.mu.Unlock()
			t.Close()
			return fmt.Errorf("rewrite %s in place: %v (it may be damaged: the tree is still served; sync again)", name, err)
		}
	}
	if a.path != "" {
		a.mu.Lock()
	}
	for n, l := range a.lazies {
		if off, ok := offsets[n]; ok {
			l.f, l.off = t, off
		}
	}
	a.old = append(a.old, a.store)
	a.store = t
	// Files no member reads from any more (an unlinked member still open
	// keeps its old file) can go.
	keep := a.old[:0]
	for _, f := range a.old {
		used := false
		for _, l := range a.lazies {
			if l.f == f {
				used = true
				break
			}
		}
		switch {
		case used || (f == a.file && a.path == ""): // fd 4 is not ours to close
			keep = append(keep, f)
		case f == a.file:
			f.Close() // the replaced archive: its space goes back now
			a.file = nil
		default:
			f.Close()
		}
	}
	a.old = keep
	a.mu.Unlock()
	a.written = gen
	return nil
}

// replace puts the file out (a temporary file beside the archive) in the
// archive's place, with the archive's permissions and, when allowed, owner.
func (a *Archive) replace(out *os.File) error {
	if fi, err := os.Stat(a.path); err == nil {
		out.Chmod(fi.Mode().Perm())
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && (st.Uid != uint32(os.Geteuid()) || st.Gid != uint32(os.Getegid())) {
			out.Chown(int(st.Uid), int(st.Gid))
		}
	}
	if err := out.Sync(); err != nil {
		return err
	}
	return os.Rename(out.Name(), a.path)
}

type offsetWriter struct {
	f   *os.File
	off int64
}

func (w *offsetWriter) Write(p []byte) (int, error) {
	n, err := w.f.WriteAt(p, w.off)
	w.off += int64(n)
	return n, err
}

type countWriter struct {
	w io.Writer
	n int64
}

func (w *countWriter) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	w.n += int64(n)
	return n, err
}

// writeTar writes the tree to w as a tar archive and returns where each
// regular file's data went.
func (a *Archive) writeTar(w io.Writer) (map[*kit.MemNode]int64, error) {
	ctx := context.Background()
	bw := bufio.NewWriterSize(w, 1<<20)
	cw := &countWriter{w: bw}
	tw := tar.NewWriter(cw)
	offsets := map[*kit.MemNode]int64{}
	first := map[*kit.MemNode]string{}
	prefix := ""
	if a.dotSlash {
		prefix = "./"
	}
	buf := make([]byte, 1<<20)
	err := a.Mem.Root().Walk(func(p string, n *kit.MemNode) error {
		attr := n.Attr()
		name := prefix + p
		if p == "." {
			if !a.dotSlash {
				return nil
			}
			name = "."
		}
		h := &tar.Header{Name: name, Mode: int64(attr.Mode & 0o7777), Uid: int(attr.Uid), Gid: int(attr.Gid),
			Uname: a.uname(attr.Uid), Gname: a.gname(attr.Gid),
			ModTime: time.Unix(attr.Mtime.Sec, 0)} // whole seconds, as tar shows them
		switch attr.Mode & syscall.S_IFMT {
		case syscall.S_IFDIR:
			h.Typeflag, h.Name = tar.TypeDir, name+"/"
		case syscall.S_IFREG:
			if f, ok := first[n]; ok {
				h.Typeflag, h.Linkname = tar.TypeLink, f
				break
			}
			if attr.Nlink > 1 {
				first[n] = name
			}
			h.Typeflag, h.Size = tar.TypeReg, int64(attr.Size)
		case syscall.S_IFLNK:
			h.Typeflag, h.Linkname = tar.TypeSymlink, n.Target()
		case syscall.S_IFCHR, syscall.S_IFBLK:
			h.Typeflag = tar.TypeChar
			if attr.Mode&syscall.S_IFMT == syscall.S_IFBLK {
				h.Typeflag = tar.TypeBlock
			}
			h.Devmajor, h.Devminor = int64(unix.Major(attr.Rdev)), int64(unix.Minor(attr.Rdev))
		case syscall.S_IFIFO:
			h.Typeflag = tar.TypeFifo
		default:
			return nil // sockets: tar leaves them out too
		}
		for k, v := range n.Xattrs() {
			if h.PAXRecords == nil {
				h.PAXRecords = map[string]string{}
			}
			h.PAXRecords[xattrPrefix+k] = string(v)
		}
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("%s: %v", name, err)
		}
		if h.Typeflag != tar.TypeReg {
			return nil
		}
		offsets[n] = cw.n // WriteHeader wrote the header through
		for off := int64(0); off < h.Size; {
			k := int(min(int64(len(buf)), h.Size-off))
			data, errno := n.Read(ctx, nil, off, k)
			if errno != 0 {
				return fmt.Errorf("%s: %v (a damaged member: remove it, or restore it, to write the archive back)", name, errno)
			}
			if len(data) == 0 { // shrunk while being written: the next sync writes it again
				data = buf[:k]
				clear(data)
			}
			if _, err := tw.Write(data); err != nil {
				return fmt.Errorf("%s: %v", name, err)
			}
			off += int64(len(data))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return offsets, bw.Flush()
}

func (a *Archive) uname(uid uint32) string {
	if n, ok := a.unames[uid]; ok {
		return n
	}
	if u, err := user.LookupId(strconv.Itoa(int(uid))); err == nil {
		a.unames[uid] = u.Username
		return u.Username
	}
	a.unames[uid] = ""
	return ""
}

func (a *Archive) gname(gid uint32) string {
	if n, ok := a.gnames[gid]; ok {
		return n
	}
	if g, err := user.LookupGroupId(strconv.Itoa(int(gid))); err == nil {
		a.gnames[gid] = g.Name
		return g.Name
	}
	a.gnames[gid] = ""
	return ""
}
