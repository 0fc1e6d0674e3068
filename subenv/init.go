package subenv

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// initConfig is what the launcher tells the init (as JSON in argv).
type initConfig struct {
	Start    int64    // launcher's start time (UnixNano), for HERD_TRACE
	Staging  string   // host path where the init mounts the FUSE root
	Identity bool     // the whole uid range is mapped (host root): devpts may use gid 5
	Prog     []string // the program and its arguments
	Cwd      string   // the launcher's working directory, kept if it exists inside
	Hostname string
	Net      string   // --net spec
	NetArgs  []string // --publish/--allow/--deny for the net server
	NetDflt  bool     // no --net given
	TTY      int      // which of fds 0-2 is the controlling terminal with us in its foreground; -1: none
	WaitMaps bool     // the launcher writes our maps after we started: wait for msgMaps
	// Ranged: an /etc/subuid range is mapped too (told with msgMaps), so
	// gid 5 (tty) exists inside for devpts.
	Ranged bool `json:"-"`
}

// initError is a failure the init reports to the launcher, which prints it
// and exits with code.
type initError struct {
	code int
	msg  string
}

func (e *initError) Error() string { return e.msg }

// InitMain is the hidden `subenv init CONFIG`: pid 1 of the subenvironment's
// pid namespace, root of its user namespace. It mounts the FUSE root, hands
// the FUSE fd to the launcher (which serves it from the host: the kernel
// refuses FUSE passthrough to a server inside a user namespace), builds the
// new root, runs the program, reaps orphans and forwards signals. Its exit
// status is the program's (128+N when killed by signal N).
func InitMain(args []string) int {
	// fd 3 came without close-on-exec (an inherited ExtraFile); the
	// program must not inherit it.
	unix.CloseOnExec(3)
	ctl := os.NewFile(3, "ctl")
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "subenv init is started by subenv run, not by hand")
		return 2
	}
	var cfg initConfig
	if err := json.Unmarshal([]byte(args[0]), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "subenv init: bad config:", err)
		return 2
	}
	tr := newTracer("init", startFromNanos(cfg.Start))
	tr.step("init running")
	pid, err := initSetup(&cfg, ctl, tr)
	if err != nil {
		code := 1
		var ie *initError
		if errors.As(err, &ie) {
			code = ie.code
		}
		if sendMsg(ctl, msgError, append([]byte{byte(code)}, err.Error()...)) != nil {
			fmt.Fprintln(os.Stderr, "subenv:", err)
		}
		return code
	}
	if cfg.TTY < 0 {
		ctl.Close()
		ctl = nil
	}
	return reap(pid, cfg.TTY, ctl)
}

