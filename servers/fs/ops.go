package fs

import (
	"context"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"herd/proto"
)

func toAttr(st *unix.Stat_t) proto.Attr {
	return proto.Attr{
		Ino:     st.Ino,
		Size:    uint64(st.Size),
		Blocks:  uint64(st.Blocks),
		Mode:    st.Mode,
		Nlink:   uint32(st.Nlink),
		Uid:     st.Uid,
		Gid:     st.Gid,
		Rdev:    st.Rdev,
		Blksize: uint32(st.Blksize),
		Atime:   proto.Timespec{Sec: st.Atim.Sec, Nsec: uint32(st.Atim.Nsec)},
		Mtime:   proto.Timespec{Sec: st.Mtim.Sec, Nsec: uint32(st.Mtim.Nsec)},
		Ctime:   proto.Timespec{Sec: st.Ctim.Sec, Nsec: uint32(st.Ctim.Nsec)},
	}
}

// ---- fsys ----

// Root implements proto.FileSystem.
func (s *Server) Root(ctx context.Context) (proto.Entry, error) {
	s.treeMu.RLock()
	defer s.treeMu.RUnlock()
	st, inUpper, _, err := s.locate(s.root)
	if err != nil {
		return proto.Entry{}, errno(err)
	}
	if inUpper {
		s.ownerComps(nil, &st) // owner.go
	}
	s.mu.Lock()
	s.root.lookups++
	s.mu.Unlock()
	return proto.Entry{Node: rootID, Attr: toAttr(&st)}, nil
}

// GetOptions reports the options the server runs with, as herd-fs flags.
func (s *Server) GetOptions(ctx context.Context) ([]string, error) {
	opts := []string{"--root=" + s.opts.Root}
	if s.opts.Upper != "" {
		opts = append(opts, "--upper="+s.opts.Upper)
	} else {
		opts = append(opts, "--rw")
	}
	s.mu.Lock()
	ro := s.readOnly
	s.mu.Unlock()
	if ro {
		opts = append(opts, "--readonly")
	} else {
		opts = append(opts, "--writable")
	}
	if s.opts.HideTmp {
		opts = append(opts, "--hide-tmp")
	}
	return opts, nil
}

// SetOptions accepts --readonly and --writable at run time (fsysopts).
func (s *Server) SetOptions(ctx context.Context, opts []string) error {
	ro := s.isReadOnly()
	for _, o := range opts {
		switch o {
		case "--readonly", "-r", "--ro":
			ro = true
		case "--writable", "-w", "--rw":
			ro = false
		default:
			return syscall.EINVAL
		}
	}
	s.mu.Lock()
	s.readOnly = ro
	s.mu.Unlock()
	return nil
}

func (s *Server) isReadOnly() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.readOnly
}

// Goaway ends the server: Done is closed. Without GoawayForce it refuses
// (EBUSY) while files are open.
func (s *Server) Goaway(ctx context.Context, flags uint32) error {
	if flags&proto.GoawayForce == 0 {
		s.hmu.Lock()
		busy := len(s.handles) > 0
		s.hmu.Unlock()
		if busy {
			return syscall.EBUSY
		}
	}
	go func() {
		// Let the reply to this call reach the client before the program
		// watching Done exits.
		time.Sleep(200 * time.Millisecond)
		s.Close()
	}()
	return nil
}

// ---- fs ----

// Lookup implements proto.FileSystem.
func (s *Server) Lookup(ctx context.Context, parent proto.NodeID, name string) (proto.Entry, error) {
	if err := checkName(name); err != nil {
		return proto.Entry{}, err
	}
	if s.hiddenName(name) {
		return proto.Entry{}, syscall.ENOENT
	}
	c, e, rec, err := s.lookup(parent, name)
	if err != nil {
		return e, err
	}
	if s.dirCacheFull() {
		// Only an exclusive holder may close cached descriptors.
		s.wlock()
		s.wunlock()
	}
	return s.translate(ctx, c, e, rec)
}

// lookup finds name in parent and counts a lookup. It also returns the
// node's passive translator record, if any (when translators are enabled).
func (s *Server) lookup(parent proto.NodeID, name string) (*node, proto.Entry, *record, error) {
	s.treeMu.RLock()
	defer s.treeMu.RUnlock()
	p, err := s.getNode(parent)
	if err != nil {
		return nil, proto.Entry{}, nil, err
	}
	v, err := s.openView(p)
	if err != nil {
		return nil, proto.Entry{}, nil, errno(err)
	}
	defer v.close()
	st, inUpper, hidden, err := s.lookupIn(v, name)
	if err != nil {
		return nil, proto.Entry{}, nil, errno(err)
	}
	if inUpper {
		s.ownerAt(v.ufd, name, &st) // owner.go
	}
	var rec *record
	if s.opts.RuntimeDir != "" {
		fd := v.lfd
		if inUpper {
			fd = v.ufd
		}
		rec = s.recordAt(fd, name, &st)
	}
	s.mu.Lock()
	c := s.childLocked(p, name, hidden)
	s.mu.Unlock()
	return c, proto.Entry{Node: c.id, Attr: toAttr(&st)}, rec, nil
}

// Forget implements proto.FileSystem.
func (s *Server) Forget(ctx context.Context, id proto.NodeID, nlookup uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.nodes[id]
	if n == nil || n == s.root {
		return
	}
	if nlookup > n.lookups {
		nlookup = n.lookups
	}
	n.lookups -= nlookup
	s.maybeFreeLocked(n)
}

// GetAttr implements proto.FileSystem.
func (s *Server) GetAttr(ctx context.Context, id proto.NodeID) (proto.Attr, error) {
	n, err := s.getNode(id)
	if err != nil {
		return proto.Attr{}, err
	}
	s.treeMu.RLock()
	st, inUpper, comps, err := s.locate(n)
	if err == nil && inUpper {
		s.ownerComps(comps, &st) // owner.go
	}
	s.treeMu.RUnlock()
	if err == unix.ENOENT {
		// Removed but still open: answer from the open file, as fstat does.
		if h := s.anyHandle(n); h != nil {
			if h, done, herr := s.useHandle(h.id); herr == nil {
				if err = unix.Fstat(h.fd, &st); err == nil && h.upper {
					s.ownerAt(h.fd, "", &st)
				}
				done()
			}
		}
	}
	if err != nil {
		return proto.Attr{}, errno(err)
	}
	return toAttr(&st), nil
}

