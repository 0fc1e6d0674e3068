package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"herd/proto"
)

// Active is a host active translator as found on a node.
type Active struct {
	Mount Mount
	// State is nil when the mount is a translator's but its state file is
	// not ours to read (another user's, or a holder that died).
	State *State
}

// Show is the translator's command line for a person: from the state
// file, else as the mount's source has it (another user's translator).
func (a *Active) Show() string {
	if a.State != nil {
		return ShowArgv(a.State.Argv)
	}
	return strings.TrimPrefix(a.Mount.Source, TranslatorSourcePrefix)
}

// UnderPath is a path that reaches the host file under the mount (the
// holder's descriptor of it), or "" when unknown.
func (a *Active) UnderPath() string {
	if a.State == nil || a.State.UnderlyingFD <= 0 || !Alive(a.State.HolderPid) {
		return ""
	}
	return fmt.Sprintf("/proc/%d/fd/%d", a.State.HolderPid, a.State.UnderlyingFD)
}

// FindActive returns the host active translator mounted on node (a
// canonical path), or nil.
func FindActive(node string) (*Active, error) {
	mounts, err := ReadMounts()
	if err != nil {
		return nil, err
	}
	m, ok := MountAt(mounts, node)
	if !ok || !m.IsTranslator() {
		return nil, nil
	}
	a := &Active{Mount: m}
	if dir, err := RuntimeDir(); err == nil {
		if st, err := ReadState(PathsFor(dir, node).State); err == nil && st.Node == node && Alive(st.HolderPid) {
			a.State = st
		}
	}
	return a, nil
}

// StartOptions configure StartActive.
type StartOptions struct {
	Argv    []string // as the user gave it; Argv[0] names the translator
	Program string   // resolved Argv[0]
	Create  bool     // create the node (file or directory, as the translator's root)
	Timeout time.Duration
	// Underlying is handed to the translator as its underlying node
	// instead of the node itself ("": the node; settrans -U).
	Underlying string
	// Pause, if set, is called with the translator's pid once it runs and
	// before it is connected to; start-up goes on when it returns, and
	// stops if it fails (settrans -P).
	Pause func(pid int) error
	// Holder is the command that runs RunHolder with its config appended
	// (default: this executable with --herd-holder=).
	Holder []string
}

