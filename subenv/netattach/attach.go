package netattach

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Kind is what a --net mode asks for.
type Kind int

const (
	KindNAT  Kind = iota // nat (default): our net server, connections go out through the host
	KindNone             // none: no TUN, loopback only
	KindHost             // host: no network namespace at all
	KindLAN              // lan:NAME[,nat]: a private lan shared by subenvironments
	KindProg             // a program path: a net server of the user's choice
)

// Mode is a parsed --net value.
type Mode struct {
	Kind Kind
	LAN  string // lan name (KindLAN)
	NAT  bool   // KindLAN: NAT the lan to the host too
	Prog string // KindProg: the program
	Args []string
}

// ParseMode parses a --net value: nat, none, host, lan:NAME[,nat], or a
// program path (anything containing a slash).
func ParseMode(s string) (Mode, error) {
	switch {
	case s == "" || s == "nat":
		return Mode{Kind: KindNAT}, nil
	case s == "none":
		return Mode{Kind: KindNone}, nil
	case s == "host":
		return Mode{Kind: KindHost}, nil
	case strings.HasPrefix(s, "lan:"):
		name, opt, _ := strings.Cut(s[4:], ",")
		if name == "" || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
			return Mode{}, fmt.Errorf("netattach: --net %q: lan name must be non-empty, without /", s)
		}
		m := Mode{Kind: KindLAN, LAN: name}
		switch opt {
		case "":
		case "nat":
			m.NAT = true
		default:
			return Mode{}, fmt.Errorf("netattach: --net %q: unknown lan option %q (only nat)", s, opt)
		}
		return m, nil
	case strings.Contains(s, "/"):
		return Mode{Kind: KindProg, Prog: s}, nil
	}
	return Mode{}, fmt.Errorf("netattach: unknown --net mode %q (nat, none, host, lan:NAME[,nat], or a program path)", s)
}

// NewNetNS reports whether the launcher must create a network namespace.
func (m Mode) NewNetNS() bool { return m.Kind != KindHost }

// Options tune the host side.
type Options struct {
	// Binary is herd-net's path; "" means next to the running executable,
	// else $PATH, else Self.
	Binary string
	// Self is the command that runs the net server when no herd-net
	// program is found (subenv: its own binary, `subenv herd-net`), so
	// that one copied binary works, as it does for the fs server.
	Self []string
	// Args are extra flags for the net server (--allow, --deny, --publish,
	// --verbose), given to the server of nat mode and of a new lan keeper.
	Args []string
	// MTU of the TUN (0: DefaultMTU).
	MTU int
	// Name of the interface inside (default eth0).
	IfName string
	// Stderr of the net server (nil: the launcher's stderr).
	Stderr io.Writer
	// Timeout for the server's start-up (0: 30s).
	Timeout time.Duration
}

// DefaultMTU: 65520 moves bulk data several times faster than 1500 (the
// cost is per packet); see bench/net.sh.
const DefaultMTU = 65520

// ResolvConf is the resolv.conf the launcher binds over /etc/resolv.conf
// inside a subenvironment of nat or lan mode: the server's DNS forwarder.
const ResolvConf = "# herd: the net server's DNS forwarder, which asks the host's resolver\nnameserver 10.0.2.3\n"

// LANResolvConf is ResolvConf for lan mode.
const LANResolvConf = "# herd: the lan keeper's DNS forwarder\nnameserver 10.0.3.3\n"

// Plan is a network being prepared: what the init must configure inside,
// and how the host side attaches once it has the TUN.
type Plan struct {
	mode       Mode
	opts       Options
	runtimeDir string
	tun        *TUNConfig
	lanConn    *net.UnixConn // lan: the member's connection to the keeper
}

