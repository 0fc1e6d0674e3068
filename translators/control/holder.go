package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"herd/proto"
	"herd/subenv/fsbridge"
	"herd/translators/launch"
)

// HolderFlag is the hidden settrans flag that runs the holder of a host
// active translator; its value is the holder's configuration (JSON).
const HolderFlag = "herd-holder"

// mountSubtype is the FUSE subtype (fstype "fuse.herd-translator") of host
// translator mounts.
const mountSubtype = "herd-translator"

// holderConfig is what settrans hands the holder.
type holderConfig struct {
	Node    string        `json:"node"`
	Argv    []string      `json:"argv"`
	Program string        `json:"program"`
	Create  bool          `json:"create"`
	Timeout time.Duration `json:"timeout"` // start-up; 0 = none
	Paths   Paths         `json:"paths"`
	// Underlying is what the translator gets as its underlying node (fd 4)
	// instead of Node (settrans -U).
	Underlying string `json:"underlying,omitempty"`
	// Pause: once the translator runs, report "pause PID" and wait for a
	// line on fd 4 before connecting to it (settrans -P).
	Pause bool `json:"pause,omitempty"`
}

// holder runs a host active translator: it starts the program with its
// listening socket, mounts it on the node, and takes it all down again.
type holder struct {
	cfg      holderConfig
	ready    *os.File // to settrans
	under    *os.File // the node under the mount
	created  bool     // the holder created the node (-c), and removes it on failure
	proc     *launch.Process
	client   *proto.Client
	mounted  bool
	bridge   *fsbridge.Bridge
	gone     chan struct{} // the translator's connection was lost
	notifier *fsbridge.Notifier
	goneOnce bool
}

// RunHolder is the holder's main: settrans re-executes itself with
// --herd-holder=CONFIG, fd 3 the pipe on which it reports "ok" once the
// mount answers, or "error: ..." (having undone everything); with Pause,
// fd 4 the pipe on which settrans says to go on.
func RunHolder(config string) int {
	ready := os.NewFile(3, "ready")
	var cfg holderConfig
	if err := json.Unmarshal([]byte(config), &cfg); err != nil {
		fmt.Fprintf(ready, "error: holder config: %v\n", err)
		return 2
	}
	h := &holder{cfg: cfg, ready: ready, gone: make(chan struct{}), notifier: fsbridge.NewNotifier()}
	logf("holder %d: starting %s on %s", os.Getpid(), ShowArgv(cfg.Argv), cfg.Node)
	// Signals that ask us to stop are caught from the start, so a stop
	// during start-up still cleans up.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, stopSignals...)
	if err := h.start(); err != nil {
		logf("holder: start failed: %v", err)
		h.stop(true)
		fmt.Fprintf(ready, "error: %v\n", err)
		ready.Close()
		return 1
	}
	fmt.Fprintln(ready, "ok")
	ready.Close()
	h.wait(sigs)
	h.stop(false)
	logf("holder %d: done", os.Getpid())
	return 0
}

// stopSignals ask the holder to stop.
var stopSignals = []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05.000 ")+format+"\n", args...)
}