// StartActive starts a host active translator on node (canonical path) and
// returns once its mount answers. On failure nothing is left: no process,
// no mount, no runtime file, no node it created.
func StartActive(node string, o StartOptions) (err error) {
	dir, err := RuntimeDir()
	if err != nil {
		return err
	}
	paths := PathsFor(dir, node)
	cfg, err := json.Marshal(holderConfig{Node: node, Argv: o.Argv, Program: o.Program, Create: o.Create, Timeout: o.Timeout,
		Underlying: o.Underlying, Pause: o.Pause != nil, Paths: paths})
	if err != nil {
		return err
	}
	holder := o.Holder
	if holder == nil {
		self, err := os.Executable()
		if err != nil {
			return err
		}
		holder = []string{self, "--" + HolderFlag + "="}
	}
	args := append([]string(nil), holder[1:]...)
	args[len(args)-1] += string(cfg)

	logf, err := os.OpenFile(paths.Log, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	cmd := exec.Command(holder[0], args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{w}
	var cont *os.File // to the holder: go on after the pause
	if o.Pause != nil {
		cr, cw, err := os.Pipe()
		if err != nil {
			w.Close()
			return err
		}
		defer cr.Close()
		cont = cw
		defer cont.Close()
		cmd.ExtraFiles = append(cmd.ExtraFiles, cr)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	_, statErr := os.Lstat(node)
	existed := statErr == nil
	if err := cmd.Start(); err != nil {
		w.Close()
		return fmt.Errorf("start the holder: %w", err)
	}
	w.Close()

	answer := make(chan string, 1)
	go func() {
		lines := bufio.NewReader(r)
		for {
			line, err := lines.ReadString('\n')
			answer <- strings.TrimSpace(line)
			if err != nil || !strings.HasPrefix(line, "pause ") {
				return
			}
		}
	}()
	var timeout <-chan time.Time
	if o.Timeout > 0 {
		// The holder keeps the deadline itself; this is for a holder that
		// is stuck beyond it.
		t := time.NewTimer(o.Timeout + 10*time.Second)
		defer t.Stop()
		timeout = t.C
	}
	defer func() {
		if err != nil {
			os.Remove(paths.Log)
		}
	}()
	line, timedOut := "", false
	select {
	case line = <-answer:
	case <-timeout:
		timedOut = true
	}
	if pid, ok := strings.CutPrefix(line, "pause "); ok && o.Pause != nil {
		n, _ := strconv.Atoi(pid)
		if err := o.Pause(n); err != nil {
			cont.Close() // the holder gives up, and undoes what it did
			cmd.Wait()
			return fmt.Errorf("paused: %w", err)
		}
		fmt.Fprintln(cont, "go on")
		if o.Timeout > 0 {
			t := time.NewTimer(o.Timeout + 10*time.Second)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case line = <-answer:
		case <-timeout:
			timedOut = true
		}
	}
	switch {
	case !timedOut:
		if line == "ok" {
			cmd.Process.Release()
			return nil
		}
		cmd.Wait()
		if msg, ok := strings.CutPrefix(line, "error: "); ok {
			return errors.New(msg)
		}
		cleanupAfter(node, paths, existed)
		return fmt.Errorf("translator %s: the holder died at start; log: %s", o.Argv[0], tailLog(paths.Log))
	default:
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		cleanupAfter(node, paths, existed)
		return fmt.Errorf("translator %s did not start within %v: %w", o.Argv[0], o.Timeout, syscall.ETIMEDOUT)
	}
}

// cleanupAfter undoes what a holder that was killed left behind.
func cleanupAfter(node string, p Paths, existed bool) {
	if mounts, err := ReadMounts(); err == nil {
		if m, ok := MountAt(mounts, node); ok && m.IsTranslator() {
			fuseUnmount(node, true)
		}
	}
	os.Remove(p.Socket)
	os.Remove(p.State)
	os.RemoveAll(p.RunDir)
	if !existed {
		os.Remove(node)
	}
}

// StopActive asks a host active translator to go away (the Hurd's
// fsys_goaway: a busy translator may refuse unless forced), then has its
// holder unmount and stop it, and returns once all of it is gone.
func StopActive(a *Active, force bool, timeout time.Duration) error {
	if a.State == nil {
		// Not ours to ask (or its holder is gone): unmount what is left,
		// which the kernel allows only to its owner.
		if err := fuseUnmount(a.Mount.MountPoint, force); err != nil {
			return err
		}
		return nil
	}
	st := a.State
	if timeout <= 0 {
		timeout = 60 * time.Second
	}
	var flags uint32
	if force {
		flags = proto.GoawayForce
	}
	if c, err := proto.Dial(st.Socket, proto.ClientOptions{Timeout: timeout}); err == nil {
		// The kernel releases files a moment after their last close: a
		// translator busy with those only is asked again, briefly.
		busyUntil := time.Now().Add(3 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			err = c.Goaway(ctx, flags)
			cancel()
			if !errors.Is(err, syscall.EBUSY) || time.Now().After(busyUntil) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		c.Close()
		if err != nil && errors.Is(err, syscall.EBUSY) && !force {
			return fmt.Errorf("translator %s is busy and refuses to go away (use -f to force): %w", ShowArgv(st.Argv), syscall.EBUSY)
		}
	}
	syscall.Kill(st.HolderPid, syscall.SIGTERM)
	deadline := time.Now().Add(timeout)
	for {
		mounted := false
		if mounts, err := ReadMounts(); err == nil {
			m, ok := MountAt(mounts, st.Node)
			mounted = ok && m.IsTranslator()
		}
		if !mounted && !Alive(st.HolderPid) && !Alive(st.TranslatorPid) {
			return nil
		}
		if time.Now().After(deadline) {
			syscall.Kill(-st.HolderPid, syscall.SIGKILL)
			syscall.Kill(st.TranslatorPid, syscall.SIGKILL)
			if mounted {
				fuseUnmount(st.Node, true)
			}
			p := PathsFor(dirOf(st.Socket), st.Node)
			os.Remove(st.Socket)
			os.Remove(p.State)
			os.RemoveAll(p.RunDir)
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func dirOf(p string) string {
	if i := strings.LastIndexByte(p, '/'); i > 0 {
		return p[:i]
	}
	return "."
}

// DialActive connects to a host active translator's socket.
func DialActive(a *Active, timeout time.Duration) (*proto.Client, error) {
	if a.State == nil {
		return nil, fmt.Errorf("the translator on %s is not one of ours (no state in our runtime dir)", a.Mount.MountPoint)
	}
	return proto.Dial(a.State.Socket, proto.ClientOptions{Timeout: timeout})
}