// Prepare is called on the host before the subenvironment's namespaces
// exist. For lan mode it joins (or starts) the lan's keeper and reserves
// an address, which TUN() then carries.
func Prepare(mode Mode, runtimeDir string, opts Options) (*Plan, error) {
	p := &Plan{mode: mode, opts: opts, runtimeDir: runtimeDir}
	p.fill()
	switch mode.Kind {
	case KindNAT:
		c := ServerConfig(p.opts.IfName, p.opts.MTU)
		p.tun = &c
	case KindProg:
		c := NATConfig(p.opts.IfName, p.opts.MTU)
		p.tun = &c
	case KindLAN:
		if err := p.joinLAN(); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func (p *Plan) fill() {
	if p.opts.MTU == 0 {
		p.opts.MTU = DefaultMTU
	}
	if p.opts.IfName == "" {
		p.opts.IfName = "eth0"
	}
	if p.opts.Timeout == 0 {
		p.opts.Timeout = 30 * time.Second
	}
}

// TUN is the TUN configuration the init must create (CreateTUNWith), or
// nil when the mode has none (none: call LoopbackUp; host: nothing).
func (p *Plan) TUN() *TUNConfig { return p.tun }

// ResolvConf is the content for /etc/resolv.conf inside, "" to leave the
// host's.
func (p *Plan) ResolvConf() string {
	switch p.mode.Kind {
	case KindNAT:
		return ResolvConf
	case KindLAN:
		if p.mode.NAT {
			return LANResolvConf
		}
	}
	return ""
}

// Abort releases what Prepare took (a lan reservation) when the launcher
// gives up before Start.
func (p *Plan) Abort() {
	if p.lanConn != nil {
		p.lanConn.Close()
	}
}

// Net is a running network attachment.
type Net struct {
	// Socket is the net server's control socket (for fsysopts), "" if none.
	Socket string
	cmd    *exec.Cmd
	// kill: the server is our herd-net, which keeps nothing worth a
	// graceful stop once the subenvironment is gone (its orderly shutdown
	// costs the launcher tens of ms at exit); a user's program gets SIGTERM.
	kill bool
	conn *net.UnixConn
	done chan struct{}
	err  error
	once sync.Once
}

// Done is closed when the net server is gone (it exited, or the lan keeper
// dropped us): the subenvironment's network is dead.
func (n *Net) Done() <-chan struct{} { return n.done }

// Err says why, after Done.
func (n *Net) Err() error {
	select {
	case <-n.done:
		return n.err
	default:
		return nil
	}
}

// Dying says whether the net server is gone or on its way out: Done is
// closed, or the kernel is tearing the process down (PF_EXITING) or has
// done so. A server's TUN link vanishes while it exits, before Done can
// close, so a program inside may notice the death first; the launcher asks
// this when the program ends, to tell a dead server from a live one.
func (n *Net) Dying() bool {
	select {
	case <-n.done:
		return true
	default:
	}
	pid := n.Pid()
	if pid == 0 {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true // reaped
	}
	// Fields after the command name (which may hold spaces and
	// parentheses): state is the first, flags the seventh.
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 7 {
		return false
	}
	if f[0] == "Z" || f[0] == "X" {
		return true
	}
	const pfExiting = 0x4
	flags, _ := strconv.ParseUint(f[6], 10, 64)
	return flags&pfExiting != 0
}

// Pid is the net server's process id (0 for lan members and modes
// without a server).
func (n *Net) Pid() int {
	if n.cmd == nil || n.cmd.Process == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// Close stops the net server (or leaves the lan) and waits.
func (n *Net) Close() error {
	if n.conn != nil {
		n.conn.Close()
		<-n.done
		return nil
	}
	if n.cmd != nil {
		if n.kill {
			// Dead at once; its exit (the kernel tearing down the TUN's
			// link, ~15 ms) is not waited for: subenv's own exit must not
			// pay for it. Our waiter reaps it while we live, init after.
			n.cmd.Process.Kill()
			os.Remove(n.Socket)
			return nil
		}
		n.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-n.done:
		case <-time.After(5 * time.Second):
			n.cmd.Process.Kill()
			<-n.done
		}
		os.Remove(n.Socket)
	}
	return nil
}

// Start attaches tun (the descriptor the init passed out; Start takes it,
// and closes the launcher's copy) to a net server: for nat and a program,
// one started now with the TUN as fd 4 and its control socket as fd 3,
// answering on runtimeDir/net.sock; for lan, the keeper Prepare joined.
// tun is nil for none and host, and Start returns a Net with nothing to
// stop. forward are the listeners the init made for the --forward flags
// in Options.Args, in their order (ForwardListeners): the server gets
// them as descriptors 6 and up, named in $HERD_FORWARD_FDS. Start takes
// them too.
func (p *Plan) Start(tun *os.File, forward ...*os.File) (*Net, error) {
	defer closeAll(forward)
	switch p.mode.Kind {
	case KindNone, KindHost:
		if tun != nil {
			tun.Close()
		}
		n := &Net{done: make(chan struct{})}
		return n, nil
	case KindLAN:
		return p.attachLAN(tun)
	}
	if tun == nil {
		return nil, errors.New("netattach: no TUN to attach")
	}
	defer tun.Close()
	bin, args := p.mode.Prog, p.mode.Args
	if p.mode.Kind != KindProg {
		var pre []string
		bin, pre = p.serverCommand()
		args = append(pre, p.opts.Args...)
	}
	sock := filepath.Join(p.runtimeDir, "net.sock")
	os.Remove(sock)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("netattach: control socket: %v", err)
	}
	os.Chmod(sock, 0o600)
	l.SetUnlinkOnClose(false)
	lf, err := l.File()
	l.Close()
	if err != nil {
		return nil, err
	}
	defer lf.Close()
	rr, rw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer rr.Close()
	cmd := exec.Command(bin, args...)
	cmd.ExtraFiles = []*os.File{lf, tun, rw} // fds 3, 4, 5
	cmd.Env = append(os.Environ(), "LISTEN_FDS=1", "HERD_TUN_FD=4", "HERD_NET_READY_FD=5")
	if len(forward) > 0 {
		var fds []string
		for _, f := range forward {
			fds = append(fds, strconv.Itoa(3+len(cmd.ExtraFiles)))
			cmd.ExtraFiles = append(cmd.ExtraFiles, f)
		}
		cmd.Env = append(cmd.Env, "HERD_FORWARD_FDS="+strings.Join(fds, ","))
	}
	cmd.Stdout = p.opts.Stderr
	cmd.Stderr = p.opts.Stderr
	if cmd.Stderr == nil {
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	}
	// The server dies with the launcher; it also exits by itself when the
	// subenvironment's TUN goes away.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		rw.Close()
		os.Remove(sock)
		return nil, fmt.Errorf("netattach: start net server %s: %v", bin, err)
	}
	rw.Close()
	n := &Net{Socket: sock, cmd: cmd, done: make(chan struct{}), kill: p.mode.Kind != KindProg}
	go func() {
		err := cmd.Wait()
		if err == nil {
			err = errors.New("net server exited")
		}
		n.err = fmt.Errorf("netattach: net server %s: %v", bin, err)
		close(n.done)
	}()
	line, err := readLine(rr, p.opts.Timeout)
	if err != nil || line != "ok" {
		n.Close()
		why := strings.TrimPrefix(line, "error ")
		if why == "" {
			why = fmt.Sprint(err)
			if errors.Is(err, io.EOF) {
				why = "exited at start (see its stderr above)"
			}
		}
		return nil, fmt.Errorf("netattach: net server %s: %s", bin, why)
	}
	return n, nil
}

