package unionfs

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"herd/proto"
)

// union is the set of branches, in lookup order. mu guards the slice;
// every call works on a snapshot. Run-time changes happen while the kit
// holds its options lock for writing, so no call is running when a
// removed branch's descriptor is closed.
type union struct {
	mu       sync.RWMutex
	branches []*branch

	// nmu guards nodes and every node's rel: the nodes the client knows,
	// by path and type.
	nmu      sync.Mutex
	nodes    map[nodeKey]*node
	lookedUp map[[2]string]bool // (directory, name) the client asked for
}

func (u *union) snapshot() []*branch {
	u.mu.RLock()
	defer u.mu.RUnlock()
	return slices.Clone(u.branches)
}

// add puts a branch at the front (writable, the Hurd's -w: it takes new
// files) or at the end (read-only).
func (u *union) add(dir string, writable, front bool) error {
	for _, b := range u.snapshot() {
		if b.dir == dir {
			return fmt.Errorf("%s is a branch already", dir)
		}
	}
	b, err := openBranch(dir, writable)
	if err != nil {
		return fmt.Errorf("branch %s: %w", dir, err)
	}
	u.mu.Lock()
	if front {
		u.branches = append([]*branch{b}, u.branches...)
	} else {
		u.branches = append(u.branches, b)
	}
	u.mu.Unlock()
	return nil
}

// underlyingName stands for the underlying node in the branch list.
const underlyingName = "(underlying node)"

// addUnderlying adds the node the translator sits on as the last branch.
func (u *union) addUnderlying(f *os.File) error {
	if f == nil {
		return fmt.Errorf("--underlying: there is no underlying node (start unionfs with settrans or --mount)")
	}
	fd, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", f.Fd()), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("--underlying: the underlying node: %w", err)
	}
	u.mu.Lock()
	u.branches = append(u.branches, &branch{dir: underlyingName, fd: fd})
	u.mu.Unlock()
	return nil
}

func (u *union) remove(dir string) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	for i, b := range u.branches {
		if b.dir == dir {
			if len(u.branches) == 1 {
				return fmt.Errorf("%s is the last branch: a union needs one", dir)
			}
			u.branches = slices.Delete(u.branches, i, i+1)
			b.close()
			return nil
		}
	}
	return fmt.Errorf("%s is not a branch: %w", dir, syscall.ENOENT)
}

func (u *union) close() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, b := range u.branches {
		b.close()
	}
	u.branches = nil
}

// visible finds rel: the first branch that has it, unless a branch above
// hides it (whiteout, opaque directory). It returns the branch's index.
func visible(bs []*branch, rel string) (int, unix.Stat_t, syscall.Errno) {
	for i, b := range bs {
		st, err := b.lstat(rel)
		if err == nil {
			return i, st, 0
		}
		if err != unix.ENOENT {
			return -1, st, proto.ToErrno(err)
		}
		if b.blocked(rel) {
			break
		}
	}
	return -1, unix.Stat_t{}, syscall.ENOENT
}

// writable is the index of the first writable branch: where new files go
// and changed ones are copied up to.
func writable(bs []*branch) (int, syscall.Errno) {
	for i, b := range bs {
		if b.writable {
			return i, 0
		}
	}
	return -1, syscall.EROFS
}

// readdir merges the listings of rel in every branch, first branch first:
// a name is listed once, whiteouts hide the names below them and are not
// listed themselves, an opaque directory ends the merge.
func readdir(bs []*branch, rel string) ([]proto.DirEntry, syscall.Errno) {
	seen := map[string]bool{}
	var out []proto.DirEntry
	for _, b := range bs {
		st, err := b.lstat(rel)
		if err == nil && !isDir(&st) {
			break
		}
		if err == nil {
			ents, err := b.readdir(rel)
			if err != nil {
				return nil, proto.ToErrno(err)
			}
			stop := false
			var hide []string
			for _, e := range ents {
				switch {
				case e.Name == opaque:
					stop = true
				case strings.HasPrefix(e.Name, whPrefix):
					hide = append(hide, e.Name[len(whPrefix):])
				case !seen[e.Name]:
					seen[e.Name] = true
					out = append(out, e)
				}
			}
			for _, h := range hide {
				seen[h] = true
			}
			if stop {
				break
			}
		}
		if b.blocked(rel) {
			break
		}
	}
	return out, 0
}

// ensureDir makes the directory rel exist in branch w, copying up its
// parents' and its own attributes from the branch that shows it.
func ensureDir(ctx context.Context, bs []*branch, w int, rel string) syscall.Errno {
	if rel == "" {
		return 0
	}
	if st, err := bs[w].lstat(rel); err == nil {
		if !isDir(&st) {
			return syscall.ENOTDIR
		}
		return 0
	}
	_, st, errno := visible(bs, rel)
	if errno != 0 {
		return errno
	}
	if !isDir(&st) {
		return syscall.ENOTDIR
	}
	d, _ := split(rel)
	if errno := ensureDir(ctx, bs, w, d); errno != 0 {
		return errno
	}
	err := bs[w].at(rel, func(dirfd int, base string) error {
		if err := unix.Mkdirat(dirfd, base, st.Mode&07777); err != nil && err != unix.EEXIST {
			return err
		}
		copyMeta(dirfd, base, &st)
		return nil
	})
	return errnoOf(err)
}