func (s *Server) anyHandle(n *node) *handle {
	s.hmu.Lock()
	defer s.hmu.Unlock()
	for _, h := range s.handles {
		if h.node == n {
			return h
		}
	}
	return nil
}

// at names node n in the upper layer as (parent dirfd, name) after copying
// it up; for the root, name is "" and the dirfd is the root itself.
func (s *Server) upperAt(n *node) (dirfd int, name string, copied bool, err error) {
	comps, err := s.pathOf(n)
	if err != nil {
		return -1, "", false, err
	}
	copied, err = s.copyUpPath(comps, n.lowerHidden)
	if err != nil {
		return -1, "", false, err
	}
	if len(comps) == 0 {
		if err := s.copyUpRoot(); err != nil {
			return -1, "", false, err
		}
		fd, err := openDirAt(s.upper, nil)
		return fd, "", copied, err
	}
	fd, err := openDirAt(s.upper, comps[:len(comps)-1])
	return fd, comps[len(comps)-1], copied, err
}

// anyAt names node n where it is now (upper if there, else lower).
func (s *Server) anyAt(n *node) (dirfd int, name string, err error) {
	_, inUpper, comps, err := s.locate(n)
	if err != nil {
		return -1, "", err
	}
	root := s.upper
	if !inUpper {
		root = s.lower
	}
	if len(comps) == 0 {
		fd, err := openDirAt(root, nil)
		return fd, "", err
	}
	fd, err := openDirAt(root, comps[:len(comps)-1])
	return fd, comps[len(comps)-1], err
}

func atFlags(name string) int {
	if name == "" {
		return unix.AT_EMPTY_PATH
	}
	return unix.AT_SYMLINK_NOFOLLOW
}

func timespec(t proto.Timespec) unix.Timespec {
	return unix.Timespec{Sec: t.Sec, Nsec: int64(t.Nsec)}
}

func setTimes(in proto.SetAttrIn) ([]unix.Timespec, bool) {
	if in.Valid&(proto.SetAttrAtime|proto.SetAttrMtime|proto.SetAttrAtimeNow|proto.SetAttrMtimeNow) == 0 {
		return nil, false
	}
	ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
	if in.Valid&proto.SetAttrAtime != 0 {
		ts[0] = timespec(in.Atime)
	}
	if in.Valid&proto.SetAttrAtimeNow != 0 {
		ts[0] = unix.Timespec{Nsec: unix.UTIME_NOW}
	}
	if in.Valid&proto.SetAttrMtime != 0 {
		ts[1] = timespec(in.Mtime)
	}
	if in.Valid&proto.SetAttrMtimeNow != 0 {
		ts[1] = unix.Timespec{Nsec: unix.UTIME_NOW}
	}
	return ts, true
}

func ownerArgs(in proto.SetAttrIn) (int, int, bool) {
	uid, gid := -1, -1
	if in.Valid&proto.SetAttrUid != 0 {
		uid = int(in.Uid)
	}
	if in.Valid&proto.SetAttrGid != 0 {
		gid = int(in.Gid)
	}
	return uid, gid, uid != -1 || gid != -1
}

// SetAttr implements proto.FileSystem.
func (s *Server) SetAttr(ctx context.Context, id proto.NodeID, in proto.SetAttrIn) (proto.Attr, error) {
	n, err := s.getNode(id)
	if err != nil {
		return proto.Attr{}, err
	}
	if s.isReadOnly() {
		return proto.Attr{}, syscall.EROFS
	}
	if in.Valid&proto.SetAttrHandle != 0 {
		if h, done, err := s.useHandle(in.Handle); err == nil {
			defer done()
			if h.upper {
				defer s.invalNode(n)
				return s.setAttrFD(h.fd, in)
			}
		}
	}
	s.wlock()
	defer s.wunlock()
	dirfd, name, _, err := s.upperAt(n)
	if err != nil {
		return proto.Attr{}, errno(err)
	}
	defer unix.Close(dirfd)
	// Tell other clients (and, after a copy-up, about the new backing file).
	defer s.invalNode(n)
	if uid, gid, ok := ownerArgs(in); ok {
		if err := s.chownAt(dirfd, name, uid, gid); err != nil { // owner.go
			return proto.Attr{}, errno(err)
		}
	}
	if in.Valid&proto.SetAttrMode != 0 {
		if err := s.chmodAt(dirfd, name, in.Mode&0o7777); err != nil { // owner.go
			return proto.Attr{}, errno(err)
		}
	}
	if in.Valid&proto.SetAttrSize != 0 {
		if name == "" {
			return proto.Attr{}, syscall.EISDIR
		}
		fd, err := unix.Openat(dirfd, name, unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return proto.Attr{}, errno(err)
		}
		err = unix.Ftruncate(fd, int64(in.Size))
		unix.Close(fd)
		if err != nil {
			return proto.Attr{}, errno(err)
		}
	}
	if ts, ok := setTimes(in); ok {
		var err error
		if name == "" {
			err = unix.UtimesNanoAt(unix.AT_FDCWD, xpath(dirfd, ""), ts, 0)
		} else {
			err = unix.UtimesNanoAt(dirfd, name, ts, unix.AT_SYMLINK_NOFOLLOW)
		}
		if err != nil {
			return proto.Attr{}, errno(err)
		}
	}
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, atFlags(name)); err != nil {
		return proto.Attr{}, errno(err)
	}
	s.ownerAt(dirfd, name, &st)
	return toAttr(&st), nil
}

