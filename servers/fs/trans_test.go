package fs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"herd/proto"
)

const transFlag = "-herd-test-translator"

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == transFlag {
		os.Exit(testTranslator(os.Args[2:]))
	}
	os.Exit(m.Run())
}

// testTranslator is a tiny translator (the test binary re-executed): a
// directory with "hello" (its arguments) and "under" (the node it sits on,
// read from fd 4). Its options report its pid and uid. Modes: "crash"
// exits at once, "hang" never answers the handshake.
func testTranslator(args []string) int {
	if len(args) > 0 && args[0] == "crash" {
		fmt.Fprintln(os.Stderr, "test translator: crashing as asked")
		return 3
	}
	if len(args) > 0 && args[0] == "hang" {
		select {}
	}
	l, err := proto.Listen("")
	if err != nil {
		fmt.Fprintln(os.Stderr, "test translator:", err)
		return 1
	}
	under := os.NewFile(4, "under")
	if os.Getenv("HERD_UNDERLYING") != "4" {
		fmt.Fprintln(os.Stderr, "test translator: HERD_UNDERLYING not 4")
		return 1
	}
	t := &tfs{args: args, under: under, gone: make(chan struct{})}
	srv := proto.NewServer(t, proto.ServerOptions{Name: "test-translator"})
	go srv.Serve(l)
	<-t.gone
	srv.Close()
	return 0
}

type tfs struct {
	proto.Unimplemented
	mu       sync.Mutex
	args     []string
	extra    []string
	under    *os.File
	gone     chan struct{}
	goneOnce sync.Once
}

func (t *tfs) content(n proto.NodeID) []byte {
	switch n {
	case 2:
		return []byte("hello " + strings.Join(t.args, " "))
	case 3:
		b := make([]byte, 4096)
		k, _ := t.under.ReadAt(b, 0)
		var st unix.Stat_t
		unix.Fstat(int(t.under.Fd()), &st)
		return []byte(fmt.Sprintf("%o:%s", st.Mode&unix.S_IFMT, b[:k]))
	}
	return nil
}

func (t *tfs) attr(n proto.NodeID) proto.Attr {
	if n == 1 {
		return proto.Attr{Ino: 1, Mode: unix.S_IFDIR | 0o755, Nlink: 2}
	}
	return proto.Attr{Ino: uint64(n), Mode: unix.S_IFREG | 0o444, Nlink: 1, Size: uint64(len(t.content(n)))}
}

func (t *tfs) Root(ctx context.Context) (proto.Entry, error) {
	return proto.Entry{Node: 1, Attr: t.attr(1)}, nil
}
func (t *tfs) Lookup(ctx context.Context, p proto.NodeID, name string) (proto.Entry, error) {
	n := map[string]proto.NodeID{"hello": 2, "under": 3}[name]
	if p != 1 || n == 0 {
		return proto.Entry{}, syscall.ENOENT
	}
	return proto.Entry{Node: n, Attr: t.attr(n)}, nil
}
func (t *tfs) GetAttr(ctx context.Context, n proto.NodeID) (proto.Attr, error) { return t.attr(n), nil }
func (t *tfs) Open(ctx context.Context, n proto.NodeID, flags uint32) (proto.OpenResult, error) {
	return proto.OpenResult{Handle: proto.HandleID(n)}, nil
}
func (t *tfs) Read(ctx context.Context, h proto.HandleID, off int64, size int) ([]byte, error) {
	c := t.content(proto.NodeID(h))
	if off >= int64(len(c)) {
		return nil, nil
	}
	return c[off:min(int64(len(c)), off+int64(size))], nil
}
func (t *tfs) GetOptions(ctx context.Context) ([]string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string{"pid=" + strconv.Itoa(os.Getpid()), "uid=" + strconv.Itoa(os.Getuid())}, t.extra...), nil
}
func (t *tfs) SetOptions(ctx context.Context, o []string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.extra = o
	return nil
}
func (t *tfs) Goaway(ctx context.Context, flags uint32) error {
	t.goneOnce.Do(func() { close(t.gone) })
	return nil
}

