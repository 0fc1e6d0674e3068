// Package subenv is the launcher of subenvironments (the Hurd's subhurds):
// `subenv run` starts the root fs server, creates new user, mount, pid, uts,
// ipc and net namespaces, mounts the fs bridge as the new root and runs a
// program there.
//
// Two processes do the work, on either side of the namespace boundary:
//
//   - the launcher (Run), on the host: runtime dir, fs server, the FUSE
//     connection's server side (fsbridge.Serve) and the host side of the
//     network; it cleans up when the init ends.
//   - the init (InitMain, `subenv init`, a re-exec of the same binary): pid 1
//     inside. It mounts FUSE at a staging dir and passes the /dev/fuse fd out
//     over a socketpair, builds /proc, /dev and /sys, pivots into the FUSE
//     root, runs the program, reaps orphans and forwards signals.
//
// The FUSE fd is served from the host, not from inside, because the kernel
// refuses FUSE passthrough to a server in a user namespace.
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
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"herd/subenv/fsbridge"
)

// cleanupTimeout bounds how long subenv waits for its servers to stop.
const cleanupTimeout = 10 * time.Second

// Config is one `subenv run`.
type Config struct {
	Prog     []string // program and arguments, looked up on PATH inside
	FS       []string // root fs server command; nil = herd-fs (this binary, `subenv herd-fs`)
	FSSocket string   // connect to an already running fs server instead
	Root     string   // host directory served as / (default "/")
	RW       bool     // write through to Root instead of copy-on-write
	Keep     string   // keep the upper layer under this name
	Net      string   // --net mode ("" = DefaultNet, nat)
	NetArgs  []string // flags for the net server: --publish X, --allow X, --deny X
	Verbose  bool     // -v: say which servers started where
	Hostname string   // default "subenv"
	// NoSubIDs: a plain user maps only themself (to root), even with an
	// /etc/subuid and /etc/subgid range. By default the range is mapped
	// too, as ids 1.. inside, when newuidmap and newgidmap exist (the
	// helpers run while the rest starts).
	NoSubIDs bool
	// Grace is how long the program may go on after the fs server died
	// before the whole pid namespace is killed (default 5s).
	Grace time.Duration
}

// ExitError is a launcher failure: a one-line message (without the
// "subenv: " prefix) and the exit status to use.
type ExitError struct {
	Code int
	Msg  string
}

func (e *ExitError) Error() string { return e.Msg }

