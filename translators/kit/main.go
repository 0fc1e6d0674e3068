package kit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"herd/proto"
)

// Translator describes a translator program. A cmd/ main fills one in and
// calls Main; tests call Start.
type Translator struct {
	// Name is the program's name, for --help, errors, the mount's type
	// (fuse.NAME) and GetOptions.
	Name string
	// Args names the positional arguments in the usage line ("TARGET").
	Args string
	// Doc is a paragraph for --help: what the translator serves.
	Doc string
	// Flags are the translator's options. They are parsed from the command
	// line at start and again from fsysopts at run time (the Hurd's one
	// argp for both), and GetOptions reports those set. nil: no options.
	// Main adds --mount, --socket, --fuse-debug and -h/--help: those names
	// are taken.
	Flags *pflag.FlagSet

	// Root builds the tree from the positional arguments (flags are parsed
	// by then). Return Usagef(...) for bad arguments (exit status 2).
	Root func(args []string) (Node, error)
	// FileSystem is Root for translators that implement proto.FileSystem
	// themselves (unionfs); set one of the two.
	FileSystem func(args []string) (proto.FileSystem, error)

	// SetOptions applies options changed at run time: Flags were re-parsed
	// from fsysopts' arguments and changed names the flags set. nil: there
	// is nothing to apply (the translator reads its flag variables when it
	// needs them). Either way the kit then tells clients that every node
	// may have changed.
	SetOptions func(changed []string) error
	// GetOptions replaces the default answer to fsysopts (Name, then the
	// flags set, as --name=value, then the positional arguments).
	GetOptions func() []string
	// Sync writes back what the translator holds (archives). Called on
	// goaway and before the program exits.
	Sync func() error
	// Goaway is asked, after Sync, whether the translator may go; an error
	// (EBUSY) refuses and it keeps running.
	Goaway func(flags uint32) error
}

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// Usagef returns an error about the command line: Main prints it with a
// pointer to --help and exits with status 2.
func Usagef(format string, args ...any) error {
	return usageError{fmt.Sprintf(format, args...)}
}

// IsUsage reports whether err is about the command line.
func IsUsage(err error) bool {
	var u usageError
	return errors.As(err, &u) || errors.Is(err, pflag.ErrHelp)
}

// underlying is the node beneath the translator: fd 4 as the fs server and
// settrans hand it over, or the mount point Main opened before mounting.
// Process-wide, as fd 4 is.
var (
	underlyingOnce sync.Once
	underlyingFile *os.File
)

// Underlying returns the node the translator sits on, as the fs server
// hands it over (fd 4, HERD_UNDERLYING=4) or, with --mount, the file or
// directory mounted over (opened before the mount hides it); nil when there
// is none. tarfs reads its archive from it when no ARCHIVE is given.
func Underlying() *os.File {
	underlyingOnce.Do(func() {
		n, err := strconv.Atoi(os.Getenv("HERD_UNDERLYING"))
		if err != nil || n < 3 {
			return
		}
		syscall.CloseOnExec(n)
		underlyingFile = os.NewFile(uintptr(n), "underlying node")
	})
	return underlyingFile
}

// openMountPoint opens what --mount is about to cover, for Underlying:
// read-write if allowed, else read-only; only files and directories (a
// fifo would block the open).
func openMountPoint(path string) {
	if os.Getenv("HERD_UNDERLYING") != "" {
		return
	}
	fi, err := os.Stat(path)
	if err != nil || !(fi.Mode().IsRegular() || fi.IsDir()) {
		return
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		f, err = os.Open(path)
	}
	if err != nil {
		return
	}
	underlyingOnce.Do(func() { underlyingFile = f })
}

// Instance is a started translator: its file system with the fsys calls
// answered by the kit.
type Instance struct {
	t     *Translator
	inner proto.FileSystem
	args  []string

	// mu makes run-time option changes atomic: every call holds it for
	// reading, SetOptions for writing, so a translator's flag variables
	// never change under a running call.
	mu sync.RWMutex

	synced sync.Mutex
	goaway chan struct{}
	goOnce sync.Once
}

