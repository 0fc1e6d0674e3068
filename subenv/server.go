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

	"github.com/hashicorp/yamux"

	"herd/proto"
	"herd/subenv/fsbridge"
)

// handshakeTimeout bounds how long an fs server may take to listen and
// answer the protocol's version handshake.
const handshakeTimeout = 15 * time.Second

// fsServer is the root fs server, a process of its own (or one already
// running, --fs-socket), and the launcher's client of it.
type fsServer struct {
	name   string // as the user named it: "herd-fs", "./myfs"
	desc   string // how messages name it: "herd-fs (pid 123)", "server at PATH"
	socket string
	notes  *fsbridge.Notifier // the client's notifier, attached to the bridge

	// The handshake runs while the namespaces are built; ready is closed
	// when it ended, and then client or dialErr says how.
	ready   chan struct{}
	client  *proto.Client
	dialErr error

	cmd      *exec.Cmd     // nil with --fs-socket
	exited   chan struct{} // closed when cmd ended; then exitErr says how
	exitErr  error
	stopOnce sync.Once
}

// fsParams is what the launcher decided about the root fs.
type fsParams struct {
	Root       string
	Upper      string // "" with --rw
	RuntimeDir string
	Socket     string
	Command    []string // --fs; nil = herd-fs from this binary
	Existing   string   // --fs-socket: a server already running
}

// defaultFS is the command line of the fs server when no --fs is given:
// herd-fs, from this very binary (`subenv herd-fs`, see Main), so that
// subenv works alone: copied somewhere, installed, on the ISO. It is
// started as any --fs program is and speaks the protocol on its socket like
// them; the launcher knows it by nothing else. Its options are those a
// subenvironment needs: the root, copy-on-write into the upper layer
// (HERD_UPPER) with an empty /tmp, or writing through with --rw.
func defaultFS(p fsParams) (name, path string, argv []string) {
	argv = []string{"subenv", "herd-fs", "--root=" + p.Root}
	if p.Upper != "" {
		argv = append(argv, "--hide-tmp")
	} else {
		argv = append(argv, "--rw")
	}
	return "herd-fs", "/proc/self/exe", argv
}

// startFS starts the fs server program with its listening socket as fd 3
// (LISTEN_FDS=1, as systemd socket activation), or connects to the one at
// --fs-socket, and begins the handshake without waiting for it: the kernel
// queues the connection until the server listens, and the launcher builds
// the namespaces meanwhile. wait collects the outcome.
func startFS(p fsParams) (*fsServer, error) {
	if p.Existing != "" {
		return connectExistingFS(p)
	}
	var name, path string
	var argv []string
	if p.Command == nil {
		name, path, argv = defaultFS(p)
	} else {
		name = p.Command[0]
		var err error
		if path, err = exec.LookPath(name); err != nil {
			if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("fs server %s: no such file or directory", name)
			}
			return nil, fmt.Errorf("fs server %s: %v", name, unwrapExec(err))
		}
		argv = p.Command
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
	cmd := &exec.Cmd{Path: path, Args: argv}
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
	s := &fsServer{name: name, socket: p.Socket, cmd: cmd, exited: make(chan struct{}), notes: fsbridge.NewNotifier(), ready: make(chan struct{})}
	s.desc = fmt.Sprintf("%s (pid %d)", name, cmd.Process.Pid)
	go func() { s.exitErr = cmd.Wait(); close(s.exited) }()
	go s.dial(p.Socket)
	return s, nil
}

// dial connects and runs the handshake. proto's handshake deadline is the
// per-call one (5 s), and a server we started counts its own start-up
// (a loaded machine, a slow disk) against it: it gets handshakeTimeout,
// as long as it lives.
func (s *fsServer) dial(socket string) {
	defer close(s.ready)
	give := time.Now().Add(handshakeTimeout)
	for {
		s.client, s.dialErr = proto.Dial(socket, proto.ClientOptions{Notifier: s.notes})
		if s.dialErr == nil || s.cmd == nil || !timedOut(s.dialErr) || time.Now().After(give) {
			return
		}
		select {
		case <-s.exited:
			return
		default:
		}
	}
}

// wait waits for the server's handshake. An error is one line naming the
// cause: the server exited, speaks no protocol, is too slow, or a signal
// came. The caller stops the server either way.
func (s *fsServer) wait(abort <-chan os.Signal) error {
	if s.cmd == nil {
		<-s.ready
		if s.dialErr != nil {
			return fmt.Errorf("--fs-socket %s: %v", s.socket, s.dialErr)
		}
		return nil
	}
	exitedAtStart := func() error {
		return fmt.Errorf("fs server %s exited at start (%s): see its stderr above", s.name, exitStatus(s.exitErr))
	}
	select {
	case <-s.ready:
		if s.dialErr == nil {
			return nil
		}
		// A server that died makes the handshake fail with a closed
		// connection; say that it died, which is the cause.
		if closedConn(s.dialErr) {
			select {
			case <-s.exited:
				return exitedAtStart()
			case <-time.After(2 * time.Second):
			}
		}
		return fmt.Errorf("fs server %s: no herd protocol on its socket: %v", s.name, s.dialErr)
	case <-s.exited:
		return exitedAtStart()
	case sig := <-abort:
		return fmt.Errorf("interrupted by %v while waiting for fs server %s", sig, s.name)
	case <-time.After(handshakeTimeout):
		return fmt.Errorf("fs server %s did not answer the handshake within %v", s.name, handshakeTimeout)
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
	s := &fsServer{desc: "server at " + p.Existing, socket: p.Existing, notes: fsbridge.NewNotifier(), ready: make(chan struct{})}
	go s.dial(p.Existing)
	return s, nil
}

// stop ends the server: the client first, then the process (SIGTERM, and
// SIGKILL if it lingers). A handshake still under way ends with it.
func (s *fsServer) stop() {
	s.stopOnce.Do(func() {
		select {
		case <-s.ready:
			if s.client != nil {
				s.client.Close()
			}
		default:
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
		<-s.ready
		if s.client != nil {
			s.client.Close()
		}
	})
}

// lost returns why the connection to the server was lost, or nil if it
// was not.
func (s *fsServer) lost() error {
	select {
	case <-s.ready:
	default:
		return nil
	}
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

func timedOut(err error) bool {
	var te interface{ Timeout() bool }
	return errors.Is(err, syscall.ETIMEDOUT) || errors.As(err, &te) && te.Timeout()
}

func closedConn(err error) bool {
	// yamux.ErrSessionShutdown: the session ended (the peer closed the
	// socket) before the handshake's first stream opened; a server that
	// exits at once gives this or EOF, depending on the race.
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.EIO) || errors.Is(err, yamux.ErrSessionShutdown)
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
