package subenv

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// runtimeDir is one subenvironment's directory for sockets, the staging
// mount point of its root and (without --keep) its copy-on-write upper layer.
// It is $XDG_RUNTIME_DIR/herd/ID, or /tmp/herd-UID/ID where there is no
// XDG_RUNTIME_DIR; mode 0700, so only its owner reaches the servers' sockets.
type runtimeDir struct {
	Path   string
	ID     string
	lockFD int
}

// runtimeBase is the directory that holds the user's runtime dirs.
func runtimeBase() string {
	if x := os.Getenv("XDG_RUNTIME_DIR"); x != "" {
		return filepath.Join(x, "herd")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("herd-%d", os.Geteuid()))
}

func newRuntimeDir() (*runtimeDir, error) {
	base := runtimeBase()
	if err := os.MkdirAll(base, 0o700); err != nil {
		return nil, fmt.Errorf("runtime dir: %v", err)
	}
	// In a shared /tmp someone else may have made the directory first, to
	// watch or replace our sockets: refuse anything not ours or not private.
	var st syscall.Stat_t
	if err := syscall.Lstat(base, &st); err != nil {
		return nil, fmt.Errorf("runtime dir: %v", err)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return nil, fmt.Errorf("runtime dir %s is not a directory", base)
	}
	if int(st.Uid) != os.Geteuid() {
		return nil, fmt.Errorf("runtime dir %s belongs to uid %d, not to you (uid %d)", base, st.Uid, os.Geteuid())
	}
	if st.Mode&0o077 != 0 {
		if err := os.Chmod(base, 0o700); err != nil {
			return nil, fmt.Errorf("runtime dir %s is open to others: %v", base, err)
		}
	}
	var b [6]byte
	rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	p := filepath.Join(base, id)
	if err := os.Mkdir(p, 0o700); err != nil {
		return nil, fmt.Errorf("runtime dir: %v", err)
	}
	r := &runtimeDir{Path: p, ID: id, lockFD: -1}
	if err := r.lock(); err != nil {
		os.Remove(p)
		return nil, err
	}
	return r, nil
}

func (r *runtimeDir) join(name string) string { return filepath.Join(r.Path, name) }

// remove deletes the runtime dir and everything in it. A program inside may
// have left directories without write permission in the upper layer, so
// open them up and try again before giving up.
func (r *runtimeDir) remove() error {
	if r == nil {
		return nil
	}
	if r.lockFD >= 0 {
		defer func() { syscall.Close(r.lockFD); r.lockFD = -1 }()
	}
	if err := os.RemoveAll(r.Path); err == nil {
		return nil
	}
	filepath.Walk(r.Path, func(p string, info os.FileInfo, err error) error {
		if err == nil && info.IsDir() {
			os.Chmod(p, 0o700)
		}
		return nil
	})
	return os.RemoveAll(r.Path)
}

// keepDir is where --keep NAME keeps its upper layer:
// $XDG_DATA_HOME/herd/keep/NAME, by default ~/.local/share/herd/keep/NAME.
func keepDir(name string) (string, error) {
	if name == "" || name == "." || name == ".." || filepath.Base(name) != name {
		return "", fmt.Errorf("--keep %q: a name, not a path", name)
	}
	data := os.Getenv("XDG_DATA_HOME")
	if data == "" {
		home, err := os.UserHomeDir()
		if err != nil || home == "" {
			return "", fmt.Errorf("--keep: neither XDG_DATA_HOME nor HOME is set")
		}
		data = filepath.Join(home, ".local", "share")
	}
	d := filepath.Join(data, "herd", "keep", name)
	if err := os.MkdirAll(d, 0o700); err != nil {
		return "", fmt.Errorf("--keep: %v", err)
	}
	return d, nil
}

// lockName is a file in each runtime dir of subenv's, flock'ed for as long
// as the subenv that made it runs. A runtime dir with the file unlocked
// belongs to a subenv that was killed before it could clean up.
const lockName = "subenv.lock"

// lock marks the runtime dir as in use; the lock goes with the process.
// The file gets its name only once locked, so a sweeper never sees it
// unlocked while we live.
func (r *runtimeDir) lock() error {
	tmp := r.join(lockName + ".new")
	fd, err := syscall.Open(tmp, syscall.O_CREAT|syscall.O_EXCL|syscall.O_RDWR|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("runtime dir: %v", err)
	}
	if err := syscall.Flock(fd, syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		syscall.Close(fd)
		return fmt.Errorf("runtime dir lock: %v", err)
	}
	if err := os.Rename(tmp, r.join(lockName)); err != nil {
		syscall.Close(fd)
		return fmt.Errorf("runtime dir lock: %v", err)
	}
	r.lockFD = fd
	return nil
}

// sweepStale removes the runtime dirs of subenvs that died without
// cleaning up (SIGKILL, a crash): those whose lock nobody holds. Dirs of
// other programs (no lock file) are left alone.
func sweepStale(base, self string) {
	ents, err := os.ReadDir(base)
	if err != nil {
		return
	}
	for _, e := range ents {
		p := filepath.Join(base, e.Name())
		if !e.IsDir() || p == self {
			continue
		}
		fd, err := syscall.Open(filepath.Join(p, lockName), syscall.O_RDONLY|syscall.O_CLOEXEC|syscall.O_NOFOLLOW, 0)
		if err != nil {
			continue
		}
		if syscall.Flock(fd, syscall.LOCK_EX|syscall.LOCK_NB) == nil {
			(&runtimeDir{Path: p, lockFD: -1}).remove()
		}
		syscall.Close(fd)
	}
}
