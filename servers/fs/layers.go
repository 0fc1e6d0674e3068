package fs

import (
	"encoding/binary"
	"fmt"
	"strings"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// openBeneath opens rel beneath the layer root fd; nothing outside can be reached.
func openBeneath(root int, rel string, flags int) (int, error) {
	if rel == "" {
		rel = "."
	}
	how := unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC),
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	}
	for i := 0; ; i++ {
		fd, err := unix.Openat2(root, rel, &how)
		// EAGAIN: the kernel saw a rename race during `..` resolution; try again.
		if (err == unix.EAGAIN || err == unix.EINTR) && i < 100 {
			continue
		}
		return fd, err
	}
}

func joinPath(comps []string) string {
	if len(comps) == 0 {
		return "."
	}
	return strings.Join(comps, "/")
}

func openDirAt(root int, comps []string) (int, error) {
	return openBeneath(root, joinPath(comps), unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW)
}

// statAt stats comps beneath root without following a final symlink.
func statAt(root int, comps []string) (unix.Stat_t, error) {
	var st unix.Stat_t
	fd, err := openBeneath(root, joinPath(comps), unix.O_PATH|unix.O_NOFOLLOW)
	if err != nil {
		return st, err
	}
	err = unix.Fstat(fd, &st)
	unix.Close(fd)
	return st, err
}

func exists(dirfd int, name string) bool {
	var st unix.Stat_t
	return unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil
}

func isDirAt(dirfd int, name string) bool {
	var st unix.Stat_t
	return unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR
}

func isOpaque(dirfd int) bool { return exists(dirfd, opaqueName) }

