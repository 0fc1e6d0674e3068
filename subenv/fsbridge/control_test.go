package fsbridge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"herd/proto"
	"herd/servers/fs"
)

// ctlTranslatorFlag re-executes the test binary as a small translator for
// the control tests: a one-file translator whose contents are its
// --contents option, changed at run time by SetOptions (which notifies
// unless --quiet), kept in the client's page cache (OpenKeepCache), and
// with xattrs of its own so a control call that reaches it shows.
const ctlTranslatorFlag = "-herd-bridge-test-translator"

func ctlTranslator(args []string) int {
	t := &ctlFS{gone: make(chan struct{})}
	if err := t.parse(args); err != nil {
		fmt.Fprintln(os.Stderr, "test translator:", err)
		return 2
	}
	l, err := proto.Listen("")
	if err != nil {
		fmt.Fprintln(os.Stderr, "test translator:", err)
		return 1
	}
	srv := proto.NewServer(t, proto.ServerOptions{Name: "ctltest"})
	go srv.Serve(l)
	<-t.gone
	srv.Close()
	return 0
}

type ctlFS struct {
	proto.Unimplemented
	mu       sync.Mutex
	contents string
	quiet    bool
	notifier proto.Notifier
	gone     chan struct{}
	goOnce   sync.Once
	nextH    proto.HandleID
}

func (t *ctlFS) Goaway(context.Context, uint32) error {
	t.goOnce.Do(func() { close(t.gone) })
	return nil
}

func (t *ctlFS) parse(args []string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, a := range args {
		switch {
		case a == "ctltest":
		case strings.HasPrefix(a, "--contents="):
			t.contents = strings.TrimPrefix(a, "--contents=")
		case a == "--quiet":
			t.quiet = true
		default:
			return fmt.Errorf("unknown option %q: %w", a, syscall.EINVAL)
		}
	}
	return nil
}

func (t *ctlFS) SetNotifier(n proto.Notifier) { t.mu.Lock(); t.notifier = n; t.mu.Unlock() }

func (t *ctlFS) data() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return []byte(t.contents)
}

func (t *ctlFS) attr() proto.Attr {
	return proto.Attr{Ino: 1, Mode: syscall.S_IFREG | 0o444, Nlink: 1, Size: uint64(len(t.data())), Blksize: 4096}
}

func (t *ctlFS) Root(context.Context) (proto.Entry, error) {
	return proto.Entry{Node: 1, Attr: t.attr()}, nil
}
func (t *ctlFS) GetAttr(context.Context, proto.NodeID) (proto.Attr, error) { return t.attr(), nil }
func (t *ctlFS) Open(context.Context, proto.NodeID, uint32) (proto.OpenResult, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.nextH++ // a number per open: the proto server tracks each
	return proto.OpenResult{Handle: t.nextH, Flags: proto.OpenKeepCache}, nil
}
func (t *ctlFS) Read(_ context.Context, _ proto.HandleID, off int64, size int) ([]byte, error) {
	d := t.data()
	if off >= int64(len(d)) {
		return nil, nil
	}
	return d[off:min(int64(len(d)), off+int64(size))], nil
}
func (t *ctlFS) Release(context.Context, proto.HandleID) error { return nil }
func (t *ctlFS) GetOptions(context.Context) ([]string, error) {
	return []string{"ctltest", "--contents=" + string(t.data())}, nil
}
func (t *ctlFS) SetOptions(_ context.Context, opts []string) error {
	if err := t.parse(opts); err != nil {
		return err
	}
	t.mu.Lock()
	n, quiet := t.notifier, t.quiet
	t.mu.Unlock()
	if n != nil && !quiet {
		n.InvalNode(1, 0, 0)
	}
	return nil
}

// The translator's own xattrs: user.test, and a user.herd.* name that
// must never be what a client sees (translator control is the parent's).
func (t *ctlFS) GetXattr(_ context.Context, _ proto.NodeID, name string) ([]byte, error) {
	switch {
	case name == "user.test":
		return []byte("from the translator"), nil
	case strings.HasPrefix(name, "user.herd."):
		return []byte("wrongly answered by the translator"), nil
	}
	return nil, syscall.ENODATA
}
func (t *ctlFS) ListXattr(context.Context, proto.NodeID) ([]string, error) {
	return []string{"user.test", "user.herd.bogus"}, nil
}
func (t *ctlFS) SetXattr(context.Context, proto.NodeID, string, []byte, uint32) error {
	return syscall.EPERM
}
func (t *ctlFS) RemoveXattr(context.Context, proto.NodeID, string) error { return syscall.EPERM }