// setAttrFD changes an open file's attributes through its descriptor, so an
// unlinked-but-open file can be truncated or chmodded as on ext4.
func (s *Server) setAttrFD(fd int, in proto.SetAttrIn) (proto.Attr, error) {
	if uid, gid, ok := ownerArgs(in); ok {
		if err := s.chownAt(fd, "", uid, gid); err != nil { // owner.go
			return proto.Attr{}, errno(err)
		}
	}
	if in.Valid&proto.SetAttrMode != 0 {
		if err := s.chmodAt(fd, "", in.Mode&0o7777); err != nil { // owner.go
			return proto.Attr{}, errno(err)
		}
	}
	if in.Valid&proto.SetAttrSize != 0 {
		if err := unix.Ftruncate(fd, int64(in.Size)); err != nil {
			return proto.Attr{}, errno(err)
		}
	}
	if ts, ok := setTimes(in); ok {
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, xpath(fd, ""), ts, 0); err != nil {
			return proto.Attr{}, errno(err)
		}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return proto.Attr{}, errno(err)
	}
	s.ownerAt(fd, "", &st)
	return toAttr(&st), nil
}

// ReadDir implements proto.FileSystem.
func (s *Server) ReadDir(ctx context.Context, id proto.NodeID) ([]proto.DirEntry, error) {
	n, err := s.getNode(id)
	if err != nil {
		return nil, err
	}
	s.treeMu.RLock()
	defer s.treeMu.RUnlock()
	v, err := s.openView(n)
	if err != nil {
		return nil, errno(err)
	}
	defer v.close()
	ents, err := s.mergedList(v)
	if err != nil {
		return nil, errno(err)
	}
	out := make([]proto.DirEntry, 0, len(ents))
	for _, e := range ents {
		out = append(out, proto.DirEntry{Name: e.name, Ino: e.ino, Mode: dtToMode(e.typ)})
	}
	return out, nil
}

// ReadDirPlus implements proto.DirPlusReader: each entry counts a lookup.
// A translated entry carries its redirect, but a listing does not start a
// passive translator: the client's lookup of the name does.
//
// It is lookup for every name, with the directory resolved once and the
// node table locked once (a cold find is mostly this call).
func (s *Server) ReadDirPlus(ctx context.Context, id proto.NodeID) ([]proto.DirEntryPlus, error) {
	n, err := s.getNode(id)
	if err != nil {
		return nil, err
	}
	s.treeMu.RLock()
	defer s.treeMu.RUnlock()
	v, err := s.openView(n)
	if err != nil {
		return nil, errno(err)
	}
	defer v.close()
	ents, err := s.mergedList(v)
	if err != nil {
		return nil, errno(err)
	}
	type found struct {
		de     proto.DirEntry
		st     unix.Stat_t
		hidden bool
		rec    *record
	}
	fs := make([]found, 0, len(ents))
	for _, e := range ents {
		st, inUpper, hidden, err := s.lookupIn(v, e.name)
		if err != nil {
			continue // vanished meanwhile
		}
		if inUpper {
			s.ownerAt(v.ufd, e.name, &st) // owner.go
		}
		var rec *record
		if s.opts.RuntimeDir != "" {
			fd := v.lfd
			if inUpper {
				fd = v.ufd
			}
			rec = s.recordAt(fd, e.name, &st)
		}
		fs = append(fs, found{proto.DirEntry{Name: e.name, Ino: e.ino, Mode: dtToMode(e.typ)}, st, hidden, rec})
	}
	out := make([]proto.DirEntryPlus, len(fs))
	s.mu.Lock()
	for i := range fs {
		f := &fs[i]
		c := s.childLocked(n, f.de.Name, f.hidden)
		en := proto.Entry{Node: c.id, Attr: toAttr(&f.st)}
		// A translated entry carries its redirect (plannedRedirect).
		if s.opts.RuntimeDir != "" {
			if c.trans != nil {
				en.Redirect = &proto.Redirect{Socket: c.trans.socket}
			} else if f.rec != nil {
				en.Redirect = &proto.Redirect{Socket: s.socketFor(c)}
			}
		}
		out[i] = proto.DirEntryPlus{DirEntry: f.de, Entry: en}
	}
	s.mu.Unlock()
	return out, nil
}

// prepareCreate checks that name is free in parent and that the upper
// parent directory exists; it returns the view (upper fd valid) and whether a
// whiteout sits on the name.
func (s *Server) prepareCreate(p *node, name string) (*view, bool, error) {
	if err := checkName(name); err != nil {
		return nil, false, err
	}
	if s.isReadOnly() {
		return nil, false, syscall.EROFS
	}
	if s.hiddenName(name) {
		return nil, false, syscall.EPERM
	}
	v, err := s.openView(p)
	if err != nil {
		return nil, false, errno(err)
	}
	if _, _, _, err := s.lookupIn(v, name); err == nil {
		v.close()
		return nil, false, syscall.EEXIST
	} else if err != unix.ENOENT {
		v.close()
		return nil, false, errno(err)
	}
	if v.ufd < 0 {
		if _, err := s.copyUpPath(v.comps, p.lowerHidden); err != nil {
			v.close()
			return nil, false, errno(err)
		}
		v.close()
		if v, err = s.openView(p); err != nil {
			return nil, false, errno(err)
		}
	}
	wh := s.cow && exists(v.ufd, whPrefix+name)
	return v, wh, nil
}