func initSetup(cfg *initConfig, ctl *os.File, tr *tracer) (int, error) {
	ns, mode, arg, err := netSetupFor(cfg.Net)
	if err != nil {
		return 0, err
	}
	// With newuidmap at work, we wait for our maps: before anything else,
	// or, when the net mode needs no mapped uid, after the network is up
	// (so the net server, the launcher's slowest step, starts meanwhile).
	waitMaps := func() error {
		m, err := recvMsg(ctl)
		if err != nil || m.kind != msgMaps {
			return fmt.Errorf("subenv went away before mapping our uid")
		}
		// Our capabilities came through the exec as ambient ones (see
		// allCaps); now that our uid is mapped we are the namespace's root.
		cfg.Ranged = len(m.data) > 0 && m.data[0] == 1
		tr.step("uid maps written")
		return nil
	}
	early := cfg.WaitMaps && netBeforeMaps(ns)
	if cfg.WaitMaps && !early {
		if err := waitMaps(); err != nil {
			return 0, err
		}
	}
	// Our mounts stay ours: nothing propagates back to the host.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return 0, fmt.Errorf("making mounts private: %v", err)
	}
	// The network first: its host half (starting the net server) is the
	// slowest step of the launcher, and runs while we mount the root.
	nctx := InitNetContext{Mode: mode, Arg: arg, Args: cfg.NetArgs, Default: cfg.NetDflt, Trace: tr.step}
	files, err := ns.InitNet(nctx)
	if err != nil {
		return 0, fmt.Errorf("net %s: %v", cfg.Net, err)
	}
	resolv := ""
	if rc, ok := ns.(ResolvConfer); ok && (len(files) > 0 || !cfg.NetDflt) {
		resolv = rc.ResolvConf(nctx)
	}
	if err := sendMsg(ctl, msgNet, nil, files...); err != nil {
		return 0, fmt.Errorf("handing net descriptors to subenv: %v", err)
	}
	for _, f := range files {
		f.Close()
	}
	if early {
		if err := waitMaps(); err != nil {
			return 0, err
		}
	}
	if cfg.Hostname != "" {
		unix.Sethostname([]byte(cfg.Hostname))
	}
	tr.step("net %s up", cfg.Net)

	fuse, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		return 0, fmt.Errorf("cannot open /dev/fuse: %v", err)
	}
	opts := fmt.Sprintf("fd=%d,rootmode=40000,user_id=0,group_id=0,allow_other,default_permissions", fuse.Fd())
	if err := unix.Mount("herd", cfg.Staging, "fuse.herd", 0, opts); err != nil {
		return 0, fmt.Errorf("mounting FUSE root: %v", err)
	}
	if err := sendMsg(ctl, msgFuse, nil, fuse); err != nil {
		return 0, fmt.Errorf("handing the FUSE fd to subenv: %v", err)
	}
	fuse.Close()
	tr.step("fuse mounted, fd sent")

	// The first access to the staging dir blocks until the launcher serves
	// the FUSE connection; it is what tells us the mount answers.
	if err := buildRoot(cfg, tr); err != nil {
		return 0, err
	}
	if resolv != "" {
		// Written now, into our /dev (a tmpfs no one else sees), and bound
		// after the pivot, when /etc/resolv.conf (maybe a symlink) resolves
		// inside the new root.
		if err := os.WriteFile(filepath.Join(cfg.Staging, resolvTmp), []byte(resolv), 0o644); err != nil {
			return 0, fmt.Errorf("resolv.conf: %v", err)
		}
	}
	if err := pivot(cfg.Staging); err != nil {
		return 0, err
	}
	tr.step("pivot_root done")
	if resolv != "" {
		if err := bindResolvConf(); err != nil {
			return 0, err
		}
		tr.step("resolv.conf bound (if there was one)")
	}
	if cfg.Cwd == "" || unix.Chdir(cfg.Cwd) != nil {
		unix.Chdir("/")
	}

	path, err := lookProg(cfg.Prog[0])
	if err != nil {
		return 0, err
	}
	// The launcher says when the host side (bridge, net) is ready.
	m, err := recvMsg(ctl)
	if err != nil || m.kind != msgReady {
		return 0, fmt.Errorf("subenv went away before the start")
	}
	attr := &syscall.ProcAttr{
		Env:   os.Environ(),
		Files: []uintptr{0, 1, 2},
		Sys:   &syscall.SysProcAttr{},
	}
	if cfg.TTY >= 0 {
		// The program gets a process group of its own in the terminal's
		// foreground: keys like ^C reach it alone, not also the launcher
		// and the init (which would forward them a second time).
		attr.Sys.Setpgid = true
		attr.Sys.Foreground = true
		attr.Sys.Ctty = cfg.TTY
	}
	if cfg.WaitMaps {
		// The program is forked from this thread, which must not hand it
		// the ambient capabilities we came with.
		runtime.LockOSThread()
		if err := dropAmbient(); err != nil {
			return 0, err
		}
	}
	pid, err := syscall.ForkExec(path, cfg.Prog, attr)
	if err != nil {
		return 0, progError(cfg.Prog[0], err)
	}
	tr.step("program started (pid %d)", pid)
	return pid, nil
}

// resolvTmp is where the init puts the net mode's resolv.conf before it is
// bound over /etc/resolv.conf (then removed: the bind keeps it).
const resolvTmp = "dev/.herd-resolv.conf"

func bindResolvConf() error {
	src := "/" + resolvTmp
	defer os.Remove(src)
	dst := "/etc/resolv.conf"
	if _, err := os.Stat(dst); err != nil {
		// None (a --root tree without one, or a dangling symlink): nothing
		// to bind over, and making one would write into the served tree
		// (the user's own with --rw).
		return nil
	}
	if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("binding resolv.conf over %s: %v", dst, err)
	}
	unix.Mount("", dst, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, "")
	return nil
}

func lookProg(name string) (string, error) {
	if strings.Contains(name, "/") {
		if _, err := os.Stat(name); err != nil {
			return "", progError(name, err)
		}
		return name, nil
	}
	p, err := exec.LookPath(name)
	if err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return "", &initError{127, name + ": no such file or directory"}
		}
		return "", progError(name, err)
	}
	return p, nil
}

// progError says why the program could not start, with the shell's codes:
// 127 not found, 126 found but not runnable.
func progError(name string, err error) error {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		code := 126
		if errno == syscall.ENOENT || errno == syscall.ENOTDIR {
			code = 127
		}
		return &initError{code, name + ": " + errno.Error()}
	}
	return &initError{126, name + ": " + err.Error()}
}