// Start parses args (the command line without the program name) and builds
// the translator. It does not serve: see Main, or kittest for tests.
func (t Translator) Start(args []string) (*Instance, error) {
	if t.Flags == nil {
		t.Flags = pflag.NewFlagSet(t.Name, pflag.ContinueOnError)
	}
	quiet(t.Flags)
	if err := t.Flags.Parse(args); err != nil {
		return nil, usageError{err.Error()}
	}
	return t.build(t.Flags.Args())
}

func quiet(fs *pflag.FlagSet) {
	fs.Init(fs.Name(), pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
}

func (t Translator) build(args []string) (*Instance, error) {
	if t.Args == "" && len(args) > 0 {
		return nil, Usagef("unexpected argument %q", args[0])
	}
	in := &Instance{t: &t, args: args, goaway: make(chan struct{})}
	switch {
	case t.Root != nil:
		root, err := t.Root(args)
		if err != nil {
			return nil, err
		}
		in.inner = NewFS(root)
	case t.FileSystem != nil:
		fs, err := t.FileSystem(args)
		if err != nil {
			return nil, err
		}
		in.inner = fs
	default:
		return nil, fmt.Errorf("translator %s has neither Root nor FileSystem", t.Name)
	}
	return in, nil
}

// FileSystem is what to serve.
func (in *Instance) FileSystem() proto.FileSystem {
	s := &served{in: in}
	if _, ok := in.inner.(proto.DirPlusReader); ok {
		return servedPlus{s}
	}
	return s
}

// Done is closed when a client asked the translator to go away (and the
// translator agreed). The reply may still be on its way: Main lets the
// clients hang up first.
func (in *Instance) Done() <-chan struct{} { return in.goaway }

// Sync calls the translator's Sync.
func (in *Instance) Sync() error {
	if in.t.Sync == nil {
		return nil
	}
	in.synced.Lock()
	defer in.synced.Unlock()
	in.mu.RLock()
	defer in.mu.RUnlock()
	return in.t.Sync()
}

func (in *Instance) options() []string {
	if in.t.GetOptions != nil {
		return in.t.GetOptions()
	}
	out := []string{in.t.Name}
	in.t.Flags.VisitAll(func(f *pflag.Flag) {
		if !f.Changed {
			return
		}
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			for _, v := range sv.GetSlice() {
				out = append(out, "--"+f.Name+"="+v)
			}
			return
		}
		if f.Value.Type() == "bool" && f.Value.String() == "true" {
			out = append(out, "--"+f.Name)
			return
		}
		out = append(out, "--"+f.Name+"="+f.Value.String())
	})
	return append(out, in.args...)
}

func (in *Instance) setOptions(opts []string) error {
	// fsysopts may pass the program name first, as GetOptions reports it.
	if len(opts) > 0 && opts[0] == in.t.Name {
		opts = opts[1:]
	}
	in.mu.Lock()
	type saved struct {
		value   string
		changed bool
	}
	before := map[string]saved{}
	in.t.Flags.VisitAll(func(f *pflag.Flag) { before[f.Name] = saved{f.Value.String(), f.Changed} })
	var changed []string
	err := in.t.Flags.Parse(opts)
	if rest := in.t.Flags.Args(); err == nil && len(rest) > 0 && !slices.Equal(rest, in.args) {
		err = fmt.Errorf("arguments %q cannot change at run time", rest)
	}
	if err == nil {
		in.t.Flags.VisitAll(func(f *pflag.Flag) {
			if b := before[f.Name]; f.Changed != b.changed || f.Value.String() != b.value || mentioned(opts, f) {
				changed = append(changed, f.Name)
			}
		})
		if in.t.SetOptions != nil {
			err = in.t.SetOptions(changed)
		}
	}
	if err != nil {
		// Leave the options as they were (scalar flags; a slice flag
		// cannot be set back through pflag.Value).
		in.t.Flags.VisitAll(func(f *pflag.Flag) {
			b := before[f.Name]
			if _, slice := f.Value.(pflag.SliceValue); !slice && f.Value.String() != b.value {
				f.Value.Set(b.value)
			}
			f.Changed = b.changed
		})
	}
	in.mu.Unlock()
	if err != nil {
		var errno syscall.Errno
		if errors.As(err, &errno) {
			return fmt.Errorf("%s: %w", in.t.Name, err)
		}
		return fmt.Errorf("%s: %v: %w", in.t.Name, err, syscall.EINVAL)
	}
	if inv, ok := in.inner.(interface{ InvalidateAll() }); ok {
		inv.InvalidateAll()
	}
	return nil
}

