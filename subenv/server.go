package subenv

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"herd/proto"
	"herd/servers/fs"
	"herd/subenv/fsbridge"
)

// handshakeTimeout bounds how long an external fs server may take to listen
// and answer the protocol's version handshake.
const handshakeTimeout = 15 * time.Second

// fsServer is the running root fs server and the launcher's client of it.
type fsServer struct {
	desc   string // how messages name it: "herd-fs (built in)", "./myfs (pid 123)"
	socket string
	client *proto.Client      // external servers: the bridge's connection
	notes  *fsbridge.Notifier // the client's notifier, attached to the bridge
	direct proto.FileSystem   // built in: the server itself, for the bridge

	// built in
	fs  *fs.Server
	srv *proto.Server

	// external
	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd ended; then exitErr says how
	exitErr error
}

// fsParams is what the launcher decided about the root fs.
type fsParams struct {
	Root       string
	Upper      string // "" with --rw
	RuntimeDir string
	Socket     string
	Command    []string         // external server; nil = built in
	Existing   string           // --fs-socket: a server already running
	Abort      <-chan os.Signal // a signal here ends a wait for the server
}

func (p fsParams) clientOpts(n *fsbridge.Notifier) proto.ClientOptions {
	return proto.ClientOptions{Notifier: n}
}

// root is what the bridge serves the FUSE root from.
func (s *fsServer) root() proto.FileSystem {
	if s.direct != nil {
		return s.direct
	}
	return s.client
}

// startBuiltinFS runs servers/fs in this process. It listens on a unix
// socket in the runtime dir, so translators and tools reach it as they would
// an external server, but the bridge calls it directly: no protocol hop on
// the path of every FUSE request.
func startBuiltinFS(p fsParams) (*fsServer, error) {
	fsrv, err := fs.New(fs.Options{Root: p.Root, Upper: p.Upper, HideTmp: p.Upper != "", RuntimeDir: p.RuntimeDir})
	if err != nil {
		return nil, fmt.Errorf("fs server: %v", err)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: p.Socket, Net: "unix"})
	if err != nil {
		fsrv.Close()
		return nil, fmt.Errorf("fs server socket: %v", err)
	}
	os.Chmod(p.Socket, 0o600)
	tee := &teeFS{Server: fsrv}
	fsrv.SetNotifier(tee)
	srv := proto.NewServer(tee, proto.ServerOptions{Name: "herd-fs"})
	go srv.Serve(l)
	return &fsServer{desc: "herd-fs (built in)", socket: p.Socket, fs: fsrv, srv: srv, direct: tee}, nil
}

// teeFS is the built-in server as both the proto server and the bridge see
// it: each sets itself as the server's Notifier, and each must hear about
// every change, so the server notifies teeFS, which tells them all.
type teeFS struct {
	*fs.Server
	mu sync.Mutex
	ns []proto.Notifier
}

func (t *teeFS) SetNotifier(n proto.Notifier) {
	t.mu.Lock()
	t.ns = append(t.ns, n)
	t.mu.Unlock()
}

func (t *teeFS) notifiers() []proto.Notifier {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.ns
}

func (t *teeFS) InvalNode(node proto.NodeID, off, length int64) {
	for _, n := range t.notifiers() {
		n.InvalNode(node, off, length)
	}
}

func (t *teeFS) InvalEntry(parent proto.NodeID, name string) {
	for _, n := range t.notifiers() {
		n.InvalEntry(parent, name)
	}
}

