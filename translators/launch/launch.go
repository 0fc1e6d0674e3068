// Package launch starts a translator program the way settrans -a and
// hostmux do: with its listening socket as fd 3 (LISTEN_FDS=1), the node
// beneath it as fd 4 (HERD_UNDERLYING=4) when there is one, and the kernel
// killing it should its starter die (PDEATHSIG). Dial waits for the
// translator's handshake; Stop asks it to go away and makes sure it does.
//
// What the caller does with the running translator (mount it, redirect
// to it) and what it says when one fails to start stay the caller's.
package launch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"herd/proto"
)

// Spec says what to start.
type Spec struct {
	Program string   // the executable's path
	Argv    []string // its argv; Argv[0] is its name
	// Socket is where it listens; a stale socket there is replaced.
	Socket string
	// Underlying is the node beneath the translator, handed over as fd 4
	// (nil: none).
	Underlying *os.File
	// RuntimeDir is its HERD_RUNTIME_DIR ("": the one we have, if any).
	RuntimeDir string
	// Output receives its stdout and stderr (nil: our stderr).
	Output io.Writer
}

// ErrExited is Dial's error when the translator exits before it answers.
var ErrExited = errors.New("translator exited")

// Process is a started translator.
type Process struct {
	socket string
	cmd    *exec.Cmd
	exited chan struct{}
	err    error // cmd.Wait's, once exited is closed
	client *proto.Client
}

// Start listens on s.Socket and starts the translator with the listener.
func Start(s Spec) (*Process, error) {
	if fi, err := os.Lstat(s.Socket); err == nil && fi.Mode()&os.ModeSocket != 0 {
		os.Remove(s.Socket)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: s.Socket, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", s.Socket, err)
	}
	// The socket outlives our copy of the listener: the translator has one.
	l.SetUnlinkOnClose(false)
	lf, err := l.File()
	l.Close()
	if err != nil {
		return nil, err
	}
	defer lf.Close()

	out := s.Output
	if out == nil {
		out = os.Stderr
	}
	cmd := &exec.Cmd{Path: s.Program, Args: s.Argv, Stdout: out, Stderr: out, ExtraFiles: []*os.File{lf}}
	env := []string{"LISTEN_FDS=1"}
	if s.RuntimeDir != "" {
		env = append(env, "HERD_RUNTIME_DIR="+s.RuntimeDir)
	}
	if s.Underlying != nil {
		cmd.ExtraFiles = append(cmd.ExtraFiles, s.Underlying)
		env = append(env, "HERD_UNDERLYING=4")
	}
	cmd.Env = append(cleanEnv(env), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", s.Program, err)
	}
	p := &Process{socket: s.Socket, cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// cleanEnv is our environment without socket activation's variables (ours
// are not the translator's) and without those in set.
func cleanEnv(set []string) []string {
	drop := map[string]bool{"LISTEN_FDS": true, "LISTEN_PID": true, "LISTEN_FDNAMES": true, "HERD_UNDERLYING": true}
	for _, kv := range set {
		k, _, _ := strings.Cut(kv, "=")
		drop[k] = true
	}
	var out []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); !drop[k] {
			out = append(out, kv)
		}
	}
	return out
}

// Pid is the translator's process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Exited is closed when the translator has exited.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Err is how the translator exited (its wait status); nil before Exited.
func (p *Process) Err() error {
	select {
	case <-p.exited:
		return p.err
	default:
		return nil
	}
}

// Dial connects to the translator once it answers its handshake, trying
// until it does, it exits (ErrExited) or ctx is done (ctx's error). The
// client is the one Stop uses to ask the translator to go away.
func (p *Process) Dial(ctx context.Context, opts proto.ClientOptions) (*proto.Client, error) {
	// A dial waits for the handshake's answer, so it runs beside the watch.
	dialed := make(chan *proto.Client, 1)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			if c, err := proto.Dial(p.socket, opts); err == nil {
				select {
				case dialed <- c:
				case <-stop:
					c.Close()
				}
				return
			}
			select {
			case <-stop:
				return
			case <-p.exited:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	select {
	case p.client = <-dialed:
		return p.client, nil
	case <-p.exited:
		return nil, ErrExited
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// grace is how long Stop waits for each way of asking.
const grace = 5 * time.Second

// Stop asks the translator to go away (the Hurd's goaway: it may flush,
// as tarfs writes its archive), then SIGTERM, then SIGKILL, each after a
// grace period, and closes the client. It returns when the translator has
// exited.
func (p *Process) Stop() {
	select {
	case <-p.exited:
	default:
		if p.client != nil {
			ctx, cancel := context.WithTimeout(context.Background(), grace)
			p.client.Goaway(ctx, 0)
			cancel()
			// Our session would keep the translator waiting for us.
			p.client.Close()
		}
		if !waitFor(p.exited, grace) {
			p.cmd.Process.Signal(syscall.SIGTERM)
			if !waitFor(p.exited, grace) {
				p.cmd.Process.Kill()
				<-p.exited
			}
		}
	}
	if p.client != nil {
		p.client.Close()
	}
}

func waitFor(c <-chan struct{}, d time.Duration) bool {
	select {
	case <-c:
		return true
	case <-time.After(d):
		return false
	}
}
