package control

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// The holder mounts /dev/fuse itself, instead of letting the bridge do it,
// so that the mount's source names the translator ("herd:hello --contents
// x"): that is how showtrans tells a host translator's mount from a
// subenvironment's (source "herd") in /proc/self/mountinfo. The bridge then
// serves the mounted descriptor (fsbridge.Serve).

// fuseMount mounts a FUSE filesystem on dir and returns the /dev/fuse
// descriptor. As root it calls mount(2); otherwise fusermount3 mounts and
// passes the descriptor back over a socket (its _FUSE_COMMFD protocol).
func fuseMount(dir, source, subtype string, isDir bool) (*os.File, error) {
	source = mountSafe(source)
	if os.Geteuid() == 0 {
		return mountDirect(dir, source, subtype, isDir)
	}
	return mountFusermount(dir, source, subtype)
}

// mountSafe keeps a source that mount options and mountinfo carry intact.
func mountSafe(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == ',' || r == '\\' || r < ' ' {
			return '_'
		}
		return r
	}, s)
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

func mountDirect(dir, source, subtype string, isDir bool) (*os.File, error) {
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/fuse: %w", err)
	}
	rootmode := uint32(unix.S_IFREG)
	if isDir {
		rootmode = unix.S_IFDIR
	}
	data := fmt.Sprintf("fd=%d,rootmode=%o,user_id=%d,group_id=%d,max_read=1048576,default_permissions,allow_other",
		fd, rootmode, os.Geteuid(), os.Getegid())
	if err := unix.Mount(source, dir, "fuse."+subtype, unix.MS_NOSUID|unix.MS_NODEV, data); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("mount on %s: %w", dir, err)
	}
	return os.NewFile(uintptr(fd), "/dev/fuse"), nil
}

func fusermountPath() (string, error) {
	for _, bin := range []string{"fusermount3", "fusermount"} {
		if p, err := exec.LookPath(bin); err == nil {
			return p, nil
		}
	}
	for _, p := range []string{"/usr/bin/fusermount3", "/bin/fusermount3"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("fusermount3 not found (install Debian's fuse3 package)")
}

func mountFusermount(dir, source, subtype string) (*os.File, error) {
	bin, err := fusermountPath()
	if err != nil {
		return nil, err
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	ours := os.NewFile(uintptr(fds[0]), "fusermount-sock")
	theirs := os.NewFile(uintptr(fds[1]), "fusermount-sock")
	defer ours.Close()
	opts := []string{"fsname=" + source, "subtype=" + subtype, "default_permissions", "nosuid", "nodev"}
	if userAllowOther() {
		opts = append(opts, "allow_other")
	}
	cmd := exec.Command(bin, "-o", strings.Join(opts, ","), "--", dir)
	cmd.ExtraFiles = []*os.File{theirs} // fd 3
	cmd.Env = append(os.Environ(), "_FUSE_COMMFD=3")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		theirs.Close()
		return nil, fmt.Errorf("%s: %w", bin, err)
	}
	theirs.Close()
	fd, rerr := recvFD(fds[0])
	werr := cmd.Wait()
	if rerr != nil || werr != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		msg := strings.TrimSpace(out.String())
		if msg == "" && werr != nil {
			msg = werr.Error()
		} else if msg == "" {
			msg = rerr.Error()
		}
		return nil, fmt.Errorf("fusermount3: %s", msg)
	}
	unix.CloseOnExec(fd)
	return os.NewFile(uintptr(fd), "/dev/fuse"), nil
}

func recvFD(sock int) (int, error) {
	buf := make([]byte, 1)
	oob := make([]byte, unix.CmsgSpace(4))
	for {
		_, oobn, _, _, err := unix.Recvmsg(sock, buf, oob, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return -1, err
		}
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil || len(msgs) == 0 {
			return -1, errors.New("no descriptor received")
		}
		fds, err := unix.ParseUnixRights(&msgs[0])
		if err != nil || len(fds) == 0 {
			return -1, errors.New("no descriptor received")
		}
		return fds[0], nil
	}
}

func userAllowOther() bool {
	b, err := os.ReadFile("/etc/fuse.conf")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.TrimSpace(l) == "user_allow_other" {
			return true
		}
	}
	return false
}

// fuseUnmount unmounts dir; a busy mount is detached when lazy is set (the
// kernel ends it when its last file closes) and gives EBUSY otherwise.
func fuseUnmount(dir string, lazy bool) error {
	if os.Geteuid() == 0 {
		err := unix.Unmount(dir, 0)
		if errors.Is(err, unix.EBUSY) && lazy {
			err = unix.Unmount(dir, unix.MNT_DETACH)
		}
		if err != nil {
			return &os.PathError{Op: "unmount", Path: dir, Err: err}
		}
		return nil
	}
	bin, err := fusermountPath()
	if err != nil {
		return err
	}
	out, err := exec.Command(bin, "-u", "--", dir).CombinedOutput()
	if err != nil && lazy {
		out, err = exec.Command(bin, "-u", "-z", "--", dir).CombinedOutput()
	}
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if strings.Contains(msg, "busy") {
			return &os.PathError{Op: "unmount", Path: dir, Err: syscall.EBUSY}
		}
		return fmt.Errorf("fusermount3 -u %s: %s", dir, msg)
	}
	return nil
}
