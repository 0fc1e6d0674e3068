package control

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"herd/translators/search"
)

// DefaultTimeout bounds a translator's start-up, as the Hurd's settrans.
const DefaultTimeout = 60 * time.Second

const settransDoc = `Usage: settrans [OPTION...] NODE [TRANSLATOR ARG...]
Set the passive/active translator on NODE. By default the passive translator
is set. TRANSLATOR is found as the Hurd's /hurd/NAME: first in the directory of
installed herd translators ($HERD_TRANSLATORS, else settrans's own directory),
then in $PATH; a name with a slash is a path.

Inside a subenvironment the fs server that owns NODE keeps the records and
runs the translators. On the host, -a runs TRANSLATOR and mounts it on NODE by
FUSE in the caller's mount namespace (fusermount3 when not root); -p stores the
record on the host file (xattr user.herd.translator), to take effect wherever
that tree is served by herd. A mount needs NODE and the translator's root to be
of the same type (file or directory); -c creates the right one.

  settrans NODE            clear NODE's passive translator
  settrans -a NODE         make NODE's active translator go away
  settrans -g NODE         clear the passive one and stop the active one

Options:
`

// settransOpts are settrans's flags.
type settransOpts struct {
	active, start, passive, create, excl, orphan  bool
	goaway, keep, force, recursive, nosync, pause bool
	timeout                                       float64
	pidFile, chrootDir, underlying                string
	chroot                                        []string
	holder                                        string
}

// Settrans is the settrans program: it returns the exit status.
func Settrans(args []string, stdout, stderr io.Writer) int {
	var o settransOpts
	// -C takes the arguments up to "--" as the command (the Hurd's way).
	args, o.chroot, o.chrootDir = splitChroot(args)
	fs := pflag.NewFlagSet("settrans", pflag.ContinueOnError)
	fs.SetInterspersed(false)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.BoolVarP(&o.active, "active", "a", false, "start TRANSLATOR and set it as NODE's active translator")
	fs.BoolVarP(&o.start, "start", "s", false, "start the translator NODE's passive record names, as its active translator")
	fs.BoolVarP(&o.passive, "passive", "p", false, "change NODE's passive translator record (default)")
	fs.BoolVarP(&o.create, "create", "c", false, "create NODE if it does not exist")
	fs.BoolVarP(&o.excl, "exclusive", "x", false, "only set the translator if there is not one already")
	fs.BoolVarP(&o.orphan, "orphan", "o", false, "detach an old active translator from NODE without asking it to go away (it serves its current users until they finish)")
	fs.BoolVarP(&o.goaway, "goaway", "g", false, "when setting the passive translator, ask the active one to go away")
	fs.BoolVarP(&o.keep, "keep-active", "k", false, "when setting the passive translator, leave the active one running")
	fs.BoolVarP(&o.force, "force", "f", false, "make an active translator go away even when busy; with -a, replace one that is there")
	fs.BoolVarP(&o.recursive, "recursive", "R", false, "shut down the translator's children too (accepted; a translator's children always stop with it)")
	fs.BoolVarP(&o.nosync, "nosync", "S", false, "do not sync the translator before stopping it (accepted; herd translators decide)")
	fs.Float64VarP(&o.timeout, "timeout", "t", DefaultTimeout.Seconds(), "timeout for translator start-up, in seconds; 0 means none")
	fs.StringVarP(&o.pidFile, "pid-file", "F", "", "when starting an active translator, write its pid to this file")
	fs.BoolVarP(&o.pause, "pause", "P", false, "when starting an active translator, show its pid and wait for a newline on stdin before connecting to it (time to attach a debugger)")
	fs.StringVarP(&o.underlying, "underlying", "U", "", "when starting an active translator, hand it `FILE` as the node underneath it (fd 4) instead of NODE")
	fs.BoolP("chroot", "C", false, "instead of setting NODE's translator, run the arguments up to `--` as a command chroot'd to the translated node")
	fs.String("chroot-chdir", "/", "change to DIR (absolute) before running the -C command")
	fs.StringVar(&o.holder, HolderFlag, "", "")
	fs.MarkHidden(HolderFlag)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Fprint(stdout, settransDoc+fs.FlagUsages())
			return 0
		}
		fmt.Fprintf(stderr, "settrans: %v (see settrans --help)\n", err)
		return 2
	}
	if fs.Changed(HolderFlag) {
		return RunHolder(o.holder)
	}
	if fs.Changed("chroot") && o.chroot == nil {
		fmt.Fprintln(stderr, "settrans: --chroot command must be terminated with `--'")
		return 2
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fmt.Fprintln(stderr, "settrans: missing NODE (see settrans --help)")
		return 2
	}
	if o.timeout < 0 || math.IsNaN(o.timeout) || o.timeout > 1e6 {
		fmt.Fprintf(stderr, "settrans: bad timeout %v\n", o.timeout)
		return 2
	}
	if o.underlying != "" && !o.active && !o.start {
		fmt.Fprintln(stderr, "settrans: --underlying goes with --active or --start")
		return 2
	}
	if o.pause && !o.active && !o.start {
		fmt.Fprintln(stderr, "settrans: --pause goes with --active or --start")
		return 2
	}
	if o.start && len(rest) > 1 {
		fmt.Fprintln(stderr, "settrans: both --start and TRANSLATOR given")
		return 2
	}
	err := settrans(o, rest[0], rest[1:], stdout, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "settrans: %s: %v\n", rest[0], err)
		return 1
	}
	return 0
}

