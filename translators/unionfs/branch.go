package unionfs

import (
	"path"
	"syscall"

	"golang.org/x/sys/unix"

	"herd/proto"
	"herd/translators/kit"
)

// branch is one directory of the union, held by an O_PATH descriptor so a
// rename of the host directory does not change what the union serves.
type branch struct {
	dir      string // as given, for GetOptions and --remove
	fd       int
	writable bool
}

func openBranch(dir string, writable bool) (*branch, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return &branch{dir: dir, fd: fd, writable: writable}, nil
}

func (b *branch) close() { unix.Close(b.fd) }

// split is rel's parent (relative to the branch, "" for its root) and base.
func split(rel string) (string, string) {
	d, f := path.Split(rel)
	return path.Clean("/" + d)[1:], f
}

func join(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// at runs fn on the branch's directory holding rel and rel's last name.
// The directory is resolved beneath the branch without following any
// symbolic link, so no name in the union leads out of a branch.
func (b *branch) at(rel string, fn func(dirfd int, base string) error) error {
	dir, base := split(rel)
	if dir == "" {
		return fn(b.fd, base)
	}
	fd, err := unix.Openat2(b.fd, dir, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		if err == unix.ELOOP || err == unix.EXDEV || err == unix.ENOTDIR {
			err = unix.ENOENT // a symlink or a file where the union has a directory
		}
		return err
	}
	defer unix.Close(fd)
	return fn(fd, base)
}

// lstat stats rel in the branch; the error is ENOENT when it is missing.
func (b *branch) lstat(rel string) (unix.Stat_t, error) {
	var st unix.Stat_t
	if rel == "" {
		return st, unix.Fstat(b.fd, &st)
	}
	err := b.at(rel, func(dirfd int, base string) error {
		return unix.Fstatat(dirfd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
	})
	return st, err
}

func (b *branch) exists(rel string) bool {
	_, err := b.lstat(rel)
	return err == nil
}

// Whiteouts: a deleted name that a lower branch still has is hidden by an
// empty file .wh.NAME beside it in the writable branch, and a directory
// made where a deleted one was is marked opaque (lower branches' contents
// do not show through) by .wh..wh..opq inside it: aufs' and overlayfs'
// userland conventions, so the branch stays an ordinary directory.
const (
	whPrefix = ".wh."
	opaque   = ".wh..wh..opq"
)

func whiteoutOf(rel string) string {
	d, f := split(rel)
	return join(d, whPrefix+f)
}

// blocked reports whether b hides rel in the branches below it: a
// whiteout of rel or of one of its parents, or an opaque parent.
func (b *branch) blocked(rel string) bool {
	if rel == "" {
		return false
	}
	p := ""
	for _, name := range splitAll(rel) {
		if p != "" && b.exists(join(p, opaque)) {
			return true
		}
		p = join(p, name)
		if b.exists(whiteoutOf(p)) {
			return true
		}
	}
	return false
}

func splitAll(rel string) []string {
	var out []string
	for rel != "" {
		d, f := split(rel)
		out = append([]string{f}, out...)
		rel = d
	}
	return out
}

// readdir lists the branch's directory rel.
func (b *branch) readdir(rel string) ([]proto.DirEntry, error) {
	var fd int
	var err error
	if rel == "" {
		fd, err = unix.Openat(b.fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	} else {
		err = b.at(rel, func(dirfd int, base string) error {
			fd, err = unix.Openat(dirfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			return err
		})
	}
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	return kit.ReadDirFD(fd)
}

func isDir(st *unix.Stat_t) bool { return st.Mode&syscall.S_IFMT == syscall.S_IFDIR }
