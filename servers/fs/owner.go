package fs

import (
	"fmt"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// Owner records: what a server running as a plain user cannot set on the
// host. A plain user's subenvironment maps their /etc/subuid range, so
// programs inside chown files to, and create files as, uids the user may
// not give a file on the host. The server keeps such an owner in an xattr
// of the file in the writable layer, user.herd.owner = "UID:GID" (host
// ids), and reports it in the file's attributes, as rootless podman's
// fuse-overlayfs does. The file itself stays the user's, so the server can
// go on reading and writing it; the kernel checks permissions against the
// reported owner (the bridge mounts with default_permissions).
//
// Only ids the user could map are recorded: their own, their groups, and
// the ranges /etc/subuid and /etc/subgid grant them (what newuidmap lets a
// subenvironment map). Any other chown is refused (EPERM) as before.
//
// Only regular files and directories can carry user.* xattrs; a symlink or
// a device node keeps its host owner, and a chown of one to an id the user
// cannot give is accepted without effect (as fuse-overlayfs does): their
// owners matter little, and failing would break tar and package managers.
//
// A record may also hold permission bits ("UID:GID:MODE", octal), when
// the real ones had to stay open to the server (see chmodAt).
//
// Reading a record costs one getxattr per attribute answer, so none is
// read until a record exists: the writable layer's root carries
// user.herd.owners once one was written (a kept layer, a --rw tree).
// Programs inside see neither xattr, and cannot set them.
const (
	xattrOwner  = "user.herd.owner"
	xattrOwners = "user.herd.owners"
)

// ownerState is the server's knowledge of its records.
type ownerState struct {
	once sync.Once
	on   atomic.Bool // records may exist in the writable layer

	rangesOnce sync.Once
	uids, gids []idRange // the user's /etc/subuid, /etc/subgid ranges
	groups     []uint32  // the server's groups
}

type idRange struct{ start, count uint32 }

func inRanges(rs []idRange, id uint32) bool {
	for _, r := range rs {
		if id-r.start < r.count {
			return true
		}
	}
	return false
}

// loadRanges reads the server user's subordinate ranges, once, when the
// first chown is refused.
func (s *Server) loadRanges() {
	s.own.rangesOnce.Do(func() {
		name := ""
		if u, err := user.LookupId(strconv.Itoa(s.euid)); err == nil {
			name = u.Username
		}
		s.own.uids = subRanges("/etc/subuid", name, s.euid)
		s.own.gids = subRanges("/etc/subgid", name, s.euid)
		s.own.groups = append(s.own.groups, uint32(os.Getegid()))
		if gs, err := os.Getgroups(); err == nil {
			for _, g := range gs {
				s.own.groups = append(s.own.groups, uint32(g))
			}
		}
	})
}

// subRanges returns every "name:start:count" (or "uid:start:count") line
// of a subuid/subgid file for the user.
func subRanges(file, name string, id int) []idRange {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil
	}
	var out []idRange
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(strings.TrimSpace(line), ":")
		if len(f) != 3 || (f[0] != name && f[0] != strconv.Itoa(id)) {
			continue
		}
		start, err1 := strconv.ParseUint(f[1], 10, 32)
		count, err2 := strconv.ParseUint(f[2], 10, 32)
		if err1 == nil && err2 == nil && count > 0 {
			out = append(out, idRange{uint32(start), uint32(count)})
		}
	}
	return out
}

// mayRecord: the user could map uid and gid (cur is the file's real gid).
func (s *Server) mayRecord(uid, gid, cur uint32) bool {
	s.loadRanges()
	if uid != uint32(s.euid) && !inRanges(s.own.uids, uid) {
		return false
	}
	return gid == cur || slices.Contains(s.own.groups, gid) || inRanges(s.own.gids, gid)
}

// ownersOn reports whether records may exist.
func (s *Server) ownersOn() bool {
	s.own.once.Do(func() {
		if s.upper >= 0 {
			if _, err := oGet(s.upper, "", xattrOwners); err == nil {
				s.own.on.Store(true)
			}
		}
	})
	return s.own.on.Load()
}

// ownerXattr: names programs must not see or set.
func ownerXattr(attr string) bool { return attr == xattrOwner || attr == xattrOwners }

// ownerRec is one owner record: host ids, and permission bits when the
// file's real ones differ (see chmodAt).
type ownerRec struct {
	uid, gid uint32
	mode     uint32
	hasMode  bool
}

func (r ownerRec) String() string {
	if r.hasMode {
		return fmt.Sprintf("%d:%d:%o", r.uid, r.gid, r.mode)
	}
	return fmt.Sprintf("%d:%d", r.uid, r.gid)
}