// fsWithTranslators mounts servers/fs (translators enabled) over a fresh
// tree through a proto connection and returns the mount and the tree.
func fsWithTranslators(t *testing.T) (string, string) {
	t.Helper()
	tmp := t.TempDir()
	lower, upper, rt := filepath.Join(tmp, "lower"), filepath.Join(tmp, "upper"), filepath.Join(tmp, "run")
	for _, d := range []string{lower, upper, rt} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	srv, err := fs.New(fs.Options{Root: lower, Upper: upper, RuntimeDir: rt})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() }) // after the unmount: stops the translators
	c, n, _ := pipe(t, srv, proto.ClientOptions{})
	_, dir := mount(t, c, Options{Notifier: n})
	return dir, lower
}

func ctlArgv(t *testing.T, opts ...string) []byte {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return []byte(strings.Join(append([]string{self, ctlTranslatorFlag}, opts...), "\x00"))
}

func getxattr(t *testing.T, path, name string) (string, error) {
	t.Helper()
	buf := make([]byte, 4096)
	k, err := unix.Getxattr(path, name, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:k]), nil
}

// TestTranslatorControl: on a node whose translator the bridge reached
// through a redirect, translator control (the user.herd.* xattrs) goes to
// the fs server that owns the node, not to the translator; the
// translator's other xattrs stay its own.
func TestTranslatorControl(t *testing.T) {
	t.Cleanup(func() { noHerdMounts(t) })
	dir, lower := fsWithTranslators(t)
	if err := os.WriteFile(filepath.Join(lower, "node"), []byte("underneath"), 0o644); err != nil {
		t.Fatal(err)
	}
	node := filepath.Join(dir, "node")
	argv := ctlArgv(t, "--contents=first")
	if err := unix.Setxattr(node, "user.herd.translator", argv, 0); err != nil {
		t.Fatalf("set the passive record: %v", err)
	}
	waitFor(t, "the passive translator", func() bool {
		d, err := os.ReadFile(node)
		return err == nil && string(d) == "first"
	})

	// The record, the running argv and the options come from the fs server.
	if v, err := getxattr(t, node, "user.herd.translator"); err != nil || v != string(argv) {
		t.Errorf("showtrans -p: %q, %v; want the record %q", v, err, argv)
	}
	if v, err := getxattr(t, node, "user.herd.active"); err != nil || v != string(argv) {
		t.Errorf("showtrans -a: %q, %v; want the running argv %q", v, err, argv)
	}
	if v, err := getxattr(t, node, "user.herd.options"); err != nil || v != "ctltest\x00--contents=first" {
		t.Errorf("fsysopts: %q, %v", v, err)
	}
	// The translator's own xattrs are still its own.
	if v, err := getxattr(t, node, "user.test"); err != nil || v != "from the translator" {
		t.Errorf("user.test: %q, %v", v, err)
	}
	buf := make([]byte, 4096)
	k, err := unix.Listxattr(node, buf)
	if err != nil {
		t.Fatal(err)
	}
	names := strings.Split(strings.TrimRight(string(buf[:k]), "\x00"), "\x00")
	if strings.Join(names, " ") != "user.test user.herd.translator" {
		t.Errorf("listxattr = %q, want the translator's names and the fs server's user.herd.*", names)
	}

	// fsysopts NODE --contents=second: relayed by the fs server; the next
	// read (page cache kept) shows it at once.
	if err := unix.Setxattr(node, "user.herd.options", []byte("--contents=second"), 0); err != nil {
		t.Fatalf("fsysopts: %v", err)
	}
	if d, err := os.ReadFile(node); err != nil || string(d) != "second" {
		t.Errorf("read after fsysopts: %q, %v", d, err)
	}
	// The same when the translator does not notify at all: the bridge
	// drops the translator's cached data itself once the change is made.
	if err := unix.Setxattr(node, "user.herd.options", []byte("--quiet"), 0); err != nil {
		t.Fatalf("fsysopts --quiet: %v", err)
	}
	// Same sizes: the kernel would not drop its pages for a size change.
	for _, v := range []string{"thirds", "fourth", "longer than before", "short"} {
		if d, err := os.ReadFile(node); err != nil || len(d) == 0 {
			t.Fatalf("read: %q, %v", d, err)
		}
		if err := unix.Setxattr(node, "user.herd.options", []byte("--contents="+v), 0); err != nil {
			t.Fatalf("fsysopts: %v", err)
		}
		if d, err := os.ReadFile(node); err != nil || string(d) != v {
			t.Errorf("read after fsysopts on a translator that does not notify: %q, %v; want %q", d, err, v)
		}
	}

	// settrans NODE (no record) then settrans -g NODE: the record goes,
	// the translator stops, the node is the file underneath again.
	if err := unix.Removexattr(node, "user.herd.translator"); err != nil {
		t.Fatalf("remove the record: %v", err)
	}
	if err := unix.Setxattr(node, "user.herd.goaway", nil, 0); err != nil {
		t.Fatalf("settrans -g: %v", err)
	}
	waitFor(t, "the node underneath", func() bool {
		d, err := os.ReadFile(node)
		return err == nil && string(d) == "underneath"
	})
	if _, err := getxattr(t, node, "user.herd.active"); !errors.Is(err, unix.ENODATA) {
		t.Errorf("showtrans -a after settrans -g: %v, want ENODATA", err)
	}

	// An active translator started on the node (settrans -a inside) is
	// controlled the same way; a refusal reaches the caller.
	if err := unix.Setxattr(node, "user.herd.active", ctlArgv(t, "--contents=active"), 0); err != nil {
		t.Fatalf("settrans -a: %v", err)
	}
	waitFor(t, "the active translator", func() bool {
		d, err := os.ReadFile(node)
		return err == nil && string(d) == "active"
	})
	if err := unix.Setxattr(node, "user.herd.options", []byte("--colour=red"), 0); !errors.Is(err, unix.EINVAL) {
		t.Errorf("fsysopts with a bad option: %v, want EINVAL", err)
	}
	if err := unix.Setxattr(node, "user.herd.active", ctlArgv(t), 0); !errors.Is(err, unix.EBUSY) {
		t.Errorf("settrans -a on a translated node: %v, want EBUSY", err)
	}
	if err := unix.Setxattr(node, "user.herd.goaway", []byte("force"), 0); err != nil {
		t.Fatalf("settrans -fg: %v", err)
	}
	waitFor(t, "the node underneath", func() bool {
		d, err := os.ReadFile(node)
		return err == nil && bytes.Equal(d, []byte("underneath"))
	})
}