// copyMeta gives a copied-up name the original's owner (when we may),
// mode and times.
func copyMeta(dirfd int, base string, st *unix.Stat_t) {
	if os.Geteuid() == 0 {
		unix.Fchownat(dirfd, base, int(st.Uid), int(st.Gid), unix.AT_SYMLINK_NOFOLLOW)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFLNK {
		unix.Fchmodat(dirfd, base, st.Mode&07777, 0)
	}
	unix.UtimesNanoAt(dirfd, base, []unix.Timespec{st.Atim, st.Mtim}, unix.AT_SYMLINK_NOFOLLOW)
}

// copyUp makes rel exist in the first writable branch, copying it from
// the branch that shows it (contents, mode, owner, times), and returns that
// branch's index. Copies go to a hidden temporary name first and are
// renamed into place, so a crash leaves no half-copied file in view.
func copyUp(ctx context.Context, bs []*branch, rel string) (int, syscall.Errno) {
	w, errno := writable(bs)
	if errno != 0 {
		return -1, errno
	}
	if rel == "" {
		return w, 0 // every branch has the root: changes go to the writable one's
	}
	i, st, errno := visible(bs, rel)
	if errno != 0 {
		return -1, errno
	}
	if i == w {
		return w, 0
	}
	if i < w {
		return -1, syscall.EROFS // a read-only branch above the writable one shows it
	}
	d, _ := split(rel)
	if errno := ensureDir(ctx, bs, w, d); errno != 0 {
		return -1, errno
	}
	if isDir(&st) {
		return w, ensureDir(ctx, bs, w, rel)
	}
	tmp := fmt.Sprintf("%scopyup.%d", whPrefix, os.Getpid())
	err := bs[w].at(rel, func(dirfd int, base string) error {
		unix.Unlinkat(dirfd, tmp, 0)
		var err error
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFREG:
			err = copyFile(bs[i], rel, dirfd, tmp, &st)
		case syscall.S_IFLNK:
			var target string
			target, err = readlink(bs[i], rel)
			if err == nil {
				err = unix.Symlinkat(target, dirfd, tmp)
			}
		default:
			err = unix.Mknodat(dirfd, tmp, st.Mode, int(st.Rdev))
		}
		if err == nil {
			copyMeta(dirfd, tmp, &st)
			err = unix.Renameat(dirfd, tmp, dirfd, base)
		}
		if err != nil {
			unix.Unlinkat(dirfd, tmp, 0)
		}
		return err
	})
	if err != nil {
		return -1, proto.ToErrno(err)
	}
	return w, 0
}

func copyFile(from *branch, rel string, dirfd int, tmp string, st *unix.Stat_t) error {
	src, err := openIn(from, rel, unix.O_RDONLY)
	if err != nil {
		return err
	}
	sf := os.NewFile(uintptr(src), "src") // owns src now
	defer sf.Close()
	dst, err := unix.Openat(dirfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	df := os.NewFile(uintptr(dst), "dst")
	_, err = io.Copy(df, io.NewSectionReader(sf, 0, st.Size+1<<30))
	if cerr := df.Close(); err == nil {
		err = cerr
	}
	return err
}

// openIn opens rel in branch b (never following a final symlink).
func openIn(b *branch, rel string, flags int) (int, error) {
	return openMode(b, rel, flags, 0)
}

func openMode(b *branch, rel string, flags int, mode uint32) (int, error) {
	var fd int
	err := b.at(rel, func(dirfd int, base string) error {
		var err error
		fd, err = unix.Openat(dirfd, base, flags|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode)
		return err
	})
	return fd, err
}

func readlink(b *branch, rel string) (string, error) {
	var s string
	err := b.at(rel, func(dirfd int, base string) error {
		buf := make([]byte, 4096)
		k, err := unix.Readlinkat(dirfd, base, buf)
		s = string(buf[:max(k, 0)])
		return err
	})
	return s, err
}

// whiteout hides rel in the branches below w (if any of them has it).
func whiteout(bs []*branch, w int, rel string) syscall.Errno {
	if _, _, errno := visible(bs, rel); errno != 0 {
		return 0 // nothing shows through: no whiteout needed
	}
	err := bs[w].at(whiteoutOf(rel), func(dirfd int, base string) error {
		fd, err := unix.Openat(dirfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_CLOEXEC, 0)
		if err == nil {
			unix.Close(fd)
		}
		return err
	})
	return errnoOf(err)
}

// unwhiteout removes a whiteout of rel from branch w; it reports whether
// there was one.
func unwhiteout(b *branch, rel string) bool {
	return b.at(whiteoutOf(rel), func(dirfd int, base string) error {
		return unix.Unlinkat(dirfd, base, 0)
	}) == nil
}

// owned gives a new name the caller's ownership when the translator may
// (it runs as root), as a local filesystem would.
func errnoOf(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	return proto.ToErrno(err)
}

func owned(ctx context.Context, dirfd int, name string) {
	if c, ok := proto.CallerFrom(ctx); ok && os.Geteuid() == 0 {
		unix.Fchownat(dirfd, name, int(c.Uid), int(c.Gid), unix.AT_SYMLINK_NOFOLLOW)
	}
}
