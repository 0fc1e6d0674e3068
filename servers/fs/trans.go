package fs

import (
	"context"
	"encoding/json"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"herd/proto"
)

// Translator records and control xattrs.
const (
	xattrTranslator = "user.herd.translator" // passive record: argv joined with NUL
	xattrActive     = "user.herd.active"     // start now / show running argv
	xattrGoaway     = "user.herd.goaway"     // stop the running translator
	xattrOptions    = "user.herd.options"    // relay Get/SetOptions
	// transTable is the side table of passive records in a directory whose
	// filesystem refuses user xattrs (or for nodes that cannot carry them).
	transTable = ".herd-translators"
)

// translator is a running translator attached to a node.
type translator struct {
	argv   []string
	socket string
	proc   *os.Process
	client proto.FileSystem
	done   chan struct{} // closed when the process exited
	root   proto.Attr
}

// sideTable reads the side table of the directory dirfd.
func readSideTable(dirfd int) map[string]string {
	fd, err := unix.Openat(dirfd, transTable, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil
	}
	f := os.NewFile(uintptr(fd), transTable)
	defer f.Close()
	var m map[string]string
	if json.NewDecoder(f).Decode(&m) != nil {
		return nil
	}
	return m
}

func writeSideTable(dirfd int, m map[string]string) error {
	if len(m) == 0 {
		err := unix.Unlinkat(dirfd, transTable, 0)
		if err == unix.ENOENT {
			err = nil
		}
		return err
	}
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	tmp := transTable + ".new"
	fd, err := createAt(dirfd, tmp, unix.O_CREAT|unix.O_TRUNC|unix.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	_, err = unix.Write(fd, b)
	unix.Close(fd)
	if err != nil {
		return err
	}
	return unix.Renameat(dirfd, tmp, dirfd, transTable)
}

func (s *Server) sideTableGet(dirfd int, name string) ([]byte, bool) {
	if name == "" {
		return nil, false
	}
	m := readSideTable(dirfd)
	v, ok := m[name]
	if !ok {
		return nil, false
	}
	return []byte(v), true
}

// dropTransRecord forgets a side-table record for name (the name is going away).
func (s *Server) dropTransRecord(dirfd int, name string) {
	m := readSideTable(dirfd)
	if _, ok := m[name]; ok {
		delete(m, name)
		writeSideTable(dirfd, m)
	}
}

// mayTranslate: only the node's owner or root may attach a translator.
func (s *Server) mayTranslate(ctx context.Context, dirfd int, name string) error {
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, atFlags(name)); err != nil {
		return err
	}
	uid := uint32(s.euid)
	if c, ok := callerOf(ctx); ok {
		uid = c.Uid
	}
	if uid != 0 && uid != st.Uid {
		return syscall.EPERM
	}
	return nil
}

func (s *Server) setTransRecord(ctx context.Context, n *node, dirfd int, name string, value []byte, flags uint32) error {
	if err := s.mayTranslate(ctx, dirfd, name); err != nil {
		return errno(err)
	}
	if len(splitNul(value)) == 0 {
		return syscall.EINVAL
	}
	err := setXattrPath(xpath(dirfd, name), xattrTranslator, value, int(flags))
	if err == unix.ENOTSUP || err == unix.EPERM {
		if name == "" {
			return errno(err)
		}
		m := readSideTable(dirfd)
		if m == nil {
			m = map[string]string{}
		}
		m[name] = string(value)
		err = writeSideTable(dirfd, m)
	}
	return errno(err)
}

func (s *Server) removeTransRecord(ctx context.Context, n *node, dirfd int, name string) error {
	if err := s.mayTranslate(ctx, dirfd, name); err != nil {
		return errno(err)
	}
	err := removeXattrPath(xpath(dirfd, name), xattrTranslator)
	if m := readSideTable(dirfd); m != nil {
		if _, ok := m[name]; ok {
			delete(m, name)
			return errno(writeSideTable(dirfd, m))
		}
	}
	return errno(err)
}

// translate answers a lookup of c: with a redirect when c is translated.
func (s *Server) translate(ctx context.Context, c *node, e proto.Entry) (proto.Entry, error) {
	return e, nil
}

func (s *Server) transGetXattr(ctx context.Context, n *node, attr string) ([]byte, bool, error) {
	return nil, false, nil
}

func (s *Server) transSetXattr(ctx context.Context, n *node, attr string, value []byte) (bool, error) {
	return false, nil
}

func (s *Server) stopTranslator(n *node, inval bool) {}

func (s *Server) stopAllTranslators() {}