// splitChroot takes -C/--chroot CMD... -- out of the arguments.
func splitChroot(args []string) (rest, cmd []string, chdir string) {
	chdir = "/"
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" || !strings.HasPrefix(a, "-") {
			break // NODE reached: flags end
		}
		if a == "--chroot-chdir" && i+1 < len(args) {
			chdir = args[i+1]
			i++
			continue
		}
		if v, ok := strings.CutPrefix(a, "--chroot-chdir="); ok {
			chdir = v
			continue
		}
		if a == "-C" || a == "--chroot" {
			for j := i + 1; j < len(args); j++ {
				if args[j] == "--" {
					cmd = append([]string(nil), args[i+1:j]...)
					if cmd == nil {
						cmd = []string{}
					}
					return append(append([]string(nil), args[:i]...), args[j+1:]...), cmd, chdir
				}
			}
			return args, nil, chdir // unterminated: pflag reports nothing, caught below
		}
	}
	return args, nil, chdir
}

func settrans(o settransOpts, nodeArg string, argv []string, stdout, stderr io.Writer) error {
	timeout := time.Duration(o.timeout * float64(time.Second))
	if o.chroot != nil && len(o.chroot) == 0 {
		return errors.New("--chroot must be followed by a command and `--'")
	}
	node, err := Canonical(nodeArg)
	if err != nil {
		return err
	}
	if o.underlying != "" {
		// The holder opens it, in a directory of its own.
		if o.underlying, err = filepath.Abs(o.underlying); err != nil {
			return err
		}
	}
	var program string
	if len(argv) > 0 {
		if program, err = search.Resolve(argv[0]); err != nil {
			return err
		}
	}
	active := o.active || o.start
	passive := o.passive || (!active && o.chroot == nil)

	mounts, err := ReadMounts()
	if err != nil {
		return err
	}
	m, _ := MountOf(mounts, node)
	if m.IsSubenv() {
		if o.chroot != nil {
			return errors.New("--chroot is for the host; inside a subenvironment, run the command in one of its own")
		}
		if o.underlying != "" || o.pause {
			return errors.New("--underlying and --pause are for the host: inside a subenvironment its fs server starts the translators")
		}
		return settransInside(o, node, argv, active, passive)
	}

	// One settrans at a time per user on the host: two racing for one node
	// would both find it free.
	unlock, err := lockRuntime()
	if err != nil {
		return err
	}
	defer unlock()
	act, err := FindActive(node)
	if err != nil {
		return err
	}
	// The host file: under the active translator's mount, if there is one.
	host := node
	if act != nil {
		if host = act.UnderPath(); host == "" {
			host = node
		}
	}
	exists, err := nodeExists(host, o.create)
	if err != nil {
		return err
	}

	if o.start {
		rec, err := GetPassive(host)
		if err != nil {
			return err
		}
		if len(rec) == 0 {
			return errors.New("no passive translator record found")
		}
		argv = rec
		if program, err = search.Resolve(argv[0]); err != nil {
			return err
		}
		passive = false
	}

	if o.chroot != nil {
		return chrootRun(o, node, argv, program, timeout, unlock, stdout, stderr)
	}

	if passive && !active {
		if act != nil {
			switch {
			case o.goaway:
				if err := StopActive(act, o.force, timeout); err != nil {
					return err
				}
				host = node
			case !o.keep:
				return fmt.Errorf("has an active translator (%s); use -g to stop it or -k to keep it running: %w", act.Show(), syscall.EBUSY)
			}
			if host == "" {
				return errors.New("cannot reach the file under the active translator")
			}
		}
		return setPassive(o, host, exists, argv)
	}

	// Active (and, with -p too, passive).
	if act != nil {
		switch {
		case o.excl:
			return fmt.Errorf("already has an active translator (%s): %w", act.Show(), syscall.EBUSY)
		case len(argv) == 0:
			return StopActive(act, o.force, timeout)
		case o.orphan:
			if err := fuseUnmount(node, true); err != nil {
				return err
			}
		case o.force:
			if err := StopActive(act, true, timeout); err != nil {
				return err
			}
		default:
			return fmt.Errorf("already has an active translator (%s); use settrans -g first, or -f to replace it: %w", act.Show(), syscall.EBUSY)
		}
		host = node
	}
	if len(argv) == 0 {
		if passive {
			return setPassive(o, host, exists, nil)
		}
		return nil // no active translator, none to start
	}
	var oldRec []string
	if passive {
		if exists {
			if oldRec, err = GetPassive(host); err != nil {
				return err
			}
		}
		if o.excl && len(oldRec) > 0 {
			return fmt.Errorf("already has a passive translator (%s): %w", ShowArgv(oldRec), syscall.EBUSY)
		}
	}
	if err := StartActive(node, StartOptions{Argv: argv, Program: program, Create: o.create && !exists, Timeout: timeout,
		Underlying: o.underlying, Pause: pauser(o, stderr)}); err != nil {
		return err
	}
	if o.pidFile != "" {
		if a, _ := FindActive(node); a != nil && a.State != nil {
			os.WriteFile(o.pidFile, []byte(fmt.Sprintf("%d\n", a.State.TranslatorPid)), 0o644)
		}
	}
	if passive {
		a, _ := FindActive(node)
		if a == nil || a.UnderPath() == "" {
			return errors.New("started, but cannot reach the file under it to set the passive record")
		}
		if err := SetPassive(a.UnderPath(), argv); err != nil {
			StopActive(a, true, timeout)
			return err
		}
	}
	return nil
}