func fail(code int, format string, args ...any) error {
	return &ExitError{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// Run runs cfg.Prog in a new subenvironment and returns its exit status.
// An error means the subenvironment could not start or broke (a server
// died); its message is one line. Everything Run started is stopped and its
// runtime dir removed before it returns, error or not.
func Run(cfg Config) (status int, err error) {
	start := time.Now()
	tr := newTracer("subenv", start)
	if len(cfg.Prog) == 0 {
		return 0, fail(2, "no program given")
	}
	netDefault := cfg.Net == ""
	if netDefault {
		cfg.Net = DefaultNet
	}
	cfg.Net = resolveNetSpec(cfg.Net)
	if cfg.Hostname == "" {
		cfg.Hostname = "subenv"
	}
	if cfg.Grace == 0 {
		cfg.Grace = 5 * time.Second
	}
	netSetup, netMode, netArg, err := netSetupFor(cfg.Net)
	if err != nil {
		return 0, fail(2, "%v", err)
	}
	root := "/"
	if cfg.Root != "" {
		abs, err := filepath.Abs(cfg.Root)
		if err != nil {
			return 0, fail(1, "--root %s: %v", cfg.Root, err)
		}
		fi, err := os.Stat(abs)
		if err != nil {
			return 0, fail(1, "--root %s: %v", cfg.Root, errnoOf(err))
		}
		if !fi.IsDir() {
			return 0, fail(1, "--root %s: not a directory", cfg.Root)
		}
		root = abs
	}
	verbose := func(format string, args ...any) {
		if cfg.Verbose {
			fmt.Fprintf(os.Stderr, "subenv: "+format+"\n", args...)
		}
	}

	// Signals a user or a supervisor sends to subenv go to the program once
	// it runs (the init passes them on). Caught from here on, so that one
	// arriving during start-up still lets us clean up.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT)
	defer signal.Stop(sigs)

	var rt *runtimeDir
	var cleanups []func()
	defer func() {
		// Stopping must not hang subenv's exit: what runs in this process
		// (the bridge) ends with it anyway, and the servers and the init
		// have a parent-death signal.
		done := make(chan struct{})
		go func() {
			for i := len(cleanups) - 1; i >= 0; i-- {
				cleanups[i]()
				tr.step("cleanup %d", i)
			}
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(cleanupTimeout):
			fmt.Fprintf(os.Stderr, "subenv: stopping the servers took over %v; exiting anyway\n", cleanupTimeout)
			if tr.on {
				buf := make([]byte, 1<<20)
				os.Stderr.Write(buf[:runtime.Stack(buf, true)])
			}
		}
		rt.remove()
		tr.step("cleaned up")
	}()

	// prepare makes the runtime dir and the upper layer and starts the fs
	// server: everything on the host side before the FUSE fd arrives.
	type prepared struct {
		rt    *runtimeDir
		upper string
		srv   *fsServer
		err   error
	}
	prepare := func() (pr prepared) {
		if pr.rt, pr.err = newRuntimeDir(); pr.err != nil {
			return pr
		}
		if !cfg.RW {
			if cfg.Keep != "" {
				if pr.upper, pr.err = keepDir(cfg.Keep); pr.err != nil {
					return pr
				}
			} else {
				pr.upper = pr.rt.join("upper")
				if err := os.Mkdir(pr.upper, 0o700); err != nil {
					pr.err = fmt.Errorf("runtime dir: %v", err)
					return pr
				}
			}
		}
		tr.step("runtime dir %s", pr.rt.Path)
		pr.srv, pr.err = startFS(fsParams{Root: root, Upper: pr.upper, RuntimeDir: pr.rt.Path, Socket: pr.rt.join("fs.sock"),
			Command: cfg.FS, Existing: cfg.FSSocket})
		return pr
	}

	// The init mounts the FUSE root over /tmp, in its own mount namespace
	// (the host's /tmp is untouched, and hidden inside anyway), so it needs
	// nothing the launcher makes: it is exec'd and builds its namespaces
	// while prepare runs, and they meet when the init hands over the FUSE
	// fd. Without a /tmp the runtime dir serves, made first.
	staging := ""
	if fi, err := os.Lstat("/tmp"); err == nil && fi.IsDir() {
		staging = "/tmp"
	}
	prepCh := make(chan prepared, 1)
	var in *initProc
	if staging != "" {
		go func() { prepCh <- prepare() }()
		in, err = startInit(cfg, netDefault, sharesHostNetNS(netSetup), staging, start, verbose)
	} else {
		pr := prepare()
		prepCh <- pr
		if pr.err == nil {
			in, err = startInit(cfg, netDefault, sharesHostNetNS(netSetup), pr.rt.Path, start, verbose)
		}
	}
	pr := <-prepCh
	rt = pr.rt
	if pr.srv != nil {
		cleanups = append(cleanups, pr.srv.stop)
	}
	if in != nil {
		cleanups = append(cleanups, in.kill)
		tr.step("init started (pid %d)", in.cmd.Process.Pid)
	}
	if pr.err != nil {
		return 0, fail(1, "%v", pr.err)
	}
	if err != nil {
		return 0, fail(1, "%v", err)
	}
	srv, upper := pr.srv, pr.upper
	tr.step("fs server started: %s", srv.desc)
	verbose("fs server %s serving %s on %s (upper: %s)", srv.desc, root, srv.socket, orNone(upper))

	// The init's first message is the net mode's descriptors; the host
	// half of the network starts (the net server, tens of ms) while the
	// root is mounted and built.
	m, err := in.next()
	if err != nil {
		return 0, err
	}
	if m.kind != msgNet {
		return 0, fail(1, "init: unexpected message %q", m.kind)
	}
	netGone := make(chan error, 1)
	var netDying atomic.Pointer[func() bool]
	type netResult struct {
		stop func()
		err  error
	}
	netCh := make(chan netResult, 1)
	go func(files []*os.File) {
		stop, err := netSetup.HostNet(HostNetContext{
			Mode: netMode, Arg: netArg, Args: cfg.NetArgs, Default: netDefault,
			RuntimeDir: rt.Path, InitPid: in.cmd.Process.Pid,
			Verbose: verbose, Trace: tr.step,
			Died: func(err error) {
				select {
				case netGone <- err:
				default:
				}
			},
			Probe: func(dying func() bool) { netDying.Store(&dying) },
		}, files)
		for _, f := range files {
			f.Close()
		}
		netCh <- netResult{stop, err}
	}(m.files)
	// Whatever happens next, the net server is stopped at the end.
	netCollected := false
	defer func() {
		if !netCollected {
			if nr := <-netCh; nr.stop != nil {
				nr.stop()
			}
		}
	}()

	// Then the FUSE fd, or why it failed.
	m, err = in.next()
	if err != nil {
		return 0, err
	}
	if m.kind != msgFuse || len(m.files) != 1 {
		return 0, fail(1, "init: unexpected message %q", m.kind)
	}
	fuseFile := m.files[0]
	// The server's handshake has been under way meanwhile.
	if err := srv.wait(sigs); err != nil {
		fuseFile.Close()
		return 0, fail(1, "%v", err)
	}
	tr.step("fs server answered")
	gone := make(chan string, 1)
	identity := os.Geteuid() == 0
	bridge, err := fsbridge.Serve(fuseFile, srv.client, fsbridge.Options{
		IDMap:       in.idMap(),
		Passthrough: identity,
		Notifier:    srv.notes,
		ServerGone: func(err error) {
			// Called from the bridge: find out why off its goroutine.
			go func() { gone <- srv.deathCause(err) }()
		},
	})
	fuseFile.Close()
	if err != nil {
		return 0, fail(1, "%v", err)
	}
	cleanups = append(cleanups, func() { bridge.Unmount() })
	tr.step("bridge serving")
	verbose("root mounted in pid namespace of init %d", in.cmd.Process.Pid)

	// The net server has been starting meanwhile.
	nr := <-netCh
	netCollected = true
	if nr.stop != nil {
		cleanups = append(cleanups, nr.stop)
	}
	if nr.err != nil {
		return 0, fail(1, "net %s: %v", cfg.Net, nr.err)
	}
	if err := sendMsg(in.ctl, msgReady, nil); err != nil {
		// The init is gone; its message (if any) says why.
		if _, e := in.next(); e != nil {
			return 0, e
		}
		return 0, fail(1, "init: %v", err)
	}
	tr.step("ready sent")
	// Now that the program runs, clear away what killed subenvs left.
	swept := make(chan struct{})
	go func() { sweepStale(filepath.Dir(rt.Path), rt.Path); close(swept) }()
	defer func() { <-swept }()

	var died string
	netDied := false
	var grace <-chan time.Time
	var initErr error
	msgs := in.msgs
	for {
		select {
		case s := <-sigs:
			in.cmd.Process.Signal(s)
		case m, ok := <-msgs:
			if !ok {
				msgs = nil
				continue
			}
			switch m.kind {
			case msgError:
				// The init failed before the program ran (not found, ...).
				initErr = in.errorOf(m)
			case msgStopped:
				in.stopped()
			}
		case err := <-netGone:
			// The program goes on without a network (ENETUNREACH); the
			// user hears of it now, and subenv's status says it at the end.
			netGone, netDied = nil, true
			fmt.Fprintf(os.Stderr, "subenv: net server died: %v (programs inside get ENETUNREACH)\n", err)
		case died = <-gone:
			// The program now gets EIO from the bridge; give it a moment to
			// notice and end by itself, then end the whole namespace.
			gone = nil
			grace = time.After(cfg.Grace)
		case <-grace:
			grace = nil
			in.cmd.Process.Kill()
		case <-in.exited:
			in.restoreTTY()
			// The init's last word, if it failed before the program ran.
			if msgs != nil {
				for m := range msgs {
					if m.kind == msgError {
						initErr = in.errorOf(m)
					}
				}
			}
			if initErr != nil {
				return 0, initErr
			}
			status = in.status()
			tr.step("init ended: status %d", status)
			if died == "" {
				select {
				case died = <-gone:
				default:
					// The program may have seen EIO and ended before the
					// bridge's watcher told us; the connection knows.
					if err := srv.lost(); err != nil {
						died = srv.deathCause(err)
					}
				}
			}
			if died != "" {
				code := status
				if code == 0 {
					code = 1
				}
				return status, fail(code, "fs server died: %s", died)
			}
			if !netDied && netGone != nil {
				// The program may have seen its link vanish and ended
				// before the net server's exit was reaped: if the server
				// is on its way out, wait for the word of it.
				if d := netDying.Load(); d != nil && (*d)() {
					select {
					case err := <-netGone:
						netDied = true
						fmt.Fprintf(os.Stderr, "subenv: net server died: %v (programs inside get ENETUNREACH)\n", err)
					case <-time.After(5 * time.Second):
					}
				}
			}
			if netDied && status == 0 {
				// Said when it happened; only the status is left to tell.
				return status, fail(1, "")
			}
			return status, nil
		}
	}
}

// stopped is job control across the namespace boundary: the program was
// stopped from the terminal (^Z), so subenv stops too, and the user's shell
// sees a stopped job. When the shell continues us (fg or bg), the init
// continues the program, giving it the terminal back if we are in the
// foreground again (fg).
func (in *initProc) stopped() {
	in.restoreTTY()
	// Sent to this thread, the stop takes effect before the call returns;
	// sent to the process, another thread might take it while this one
	// runs on and continues the program before we are even stopped.
	runtime.LockOSThread()
	unix.Tgkill(os.Getpid(), unix.Gettid(), unix.SIGSTOP)
	runtime.UnlockOSThread()
	// Continued.
	var fg byte
	if in.tty >= 0 {
		if pg, err := unix.IoctlGetInt(in.tty, unix.TIOCGPGRP); err == nil && pg == in.pgrp {
			fg = 1
		}
	}
	sendMsg(in.ctl, msgContinue, []byte{fg})
}

func orNone(s string) string {
	if s == "" {
		return "none (write through)"
	}
	return s
}

// initProc is the running init as the launcher sees it.
type initProc struct {
	cmd      *exec.Cmd
	ctl      *os.File
	msgs     chan ctlMsg
	readDone chan struct{} // the reader of ctl is done (EOF once the init is gone)
	readErr  error
	exited   chan struct{}
	waitErr  error
	tty      int // fd whose foreground process group we hand to the program, -1 none
	pgrp     int
	once     sync.Once

	// The uid maps: mapped is closed once they are written (at once unless
	// newuidmap writes them); then idmap is what they are, or mapErr why
	// they could not be written (the init is killed then).
	mapped chan struct{}
	idmap  fsbridge.IDMap
	mapErr error
}

// idMap is the bridge's view of the init's uid maps, once written.
func (in *initProc) idMap() fsbridge.IDMap {
	<-in.mapped
	return in.idmap
}

// startInit re-executes this binary as `subenv init` in new namespaces.
// The uid and gid maps are written by this process: host root maps the whole
// range; a user with an /etc/subuid range (unless cfg.NoSubIDs) maps themself
// to root and the range above: newuidmap/newgidmap write them after the init
// started, in the background while the fs server starts, and the init waits
// for msgMaps (it keeps its capabilities as ambient ones meanwhile, see
// allCaps); anyone else maps themself to root, with setgroups denied as the
// kernel requires (Go's exec writes these between clone and exec).
func startInit(cfg Config, netDefault, hostNet bool, staging string, start time.Time, verbose func(string, ...any)) (*initProc, error) {
	mine, theirs, err := socketpair()
	if err != nil {
		return nil, err
	}
	in := &initProc{ctl: mine, msgs: make(chan ctlMsg, 4), exited: make(chan struct{}), readDone: make(chan struct{}), tty: -1,
		mapped: make(chan struct{})}
	cwd, _ := os.Getwd()
	ic := initConfig{
		Start: start.UnixNano(), Staging: staging, Identity: os.Geteuid() == 0,
		Prog: cfg.Prog, Cwd: cwd, Hostname: cfg.Hostname, Net: cfg.Net, TTY: -1,
		NetArgs: cfg.NetArgs, NetDflt: netDefault,
	}
	if fd, pg, ok := foregroundTTY(); ok {
		ic.TTY, in.tty, in.pgrp = fd, fd, pg
	}
	uid, gid := os.Geteuid(), os.Getegid()
	var sub *subIDs
	switch {
	case uid == 0:
		in.idmap = fsbridge.IDMap{Identity: true}
		verbose("ids inside are the host's (you are root: the whole range is mapped)")
	case cfg.NoSubIDs:
		verbose("uid 0 inside is you (%d), alone (--subuid=false)", uid)
	default:
		if sub = lookupSubIDs(uid, gid); sub == nil {
			verbose("uid 0 inside is you (%d), alone: no range for you in /etc/subuid and /etc/subgid, or no newuidmap/newgidmap", uid)
		}
	}
	if sub == nil {
		in.idmap = fsbridge.IDMap{HostUid: uint32(uid), HostGid: uint32(gid), Identity: uid == 0}
		close(in.mapped)
	}
	ic.WaitMaps = sub != nil
	js, _ := json.Marshal(ic)
	cmd := exec.Command("/proc/self/exe", "init", string(js))
	cmd.Args[0] = "subenv"
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.ExtraFiles = []*os.File{theirs}
	sys := &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS | syscall.CLONE_NEWPID |
			syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC | syscall.CLONE_NEWNET,
		Pdeathsig: syscall.SIGKILL,
	}
	if hostNet {
		sys.Cloneflags &^= syscall.CLONE_NEWNET
	}
	if uid == 0 {
		sys.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1<<32 - 1}}
		sys.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1<<32 - 1}}
		sys.GidMappingsEnableSetgroups = true
	} else if sub == nil {
		sys.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: uid, Size: 1}}
		sys.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: gid, Size: 1}}
	} else {
		sys.AmbientCaps = allCaps()
	}
	cmd.SysProcAttr = sys
	if err := cmd.Start(); err != nil {
		mine.Close()
		theirs.Close()
		return nil, fmt.Errorf("cannot create the namespaces: %v", unwrapExec(err))
	}
	theirs.Close()
	in.cmd = cmd
	if sub != nil {
		// The init waits for its maps before it does anything; we go on
		// (the fs server starts meanwhile) and the bridge waits for them.
		pid := cmd.Process.Pid
		go func() {
			defer close(in.mapped)
			err := sub.apply(pid)
			ranged := byte(1)
			if err == nil {
				in.idmap = sub.idMap()
				verbose("%v", sub)
			} else {
				verbose("your /etc/subuid range could not be mapped (%v); uid 0 inside is you (%d), alone", err, uid)
				in.idmap = fsbridge.IDMap{HostUid: uint32(uid), HostGid: uint32(gid)}
				ranged = 0
				err = writeOwnMaps(pid, uid, gid)
			}
			if err == nil {
				err = sendMsg(mine, msgMaps, []byte{ranged})
			}
			if err != nil {
				in.mapErr = fmt.Errorf("cannot map your uid: %v", err)
				cmd.Process.Kill()
			}
		}()
	}
	go func() {
		defer close(in.readDone)
		for {
			m, err := recvMsg(mine)
			if err != nil {
				in.readErr = err
				close(in.msgs)
				return
			}
			in.msgs <- m
		}
	}()
	go func() { in.waitErr = cmd.Wait(); close(in.exited) }()
	return in, nil
}