// ---- tests ----

type recNotifier struct {
	mu      sync.Mutex
	entries []string
}

func (r *recNotifier) InvalNode(proto.NodeID, int64, int64) {}
func (r *recNotifier) InvalEntry(p proto.NodeID, name string) {
	r.mu.Lock()
	r.entries = append(r.entries, name)
	r.mu.Unlock()
}
func (r *recNotifier) count(name string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := 0
	for _, e := range r.entries {
		if e == name {
			k++
		}
	}
	return k
}

// transEnv is a server with a runtime dir; argv0 is the test binary,
// copied where any user can run it.
type transEnv struct {
	*env
	bin  string
	rt   string
	note *recNotifier
}

func newTransEnv(t *testing.T, cow bool, timeout time.Duration) *transEnv {
	t.Helper()
	base, err := os.MkdirTemp("", "herd-fs-trans-")
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(base) })
	must(t, os.Chmod(base, 0o755))
	self, err := os.Executable()
	must(t, err)
	bin := filepath.Join(base, "translator")
	copyFile(t, self, bin)
	lower := filepath.Join(base, "lower")
	writeHost(t, filepath.Join(lower, "archive"), "underlying data")
	must(t, os.Mkdir(filepath.Join(lower, "dir"), 0o755))
	rt := filepath.Join(base, "run")
	must(t, os.Mkdir(rt, 0o700))
	opts := Options{Root: lower, RuntimeDir: rt, TranslatorTimeout: timeout}
	e := &env{t: t, lower: lower, cow: cow}
	if cow {
		e.upper = filepath.Join(base, "upper")
		must(t, os.Mkdir(e.upper, 0o755))
		opts.Upper = e.upper
	}
	s, err := New(opts)
	must(t, err)
	e.s = s
	n := &recNotifier{}
	s.SetNotifier(n)
	t.Cleanup(func() {
		s.Close()
		if ents, _ := os.ReadDir(rt); len(ents) != 0 {
			t.Errorf("sockets left behind: %v", ents)
		}
	})
	return &transEnv{env: e, bin: bin, rt: rt, note: n}
}

func nul(argv ...string) []byte { return []byte(strings.Join(argv, "\x00")) }

// through follows a redirect: it reads name inside the translator.
func through(t *testing.T, e proto.Entry, name string) (string, *proto.Client) {
	t.Helper()
	if e.Redirect == nil {
		t.Fatalf("no redirect in %+v", e)
	}
	c, err := proto.Dial(e.Redirect.Socket, proto.ClientOptions{Timeout: 30 * time.Second})
	must(t, err)
	r, err := c.Root(bg)
	must(t, err)
	if r.Attr.Mode&unix.S_IFMT != unix.S_IFDIR {
		t.Fatalf("translator root %o", r.Attr.Mode)
	}
	if name == "" {
		return "", c
	}
	en, err := c.Lookup(bg, r.Node, name)
	must(t, err)
	o, err := c.Open(bg, en.Node, unix.O_RDONLY)
	must(t, err)
	b, err := c.Read(bg, o.Handle, 0, 4096)
	must(t, err)
	c.Release(bg, o.Handle)
	return string(b), c
}

func optsOf(t *testing.T, s *Server, n proto.NodeID) map[string]string {
	t.Helper()
	v, err := s.GetXattr(bg, n, xattrOptions)
	must(t, err)
	m := map[string]string{}
	for _, kv := range splitNul(v) {
		k, val, _ := strings.Cut(kv, "=")
		m[k] = val
	}
	return m
}