func setPassive(o settransOpts, host string, exists bool, argv []string) error {
	if exists && o.excl && len(argv) > 0 {
		old, err := GetPassive(host)
		if err != nil {
			return err
		}
		if len(old) > 0 {
			return fmt.Errorf("already has a passive translator (%s): %w", ShowArgv(old), syscall.EBUSY)
		}
	}
	if !exists {
		if len(argv) == 0 {
			return nil
		}
		f, err := os.OpenFile(host, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o666)
		if err != nil {
			return err
		}
		f.Close()
		if err := SetPassive(host, argv); err != nil {
			os.Remove(host)
			return err
		}
		return nil
	}
	return SetPassive(host, argv)
}

// pauser is settrans -P's pause: it shows the translator's pid, as the
// Hurd's does, and waits for a newline on stdin.
func pauser(o settransOpts, stderr io.Writer) func(pid int) error {
	if !o.pause {
		return nil
	}
	return func(pid int) error {
		fmt.Fprintf(stderr, "Translator pid: %d\nPausing...", pid)
		if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
			fmt.Fprintln(stderr) // the error's line is its own
			return fmt.Errorf("no newline on stdin: %w", err)
		}
		return nil
	}
}

// nodeExists reports whether node is there, refusing a missing node
// unless create (-c) and a node the caller does not own.
func nodeExists(node string, create bool) (bool, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(node, &st); errors.Is(err, syscall.ENOENT) {
		if !create {
			return false, errors.New("no such file or directory (-c creates it)")
		}
		return false, nil
	} else if err != nil {
		return false, err
	}
	return true, checkOwner(&st)
}

// checkOwner refuses a node the caller does not own, as the Hurd does.
func checkOwner(st *syscall.Stat_t) error {
	euid := uint32(os.Geteuid())
	if euid != 0 && st.Uid != euid {
		return fmt.Errorf("not the owner (owned by uid %d): %w", st.Uid, syscall.EPERM)
	}
	return nil
}

