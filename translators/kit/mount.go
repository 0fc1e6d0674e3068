package kit

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"herd/proto"
	"herd/subenv/fsbridge"
)

// MountOptions configure Mount.
type MountOptions struct {
	Name   string // the mount's type is fuse.Name (default "herd")
	Source string // the mount's source in /proc/self/mountinfo (default "herd:Name")
	Debug  bool   // log every FUSE request
	// Notifier: when fs is a proto.Client, the Notifier given to it as
	// ClientOptions.Notifier, so its invalidations reach the kernel.
	Notifier *fsbridge.Notifier
}

// Mounted is a translator mounted by FUSE on the host (--mount).
type Mounted struct {
	dir    string
	b      *fsbridge.Bridge
	direct bool // mounted by mount(2) here, served with fsbridge.Serve
}

// Mount mounts fs on dir by FUSE. The mount point must be of the root's
// type: a directory for a tree, a file for a one-file translator (the
// kernel takes the root's type from the mount point).
//
// Mount calls mount(2) itself when it may (root, or root of a user
// namespace owning the mount namespace: `unshare -Urm`), which also mounts
// on files; otherwise it leaves the mount to fsbridge.Mount (fusermount3).
func Mount(dir string, fs proto.FileSystem, mo MountOptions) (*Mounted, error) {
	if mo.Name == "" {
		mo.Name = "herd"
	}
	if mo.Source == "" {
		mo.Source = "herd:" + mo.Name
	}
	// Passthrough: files a translator backs by host files (Loopback) are read
	// and written by the kernel itself where it allows.
	// Translator: contents that change without a notification (a node
	// that forgets to call InvalidateNode) are seen within a second.
	bo := fsbridge.Options{IDMap: fsbridge.IDMap{Identity: true}, Debug: mo.Debug, Notifier: mo.Notifier, Passthrough: true, Translator: true}
	rootMode, err := checkMountPoint(dir, fs)
	if err != nil {
		return nil, err
	}
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return nil, &os.PathError{Op: "stat", Path: dir, Err: err}
	}
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/fuse: %w", err)
	}
	dev := os.NewFile(uintptr(fd), "/dev/fuse")
	defer dev.Close() // Serve keeps its own copy
	opts := []string{
		fmt.Sprintf("fd=%d", fd),
		// The root's own type: a symlink root (symlink translator) sits on
		// a file, which the kernel allows for any non-directory.
		fmt.Sprintf("rootmode=%o", rootMode&syscall.S_IFMT),
		fmt.Sprintf("user_id=%d", os.Geteuid()),
		fmt.Sprintf("group_id=%d", os.Getegid()),
		"max_read=1048576",
		"default_permissions",
	}
	if os.Geteuid() == 0 {
		opts = append(opts, "allow_other")
	}
	err = unix.Mount(mo.Source, dir, "fuse."+mo.Name, unix.MS_NOSUID|unix.MS_NODEV, strings.Join(opts, ","))
	if errors.Is(err, unix.EPERM) && st.Mode&syscall.S_IFMT == syscall.S_IFDIR {
		// Not privileged here: fusermount3 may do it.
		b, err := fsbridge.Mount(dir, fs, bo)
		if err != nil {
			return nil, fmt.Errorf("%w (without root, mount inside a user namespace: unshare -Urm)", err)
		}
		return &Mounted{dir: dir, b: b}, nil
	}
	if errors.Is(err, unix.EPERM) {
		return nil, fmt.Errorf("mount on %s: %w (without root, run it inside a user namespace: unshare -Urm)", dir, err)
	}
	if err != nil {
		return nil, fmt.Errorf("mount on %s: %w", dir, err)
	}
	b, err := fsbridge.Serve(dev, fs, bo)
	if err != nil {
		unix.Unmount(dir, unix.MNT_DETACH)
		return nil, err
	}
	if err := pollHack(dir, rootMode); err != nil {
		b.Unmount()
		unix.Unmount(dir, unix.MNT_DETACH)
		return nil, fmt.Errorf("mount on %s: first poll: %w", dir, err)
	}
	return &Mounted{dir: dir, b: b, direct: true}, nil
}

// pollHack makes the kernel learn at once that the bridge does not serve
// poll (as go-fuse does after its own mounts). Otherwise the first file a
// Go program in this process opens on the mount is polled when the runtime
// adds it to its epoll set, and that request waits for a server thread the
// runtime cannot schedule: a deadlock. Raw syscalls, never os.Open, here.
func pollHack(dir string, mode uint32) error {
	p := dir
	if mode&syscall.S_IFMT == syscall.S_IFLNK {
		return nil // opening would follow it out of the mount
	}
	if mode&syscall.S_IFMT == syscall.S_IFDIR {
		p = dir + "/.go-fuse-epoll-hack" // answered by go-fuse itself
	}
	fd, err := syscall.Open(p, syscall.O_RDONLY|syscall.O_CLOEXEC|syscall.O_NONBLOCK, 0)
	if err != nil {
		if mode&syscall.S_IFMT != syscall.S_IFDIR {
			return nil // an unreadable file: nothing in this process opens it either
		}
		return err
	}
	defer syscall.Close(fd)
	unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLPRI | unix.POLLOUT}}, 0)
	return nil
}

// Wait returns when the mount is gone (umount by someone, or Unmount).
func (m *Mounted) Wait() { m.b.Wait() }

// Unmount unmounts and waits for the bridge to stop; a mount still in use
// is detached (it goes when its last file closes).
func (m *Mounted) Unmount() error {
	if !m.direct {
		return m.b.Unmount()
	}
	m.b.Unmount() // answer EIO from now on
	err := unix.Unmount(m.dir, 0)
	if errors.Is(err, unix.EBUSY) {
		err = unix.Unmount(m.dir, unix.MNT_DETACH)
		if err == nil {
			return nil // the bridge ends when the last user closes
		}
	}
	if errors.Is(err, unix.EINVAL) {
		err = nil // not mounted any more
	}
	if err != nil {
		return fmt.Errorf("unmount %s: %w", m.dir, err)
	}
	m.b.Wait()
	return nil
}