// next returns the init's next message. If the init reported an error, or
// ended without a word, that is the error.
func (in *initProc) next() (ctlMsg, error) {
	m, ok := <-in.msgs
	if !ok {
		<-in.exited
		if <-in.mapped; in.mapErr != nil {
			return ctlMsg{}, fail(1, "%v", in.mapErr)
		}
		return ctlMsg{}, fail(1, "init ended at start (%s)", exitStatus(in.waitErr))
	}
	if m.kind == msgError {
		<-in.exited
		return m, in.errorOf(m)
	}
	return m, nil
}

func (in *initProc) errorOf(m ctlMsg) error {
	if len(m.data) < 1 {
		return fail(1, "init failed")
	}
	return fail(int(m.data[0]), "%s", m.data[1:])
}

// status is the init's exit status, which is the program's.
func (in *initProc) status() int {
	var ee *exec.ExitError
	if errors.As(in.waitErr, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	if in.waitErr != nil {
		return 1
	}
	return 0
}

// kill ends the init, and with it everything in its pid namespace, and
// waits for it.
func (in *initProc) kill() {
	in.once.Do(func() {
		select {
		case <-in.exited:
		default:
			in.cmd.Process.Kill()
			<-in.exited
		}
		// The init is gone, so the reader sees EOF; close ctl only after,
		// lest its number be reused under the reader.
		go func() {
			for range in.msgs {
			}
		}()
		<-in.readDone
		in.ctl.Close()
		in.restoreTTY()
	})
}

// foregroundTTY finds the controlling terminal among fds 0-2 and reports
// whether our process group is its foreground one. Only then does the
// program get the foreground (a background `subenv run &` must not take the
// terminal from the shell).
func foregroundTTY() (fd, pgrp int, ok bool) {
	for fd := 0; fd <= 2; fd++ {
		fg, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP)
		if err != nil {
			continue
		}
		pg := unix.Getpgrp()
		return fd, pg, fg == pg
	}
	return -1, 0, false
}

// restoreTTY gives the terminal's foreground back to our process group,
// which the program took (we are in the background then, so SIGTTOU must be
// ignored meanwhile).
func (in *initProc) restoreTTY() {
	if in.tty < 0 {
		return
	}
	fg, err := unix.IoctlGetInt(in.tty, unix.TIOCGPGRP)
	if err != nil || fg == in.pgrp {
		return
	}
	signal.Ignore(unix.SIGTTOU)
	unix.IoctlSetPointerInt(in.tty, unix.TIOCSPGRP, in.pgrp)
	signal.Reset(unix.SIGTTOU)
}