func settransInside(o settransOpts, node string, argv []string, active, passive bool) error {
	exists, err := nodeExists(node, o.create)
	if err != nil {
		return err
	}
	if !exists {
		f, err := os.OpenFile(node, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o666)
		if err != nil {
			return err
		}
		f.Close()
	}
	cur, err := insideGet(node, XattrActive)
	if err != nil && !xattrRefused(err) {
		return err
	}
	if o.start {
		rec, err := insideGet(node, XattrPassive)
		if err != nil {
			return err
		}
		if len(rec) == 0 {
			return errors.New("no passive translator record found")
		}
		argv = rec
	}
	if passive && !active {
		if len(cur) > 0 && !o.goaway && !o.keep {
			return fmt.Errorf("has an active translator (%s); use -g to stop it or -k to keep it running: %w", ShowArgv(cur), syscall.EBUSY)
		}
		old, _ := insideGet(node, XattrPassive)
		if o.excl && len(argv) > 0 && len(old) > 0 {
			return fmt.Errorf("already has a passive translator (%s): %w", ShowArgv(old), syscall.EBUSY)
		}
		var before syscall.Stat_t
		syscall.Stat(node, &before)
		// The record changes before the running translator goes: stopped
		// first, the old record would start it again on the next lookup
		// (this very settrans's).
		if err := insideSetPassive(node, argv); err != nil {
			return err
		}
		if len(cur) > 0 && o.goaway {
			if err := insideGoaway(node, o.force); err != nil {
				// It keeps running (busy): so does its record.
				insideSetPassive(node, old)
				return err
			}
			return nil
		}
		if len(argv) > 0 && len(cur) == 0 {
			// The fs server tells the kernel the name changed meaning a
			// moment after it answers; wait (briefly) for that, so that the
			// next program's lookup reaches the translator. The lookup that
			// shows it starts it, as the first use would.
			waitAttached(node, &before, time.Second)
		}
		return nil
	}
	if len(cur) > 0 {
		switch {
		case o.excl:
			return fmt.Errorf("already has an active translator (%s): %w", ShowArgv(cur), syscall.EBUSY)
		case len(argv) == 0 || o.force || o.orphan:
			if err := insideGoaway(node, o.force || o.orphan); err != nil {
				return err
			}
		default:
			return fmt.Errorf("already has an active translator (%s); use settrans -g first, or -f to replace it: %w", ShowArgv(cur), syscall.EBUSY)
		}
	}
	if passive {
		if err := insideSetPassive(node, argv); err != nil {
			return err
		}
	}
	if len(argv) == 0 {
		return nil
	}
	var before syscall.Stat_t
	if err := syscall.Stat(node, &before); err != nil {
		return err
	}
	if err := insideStart(node, argv); err != nil {
		return err
	}
	return waitAttached(node, &before, time.Duration(o.timeout*float64(time.Second)))
}

// waitAttached returns once NODE shows its translator rather than the file
// under it: the fs server tells the kernel that the name changed meaning a
// moment after it answers, and a program run right after settrans must see
// the translator (as on the host, where settrans returns once the mount
// answers).
func waitAttached(node string, before *syscall.Stat_t, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	deadline := time.Now().Add(timeout)
	for {
		var st syscall.Stat_t
		if err := syscall.Stat(node, &st); err != nil {
			return err
		}
		if st.Ino != before.Ino || st.Dev != before.Dev {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the translator started, but the node still shows the file under it after %v", timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// chrootRun is the Hurd's settrans --chroot: start the translator, run the
// command with the translated node as its root, and make the translator go
// away when the command ends. On Linux the translator is mounted on NODE
// for the command's time, and the command runs in a user namespace of its
// own (mapping only the caller), where chroot needs no privilege.
func chrootRun(o settransOpts, node string, argv []string, program string, timeout time.Duration, unlock func(), stdout, stderr io.Writer) error {
	if len(argv) > 0 {
		if act, _ := FindActive(node); act != nil {
			return fmt.Errorf("already has an active translator (%s): %w", act.Show(), syscall.EBUSY)
		}
		if err := StartActive(node, StartOptions{Argv: argv, Program: program, Create: o.create, Timeout: timeout,
			Underlying: o.underlying, Pause: pauser(o, stderr)}); err != nil {
			return err
		}
		defer func() {
			// The translator was the command's only: it goes, busy or not.
			if act, _ := FindActive(node); act != nil {
				if err := StopActive(act, o.force, timeout); err != nil {
					StopActive(act, true, timeout)
				}
			}
		}()
	}
	unlock() // the command may run long: other settrans need not wait
	if !strings.HasPrefix(o.chrootDir, "/") {
		return errors.New("--chroot-chdir must be absolute")
	}
	cmd := exec.Command(o.chroot[0], o.chroot[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, stdout, stderr
	cmd.Dir = o.chrootDir
	attr := &syscall.SysProcAttr{Chroot: node}
	if os.Geteuid() != 0 {
		attr.Cloneflags = syscall.CLONE_NEWUSER
		attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: os.Geteuid(), HostID: os.Geteuid(), Size: 1}}
		attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: os.Getegid(), HostID: os.Getegid(), Size: 1}}
		attr.GidMappingsEnableSetgroups = false
	}
	cmd.SysProcAttr = attr
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return fmt.Errorf("command %s: %v", o.chroot[0], ee)
		}
		return fmt.Errorf("cannot run %s chroot'd to the node: %w", o.chroot[0], err)
	}
	return nil
}