func parseRecord(v []byte) (ownerRec, bool) {
	var r ownerRec
	f := strings.Split(string(v), ":")
	if len(f) < 2 || len(f) > 3 {
		return r, false
	}
	u, err1 := strconv.ParseUint(f[0], 10, 32)
	g, err2 := strconv.ParseUint(f[1], 10, 32)
	if err1 != nil || err2 != nil {
		return r, false
	}
	r.uid, r.gid = uint32(u), uint32(g)
	if len(f) == 3 {
		m, err := strconv.ParseUint(f[2], 8, 32)
		if err != nil || m > 0o7777 {
			return r, false
		}
		r.mode, r.hasMode = uint32(m), true
	}
	return r, true
}

// recordOf returns the record of dirfd/name (name "" is dirfd itself), if
// any.
func (s *Server) recordOf(dirfd int, name string) (ownerRec, bool) {
	if !s.ownersOn() {
		return ownerRec{}, false
	}
	v, err := oGet(dirfd, name, xattrOwner)
	if err != nil {
		return ownerRec{}, false
	}
	return parseRecord(v)
}

// ownerAt puts the record of dirfd/name, a node in the writable layer that
// st describes, into st.
func (s *Server) ownerAt(dirfd int, name string, st *unix.Stat_t) {
	if r, ok := s.recordOf(dirfd, name); ok {
		st.Uid, st.Gid = r.uid, r.gid
		if r.hasMode {
			st.Mode = st.Mode&unix.S_IFMT | r.mode
		}
	}
}

// ownerComps is ownerAt for a node found by locate in the writable layer
// at comps.
func (s *Server) ownerComps(comps []string, st *unix.Stat_t) {
	if !s.ownersOn() {
		return
	}
	if len(comps) == 0 {
		s.ownerAt(s.upper, "", st)
		return
	}
	fd, err := openDirAt(s.upper, comps[:len(comps)-1])
	if err != nil {
		return
	}
	s.ownerAt(fd, comps[len(comps)-1], st)
	unix.Close(fd)
}

// current is dirfd/name's record, or one made of its real owner.
func (s *Server) current(dirfd int, name string, st *unix.Stat_t) ownerRec {
	if r, ok := s.recordOf(dirfd, name); ok {
		return r
	}
	return ownerRec{uid: st.Uid, gid: st.Gid}
}

// chownAt gives dirfd/name (in the writable layer; name "" is dirfd
// itself) the owner uid:gid in host ids, -1 for unchanged. As root it
// chowns. Otherwise it chowns what the kernel lets a plain user do (the
// user's own uid, a group of theirs) and records the rest.
func (s *Server) chownAt(dirfd int, name string, uid, gid int) error {
	if s.euid == 0 {
		if err := unix.Fchownat(dirfd, name, uid, gid, atFlags(name)); err != nil {
			return err
		}
		if s.ownersOn() {
			oRemove(dirfd, name, xattrOwner)
		}
		return nil
	}
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, atFlags(name)); err != nil {
		return err
	}
	r := s.current(dirfd, name, &st)
	if uid != -1 {
		r.uid = uint32(uid)
	}
	if gid != -1 {
		r.gid = uint32(gid)
	}
	if r.uid == uint32(s.euid) {
		// Maybe a real one: our uid and a group of ours.
		err := unix.Fchownat(dirfd, name, -1, int(r.gid), atFlags(name))
		if err == nil {
			st.Gid = r.gid
			return s.setRecord(dirfd, name, &st, r)
		}
		if err != unix.EPERM {
			return err
		}
	}
	if !s.mayRecord(r.uid, r.gid, st.Gid) {
		return syscall.EPERM
	}
	return s.setRecord(dirfd, name, &st, r)
}

// chmodAt gives dirfd/name (in the writable layer) the permission bits
// mode. A plain user's server keeps the owner's read and write bits (and
// search, for a directory) on the real file, lest it lock itself out of a
// file that root inside may still write (root's capabilities reach it, the
// server's do not), and records the bits it did not set. Only in
// copy-on-write mode: with --rw the files are the user's own, and a chmod
// is real.
func (s *Server) chmodAt(dirfd int, name string, mode uint32) error {
	var st unix.Stat_t
	if s.euid == 0 || !s.cow || unix.Fstatat(dirfd, name, &st, atFlags(name)) != nil {
		return s.chmodReal(dirfd, name, mode)
	}
	need := uint32(0o600)
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		need = 0o700
	case unix.S_IFREG:
	default:
		return s.chmodReal(dirfd, name, mode)
	}
	r, had := s.recordOf(dirfd, name)
	if !had {
		r = ownerRec{uid: st.Uid, gid: st.Gid}
	}
	if mode&need == need {
		if err := chmodAt(dirfd, name, mode); err != nil {
			return err
		}
		if had && r.hasMode {
			r.hasMode = false
			return s.setRecord(dirfd, name, &st, r)
		}
		return nil
	}
	if err := chmodAt(dirfd, name, mode|need); err != nil {
		return err
	}
	r.mode, r.hasMode = mode, true
	if err := s.setRecord(dirfd, name, &st, r); err != nil {
		// No xattrs: the real bits, as before.
		return chmodAt(dirfd, name, mode)
	}
	return nil
}