// Start is Prepare and Plan.Start for the modes whose TUN configuration
// is fixed (nat, a program, none, host): tun was made by CreateTUN.
func Start(mode string, tun *os.File, runtimeDir string, opts Options) (*Net, error) {
	m, err := ParseMode(mode)
	if err != nil {
		return nil, err
	}
	if m.Kind == KindLAN {
		return nil, errors.New("netattach: lan mode needs Prepare before the namespace exists (the address comes from the keeper)")
	}
	p, err := Prepare(m, runtimeDir, opts)
	if err != nil {
		return nil, err
	}
	return p.Start(tun)
}

func closeAll(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

// readLine reads one line from a pipe, within d.
func readLine(f *os.File, d time.Duration) (string, error) {
	f.SetReadDeadline(time.Now().Add(d))
	line, err := bufio.NewReader(f).ReadString('\n')
	if err != nil && line == "" {
		return "", err
	}
	return strings.TrimSpace(line), nil
}

// serverCommand is the program (and its first arguments) that runs the
// default net server: Options.Binary, herd-net as FindBinary finds it, or
// Options.Self when there is none.
func (p *Plan) serverCommand() (string, []string) {
	if p.opts.Binary != "" {
		return p.opts.Binary, nil
	}
	bin := FindBinary("herd-net")
	if bin == "herd-net" && len(p.opts.Self) > 0 {
		return p.opts.Self[0], slices.Clone(p.opts.Self[1:])
	}
	return bin, nil
}

// FindBinary finds a herd program: next to the running executable, else
// in $PATH, else the bare name.
func FindBinary(name string) string {
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	return name
}

// LANDir is where lan keepers' sockets live: $XDG_RUNTIME_DIR/herd/lan
// (unless that is under /tmp), else /dev/shm/herd-UID/lan.
func LANDir() string { return lanDirFor(hostUID()) }

func (p *Plan) joinLAN() error {
	dir := LANDir()
	if err := makeLANDir(dir); err != nil {
		return err
	}
	sock := filepath.Join(dir, p.mode.LAN+".sock")
	join := filepath.Join(dir, p.mode.LAN+".join")
	unlock, err := flock(join + ".lock")
	if err != nil {
		return fmt.Errorf("netattach: lan %s: lock: %v", p.mode.LAN, err)
	}
	defer unlock()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: join, Net: "unix"})
	if err != nil {
		if err := p.startKeeper(sock, join); err != nil {
			return err
		}
		c, err = net.DialUnix("unix", nil, &net.UnixAddr{Name: join, Net: "unix"})
		if err != nil {
			return fmt.Errorf("netattach: lan %s: keeper started but its join socket refuses: %v", p.mode.LAN, err)
		}
	}
	r, err := reserve(c, p.mode)
	if err != nil {
		c.Close()
		return err
	}
	cfg := r.tunConfig(p.opts.IfName, p.opts.MTU, p.mode.NAT)
	p.tun = &cfg
	p.lanConn = c
	return nil
}