func TestPassiveTranslator(t *testing.T) {
	for _, cow := range []bool{false, true} {
		t.Run(map[bool]string{false: "rw", true: "cow"}[cow], func(t *testing.T) {
			e := newTransEnv(t, cow, 60*time.Second)
			before := snapshot(t, e.lower)
			root := e.node("")
			arch, err := e.s.Lookup(bg, root, "archive")
			must(t, err)
			if arch.Redirect != nil {
				t.Fatal("redirect before any record")
			}
			must(t, e.s.SetXattr(bg, arch.Node, xattrTranslator, nul(e.bin, transFlag, "passive", "arg"), 0))
			v, err := e.s.GetXattr(bg, arch.Node, xattrTranslator)
			must(t, err)
			if string(v) != string(nul(e.bin, transFlag, "passive", "arg")) {
				t.Fatalf("record reads back %q", v)
			}
			// Only the owner or root may set a record.
			other := proto.WithCaller(bg, proto.Caller{Uid: 4242, Gid: 4242})
			wantErrno(t, e.s.SetXattr(other, arch.Node, xattrTranslator, nul("x"), 0), syscall.EPERM)

			en, err := e.s.Lookup(bg, root, "archive")
			must(t, err)
			if en.Node != arch.Node || en.Attr.Mode&unix.S_IFMT != unix.S_IFDIR {
				t.Fatalf("translated entry %+v", en)
			}
			got, c := through(t, en, "hello")
			if got != "hello passive arg" {
				t.Fatalf("hello = %q", got)
			}
			got, _ = through(t, en, "under")
			if got != "100000:underlying data" {
				t.Fatalf("under = %q", got)
			}
			if e.note.count("archive") < 1 {
				t.Fatal("no InvalEntry on start")
			}
			pid1 := optsOf(t, e.s, en.Node)["pid"]
			active, err := e.s.GetXattr(bg, en.Node, xattrActive)
			must(t, err)
			if !strings.Contains(string(active), "passive") {
				t.Fatalf("active argv %q", active)
			}
			// A listing names the redirect without starting anything new.
			plus, err := e.s.ReadDirPlus(bg, root)
			must(t, err)
			for _, p := range plus {
				if p.Name == "archive" && (p.Entry.Redirect == nil || p.Entry.Redirect.Socket != en.Redirect.Socket) {
					t.Fatalf("listing entry %+v", p.Entry)
				}
			}
			// Kill it: clients get EIO, the socket goes, the next lookup starts a new one.
			p, _ := strconv.Atoi(pid1)
			must(t, syscall.Kill(p, syscall.SIGKILL))
			select {
			case <-c.Done():
			case <-time.After(60 * time.Second):
				t.Fatal("client did not notice the translator died")
			}
			_, err = c.Root(bg)
			wantErrno(t, err, syscall.EIO)
			waitFor(t, func() bool { return e.s.running(e.s.nodes[en.Node]) == nil })
			if _, err := os.Stat(en.Redirect.Socket); err == nil {
				t.Fatal("dead translator's socket left")
			}
			en2, err := e.s.Lookup(bg, root, "archive")
			must(t, err)
			if got, _ := through(t, en2, "hello"); got != "hello passive arg" {
				t.Fatalf("restarted hello = %q", got)
			}
			if pid2 := optsOf(t, e.s, en2.Node)["pid"]; pid2 == pid1 {
				t.Fatal("not restarted")
			}
			// Remove the record: after a goaway, no translator any more.
			must(t, e.s.RemoveXattr(bg, en2.Node, xattrTranslator))
			must(t, e.s.SetXattr(bg, en2.Node, xattrGoaway, nil, 0))
			_, err = e.s.GetXattr(bg, en2.Node, xattrActive)
			wantErrno(t, err, syscall.ENODATA)
			en3, err := e.s.Lookup(bg, root, "archive")
			must(t, err)
			if en3.Redirect != nil {
				t.Fatal("still translated after the record was removed")
			}
			if cow {
				if after := snapshot(t, e.lower); after != before {
					t.Fatalf("lower changed:\n%s\n%s", before, after)
				}
			}
		})
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 60s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestActiveTranslator(t *testing.T) {
	e := newTransEnv(t, true, 60*time.Second)
	root := e.node("")
	dir := e.node("dir")
	must(t, e.s.SetXattr(bg, dir, xattrActive, nul(e.bin, transFlag, "active"), 0))
	wantErrno(t, e.s.SetXattr(bg, dir, xattrActive, nul(e.bin, transFlag, "again"), 0), syscall.EBUSY)
	en, err := e.s.Lookup(bg, root, "dir")
	must(t, err)
	if got, _ := through(t, en, "hello"); got != "hello active" {
		t.Fatalf("hello = %q", got)
	}
	got, _ := through(t, en, "under")
	if got != "40000:" {
		t.Fatalf("under (a directory, O_PATH) = %q", got)
	}
	// fsysopts: options relay.
	must(t, e.s.SetXattr(bg, dir, xattrOptions, nul("--x", "--y=1"), 0))
	o := optsOf(t, e.s, dir)
	if _, ok := o["--y"]; !ok {
		t.Fatalf("options %v", o)
	}
	if os.Geteuid() == 0 {
		if o["uid"] != "0" {
			t.Fatalf("translator on root's node runs as %s", o["uid"])
		}
	}
	// No record was stored: after goaway the node is plain again.
	starts := e.note.count("dir")
	must(t, e.s.SetXattr(bg, dir, xattrGoaway, []byte("force"), 0))
	if e.note.count("dir") <= starts {
		t.Fatal("no InvalEntry on stop")
	}
	en, err = e.s.Lookup(bg, root, "dir")
	must(t, err)
	if en.Redirect != nil {
		t.Fatal("active translator came back")
	}
	wantErrno(t, e.s.SetXattr(bg, dir, xattrGoaway, nil, 0), syscall.ENODATA)
	// Removing the node stops its translator.
	must(t, e.s.SetXattr(bg, dir, xattrActive, nul(e.bin, transFlag, "doomed"), 0))
	pid, _ := strconv.Atoi(optsOf(t, e.s, dir)["pid"])
	must(t, e.s.Rmdir(bg, root, "dir"))
	waitFor(t, func() bool { return syscall.Kill(pid, 0) != nil })
	// Server.Close stops the rest.
	must(t, e.s.SetXattr(bg, e.node("archive"), xattrActive, nul(e.bin, transFlag, "last"), 0))
	pid, _ = strconv.Atoi(optsOf(t, e.s, e.node("archive"))["pid"])
	e.s.Close()
	if syscall.Kill(pid, 0) == nil {
		t.Fatal("translator outlived Server.Close")
	}
}

func TestTranslatorFailures(t *testing.T) {
	e := newTransEnv(t, false, 2*time.Second)
	root := e.node("")
	dir := e.node("dir")
	must(t, e.s.SetXattr(bg, dir, xattrTranslator, nul(e.bin, transFlag, "hang"), 0))
	_, err := e.s.Lookup(bg, root, "dir")
	wantErrno(t, err, syscall.ETIMEDOUT)
	must(t, e.s.SetXattr(bg, dir, xattrTranslator, nul(e.bin, transFlag, "crash"), 0))
	_, err = e.s.Lookup(bg, root, "dir")
	wantErrno(t, err, syscall.EIO)
	must(t, e.s.SetXattr(bg, dir, xattrTranslator, nul("no-such-translator-anywhere"), 0))
	_, err = e.s.Lookup(bg, root, "dir")
	wantErrno(t, err, syscall.ENOENT)
	if e.s.running(e.s.nodes[dir]) != nil {
		t.Fatal("failed translator left attached")
	}
	wantErrno(t, e.s.SetXattr(bg, dir, xattrTranslator, nil, 0), syscall.EINVAL)
}

// TestSideTable: where user xattrs are refused (a symlink), the record goes
// to a hidden side table in the directory.
func TestSideTable(t *testing.T) {
	e := newTransEnv(t, false, 60*time.Second)
	root := e.node("")
	ln, err := e.s.Symlink(bg, root, "ln", "archive")
	must(t, err)
	must(t, e.s.SetXattr(bg, ln.Node, xattrTranslator, nul(e.bin, transFlag, "side"), 0))
	if _, err := os.Stat(filepath.Join(e.lower, transTable)); err != nil {
		t.Fatalf("no side table: %v", err)
	}
	for _, n := range e.list("") {
		if n == transTable {
			t.Fatal("side table listed")
		}
	}
	_, err = e.s.Lookup(bg, root, transTable)
	wantErrno(t, err, syscall.ENOENT)
	en, err := e.s.Lookup(bg, root, "ln")
	must(t, err)
	if got, _ := through(t, en, "hello"); got != "hello side" {
		t.Fatalf("hello = %q", got)
	}
	must(t, e.s.SetXattr(bg, ln.Node, xattrGoaway, nil, 0))
	// The record follows a rename.
	must(t, e.s.Rename(bg, root, "ln", root, "ln2", 0))
	en, err = e.s.Lookup(bg, root, "ln2")
	must(t, err)
	if got, _ := through(t, en, "hello"); got != "hello side" {
		t.Fatalf("after rename hello = %q", got)
	}
	must(t, e.s.SetXattr(bg, ln.Node, xattrGoaway, nil, 0))
	must(t, e.s.Rename(bg, root, "ln2", root, "ln", 0))
	must(t, e.s.Unlink(bg, root, "ln"))
	if _, err := os.Stat(filepath.Join(e.lower, transTable)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("side table outlived its last record: %v", err)
	}
}

// TestTranslatorOwnerIdentity: as root, a passive translator runs as the
// owner of its node.
func TestTranslatorOwnerIdentity(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (CI runs as root)")
	}
	uid, gid := lookupTestUser(t)
	e := newTransEnv(t, false, 60*time.Second)
	must(t, os.Lchown(filepath.Join(e.lower, "archive"), int(uid), int(gid)))
	must(t, os.Chmod(filepath.Join(e.lower, "archive"), 0o600))
	n := e.node("archive")
	owner := proto.WithCaller(bg, proto.Caller{Uid: uid, Gid: gid})
	must(t, e.s.SetXattr(owner, n, xattrTranslator, nul(e.bin, transFlag, "owned"), 0))
	en, err := e.s.Lookup(bg, e.node(""), "archive")
	must(t, err)
	if got, _ := through(t, en, "under"); got != "100000:underlying data" {
		t.Fatalf("under = %q", got)
	}
	if o := optsOf(t, e.s, n); o["uid"] != strconv.Itoa(int(uid)) {
		t.Fatalf("translator runs as %s, want %d", o["uid"], uid)
	}
}

// TestSideTableLower: a side-table record on the host's lower layer works in
// copy-on-write mode and survives the copy-up of a rename.
func TestSideTableLower(t *testing.T) {
	e := newTransEnv(t, true, 60*time.Second)
	must(t, os.Symlink("archive", filepath.Join(e.lower, "ln")))
	table, _ := json.Marshal(map[string]string{"ln": string(nul(e.bin, transFlag, "lower"))})
	must(t, os.WriteFile(filepath.Join(e.lower, transTable), table, 0o644))
	before := snapshot(t, e.lower)
	root := e.node("")
	en, err := e.s.Lookup(bg, root, "ln")
	must(t, err)
	if got, _ := through(t, en, "hello"); got != "hello lower" {
		t.Fatalf("hello = %q", got)
	}
	must(t, e.s.SetXattr(bg, en.Node, xattrGoaway, nil, 0))
	must(t, e.s.Rename(bg, root, "ln", root, "moved", 0))
	en, err = e.s.Lookup(bg, root, "moved")
	must(t, err)
	if got, _ := through(t, en, "hello"); got != "hello lower" {
		t.Fatalf("after rename hello = %q", got)
	}
	if after := snapshot(t, e.lower); after != before {
		t.Fatalf("lower changed:\n%s\n%s", before, after)
	}
}