// chmodReal sets the real bits, dropping a recorded mode.
func (s *Server) chmodReal(dirfd int, name string, mode uint32) error {
	if err := chmodAt(dirfd, name, mode); err != nil {
		return err
	}
	if r, ok := s.recordOf(dirfd, name); ok && r.hasMode {
		var st unix.Stat_t
		if err := unix.Fstatat(dirfd, name, &st, atFlags(name)); err == nil {
			r.hasMode = false
			return s.setRecord(dirfd, name, &st, r)
		}
	}
	return nil
}

// setRecord makes r the record of dirfd/name whose real attributes are st:
// none when they agree.
func (s *Server) setRecord(dirfd int, name string, st *unix.Stat_t, r ownerRec) error {
	ft := st.Mode & unix.S_IFMT
	if ft != unix.S_IFREG && ft != unix.S_IFDIR {
		// See above: such nodes keep their host owner, and have no record
		// (user xattrs cannot even be removed from a symlink: EPERM).
		return nil
	}
	if r.uid == st.Uid && r.gid == st.Gid && !r.hasMode {
		if s.ownersOn() {
			if err := oRemove(dirfd, name, xattrOwner); err != nil && err != unix.ENODATA {
				return err
			}
		}
		return nil
	}
	if !s.own.on.Load() {
		// Announced first: a reader must not miss a record written.
		if err := oSet(s.upper, "", xattrOwners, []byte("1")); err != nil {
			return fmt.Errorf("recording an owner: %w", err)
		}
		s.ownersOn()
		s.own.on.Store(true)
	}
	if err := oSet(dirfd, name, xattrOwner, []byte(r.String())); err != nil {
		if err == unix.ENOTSUP {
			// A writable layer without user xattrs: what the kernel
			// refused stays refused.
			return syscall.EPERM
		}
		return err
	}
	return nil
}

// ownNew gives a node just created in dirfd (whose attributes, with their
// record, are pst) as name the caller's ownership: uid, and the directory's
// group if it is set-group-ID, else gid. st is the new node's.
func (s *Server) ownNew(dirfd int, name string, pst, st *unix.Stat_t, uid, gid uint32) {
	if pst.Mode&unix.S_ISGID != 0 {
		gid = pst.Gid
	}
	if st.Uid == uid && st.Gid == gid {
		return
	}
	s.chownAt(dirfd, name, int(uid), int(gid))
}

// modeNew gives a node just created the permission bits mode when they
// would lock the server out (see chmodAt).
func (s *Server) modeNew(dirfd int, name string, st *unix.Stat_t, mode uint32) {
	if s.euid == 0 || !s.cow {
		return
	}
	need := uint32(0o600)
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		need = 0o700
	}
	if mode&need != need {
		s.chmodAt(dirfd, name, mode)
	}
}

// copiedUp gives dirfd/name, just copied up from a lower node with
// attributes lst, what a plain user's copy could not take on the host: the
// lower owner when the user could map it (files of their /etc/subuid range
// in the served tree), and permission bits that would shut the server out
// (a 0444 file that root inside opens for writing). For copyMeta
// (layers.go).
func (s *Server) copiedUp(dirfd int, name string, lst *unix.Stat_t) {
	if s.euid == 0 {
		return
	}
	var st unix.Stat_t
	if unix.Fstatat(dirfd, name, &st, atFlags(name)) != nil {
		return
	}
	if (lst.Uid != st.Uid || lst.Gid != st.Gid) && s.mayRecord(lst.Uid, lst.Gid, st.Gid) {
		s.setRecord(dirfd, name, &st, ownerRec{uid: lst.Uid, gid: lst.Gid})
	}
	s.modeNew(dirfd, name, &st, lst.Mode&0o7777)
}

// The *xattrat calls refuse an O_PATH descriptor itself (name ""), which
// is what the server holds of directories: those go through /proc.
func oGet(dirfd int, name, attr string) ([]byte, error) {
	if name == "" {
		return getXattrPath(xpath(dirfd, ""), attr)
	}
	return getXattrAt(dirfd, name, attr)
}

func oSet(dirfd int, name, attr string, v []byte) error {
	if name == "" {
		return setXattrPath(xpath(dirfd, ""), attr, v, 0)
	}
	return setXattrAt(dirfd, name, attr, v, 0)
}

func oRemove(dirfd int, name, attr string) error {
	if name == "" {
		return removeXattrPath(xpath(dirfd, ""), attr)
	}
	return removeXattrAt(dirfd, name, attr)
}