// readConnLine reads up to a newline, byte by byte (a descriptor may follow).
func readConnLine(c *net.UnixConn) (string, error) {
	var b []byte
	one := make([]byte, 1)
	for len(b) < 512 {
		if _, err := c.Read(one); err != nil {
			return string(b), err
		}
		if one[0] == '\n' {
			return string(b), nil
		}
		b = append(b, one[0])
	}
	return string(b), errors.New("line too long")
}

func (p *Plan) startKeeper(sock, join string) error {
	bin, args := p.serverCommand()
	args = append(args, "--lan", p.mode.LAN, "--socket", sock, "--join", join, "--mtu", fmt.Sprint(p.opts.MTU))
	args = append(args, p.opts.Args...)
	if p.mode.NAT {
		args = append(args, "--nat")
	}
	rr, rw, err := os.Pipe()
	if err != nil {
		return err
	}
	defer rr.Close()
	logf, err := os.OpenFile(filepath.Join(filepath.Dir(sock), p.mode.LAN+".log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		rw.Close()
		return err
	}
	defer logf.Close()
	cmd := exec.Command(bin, args...)
	cmd.ExtraFiles = []*os.File{nil, nil, rw} // fd 5 (3 and 4 closed)
	cmd.Env = append(os.Environ(), "HERD_NET_READY_FD=5")
	cmd.Stdout, cmd.Stderr = logf, logf
	// The keeper outlives the subenvironment that started it: its own
	// session, no parent-death signal. It exits with its last member.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		rw.Close()
		return fmt.Errorf("netattach: lan %s: start keeper %s: %v", p.mode.LAN, bin, err)
	}
	rw.Close()
	go cmd.Wait()
	line, err := readLine(rr, p.opts.Timeout)
	if err != nil || line != "ok" {
		cmd.Process.Kill()
		return fmt.Errorf("netattach: lan %s: keeper %s did not start: %s %v (log: %s)", p.mode.LAN, bin, line, err, logf.Name())
	}
	return nil
}