func markOpaque(dirfd int) error {
	fd, err := unix.Openat(dirfd, opaqueName, unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		// dirfd may be O_PATH: go through its magic link once.
		fd, err = unix.Open(fmt.Sprintf("/proc/self/fd/%d/%s", dirfd, opaqueName), unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
		if err != nil {
			return err
		}
	}
	return unix.Close(fd)
}

// createAt creates (or truncates) name in dirfd; dirfd may be an O_PATH descriptor.
func createAt(dirfd int, name string, flags int, mode uint32) (int, error) {
	return unix.Openat(dirfd, name, flags|unix.O_CLOEXEC|unix.O_NOFOLLOW, mode)
}

func makeWhiteout(dirfd int, name string) error {
	fd, err := createAt(dirfd, whPrefix+name, unix.O_CREAT|unix.O_WRONLY, 0)
	if err != nil {
		return err
	}
	return unix.Close(fd)
}

// view is a merged directory opened for one operation.
type view struct {
	comps          []string
	ufd            int // upper dir (O_PATH), -1 when absent or no upper
	lfd            int // lower dir (O_PATH), -1 when absent or not visible
	uOwned, lOwned bool
}

func (v *view) close() {
	if v.ufd >= 0 && v.uOwned {
		unix.Close(v.ufd)
	}
	if v.lfd >= 0 && v.lOwned {
		unix.Close(v.lfd)
	}
}

// openView opens directory node d in both layers (through the cache).
func (s *Server) openView(d *node) (*view, error) {
	comps, err := s.pathOf(d)
	if err != nil {
		return nil, err
	}
	return s.openViewOf(d, comps, d.lowerHidden)
}

// openViewPath opens a directory by path, bypassing the cache.
func (s *Server) openViewPath(comps []string, lowerHidden bool) (*view, error) {
	return s.openViewOf(nil, comps, lowerHidden)
}

func (s *Server) openViewOf(d *node, comps []string, lowerHidden bool) (*view, error) {
	v := &view{comps: comps, ufd: -1, lfd: -1}
	open := func(upper bool, root int) (int, bool, error) {
		if d == nil {
			fd, err := openDirAt(root, comps)
			return fd, err == nil, err
		}
		return s.cachedDir(d, upper, root, comps)
	}
	if s.upper >= 0 {
		fd, owned, err := open(true, s.upper)
		switch {
		case err == nil:
			v.ufd, v.uOwned = fd, owned
		case err == unix.ENOENT && s.cow:
		default:
			if err == unix.ELOOP {
				err = unix.ENOTDIR
			}
			return nil, err
		}
	}
	if s.lower >= 0 && !lowerHidden && (v.ufd < 0 || !isOpaque(v.ufd)) {
		fd, owned, err := open(false, s.lower)
		switch {
		case err == nil:
			v.lfd, v.lOwned = fd, owned
		case err == unix.ENOENT:
		default:
			v.close()
			if err == unix.ELOOP {
				err = unix.ENOTDIR
			}
			return nil, err
		}
	}
	if v.ufd < 0 && v.lfd < 0 {
		return nil, unix.ENOENT
	}
	return v, nil
}

// lookup finds name in v: its stat, whether it is in the upper layer, and
// whether the lower layer is hidden below it.
func (s *Server) lookupIn(v *view, name string) (st unix.Stat_t, inUpper bool, lowerHidden bool, err error) {
	if v.ufd >= 0 {
		err = unix.Fstatat(v.ufd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
		if err == nil {
			return st, true, v.lfd < 0, nil
		}
		if err != unix.ENOENT {
			return st, false, false, err
		}
		if s.cow && exists(v.ufd, whPrefix+name) {
			return st, false, false, unix.ENOENT
		}
	}
	if v.lfd >= 0 {
		err = unix.Fstatat(v.lfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
		return st, false, false, err
	}
	return st, false, false, unix.ENOENT
}

// lowerHas reports whether the lower layer shows name in v.
func lowerHas(v *view, name string) bool {
	return v.lfd >= 0 && exists(v.lfd, name)
}

// locate stats node n: in the upper layer if it is there, else in the lower.
// The caller holds treeMu.
func (s *Server) locate(n *node) (st unix.Stat_t, inUpper bool, comps []string, err error) {
	s.mu.Lock()
	comps, err = s.pathOfLocked(n)
	p := n.parent
	s.mu.Unlock()
	if err != nil {
		return st, false, nil, err
	}
	if n == s.root {
		if s.cow && !s.rootUp.Load() {
			st, err = statAt(s.lower, nil)
			return st, false, comps, err
		}
		st, err = statAt(s.upper, nil)
		return st, true, comps, err
	}
	name, pcomps := comps[len(comps)-1], comps[:len(comps)-1]
	statIn := func(upper bool, root int) error {
		fd, owned, err := s.cachedDir(p, upper, root, pcomps)
		if err != nil {
			return err
		}
		err = unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
		if owned {
			unix.Close(fd)
		}
		return err
	}
	if s.upper >= 0 {
		err = statIn(true, s.upper)
		if err == nil {
			return st, true, comps, nil
		}
		if err != unix.ENOENT || !s.cow {
			return st, false, comps, err
		}
	}
	if s.lower >= 0 && !n.lowerHidden {
		err = statIn(false, s.lower)
		return st, false, comps, err
	}
	return st, false, comps, unix.ENOENT
}

// ---- directory listing ----

type rawDirent struct {
	name string
	ino  uint64
	typ  uint8
}

func readDirFD(root int, comps []string) ([]rawDirent, error) {
	fd, err := openBeneath(root, joinPath(comps), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	return getdents(fd)
}

// readDirAt lists the directory dirfd (an O_PATH descriptor) names.
func readDirAt(dirfd int) ([]rawDirent, error) {
	fd, err := unix.Openat(dirfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	return getdents(fd)
}

func getdents(fd int) ([]rawDirent, error) {
	var out []rawDirent
	buf := make([]byte, 32*1024)
	for {
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			break
		}
		for off := 0; off < n; {
			ino := binary.LittleEndian.Uint64(buf[off:])
			reclen := int(binary.LittleEndian.Uint16(buf[off+16:]))
			typ := buf[off+18]
			nameb := buf[off+19 : off+reclen]
			if i := indexByte(nameb, 0); i >= 0 {
				nameb = nameb[:i]
			}
			name := string(nameb)
			off += reclen
			if name == "." || name == ".." {
				continue
			}
			out = append(out, rawDirent{name: name, ino: ino, typ: typ})
		}
	}
	return out, nil
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

func dtToMode(t uint8) uint32 {
	switch t {
	case unix.DT_DIR:
		return unix.S_IFDIR
	case unix.DT_REG:
		return unix.S_IFREG
	case unix.DT_LNK:
		return unix.S_IFLNK
	case unix.DT_FIFO:
		return unix.S_IFIFO
	case unix.DT_SOCK:
		return unix.S_IFSOCK
	case unix.DT_CHR:
		return unix.S_IFCHR
	case unix.DT_BLK:
		return unix.S_IFBLK
	}
	return 0
}

// mergedList lists directory view v: upper entries (minus whiteouts and
// markers), then lower entries not covered by the upper layer.
func (s *Server) mergedList(v *view) ([]rawDirent, error) {
	var out []rawDirent
	seen := map[string]bool{}
	if v.ufd >= 0 {
		ents, err := readDirAt(v.ufd)
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			if s.cow && strings.HasPrefix(e.name, whPrefix) {
				seen[e.name[len(whPrefix):]] = true
				continue
			}
			if e.name == transTable {
				continue
			}
			seen[e.name] = true
			out = append(out, e)
		}
	}
	if v.lfd >= 0 {
		ents, err := readDirAt(v.lfd)
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			if seen[e.name] || strings.HasPrefix(e.name, whPrefix) || e.name == transTable {
				continue
			}
			out = append(out, e)
		}
	}
	return out, nil
}

// ---- copy-up ----

var copySeq atomic.Uint64

// copyUpPath makes sure comps exists in the upper layer, copying it (and its
// parents) from the lower layer. It returns true when it copied something.
func (s *Server) copyUpPath(comps []string, lowerHidden bool) (bool, error) {
	return s.copyUp(comps, lowerHidden, false)
}

// copyUp is copyUpPath; with noData a regular file's contents are not
// copied (it is about to be truncated).
func (s *Server) copyUp(comps []string, lowerHidden, noData bool) (bool, error) {
	if !s.cow || len(comps) == 0 {
		return false, nil
	}
	if _, err := statAt(s.upper, comps); err == nil {
		return false, nil
	}
	if lowerHidden {
		return false, unix.ENOENT
	}
	// Parents first: they are directories.
	for i := 1; i < len(comps); i++ {
		if _, err := statAt(s.upper, comps[:i]); err == nil {
			continue
		}
		if err := s.copyUpOne(comps[:i], false); err != nil {
			return false, err
		}
	}
	return true, s.copyUpOne(comps, noData)
}

// copyUpOne copies one entry whose parent exists in the upper layer.
func (s *Server) copyUpOne(comps []string, noData bool) error {
	parent, name := comps[:len(comps)-1], comps[len(comps)-1]
	lpfd, err := openDirAt(s.lower, parent)
	if err != nil {
		return err
	}
	defer unix.Close(lpfd)
	upfd, err := openDirAt(s.upper, parent)
	if err != nil {
		return err
	}
	defer unix.Close(upfd)
	var pst unix.Stat_t
	unix.Fstat(upfd, &pst)
	err = s.copyEntry(lpfd, upfd, name, name, noData)
	if err == nil {
		copyTransRecord(lpfd, name, upfd, name)
		if isDirAt(upfd, name) {
			s.invalPath(comps) // merged now: capabilities on it are void
		}
	}
	// A new upper directory makes cached "absent in upper" entries wrong.
	s.dirtyCache()
	// Creating the copy changed the upper parent's times; the merged
	// parent did not change, so put them back.
	restoreTimes(upfd, &pst)
	return err
}

func restoreTimes(fd int, st *unix.Stat_t) {
	ts := []unix.Timespec{st.Atim, st.Mtim}
	unix.UtimesNanoAt(fd, "", ts, unix.AT_EMPTY_PATH)
	// O_PATH descriptors need the magic link for utimensat.
	unix.UtimesNanoAt(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", fd), ts, 0)
}

// copyEntry copies lower name in lpfd to upper newName in upfd with its
// data, mode, owner, xattrs and times. A directory is created empty.
func (s *Server) copyEntry(lpfd, upfd int, name, newName string, noData bool) error {
	var st unix.Stat_t
	if err := unix.Fstatat(lpfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	perm := st.Mode & 0o7777
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		if err := unix.Mkdirat(upfd, newName, 0o700); err != nil && err != unix.EEXIST {
			return err
		}
		if err := s.copyMeta(lpfd, upfd, name, newName, &st); err != nil {
			return err
		}
		return nil
	case unix.S_IFREG:
		tmp := fmt.Sprintf("%scopyup.%d", whPrefix+whPrefix, copySeq.Add(1))
		src, err := unix.Openat(lpfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return err
		}
		defer unix.Close(src)
		dst, err := createAt(upfd, tmp, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		size := st.Size
		if noData {
			size = 0
		}
		if err := copyData(src, dst, size); err != nil {
			unix.Close(dst)
			unix.Unlinkat(upfd, tmp, 0)
			return err
		}
		copyXattrsAt(src, "", dst, "")
		unix.Close(dst)
		if err := s.copyMeta(lpfd, upfd, name, tmp, &st); err != nil {
			unix.Unlinkat(upfd, tmp, 0)
			return err
		}
		if err := unix.Renameat(upfd, tmp, upfd, newName); err != nil {
			unix.Unlinkat(upfd, tmp, 0)
			return err
		}
		return nil
	case unix.S_IFLNK:
		buf := make([]byte, unix.PathMax)
		n, err := unix.Readlinkat(lpfd, name, buf)
		if err != nil {
			return err
		}
		if err := unix.Symlinkat(string(buf[:n]), upfd, newName); err != nil {
			return err
		}
		if s.euid == 0 {
			unix.Fchownat(upfd, newName, int(st.Uid), int(st.Gid), unix.AT_SYMLINK_NOFOLLOW)
		}
		unix.UtimesNanoAt(upfd, newName, []unix.Timespec{st.Atim, st.Mtim}, unix.AT_SYMLINK_NOFOLLOW)
		return nil
	default:
		if err := unix.Mknodat(upfd, newName, st.Mode&unix.S_IFMT|perm, int(st.Rdev)); err != nil {
			return err
		}
		return s.copyMeta(lpfd, upfd, name, newName, &st)
	}
}

// copyMeta gives upper newName the owner, mode, xattrs and times of st.
func (s *Server) copyMeta(lpfd, upfd int, name, newName string, st *unix.Stat_t) error {
	if s.euid == 0 || int(st.Uid) == s.euid {
		// As a plain user a file of another owner becomes ours; that is
		// all the kernel lets us do.
		unix.Fchownat(upfd, newName, int(st.Uid), int(st.Gid), unix.AT_SYMLINK_NOFOLLOW)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		copyXattrsAt(lpfd, name, upfd, newName)
	}
	if err := unix.Fchmodat(upfd, newName, st.Mode&0o7777, 0); err != nil {
		return err
	}
	unix.UtimesNanoAt(upfd, newName, []unix.Timespec{st.Atim, st.Mtim}, unix.AT_SYMLINK_NOFOLLOW)
	s.copiedUp(upfd, newName, st) // owner.go
	return nil
}

// copyData copies size bytes keeping holes: only data extents are copied.
func copyData(src, dst int, size int64) error {
	if err := unix.Ftruncate(dst, size); err != nil {
		return err
	}
	var off int64
	for off < size {
		data, err := unix.Seek(src, off, unix.SEEK_DATA)
		if err == unix.ENXIO {
			break // only a hole remains
		}
		if err != nil {
			// No SEEK_DATA support: copy everything.
			data = off
		}
		hole, err := unix.Seek(src, data, unix.SEEK_HOLE)
		if err != nil {
			hole = size
		}
		if hole > size {
			hole = size
		}
		for data < hole {
			roff, woff := data, data
			n, err := unix.CopyFileRange(src, &roff, dst, &woff, int(min(hole-data, 1<<30)), 0)
			if err != nil || n == 0 {
				if err == nil && n == 0 {
					break
				}
				// Fall back to read/write (e.g. cross-device on old kernels).
				if err := copyRW(src, dst, data, hole); err != nil {
					return err
				}
				data = hole
				break
			}
			data += int64(n)
		}
		off = hole
	}
	return nil
}

func copyRW(src, dst int, from, to int64) error {
	buf := make([]byte, 1<<20)
	for from < to {
		n, err := unix.Pread(src, buf[:min(int64(len(buf)), to-from)], from)
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		if _, err := unix.Pwrite(dst, buf[:n], from); err != nil {
			return err
		}
		from += int64(n)
	}
	return nil
}

// xpath names dirfd/name for the path-based xattr calls without following
// name if it is a symlink (the l* calls follow only the /proc magic link,
// which is dirfd itself, beneath the root).
func xpath(dirfd int, name string) string {
	if name == "" {
		return fmt.Sprintf("/proc/self/fd/%d", dirfd)
	}
	return fmt.Sprintf("/proc/self/fd/%d/%s", dirfd, name)
}

// xattrPath calls act on the file p names without following a final symlink,
// except for a bare /proc/self/fd/N, which must be followed to reach the
// descriptor's file.
func isFDPath(p string) bool { return !strings.Contains(strings.TrimPrefix(p, "/proc/self/fd/"), "/") }

func listXattrsPath(p string) ([]string, error) {
	buf := make([]byte, 4096)
	for {
		var n int
		var err error
		if isFDPath(p) {
			n, err = unix.Listxattr(p, buf)
		} else {
			n, err = unix.Llistxattr(p, buf)
		}
		if err == unix.ERANGE {
			buf = make([]byte, len(buf)*4)
			continue
		}
		if err != nil {
			return nil, err
		}
		return splitNul(buf[:n]), nil
	}
}

func getXattrPath(p, name string) ([]byte, error) {
	buf := make([]byte, 4096)
	for {
		var n int
		var err error
		if isFDPath(p) {
			n, err = unix.Getxattr(p, name, buf)
		} else {
			n, err = unix.Lgetxattr(p, name, buf)
		}
		if err == unix.ERANGE && len(buf) < 1<<20 {
			buf = make([]byte, len(buf)*16)
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}

func copyXattrsPath(from, to string) {
	names, err := listXattrsPath(from)
	if err != nil {
		return
	}
	for _, n := range names {
		if v, err := getXattrPath(from, n); err == nil {
			setXattrPath(to, n, v, 0)
		}
	}
}

func splitNul(b []byte) []string {
	var out []string
	for _, p := range strings.Split(string(b), "\x00") {
		if p != "" {
			out = append(out, p)
		}
	}
	return out
}

// copyUpTree copies the whole merged directory at comps into the upper
// layer and marks it opaque, so it no longer depends on the lower layer
// (used before renaming a directory).
func (s *Server) copyUpTree(comps []string, lowerHidden bool) error {
	if _, err := s.copyUpPath(comps, lowerHidden); err != nil {
		return err
	}
	v, err := s.openViewPath(comps, lowerHidden)
	if err != nil {
		return err
	}
	defer v.close()
	if v.lfd < 0 {
		return nil
	}
	ents, err := s.mergedList(v)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if exists(v.ufd, e.name) {
			if e.typ == unix.DT_DIR {
				if err := s.copyUpTree(append(append([]string{}, comps...), e.name), false); err != nil {
					return err
				}
			}
			continue
		}
		if err := s.copyEntry(v.lfd, v.ufd, e.name, e.name, false); err != nil {
			return err
		}
		copyTransRecord(v.lfd, e.name, v.ufd, e.name)
		if e.typ == unix.DT_DIR {
			s.invalPath(append(append([]string{}, comps...), e.name))
			if err := s.copyUpTree(append(append([]string{}, comps...), e.name), false); err != nil {
				return err
			}
		}
	}
	var pst unix.Stat_t
	unix.Fstat(v.ufd, &pst)
	if err := markOpaque(v.ufd); err != nil {
		return err
	}
	restoreTimes(v.ufd, &pst)
	return nil
}

// clearUpperDir removes whiteouts and the opaque marker from an upper
// directory that is empty in the merged view, so rmdir/rename can replace it.
func clearUpperDir(root int, comps []string, cow bool) error {
	ents, err := readDirFD(root, comps)
	if err != nil {
		return err
	}
	fd, err := openDirAt(root, comps)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	for _, e := range ents {
		if (cow && strings.HasPrefix(e.name, whPrefix)) || e.name == transTable {
			if err := unix.Unlinkat(fd, e.name, 0); err != nil && err != unix.ENOENT {
				return err
			}
			continue
		}
		return syscall.ENOTEMPTY
	}
	return nil
}

func setXattrPath(p, name string, v []byte, flags int) error {
	if isFDPath(p) {
		return unix.Setxattr(p, name, v, flags)
	}
	return unix.Lsetxattr(p, name, v, flags)
}

func removeXattrPath(p, name string) error {
	if isFDPath(p) {
		return unix.Removexattr(p, name)
	}
	return unix.Lremovexattr(p, name)
}

// rootMarker in the upper root says the root's own attributes live in the
// upper layer (they were changed); until then the lower root's are shown,
// not those of whatever directory holds the upper layer.
const rootMarker = whPrefix + whPrefix + "root"

// copyUpRoot gives the upper root the lower root's owner, mode, xattrs and
// times, once, before the root's attributes change.
func (s *Server) copyUpRoot() error {
	if !s.cow || s.rootUp.Load() {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Fstat(s.lower, &st); err != nil {
		return err
	}
	if s.euid == 0 || int(st.Uid) == s.euid {
		unix.Fchownat(s.upper, "", int(st.Uid), int(st.Gid), unix.AT_EMPTY_PATH)
	}
	copyXattrsAt(s.lower, "", s.upper, "")
	if err := chmodAt(s.upper, "", st.Mode&0o7777); err != nil {
		return err
	}
	fd, err := createAt(s.upper, rootMarker, unix.O_CREAT|unix.O_WRONLY, 0)
	if err != nil {
		return err
	}
	unix.Close(fd)
	restoreTimes(s.upper, &st)
	s.rootUp.Store(true)
	return nil
}

// chmodAt changes the mode of name in dirfd without following a symlink, or
// of dirfd itself when name is "" (through /proc where fchmodat2 is missing).
func chmodAt(dirfd int, name string, mode uint32) error {
	if name != "" {
		return unix.Fchmodat(dirfd, name, mode, unix.AT_SYMLINK_NOFOLLOW)
	}
	err := unix.Fchmodat(dirfd, "", mode, unix.AT_EMPTY_PATH)
	if err == unix.EOPNOTSUPP || err == unix.EINVAL || err == unix.ENOSYS {
		err = unix.Fchmodat(unix.AT_FDCWD, xpath(dirfd, ""), mode, 0)
	}
	return err
}