func (h *holder) start() error {
	cfg := h.cfg
	name := cfg.Argv[0]

	// The node under the mount: handed to the translator (as tarfs reads
	// its archive), and kept so the host file stays reachable while covered.
	exists := true
	if f, err := openUnder(cfg.Node); err == nil {
		h.under = f
	} else if errors.Is(err, os.ErrNotExist) && cfg.Create {
		exists = false
	} else {
		return err
	}

	// The translator, with a runtime dir of its own.
	os.RemoveAll(cfg.Paths.RunDir)
	if err := os.Mkdir(cfg.Paths.RunDir, 0o700); err != nil {
		return err
	}
	given := h.under
	if cfg.Underlying != "" {
		f, err := openUnder(cfg.Underlying)
		if err != nil {
			return fmt.Errorf("underlying node: %w", err)
		}
		defer f.Close() // the translator has its own
		given = f
	}
	p, err := launch.Start(launch.Spec{Program: cfg.Program, Argv: cfg.Argv, Socket: cfg.Paths.Socket,
		Underlying: given, RuntimeDir: cfg.Paths.RunDir})
	if err != nil {
		return err
	}
	h.proc = p
	logf("holder: translator pid %d", p.Pid())
	if cfg.Pause {
		if err := h.pause(); err != nil {
			return err
		}
	}

	// The start-up deadline runs from here: a pause is not start-up.
	deadline := time.Now().Add(24 * 365 * time.Hour)
	if cfg.Timeout > 0 {
		deadline = time.Now().Add(cfg.Timeout)
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()

	// Its start-up handshake, within the start-up deadline; a signal that
	// asks us to stop (still queued on sigs) ends the wait too.
	dctx, stopSigs := signal.NotifyContext(ctx, stopSignals...)
	h.client, err = p.Dial(dctx, proto.ClientOptions{Notifier: h.notifier})
	stopSigs()
	switch {
	case errors.Is(err, launch.ErrExited):
		return fmt.Errorf("translator %s exited at start (%v); its messages: %s", name, p.Err(), tailLog(cfg.Paths.Log))
	case ctx.Err() != nil:
		return fmt.Errorf("translator %s did not answer within %v: %w", name, cfg.Timeout, syscall.ETIMEDOUT)
	case err != nil:
		return fmt.Errorf("stopped during start-up: %v", context.Cause(dctx))
	}
	root, err := h.client.Root(ctx)
	if err != nil {
		return fmt.Errorf("translator %s: its root: %w", name, err)
	}
	rootType := root.Attr.Mode & syscall.S_IFMT
	isDir := rootType == syscall.S_IFDIR
	if rootType == syscall.S_IFLNK {
		// The kernel refuses a FUSE mount whose root is a symlink
		// (rootmode S_IFLNK: EINVAL), and fusermount3 takes the mount
		// point's type, which mount(2) resolves through symlinks.
		return fmt.Errorf("translator %s's root is a symlink, and Linux cannot mount one on the host; use ln -s, or settrans -p for subenvironments, where it works", name)
	}

	if exists {
		var st unix.Stat_t
		if err := unix.Fstat(int(h.under.Fd()), &st); err != nil {
			return err
		}
		if st.Mode&syscall.S_IFMT != rootType {
			return fmt.Errorf("%s is %s but translator %s serves %s; a mount needs the same type (settrans -c on a missing node makes the right one)",
				cfg.Node, typeName(st.Mode), name, typeName(root.Attr.Mode))
		}
	} else {
		if isDir {
			err = os.Mkdir(cfg.Node, 0o755)
		} else {
			var f *os.File
			f, err = os.OpenFile(cfg.Node, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
			if err == nil {
				f.Close()
			}
		}
		if err != nil {
			return fmt.Errorf("create %s: %w", cfg.Node, err)
		}
		h.created = true
		if h.under, err = openUnder(cfg.Node); err != nil {
			return err
		}
	}

	// The mount, served by the bridge.
	fd, err := fuseMount(cfg.Node, TranslatorSourcePrefix+ShowArgv(cfg.Argv), mountSubtype, isDir)
	if err != nil {
		return err
	}
	h.mounted = true
	b, err := fsbridge.Serve(fd, rootFS(ctx, h.client, root), fsbridge.Options{
		IDMap:      fsbridge.IDMap{Identity: true},
		ServerGone: func(error) { h.signalGone() },
		Notifier:   h.notifier,
		// Any program may be the translator: one that does not notify
		// must not leave the kernel an hour's stale copy.
		Translator: true,
	})
	fd.Close()
	if err != nil {
		return err
	}
	h.bridge = b

	// The mount answers: its root is no longer the node under it.
	answered := make(chan error, 1)
	go func() {
		var st, ust unix.Stat_t
		err := unix.Stat(cfg.Node, &st)
		if err == nil {
			err = unix.Fstat(int(h.under.Fd()), &ust)
		}
		if err == nil && st.Dev == ust.Dev && st.Ino == ust.Ino {
			err = errors.New("the mount does not show")
		}
		answered <- err
	}()
	select {
	case err := <-answered:
		if err != nil {
			return fmt.Errorf("mount on %s does not answer: %w", cfg.Node, err)
		}
	case <-p.Exited():
		return fmt.Errorf("translator %s exited (%v); its messages: %s", name, p.Err(), tailLog(cfg.Paths.Log))
	case <-ctx.Done():
		return fmt.Errorf("mount on %s did not answer within %v: %w", cfg.Node, cfg.Timeout, syscall.ETIMEDOUT)
	}

	return WriteState(cfg.Paths.State, &State{
		Node: cfg.Node, Argv: cfg.Argv, Program: cfg.Program,
		Socket: cfg.Paths.Socket, Log: cfg.Paths.Log,
		HolderPid: os.Getpid(), TranslatorPid: p.Pid(),
		UnderlyingFD: int(h.under.Fd()),
	})
}

// pause tells settrans the translator's pid and waits until it says to go
// on (settrans -P: time to attach a debugger before the translator is
// connected to and mounted).
func (h *holder) pause() error {
	fmt.Fprintf(h.ready, "pause %d\n", h.proc.Pid())
	cont := os.NewFile(4, "continue")
	defer cont.Close()
	if _, err := bufio.NewReader(cont).ReadString('\n'); err != nil {
		return errors.New("settrans went away during the pause")
	}
	return nil
}

func (h *holder) signalGone() {
	select {
	case <-h.gone:
	default:
		close(h.gone)
	}
}

// wait returns when the translator exits, its connection is lost, the mount
// goes away, or we are asked to stop.
func (h *holder) wait(sigs <-chan os.Signal) {
	unmounted := make(chan struct{})
	go func() { h.bridge.Wait(); close(unmounted) }()
	select {
	case <-h.proc.Exited():
		logf("holder: translator exited: %v", h.proc.Err())
	case <-h.gone:
		logf("holder: connection to the translator lost")
	case <-unmounted:
		logf("holder: unmounted")
		h.mounted = false
	case s := <-sigs:
		logf("holder: %v", s)
	}
}

// stop unmounts, stops the translator and removes the runtime files; after
// a failed start it also removes a node it created.
func (h *holder) stop(failed bool) {
	if h.mounted {
		if err := fuseUnmount(h.cfg.Node, true); err != nil {
			logf("holder: %v", err)
		}
		if h.bridge != nil {
			h.bridge.Unmount()
		}
	}
	if h.proc != nil {
		h.proc.Stop()
	}
	// An orphaned translator's holder (settrans -o) outlives it on the
	// node: the paths are then its successor's, and stay.
	if st, err := ReadState(h.cfg.Paths.State); err != nil || st.HolderPid == os.Getpid() {
		os.Remove(h.cfg.Paths.Socket)
		os.Remove(h.cfg.Paths.State)
		os.RemoveAll(h.cfg.Paths.RunDir)
		if !failed {
			os.Remove(h.cfg.Paths.Log)
		}
	}
	if h.under != nil {
		h.under.Close()
	}
	if failed && h.created {
		os.Remove(h.cfg.Node)
	}
}

// openUnder opens a node to read it, or only to name it when it cannot be
// read.
func openUnder(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err == nil {
		return f, nil
	}
	if errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	fd, err2 := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err2 != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), path), nil
}