// mentioned reports whether opts name f (set again to the same value still
// counts as changed: the translator may want to act on it).
func mentioned(opts []string, f *pflag.Flag) bool {
	for _, o := range opts {
		if o == "--" {
			return false
		}
		name, _, _ := strings.Cut(o, "=")
		if name == "--"+f.Name || (f.Shorthand != "" && strings.HasPrefix(o, "-"+f.Shorthand) && !strings.HasPrefix(o, "--")) {
			return true
		}
	}
	return false
}

func (in *Instance) doGoaway(ctx context.Context, flags uint32) error {
	if err := in.Sync(); err != nil && flags&proto.GoawayForce == 0 {
		return err
	}
	if in.t.Goaway != nil {
		in.mu.RLock()
		err := in.t.Goaway(flags)
		in.mu.RUnlock()
		if err != nil && flags&proto.GoawayForce == 0 {
			return err
		}
	}
	in.goOnce.Do(func() { close(in.goaway) })
	return nil
}

// Main runs a translator program: parses the command line (--help explains
// it), then serves on fd 3 (LISTEN_FDS=1, as the fs server and settrans
// start translators), on --socket PATH, or mounted by FUSE on --mount DIR
// until unmounted or signalled. It calls Sync before exiting and never
// returns.
func Main(t Translator) {
	os.Exit(Run(t, os.Args[1:]))
}

// Run is Main without the exit: it returns the exit status.
func Run(t Translator, args []string) int {
	if t.Flags == nil {
		t.Flags = pflag.NewFlagSet(t.Name, pflag.ContinueOnError)
	}
	quiet(t.Flags)
	cmd := pflag.NewFlagSet(t.Name, pflag.ContinueOnError)
	quiet(cmd)
	cmd.SortFlags = false
	mount := cmd.String("mount", "", "mount on `DIR` by FUSE and serve until it is unmounted (on the host)")
	socket := cmd.String("socket", "", "listen on the unix socket `PATH` instead of fd 3")
	debug := cmd.Bool("fuse-debug", false, "log every FUSE request (with --mount)")
	help := cmd.BoolP("help", "h", false, "show this help")
	cmd.AddFlagSet(t.Flags)
	fail := func(status int, format string, a ...any) int {
		fmt.Fprintf(os.Stderr, t.Name+": "+format+"\n", a...)
		return status
	}
	if err := cmd.Parse(args); err != nil {
		return fail(2, "%v (see %s --help)", err, t.Name)
	}
	if *help {
		usage(os.Stdout, &t, cmd)
		return 0
	}
	listenFD := os.Getenv("LISTEN_FDS") == "1" && (os.Getenv("LISTEN_PID") == "" || os.Getenv("LISTEN_PID") == strconv.Itoa(os.Getpid()))
	if *mount == "" && *socket == "" && !listenFD {
		return fail(2, "nowhere to serve: give --mount DIR, or let settrans start it (see %s --help)", t.Name)
	}
	if *mount != "" {
		openMountPoint(*mount)
	}
	in, err := t.build(cmd.Args())
	if err != nil {
		if IsUsage(err) {
			return fail(2, "%v (see %s --help)", err, t.Name)
		}
		return fail(1, "%v", err)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)
	fs := in.FileSystem()

	if *mount != "" {
		b, err := Mount(*mount, fs, MountOptions{Name: t.Name, Source: mountSource(in), Debug: *debug})
		if err != nil {
			return fail(1, "%v", err)
		}
		unmounted := make(chan struct{})
		go func() { b.Wait(); close(unmounted) }()
		select {
		case <-unmounted:
		case <-sigs:
		case <-in.Done():
		}
		status := 0
		if err := in.Sync(); err != nil {
			status = fail(1, "sync: %v", err)
		}
		if err := b.Unmount(); err != nil {
			status = fail(1, "unmount %s: %v", *mount, err)
		}
		<-unmounted
		return status
	}

	l, err := proto.Listen(*socket)
	if err != nil {
		return fail(1, "%v", err)
	}
	ss := &sessions{idle: make(chan struct{}, 1)}
	srv := proto.NewServer(fs, proto.ServerOptions{Name: t.Name})
	served := make(chan error, 1)
	go func() { served <- ss.serve(srv, l) }()
	status := 0
	select {
	case err := <-served:
		if err != nil {
			status = fail(1, "serve: %v", err)
		}
	case <-sigs:
	case <-in.Done():
		// The goaway reply leaves after the call returned: let the
		// clients hang up (settrans -g does once answered), and cut
		// those that stay (a bridge) after a grace period.
		l.Close()
		ss.waitIdle(2 * time.Second)
	}
	if err := in.Sync(); err != nil {
		status = fail(1, "sync: %v", err)
	}
	srv.Close()
	if *socket != "" {
		os.Remove(*socket)
	}
	return status
}