// finishCreate gives a new entry its owner (the caller when we are root)
// and exact mode, clears a whiteout, and enters the node.
func (s *Server) finishCreate(ctx context.Context, p *node, v *view, name string, mode uint32, wh bool) (proto.Entry, *node, error) {
	var pst unix.Stat_t
	unix.Fstat(v.ufd, &pst)
	var st unix.Stat_t
	if err := unix.Fstatat(v.ufd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return proto.Entry{}, nil, errno(err)
	}
	isLink := st.Mode&unix.S_IFMT == unix.S_IFLNK
	if c, ok := callerOf(ctx); ok && s.euid == 0 {
		gid := c.Gid
		if pst.Mode&unix.S_ISGID != 0 {
			gid = pst.Gid
		}
		if st.Uid != c.Uid || st.Gid != gid {
			unix.Fchownat(v.ufd, name, int(c.Uid), int(gid), unix.AT_SYMLINK_NOFOLLOW)
		}
	} else if ok {
		// A plain user's server records what it cannot chown (owner.go).
		s.ownerAt(v.ufd, "", &pst)
		s.ownNew(v.ufd, name, &pst, &st, c.Uid, c.Gid)
	}
	if !isLink {
		want := mode & 0o7777
		if st.Mode&unix.S_IFMT == unix.S_IFDIR && pst.Mode&unix.S_ISGID != 0 {
			want |= unix.S_ISGID
		}
		if st.Mode&0o7777 != want && (s.umask&mode != 0 || mode&0o7000 != 0) {
			unix.Fchmodat(v.ufd, name, want, 0)
		}
		s.modeNew(v.ufd, name, &st, want) // owner.go
	}
	if wh {
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			fd, err := unix.Openat(v.ufd, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err == nil {
				markOpaque(fd)
				unix.Close(fd)
			}
		}
		unix.Unlinkat(v.ufd, whPrefix+name, 0)
	}
	if err := unix.Fstatat(v.ufd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return proto.Entry{}, nil, errno(err)
	}
	s.ownerAt(v.ufd, name, &st)
	s.mu.Lock()
	c := s.childLocked(p, name, wh || v.lfd < 0)
	s.mu.Unlock()
	s.invalEntry(p, name) // other clients may cache the name as absent
	return proto.Entry{Node: c.id, Attr: toAttr(&st)}, c, nil
}

// Mkdir implements proto.FileSystem.
func (s *Server) Mkdir(ctx context.Context, parent proto.NodeID, name string, mode uint32) (proto.Entry, error) {
	p, err := s.getNode(parent)
	if err != nil {
		return proto.Entry{}, err
	}
	s.wlock()
	defer s.wunlock()
	v, wh, err := s.prepareCreate(p, name)
	if err != nil {
		return proto.Entry{}, err
	}
	defer v.close()
	if err := unix.Mkdirat(v.ufd, name, mode&0o7777); err != nil {
		return proto.Entry{}, errno(err)
	}
	e, _, err := s.finishCreate(ctx, p, v, name, mode, wh)
	return e, err
}

// Mknod implements proto.FileSystem.
func (s *Server) Mknod(ctx context.Context, parent proto.NodeID, name string, mode uint32, rdev uint64) (proto.Entry, error) {
	p, err := s.getNode(parent)
	if err != nil {
		return proto.Entry{}, err
	}
	s.wlock()
	defer s.wunlock()
	v, wh, err := s.prepareCreate(p, name)
	if err != nil {
		return proto.Entry{}, err
	}
	defer v.close()
	if err := unix.Mknodat(v.ufd, name, mode, int(rdev)); err != nil {
		return proto.Entry{}, errno(err)
	}
	e, _, err := s.finishCreate(ctx, p, v, name, mode, wh)
	return e, err
}

// Symlink implements proto.FileSystem.
func (s *Server) Symlink(ctx context.Context, parent proto.NodeID, name, target string) (proto.Entry, error) {
	p, err := s.getNode(parent)
	if err != nil {
		return proto.Entry{}, err
	}
	s.wlock()
	defer s.wunlock()
	v, wh, err := s.prepareCreate(p, name)
	if err != nil {
		return proto.Entry{}, err
	}
	defer v.close()
	if err := unix.Symlinkat(target, v.ufd, name); err != nil {
		return proto.Entry{}, errno(err)
	}
	e, _, err := s.finishCreate(ctx, p, v, name, 0o777, wh)
	return e, err
}

const openFlagsKept = unix.O_ACCMODE | unix.O_APPEND | unix.O_TRUNC | unix.O_DIRECTORY |
	unix.O_SYNC | unix.O_DSYNC | unix.O_DIRECT | unix.O_NONBLOCK | unix.O_NOATIME

// Create implements proto.FileSystem.
func (s *Server) Create(ctx context.Context, parent proto.NodeID, name string, flags, mode uint32) (proto.Entry, proto.OpenResult, error) {
	p, err := s.getNode(parent)
	if err != nil {
		return proto.Entry{}, proto.OpenResult{}, err
	}
	s.wlock()
	v, wh, err := s.prepareCreate(p, name)
	if err == syscall.EEXIST && flags&unix.O_EXCL == 0 {
		// Lost a race with another creator: open what is there.
		s.wunlock()
		e, err := s.Lookup(ctx, parent, name)
		if err != nil {
			return proto.Entry{}, proto.OpenResult{}, err
		}
		r, err := s.Open(ctx, e.Node, flags&^unix.O_CREAT)
		if err != nil {
			s.Forget(ctx, e.Node, 1)
			return proto.Entry{}, proto.OpenResult{}, err
		}
		return e, r, nil
	}
	if err != nil {
		s.wunlock()
		return proto.Entry{}, proto.OpenResult{}, err
	}
	defer s.wunlock()
	defer v.close()
	fd, err := createAt(v.ufd, name, int(flags&openFlagsKept)|unix.O_CREAT|unix.O_EXCL, mode&0o7777)
	if err != nil {
		return proto.Entry{}, proto.OpenResult{}, errno(err)
	}
	e, c, err := s.finishCreate(ctx, p, v, name, mode, wh)
	if err != nil {
		unix.Close(fd)
		return proto.Entry{}, proto.OpenResult{}, err
	}
	r, err := s.newHandle(c, fd, true, flags&unix.O_ACCMODE != unix.O_RDONLY, true, name)
	if err != nil {
		return proto.Entry{}, proto.OpenResult{}, err
	}
	return e, r, nil
}

// Unlink implements proto.FileSystem.
func (s *Server) Unlink(ctx context.Context, parent proto.NodeID, name string) error {
	return s.remove(ctx, parent, name, false)
}

// Rmdir implements proto.FileSystem.
func (s *Server) Rmdir(ctx context.Context, parent proto.NodeID, name string) error {
	return s.remove(ctx, parent, name, true)
}