func (p *Plan) attachLAN(tun *os.File) (*Net, error) {
	c := p.lanConn
	if c == nil || tun == nil {
		return nil, errors.New("netattach: lan: nothing to attach (Prepare first, then the TUN)")
	}
	defer tun.Close()
	raw, err := tun.SyscallConn()
	if err != nil {
		c.Close()
		return nil, err
	}
	var werr error
	raw.Control(func(fd uintptr) {
		_, _, werr = c.WriteMsgUnix([]byte("ATTACH\n"), unix.UnixRights(int(fd)), nil)
	})
	if werr != nil {
		c.Close()
		return nil, fmt.Errorf("netattach: lan %s: send TUN: %v", p.mode.LAN, werr)
	}
	c.SetReadDeadline(time.Now().Add(p.opts.Timeout))
	line, err := readConnLine(c)
	c.SetReadDeadline(time.Time{})
	if err != nil || line != "OK" {
		c.Close()
		if err == nil {
			err = errors.New(strings.TrimPrefix(line, "ERR "))
		}
		return nil, fmt.Errorf("netattach: lan %s: attach: %v", p.mode.LAN, err)
	}
	n := &Net{Socket: filepath.Join(LANDir(), p.mode.LAN+".sock"), conn: c, done: make(chan struct{})}
	go func() {
		b := make([]byte, 1)
		for {
			if _, err := c.Read(b); err != nil {
				break
			}
		}
		n.err = fmt.Errorf("netattach: lan %s: the keeper is gone", p.mode.LAN)
		close(n.done)
	}()
	return n, nil
}

func flock(path string) (func(), error) {
	f, err := lockFile(path)
	if err != nil {
		return nil, err
	}
	return func() { unix.Flock(int(f.Fd()), unix.LOCK_UN); f.Close() }, nil
}

// lockFile takes an exclusive lock on path (created if missing). The lan
// keeper removes its lock file when it exits, under the lock, so a waiter
// may get a lock on a file no longer at path: then it tries again on the
// one that is.
func lockFile(path string) (*os.File, error) {
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, err
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
			f.Close()
			return nil, err
		}
		var held, now unix.Stat_t
		if unix.Fstat(int(f.Fd()), &held) == nil && unix.Stat(path, &now) == nil &&
			held.Dev == now.Dev && held.Ino == now.Ino {
			return f, nil
		}
		unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
	}
}

// ForwardListeners makes, inside the namespace (its loopback up), a TCP
// listener on 127.0.0.1:PORT for each --forward PORT[:HOSTPORT] in args,
// in order, for Plan.Start. The ports are checked by the server's
// own parser before this runs; here a bad one is an error too.
func ForwardListeners(args []string) ([]*os.File, error) {
	var out []*os.File
	for i := 0; i < len(args); i++ {
		spec, ok := strings.CutPrefix(args[i], "--forward=")
		if !ok {
			if args[i] != "--forward" || i+1 == len(args) {
				continue
			}
			i++
			spec = args[i]
		}
		port, _, _ := strings.Cut(spec, ":")
		if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
			closeAll(out)
			return nil, fmt.Errorf("--forward %q: bad port", spec)
		}
		l, err := net.Listen("tcp4", "127.0.0.1:"+port)
		if err != nil {
			closeAll(out)
			return nil, fmt.Errorf("--forward %s: %v", spec, err)
		}
		f, err := l.(*net.TCPListener).File()
		l.Close()
		if err != nil {
			closeAll(out)
			return nil, err
		}
		out = append(out, f)
	}
	return out, nil
}