func usage(w io.Writer, t *Translator, cmd *pflag.FlagSet) {
	line := "Usage: " + t.Name + " [OPTIONS]"
	if t.Args != "" {
		line += " " + t.Args
	}
	fmt.Fprintln(w, line)
	if t.Doc != "" {
		fmt.Fprintln(w, t.Doc)
	}
	fmt.Fprintf(w, "\nOptions:\n%s", cmd.FlagUsages())
	fmt.Fprintf(w, "\nA translator: settrans attaches it to a node (settrans -a NODE %s ... on the host,\n"+
		"settrans -p inside a subenvironment) and starts it with its socket as fd 3;\n"+
		"fsysopts NODE shows and changes its options at run time.\n", t.Name)
}

// checkMountPoint refuses a mount whose point is not of the root's type:
// the kernel would fail with a bare EIO. A one-file translator (hello)
// mounts on a file, as the Hurd's sits on a file node.
func checkMountPoint(dir string, fs proto.FileSystem) (rootMode uint32, err error) {
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return 0, fmt.Errorf("mount point: %w", &os.PathError{Op: "stat", Path: dir, Err: err})
	}
	ctx := context.Background()
	e, err := fs.Root(ctx)
	if err != nil {
		return 0, fmt.Errorf("root: %w", err)
	}
	fs.Forget(ctx, e.Node, 1)
	if e.Attr.Mode&syscall.S_IFMT == syscall.S_IFLNK {
		return 0, fmt.Errorf("the translator serves a symbolic link, which Linux cannot mount on %s; attach it passively (settrans -p) where herd's fs bridge serves the tree", dir)
	}
	kind := func(m uint32) string {
		if m&syscall.S_IFMT == syscall.S_IFDIR {
			return "a directory"
		}
		return "a file"
	}
	if (e.Attr.Mode&syscall.S_IFMT == syscall.S_IFDIR) != (st.Mode&syscall.S_IFMT == syscall.S_IFDIR) {
		return 0, fmt.Errorf("%s is %s but this translator serves %s: mount it on %s", dir, kind(st.Mode), kind(e.Attr.Mode), kind(e.Attr.Mode))
	}
	return e.Attr.Mode, nil
}

// mountSource is the mount's source in /proc/self/mountinfo: "herd:" and
// the command line, as settrans names host translators' mounts.
func mountSource(in *Instance) string {
	return "herd:" + strings.Join(in.options(), " ")
}

// sessions serves each connection of l and counts those still served, so
// a translator told to go away can wait for its clients to hang up. (The
// connections stay *net.UnixConn for proto: peer credentials, lanes.)
type sessions struct {
	mu   sync.Mutex
	n    int
	idle chan struct{}
}

func (ss *sessions) serve(srv *proto.Server, l net.Listener) error {
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		ss.mu.Lock()
		ss.n++
		ss.mu.Unlock()
		go func() {
			srv.ServeConn(c)
			ss.mu.Lock()
			ss.n--
			empty := ss.n == 0
			ss.mu.Unlock()
			if empty {
				select {
				case ss.idle <- struct{}{}:
				default:
				}
			}
		}()
	}
}

func (ss *sessions) waitIdle(grace time.Duration) {
	deadline := time.After(grace)
	for {
		ss.mu.Lock()
		n := ss.n
		ss.mu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-ss.idle:
		case <-deadline:
			return
		}
	}
}