func (s *Server) remove(ctx context.Context, parent proto.NodeID, name string, dir bool) error {
	if err := checkName(name); err != nil {
		return err
	}
	if s.hiddenName(name) {
		return syscall.ENOENT
	}
	if s.isReadOnly() {
		return syscall.EROFS
	}
	p, err := s.getNode(parent)
	if err != nil {
		return err
	}
	s.wlock()
	defer s.wunlock()
	v, err := s.openView(p)
	if err != nil {
		return errno(err)
	}
	defer v.close()
	st, inUpper, hidden, err := s.lookupIn(v, name)
	if err != nil {
		return errno(err)
	}
	isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
	if dir && !isDir {
		return syscall.ENOTDIR
	}
	if !dir && isDir {
		return syscall.EISDIR
	}
	childComps := append(append([]string{}, v.comps...), name)
	if dir {
		cv, err := s.openViewPath(childComps, hidden)
		if err != nil {
			return errno(err)
		}
		ents, err := s.mergedList(cv)
		cv.close()
		if err != nil {
			return errno(err)
		}
		if len(ents) > 0 {
			return syscall.ENOTEMPTY
		}
	}
	s.mu.Lock()
	c := p.children[name]
	s.mu.Unlock()
	if c != nil && s.running(c) != nil {
		// Its node is going away: so does its translator (not holding the tree meanwhile).
		go s.stopTranslator(c, true)
	}
	if inUpper {
		if dir {
			if err := clearUpperDir(s.upper, childComps, s.cow); err != nil {
				return errno(err)
			}
		} else {
			s.dropTransRecord(v.ufd, name)
		}
		flag := 0
		if dir {
			flag = unix.AT_REMOVEDIR
			s.dirtyCache()
		}
		if err := unix.Unlinkat(v.ufd, name, flag); err != nil {
			return errno(err)
		}
	}
	if lowerHas(v, name) {
		if v.ufd < 0 {
			if _, err := s.copyUpPath(v.comps, p.lowerHidden); err != nil {
				return errno(err)
			}
			fd, err := openDirAt(s.upper, v.comps)
			if err != nil {
				return errno(err)
			}
			v.ufd, v.uOwned = fd, true
		}
		if err := makeWhiteout(v.ufd, name); err != nil {
			return errno(err)
		}
	}
	s.mu.Lock()
	if c := p.children[name]; c != nil {
		s.detachLocked(c)
	}
	s.mu.Unlock()
	s.invalEntry(p, name)
	return nil
}

// Rename implements proto.FileSystem.
func (s *Server) Rename(ctx context.Context, oldParent proto.NodeID, oldName string, newParent proto.NodeID, newName string, flags uint32) error {
	if err := checkName(oldName); err != nil {
		return err
	}
	if err := checkName(newName); err != nil {
		return err
	}
	if flags&^(unix.RENAME_NOREPLACE|unix.RENAME_EXCHANGE) != 0 {
		return syscall.EINVAL
	}
	exchange := flags&unix.RENAME_EXCHANGE != 0
	if exchange && flags&unix.RENAME_NOREPLACE != 0 {
		return syscall.EINVAL
	}
	if s.hiddenName(oldName) {
		return syscall.ENOENT
	}
	if s.hiddenName(newName) {
		return syscall.EPERM
	}
	if s.isReadOnly() {
		return syscall.EROFS
	}
	op, err := s.getNode(oldParent)
	if err != nil {
		return err
	}
	np, err := s.getNode(newParent)
	if err != nil {
		return err
	}
	s.wlock()
	defer s.wunlock()
	if err := s.rename(op, oldName, np, newName, flags, exchange); err != nil {
		return errno(err)
	}
	s.invalEntry(op, oldName)
	s.invalEntry(np, newName)
	return nil
}