func typeName(mode uint32) string {
	switch mode & syscall.S_IFMT {
	case syscall.S_IFDIR:
		return "a directory"
	case syscall.S_IFREG:
		return "a regular file"
	case syscall.S_IFLNK:
		return "a symlink"
	default:
		return "a special file"
	}
}

// tailLog returns the last lines of a log, on one line, for an error.
func tailLog(path string) string {
	b, err := os.ReadFile(path)
	if err != nil || len(b) == 0 {
		return "(none)"
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	var keep []string
	for _, l := range lines {
		if strings.Contains(l, "holder") {
			continue
		}
		keep = append(keep, strings.TrimSpace(l))
	}
	if len(keep) > 3 {
		keep = keep[len(keep)-3:]
	}
	if len(keep) == 0 {
		return "(none)"
	}
	return strings.Join(keep, " / ")
}

// rootClient is the translator's client as the bridge sees it: without
// READDIRPLUS when the translator answers it with ENOSYS (the kit's trees
// mostly do), since the bridge would otherwise fail every listing.
type rootClient struct {
	proto.FileSystem
	c *proto.Client
}

func (r rootClient) Done() <-chan struct{} { return r.c.Done() }
func (r rootClient) Err() error            { return r.c.Err() }
func (r rootClient) ServerName() string    { return r.c.ServerName() }

type rootClientPlus struct{ rootClient }

func (r rootClientPlus) ReadDirPlus(ctx context.Context, dir proto.NodeID) ([]proto.DirEntryPlus, error) {
	return r.c.ReadDirPlus(ctx, dir)
}

func rootFS(ctx context.Context, c *proto.Client, root proto.Entry) proto.FileSystem {
	r := rootClient{FileSystem: c, c: c}
	if root.Attr.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return r
	}
	ents, err := c.ReadDirPlus(ctx, root.Node)
	for _, e := range ents {
		c.Forget(ctx, e.Entry.Node, 1)
	}
	if errors.Is(err, syscall.ENOSYS) {
		return r
	}
	return rootClientPlus{r}
}