// startExternalFS starts a server program with its listening socket as fd 3
// (LISTEN_FDS=1, as systemd socket activation) and waits for its handshake.
func startExternalFS(p fsParams) (*fsServer, error) {
	name := p.Command[0]
	path, err := exec.LookPath(name)
	if err != nil {
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("fs server %s: no such file or directory", name)
		}
		return nil, fmt.Errorf("fs server %s: %v", name, unwrapExec(err))
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: p.Socket, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("fs server socket: %v", err)
	}
	lf, err := l.File()
	l.SetUnlinkOnClose(false)
	l.Close()
	if err != nil {
		return nil, fmt.Errorf("fs server socket: %v", err)
	}
	defer lf.Close()
	cmd := exec.Command(path, p.Command[1:]...)
	cmd.Args[0] = name
	cmd.ExtraFiles = []*os.File{lf}
	cmd.Env = append(withoutEnv(os.Environ(), "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "HERD_UPPER", "HERD_RUNTIME_DIR", "HERD_ROOT"),
		"LISTEN_FDS=1", "HERD_RUNTIME_DIR="+p.RuntimeDir, "HERD_UPPER="+p.Upper)
	if p.Root != "/" {
		cmd.Env = append(cmd.Env, "HERD_ROOT="+p.Root)
	}
	// The server's output goes to our stderr, never into the program's
	// stdout; its own process group keeps the terminal's ^C away from it.
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("fs server %s: %v", name, unwrapExec(err))
	}
	s := &fsServer{socket: p.Socket, cmd: cmd, exited: make(chan struct{}), notes: fsbridge.NewNotifier()}
	s.desc = fmt.Sprintf("%s (pid %d)", name, cmd.Process.Pid)
	go func() { s.exitErr = cmd.Wait(); close(s.exited) }()

	type dialed struct {
		c   *proto.Client
		err error
	}
	ch := make(chan dialed, 1)
	go func() {
		c, err := proto.Dial(p.Socket, p.clientOpts(s.notes))
		ch <- dialed{c, err}
	}()
	fail := func(err error) (*fsServer, error) {
		s.stop()
		return nil, err
	}
	select {
	case d := <-ch:
		if d.err == nil {
			s.client = d.c
			return s, nil
		}
		// A server that died makes the handshake fail with a closed
		// connection; say that it died, which is the cause.
		if closedConn(d.err) {
			select {
			case <-s.exited:
				return fail(fmt.Errorf("fs server %s exited at start (%s): see its stderr above", name, exitStatus(s.exitErr)))
			case <-time.After(2 * time.Second):
			}
		}
		return fail(fmt.Errorf("fs server %s: no herd protocol on its socket: %v", name, d.err))
	case <-s.exited:
		return fail(fmt.Errorf("fs server %s exited at start (%s): see its stderr above", name, exitStatus(s.exitErr)))
	case sig := <-p.Abort:
		return fail(fmt.Errorf("interrupted by %v while waiting for fs server %s", sig, name))
	case <-time.After(handshakeTimeout):
		return fail(fmt.Errorf("fs server %s did not answer the handshake within %v", name, handshakeTimeout))
	}
}

// connectExistingFS connects to a server someone already started
// (--fs-socket). The socket must be the user's own: a server of another user
// would see, and could change, every file the program touches.
func connectExistingFS(p fsParams) (*fsServer, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(p.Existing, &st); err != nil {
		return nil, fmt.Errorf("--fs-socket %s: %v", p.Existing, errnoOf(err))
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFSOCK {
		return nil, fmt.Errorf("--fs-socket %s: not a socket", p.Existing)
	}
	if int(st.Uid) != os.Geteuid() {
		return nil, fmt.Errorf("--fs-socket %s: socket of another user (uid %d, you are %d)", p.Existing, st.Uid, os.Geteuid())
	}
	s := &fsServer{desc: "server at " + p.Existing, socket: p.Existing, notes: fsbridge.NewNotifier()}
	c, err := proto.Dial(p.Existing, p.clientOpts(s.notes))
	if err != nil {
		return nil, fmt.Errorf("--fs-socket %s: %v", p.Existing, err)
	}
	s.client = c
	return s, nil
}

// stop ends the server: the client first, then the server itself (an
// external one gets SIGTERM, and SIGKILL if it lingers).
func (s *fsServer) stop() {
	if s.client != nil {
		s.client.Close()
	}
	if s.srv != nil {
		s.srv.Close()
	}
	if s.fs != nil {
		s.fs.Close()
	}
	if s.cmd != nil {
		select {
		case <-s.exited:
		default:
			s.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-s.exited:
			case <-time.After(3 * time.Second):
				s.cmd.Process.Kill()
				<-s.exited
			}
		}
	}
}

// lost returns why the connection to the server was lost, or nil if it
// was not.
func (s *fsServer) lost() error {
	if s.client == nil {
		return nil
	}
	select {
	case <-s.client.Done():
		if err := s.client.Err(); err != nil {
			return err
		}
		return syscall.EIO
	default:
		return nil
	}
}

// deathCause says why the server's connection was lost, preferring what
// the process table knows.
func (s *fsServer) deathCause(err error) string {
	if s.cmd != nil {
		select {
		case <-s.exited:
			return fmt.Sprintf("%s %s", s.desc, exitStatus(s.exitErr))
		case <-time.After(time.Second):
		}
	}
	return fmt.Sprintf("%s: %v", s.desc, err)
}

func exitStatus(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return "killed by signal " + fmt.Sprint(int(ws.Signal())) + " (" + ws.Signal().String() + ")"
		}
		return fmt.Sprintf("status %d", ee.ExitCode())
	}
	if err == nil {
		return "status 0"
	}
	return err.Error()
}

func closedConn(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.EIO)
}

func unwrapExec(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func errnoOf(err error) error {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return err
}

func withoutEnv(env []string, names ...string) []string {
	out := env[:0:0]
outer:
	for _, e := range env {
		for _, n := range names {
			if strings.HasPrefix(e, n+"=") {
				continue outer
			}
		}
		out = append(out, e)
	}
	return out
}