func (s *Server) rename(op *node, oldName string, np *node, newName string, flags uint32, exchange bool) error {
	vo, err := s.openView(op)
	if err != nil {
		return err
	}
	sst, _, sHidden, err := s.lookupIn(vo, oldName)
	lowerOld := lowerHas(vo, oldName)
	vo.close()
	if err != nil {
		return err
	}
	vn, err := s.openView(np)
	if err != nil {
		return err
	}
	dst, dUp, dHidden, derr := s.lookupIn(vn, newName)
	vn.close()
	dExists := derr == nil
	if derr != nil && derr != unix.ENOENT {
		return derr
	}
	if flags&unix.RENAME_NOREPLACE != 0 && dExists {
		return syscall.EEXIST
	}
	if exchange && !dExists {
		return syscall.ENOENT
	}
	if op == np && oldName == newName {
		return nil
	}
	srcDir := sst.Mode&unix.S_IFMT == unix.S_IFDIR
	dstDir := dExists && dst.Mode&unix.S_IFMT == unix.S_IFDIR
	oldComps, _ := s.pathOf(op)
	oldComps = append(oldComps, oldName)
	newComps, _ := s.pathOf(np)
	newComps = append(newComps, newName)
	if srcDir && len(newComps) > len(oldComps) && strings.Join(newComps[:len(oldComps)], "/") == strings.Join(oldComps, "/") {
		return syscall.EINVAL // into itself
	}
	if dExists && !exchange {
		if srcDir && !dstDir {
			return syscall.ENOTDIR
		}
		if !srcDir && dstDir {
			return syscall.EISDIR
		}
		if dstDir {
			dv, err := s.openViewPath(newComps, dHidden)
			if err != nil {
				return err
			}
			ents, err := s.mergedList(dv)
			dv.close()
			if err != nil {
				return err
			}
			if len(ents) > 0 {
				return syscall.ENOTEMPTY
			}
		}
	}
	s.mu.Lock()
	srcNode, dstNode := op.children[oldName], np.children[newName]
	s.mu.Unlock()
	if srcDir || dstDir {
		s.dirtyCache() // directory paths change
	}
	if s.cow {
		// Everything that moves goes to the upper layer first.
		if srcDir {
			if err := s.copyUpTree(oldComps, sHidden); err != nil {
				return err
			}
		} else if _, err := s.copyUpPath(oldComps, sHidden); err != nil {
			return err
		}
		if exchange {
			if dstDir {
				if err := s.copyUpTree(newComps, dHidden); err != nil {
					return err
				}
			} else if _, err := s.copyUpPath(newComps, dHidden); err != nil {
				return err
			}
		} else {
			if _, err := s.copyUpPath(newComps[:len(newComps)-1], np.lowerHidden); err != nil {
				return err
			}
			if dExists && dUp && dstDir {
				if err := clearUpperDir(s.upper, newComps, s.cow); err != nil {
					return err
				}
			}
		}
	}
	ofd, err := openDirAt(s.upper, oldComps[:len(oldComps)-1])
	if err != nil {
		return err
	}
	defer unix.Close(ofd)
	nfd, err := openDirAt(s.upper, newComps[:len(newComps)-1])
	if err != nil {
		return err
	}
	defer unix.Close(nfd)
	rflags := uint(flags)
	if s.cow {
		rflags &^= unix.RENAME_NOREPLACE // checked on the merged view above
		if dExists && !dUp && !exchange {
			// Only the lower layer has the target: the moved entry covers it.
			unix.Unlinkat(nfd, whPrefix+newName, 0)
		}
	}
	if dExists && !exchange && dstNode != nil && s.running(dstNode) != nil {
		go s.stopTranslator(dstNode, true)
	}
	if !srcDir && !exchange {
		s.dropTransRecord(nfd, newName)
	}
	if err := unix.Renameat2(ofd, oldName, nfd, newName, rflags); err != nil {
		return err
	}
	s.moveTransRecord(ofd, oldName, nfd, newName, exchange)
	if s.cow {
		unix.Unlinkat(nfd, whPrefix+newName, 0)
		if !exchange && lowerOld {
			if err := makeWhiteout(ofd, oldName); err != nil {
				return err
			}
		}
		// A moved directory must not merge with a lower directory of its new name.
		if srcDir {
			if fd, err := openDirAt(s.upper, newComps); err == nil {
				markOpaque(fd)
				unix.Close(fd)
			}
		}
		if exchange && dstDir {
			if fd, err := openDirAt(s.upper, oldComps); err == nil {
				markOpaque(fd)
				unix.Close(fd)
			}
		}
	}
	s.mu.Lock()
	if exchange {
		if srcNode != nil {
			delete(op.children, oldName)
		}
		if dstNode != nil {
			delete(np.children, newName)
		}
		if srcNode != nil {
			srcNode.parent, srcNode.name = np, newName
			np.setChild(newName, srcNode)
		}
		if dstNode != nil {
			dstNode.parent, dstNode.name = op, oldName
			op.setChild(oldName, dstNode)
		}
	} else if srcNode != nil {
		s.moveLocked(srcNode, np, newName)
	} else if dstNode != nil {
		s.detachLocked(dstNode)
	}
	if s.cow {
		if srcNode != nil && srcDir {
			setHiddenLocked(srcNode)
		}
		if exchange && dstNode != nil && dstDir {
			setHiddenLocked(dstNode)
		}
	}
	s.mu.Unlock()
	return nil
}

// Link implements proto.FileSystem. In copy-on-write mode the source is
// copied up first, so the link count is the upper file's.
func (s *Server) Link(ctx context.Context, id proto.NodeID, newParent proto.NodeID, newName string) (proto.Entry, error) {
	n, err := s.getNode(id)
	if err != nil {
		return proto.Entry{}, err
	}
	np, err := s.getNode(newParent)
	if err != nil {
		return proto.Entry{}, err
	}
	s.wlock()
	defer s.wunlock()
	v, wh, err := s.prepareCreate(np, newName)
	if err != nil {
		return proto.Entry{}, err
	}
	defer v.close()
	dirfd, name, copied, err := s.upperAt(n)
	if err != nil {
		return proto.Entry{}, errno(err)
	}
	defer unix.Close(dirfd)
	if name == "" {
		return proto.Entry{}, syscall.EPERM
	}
	if copied {
		defer s.invalNode(n)
	}
	if err := unix.Linkat(dirfd, name, v.ufd, newName, 0); err != nil {
		return proto.Entry{}, errno(err)
	}
	if wh {
		unix.Unlinkat(v.ufd, whPrefix+newName, 0)
	}
	var st unix.Stat_t
	if err := unix.Fstatat(v.ufd, newName, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return proto.Entry{}, errno(err)
	}
	s.ownerAt(v.ufd, newName, &st)
	s.mu.Lock()
	c := s.childLocked(np, newName, wh || v.lfd < 0)
	s.mu.Unlock()
	s.invalEntry(np, newName)
	s.invalNode(n) // its link count changed
	return proto.Entry{Node: c.id, Attr: toAttr(&st)}, nil
}

// Readlink implements proto.FileSystem.
func (s *Server) Readlink(ctx context.Context, id proto.NodeID) (string, error) {
	n, err := s.getNode(id)
	if err != nil {
		return "", err
	}
	s.treeMu.RLock()
	defer s.treeMu.RUnlock()
	dirfd, name, err := s.anyAt(n)
	if err != nil {
		return "", errno(err)
	}
	defer unix.Close(dirfd)
	if name == "" {
		return "", syscall.EINVAL
	}
	buf := make([]byte, unix.PathMax)
	k, err := unix.Readlinkat(dirfd, name, buf)
	if err != nil {
		return "", errno(err)
	}
	return string(buf[:k]), nil
}