// reap waits for the program, reaping every orphan that the pid namespace
// hands to pid 1 meanwhile, and forwards the launcher's signals to the
// program. When the program ends, the init ends, and the kernel kills what
// is left in the namespace. With a terminal (tty >= 0), a program stopped
// by ^Z stops subenv too (see initProc.stopped) and is continued with it.
func reap(pid, tty int, ctl *os.File) int {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT)
	go func() {
		for s := range sigs {
			unix.Kill(pid, s.(syscall.Signal))
		}
	}()
	flags := 0
	var cont chan bool
	if ctl != nil {
		flags = unix.WUNTRACED
		cont = make(chan bool)
		go func() {
			for {
				m, err := recvMsg(ctl)
				if err != nil {
					close(cont)
					return
				}
				if m.kind == msgContinue {
					cont <- len(m.data) > 0 && m.data[0] == 1
				}
			}
		}()
		// Taking the terminal back for the program happens from the
		// background.
		signal.Ignore(unix.SIGTTOU)
	}
	for {
		var ws unix.WaitStatus
		p, err := unix.Wait4(-1, &ws, flags, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 1
		}
		if p != pid {
			continue
		}
		if ws.Stopped() {
			if sig := ws.StopSignal(); sig != unix.SIGTSTP && sig != unix.SIGTTIN && sig != unix.SIGTTOU {
				continue // a SIGSTOP from inside is none of the terminal's business
			}
			if sendMsg(ctl, msgStopped, nil) != nil {
				unix.Kill(-pid, unix.SIGCONT)
				continue
			}
			fg, ok := <-cont
			if ok && fg {
				unix.IoctlSetPointerInt(tty, unix.TIOCSPGRP, pid)
			}
			unix.Kill(-pid, unix.SIGCONT)
			continue
		}
		if ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ws.ExitStatus()
	}
}

// pivot makes the staging dir the root and drops the old root.
// pivot_root(".", ".") stacks the old root on top of the new one, and the
// detach takes it away, so no directory for the old root is needed.
func pivot(root string) error {
	if err := unix.Chdir(root); err != nil {
		return fmt.Errorf("new root: %v", err)
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %v", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detaching the old root: %v", err)
	}
	return unix.Chdir("/")
}

// buildRoot mounts /proc, a minimal /dev and /sys under the staging root.
func buildRoot(cfg *initConfig, tr *tracer) error {
	r := cfg.Staging
	if err := ensureDir(filepath.Join(r, "proc")); err != nil {
		return fmt.Errorf("the root does not answer: %v", err)
	}
	tr.step("root answers")
	if err := unix.Mount("proc", filepath.Join(r, "proc"), "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mounting /proc: %v", err)
	}
	if err := buildDev(filepath.Join(r, "dev"), cfg.Identity || cfg.Ranged); err != nil {
		return err
	}
	// A fresh sysfs shows our own net namespace; if the kernel refuses,
	// the host's, read-only, is better than none; and none is not fatal.
	sys := filepath.Join(r, "sys")
	if ensureDir(sys) == nil {
		if unix.Mount("sysfs", sys, "sysfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "") != nil {
			if unix.Mount("/sys", sys, "", unix.MS_BIND|unix.MS_REC, "") == nil {
				unix.Mount("", sys, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
			}
		}
	}
	tr.step("/proc /dev /sys mounted")
	return nil
}

// ensureDir makes sure a mount point exists (a --root tree may lack /proc);
// with copy-on-write the new directory lands in the upper layer.
func ensureDir(p string) error {
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err == nil {
		return nil
	}
	if err := unix.Mkdir(p, 0o755); err != nil && err != unix.EEXIST {
		return err
	}
	return nil
}

var devNodes = []string{"null", "zero", "full", "random", "urandom", "tty"}

// buildDev mounts a tmpfs with the host's harmless devices bound in, a
// private devpts and a /dev/shm.
func buildDev(dev string, identity bool) error {
	if err := ensureDir(dev); err != nil {
		return fmt.Errorf("/dev: %v", err)
	}
	if err := unix.Mount("tmpfs", dev, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=0755,size=65536k"); err != nil {
		return fmt.Errorf("mounting /dev: %v", err)
	}
	for _, n := range devNodes {
		p := filepath.Join(dev, n)
		fd, err := unix.Open(p, unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o666)
		if err != nil {
			return fmt.Errorf("/dev/%s: %v", n, err)
		}
		unix.Close(fd)
		if err := unix.Mount("/dev/"+n, p, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("binding /dev/%s: %v", n, err)
		}
	}
	pts := filepath.Join(dev, "pts")
	unix.Mkdir(pts, 0o755)
	ptsOpts := "newinstance,ptmxmode=0666,mode=0620"
	if identity {
		ptsOpts += ",gid=5"
	}
	if err := unix.Mount("devpts", pts, "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, ptsOpts); err != nil {
		return fmt.Errorf("mounting /dev/pts: %v", err)
	}
	shm := filepath.Join(dev, "shm")
	unix.Mkdir(shm, 0o1777)
	if err := unix.Mount("shm", shm, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777"); err != nil {
		return fmt.Errorf("mounting /dev/shm: %v", err)
	}
	for name, target := range map[string]string{
		"ptmx": "pts/ptmx", "fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
		"stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2",
	} {
		unix.Symlink(target, filepath.Join(dev, name))
	}
	return nil
}