// TestRefresh: a translator mounted as the root (settrans -a) whose
// contents change without a notification (fsysopts talks to it on a
// connection of its own): reading user.herd.refresh on a node makes the
// bridge drop the kernel's cached data and attributes before it answers,
// so the next read sees the change.
func TestRefresh(t *testing.T) {
	t.Cleanup(func() { noHerdMounts(t) })
	m := newMemFS()
	m.keepCache = true
	f := m.add(1, "f", syscall.S_IFREG|0o644, "aaaa")
	// Not wired to the bridge's notifier: the server's changes go unsaid.
	c, closeFn, err := proto.Pipe(m, proto.ServerOptions{Name: "quiet"}, proto.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeFn)
	_, dir := mount(t, c, Options{Translator: true})
	p := filepath.Join(dir, "f")
	for _, v := range []string{"bbbb", "cc", "dddddd"} {
		if d, err := os.ReadFile(p); err != nil || len(d) == 0 {
			t.Fatalf("read: %q, %v", d, err)
		}
		m.mu.Lock()
		m.nodes[f].data = []byte(v)
		m.mu.Unlock()
		if _, err := getxattr(t, p, "user.herd.refresh"); err != nil {
			t.Fatalf("getxattr user.herd.refresh: %v", err)
		}
		if d, err := os.ReadFile(p); err != nil || string(d) != v {
			t.Errorf("read after refresh: %q, %v; want %q", d, err, v)
		}
		if fi, err := os.Stat(p); err != nil || fi.Size() != int64(len(v)) {
			t.Errorf("stat after refresh: %v, %v; want size %d", fi, err, len(v))
		}
	}
}