// GetXattr implements proto.FileSystem; errors (ENODATA, ENOTSUP, ERANGE)
// are the host's.
func (s *Server) GetXattr(ctx context.Context, id proto.NodeID, attr string) ([]byte, error) {
	n, err := s.getNode(id)
	if err != nil {
		return nil, err
	}
	if ownerXattr(attr) {
		return nil, syscall.ENODATA
	}
	if v, handled, err := s.transGetXattr(ctx, n, attr); handled {
		return v, err
	}
	s.treeMu.RLock()
	defer s.treeMu.RUnlock()
	dirfd, name, err := s.anyAt(n)
	if err != nil {
		return nil, errno(err)
	}
	defer unix.Close(dirfd)
	if attr == xattrTranslator {
		if v, ok := s.sideTableGet(dirfd, name); ok {
			return v, nil
		}
	}
	v, err := getXattrAt(dirfd, name, attr)
	return v, errno(err)
}

// ListXattr implements proto.FileSystem.
func (s *Server) ListXattr(ctx context.Context, id proto.NodeID) ([]string, error) {
	n, err := s.getNode(id)
	if err != nil {
		return nil, err
	}
	s.treeMu.RLock()
	defer s.treeMu.RUnlock()
	dirfd, name, err := s.anyAt(n)
	if err != nil {
		return nil, errno(err)
	}
	defer unix.Close(dirfd)
	l, err := listXattrsAt(dirfd, name)
	if err != nil {
		return nil, errno(err)
	}
	l = slices.DeleteFunc(l, ownerXattr)
	if _, ok := s.sideTableGet(dirfd, name); ok {
		l = append(l, xattrTranslator)
	}
	return l, nil
}

// SetXattr implements proto.FileSystem.
func (s *Server) SetXattr(ctx context.Context, id proto.NodeID, attr string, value []byte, flags uint32) error {
	n, err := s.getNode(id)
	if err != nil {
		return err
	}
	if ownerXattr(attr) {
		return syscall.EPERM
	}
	if handled, err := s.transSetXattr(ctx, n, attr, value); handled {
		return err
	}
	return s.atUpper(n, func(dirfd int, name string) error {
		if attr == xattrTranslator {
			return s.setTransRecord(ctx, n, dirfd, name, value, flags)
		}
		return errno(setXattrAt(dirfd, name, attr, value, int(flags)))
	})
}

// RemoveXattr implements proto.FileSystem.
func (s *Server) RemoveXattr(ctx context.Context, id proto.NodeID, attr string) error {
	n, err := s.getNode(id)
	if err != nil {
		return err
	}
	if ownerXattr(attr) {
		return syscall.EPERM
	}
	return s.atUpper(n, func(dirfd int, name string) error {
		if attr == xattrTranslator {
			return s.removeTransRecord(ctx, n, dirfd, name)
		}
		return errno(removeXattrAt(dirfd, name, attr))
	})
}

// atUpper runs fn on n's name in the writable layer, under the write lock,
// copying n up first in copy-on-write mode. A copy-up, or a change fn
// made, is announced to the clients once fn is done: their cached
// attributes (ctime) and what they know of the node's xattrs are stale.
func (s *Server) atUpper(n *node, fn func(dirfd int, name string) error) error {
	if s.isReadOnly() {
		return syscall.EROFS
	}
	s.wlock()
	defer s.wunlock()
	dirfd, name, copied, err := s.upperAt(n)
	if err != nil {
		return errno(err)
	}
	defer unix.Close(dirfd)
	err = fn(dirfd, name)
	if copied || err == nil {
		s.invalNode(n)
	}
	return err
}

// StatFS implements proto.FileSystem: the writable layer's numbers.
func (s *Server) StatFS(ctx context.Context, id proto.NodeID) (proto.StatFS, error) {
	s.treeMu.RLock()
	defer s.treeMu.RUnlock()
	fd := s.upper
	if fd < 0 {
		fd = s.lower
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		return proto.StatFS{}, errno(err)
	}
	return proto.StatFS{
		Blocks: st.Blocks, Bfree: st.Bfree, Bavail: st.Bavail,
		Files: st.Files, Ffree: st.Ffree,
		Bsize: uint32(st.Bsize), Frsize: uint32(st.Frsize), NameLen: uint32(st.Namelen),
	}, nil
}

// ---- io ----

// useHandle returns an open handle and holds it open (its descriptor cannot
// be closed, and its number reused, underneath the caller) until done.
func (s *Server) useHandle(id proto.HandleID) (*handle, func(), error) {
	s.hmu.Lock()
	h := s.handles[id]
	s.hmu.Unlock()
	if h == nil {
		return nil, nil, syscall.EBADF
	}
	h.mu.RLock()
	if h.closed {
		h.mu.RUnlock()
		return nil, nil, syscall.EBADF
	}
	return h, h.mu.RUnlock, nil
}

// closeHandle closes h's descriptor once nobody uses it.
func closeHandle(h *handle) {
	h.mu.Lock()
	if !h.closed {
		h.closed = true
		unix.Close(h.fd)
	}
	h.mu.Unlock()
}

// write says fd was opened for writing; regular, that it is a regular file.
func (s *Server) newHandle(n *node, fd int, upper, write, regular bool, name string) (proto.OpenResult, error) {
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		unix.Close(fd)
		return proto.OpenResult{}, errno(err)
	}
	s.mu.Lock()
	n.handles++
	s.mu.Unlock()
	s.hmu.Lock()
	id := s.nextH
	s.nextH++
	s.handles[id] = &handle{id: id, fd: fd, node: n, upper: upper, write: write}
	s.hmu.Unlock()
	res := proto.OpenResult{Handle: id, File: os.NewFile(uintptr(dup), name)}
	// Clients may keep a regular file's cached pages across opens: every
	// change made through this server is announced (writes over the
	// protocol at once, writes through a handed-out descriptor when that
	// handle is released), so a stale page gets invalidated.
	if regular {
		res.Flags |= proto.OpenKeepCache
	}
	return res, nil
}

// Open implements proto.FileSystem. Opening for writing copies up first.
func (s *Server) Open(ctx context.Context, id proto.NodeID, flags uint32) (proto.OpenResult, error) {
	n, err := s.getNode(id)
	if err != nil {
		return proto.OpenResult{}, err
	}
	write := flags&unix.O_ACCMODE != unix.O_RDONLY || flags&unix.O_TRUNC != 0
	if write && s.isReadOnly() {
		return proto.OpenResult{}, syscall.EROFS
	}
	copied := false
	if write && s.cow {
		s.wlock()
		comps, err := s.pathOf(n)
		if err == nil {
			// O_TRUNC: the old contents would be thrown away at once.
			copied, err = s.copyUp(comps, n.lowerHidden, flags&unix.O_TRUNC != 0)
		}
		s.wunlock()
		if err != nil {
			return proto.OpenResult{}, errno(err)
		}
	}
	s.treeMu.RLock()
	st, inUpper, comps, err := s.locate(n)
	if err != nil {
		s.treeMu.RUnlock()
		return proto.OpenResult{}, errno(err)
	}
	root := s.upper
	if !inUpper {
		root = s.lower
	}
	of := int(flags&openFlagsKept) | unix.O_NOFOLLOW
	if t := st.Mode & unix.S_IFMT; t != unix.S_IFREG && t != unix.S_IFDIR {
		of |= unix.O_NONBLOCK // a fifo must not block the server
	}
	fd, err := openBeneath(root, joinPath(comps), of)
	writable := root == s.upper && s.upper >= 0 && (inUpper || !s.cow)
	dirCap := err == nil && !write && st.Mode&unix.S_IFMT == unix.S_IFDIR && s.capable(n)
	s.treeMu.RUnlock()
	if err != nil {
		return proto.OpenResult{}, errno(err)
	}
	if copied {
		s.invalNode(n)
	}
	name := "."
	if len(comps) > 0 {
		name = comps[len(comps)-1]
	}
	res, err := s.newHandle(n, fd, writable, write, st.Mode&unix.S_IFMT == unix.S_IFREG, name)
	if err == nil && dirCap {
		res.Flags |= proto.OpenDirCap
	}
	return res, err
}

// capable reports whether directory n's descriptor in the layer it lives in
// is a directory capability (proto.OpenDirCap): every regular child a
// client looked up is, for reading, exactly what openat(fd, name,
// O_RDONLY|O_NOFOLLOW) gives. True when only one layer shows the directory
// (write-through mode; in copy-on-write mode a directory only the lower or
// only the upper layer has, or an opaque one), since a child then lives in
// that layer. A merged directory's children may be in either layer. The
// revocations the promise needs: a child copied up, whited out, renamed or
// given a translator record is announced (InvalNode of the child, InvalEntry
// in the directory), and so is the directory gaining an upper counterpart
// (copyUpOne, copyUpTree). The caller holds treeMu.
func (s *Server) capable(n *node) bool {
	if !s.cow {
		return true
	}
	v, err := s.openView(n)
	if err != nil {
		return false
	}
	defer v.close()
	return (v.ufd >= 0) != (v.lfd >= 0)
}

// invalPath announces that the directory at comps changed layers (it gained
// an upper counterpart): a client's capability on it (proto.OpenDirCap) is
// void.
func (s *Server) invalPath(comps []string) {
	s.mu.Lock()
	n := s.root
	for _, c := range comps {
		if n = n.children[c]; n == nil {
			break
		}
	}
	s.mu.Unlock()
	if n != nil {
		s.invalNode(n)
	}
}

// Read implements proto.FileSystem.
func (s *Server) Read(ctx context.Context, hid proto.HandleID, off int64, size int) ([]byte, error) {
	h, done, err := s.useHandle(hid)
	if err != nil {
		return nil, err
	}
	defer done()
	buf := make([]byte, size)
	n, err := unix.Pread(h.fd, buf, off)
	if err != nil {
		return nil, errno(err)
	}
	return buf[:n], nil
}

// Write implements proto.FileSystem.
func (s *Server) Write(ctx context.Context, hid proto.HandleID, off int64, data []byte) (int, error) {
	h, done, err := s.useHandle(hid)
	if err != nil {
		return 0, err
	}
	defer done()
	total := 0
	for total < len(data) {
		n, err := unix.Pwrite(h.fd, data[total:], off+int64(total))
		if err != nil {
			if total > 0 {
				return total, nil
			}
			return 0, errno(err)
		}
		total += n
	}
	s.invalRange(h.node, off, int64(total))
	return total, nil
}

// Fsync implements proto.FileSystem.
func (s *Server) Fsync(ctx context.Context, hid proto.HandleID, datasync bool) error {
	h, done, err := s.useHandle(hid)
	if err != nil {
		return err
	}
	defer done()
	if datasync {
		return errno(unix.Fdatasync(h.fd))
	}
	return errno(unix.Fsync(h.fd))
}

// Fallocate implements proto.FileSystem.
func (s *Server) Fallocate(ctx context.Context, hid proto.HandleID, mode uint32, off, length int64) error {
	h, done, err := s.useHandle(hid)
	if err != nil {
		return err
	}
	defer done()
	if err := unix.Fallocate(h.fd, mode, off, length); err != nil {
		return errno(err)
	}
	s.invalRange(h.node, off, length)
	return nil
}

// Lseek implements proto.FileSystem (SEEK_DATA, SEEK_HOLE).
func (s *Server) Lseek(ctx context.Context, hid proto.HandleID, off int64, whence int) (int64, error) {
	h, done, err := s.useHandle(hid)
	if err != nil {
		return 0, err
	}
	defer done()
	r, err := unix.Seek(h.fd, off, whence)
	return r, errno(err)
}

// Release implements proto.FileSystem.
func (s *Server) Release(ctx context.Context, hid proto.HandleID) error {
	s.hmu.Lock()
	h := s.handles[hid]
	delete(s.handles, hid)
	s.hmu.Unlock()
	if h == nil {
		return syscall.EBADF
	}
	closeHandle(h)
	if h.write {
		// Writes through the descriptor the client was given never reached
		// the server; now that they are done, other clients must drop what
		// they cached (close-to-open consistency, as NFS).
		s.invalNode(h.node)
	}
	s.mu.Lock()
	h.node.handles--
	s.maybeFreeLocked(h.node)
	s.mu.Unlock()
	return nil
}
