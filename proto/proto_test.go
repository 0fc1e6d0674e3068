package proto

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// serveUnix starts a server of fs on a unix socket in a temp dir.
func serveUnix(t testing.TB, fs FileSystem, opts ServerOptions) (*Server, string) {
	return serveUnixWith(t, NewServer(fs, opts))
}

func serveUnixWith(t testing.TB, srv *Server) (*Server, string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "fs.sock")
	l, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return srv, sock
}

func serveTCP(t testing.TB, fs FileSystem, opts ServerOptions) (*Server, string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(fs, opts)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return srv, l.Addr().String()
}

// transport is one way of connecting a client to a server.
type transport struct {
	name    string
	fds     bool // OpenResult.File arrives
	connect func(t testing.TB, fs FileSystem, copts ClientOptions) (*Client, *Server)
}

func transports() []transport {
	unix := func(mode callMode) func(testing.TB, FileSystem, ClientOptions) (*Client, *Server) {
		return func(t testing.TB, fs FileSystem, copts ClientOptions) (*Client, *Server) {
			srv, sock := serveUnix(t, fs, ServerOptions{Name: "test"})
			copts.calls = mode
			var c *Client
			var err error
			if mode == callsAuto {
				c, err = Dial(sock, copts)
			} else {
				var conn net.Conn
				conn, err = net.Dial("unix", sock)
				if err == nil {
					c, err = NewClient(conn, copts)
				}
			}
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			return c, srv
		}
	}
	return []transport{
		{name: "lane", fds: true, connect: unix(callsAuto)},
		{name: "pipe", fds: true, connect: func(t testing.TB, fs FileSystem, copts ClientOptions) (*Client, *Server) {
			c, srv, err := pipe(fs, ServerOptions{Name: "pipe"}, copts)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close(); srv.Close() })
			return c, srv
		}},
		{name: "stream", connect: unix(callsStream)},
		{name: "perstream", connect: unix(callsPerStream)},
		{name: "tcp", connect: func(t testing.TB, fs FileSystem, copts ClientOptions) (*Client, *Server) {
			srv, addr := serveTCP(t, fs, ServerOptions{Name: "tcp"})
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			c, err := NewClient(conn, copts)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			return c, srv
		}},
	}
}

func eq(t *testing.T, what string, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s:\n got  %#v\n want %#v", what, got, want)
	}
}

func noErr(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// TestRoundTrip sends every operation with every field set and checks both
// what the server received and what the client got back.
func TestRoundTrip(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			fs := newTestFS(t)
			c, _ := tr.connect(t, fs, ClientOptions{})
			ctx := context.Background()
			eq(t, "interfaces", c.Interfaces(), []string{"fs", "io", "fsys"})

			e, err := c.Root(ctx)
			noErr(t, "root", err)
			want := entryFor("/")
			want.Node = rootNode
			eq(t, "root", e, want)

			opts, err := c.GetOptions(ctx)
			noErr(t, "getoptions", err)
			eq(t, "getoptions", opts, []string{"--readonly", "", "--root=/srv"})
			noErr(t, "setoptions", c.SetOptions(ctx, []string{"--rw", "x=y"}))
			eq(t, "setoptions args", fs.lastArgs("setoptions"), []any{[]string{"--rw", "x=y"}})
			noErr(t, "goaway", c.Goaway(ctx, GoawayForce))
			eq(t, "goaway args", fs.lastArgs("goaway"), []any{GoawayForce})

			e, err = c.Lookup(ctx, 7, "redirect")
			noErr(t, "lookup", err)
			eq(t, "lookup", e, entryFor("redirect"))
			eq(t, "lookup args", fs.lastArgs("lookup"), []any{NodeID(7), "redirect"})

			a, err := c.GetAttr(ctx, 1<<62)
			noErr(t, "getattr", err)
			wantA := fixtureAttr
			wantA.Ino = 1 << 62
			eq(t, "getattr", a, wantA)

			in := SetAttrIn{Valid: SetAttrMode | SetAttrAtime | SetAttrMtimeNow, Mode: 0o1777, Uid: 4, Gid: 5,
				Size: 1 << 50, Atime: Timespec{Sec: -1, Nsec: 2}, Mtime: Timespec{Sec: 3, Nsec: 4}, Handle: 99}
			a, err = c.SetAttr(ctx, 8, in)
			noErr(t, "setattr", err)
			wantA = fixtureAttr
			wantA.Mode = 0o1777
			eq(t, "setattr", a, wantA)
			eq(t, "setattr args", fs.lastArgs("setattr"), []any{NodeID(8), in})

			d, err := c.ReadDir(ctx, 9)
			noErr(t, "readdir", err)
			eq(t, "readdir", d, fixtureDir)
			big, err := c.ReadDir(ctx, 2)
			noErr(t, "readdir of a big directory", err)
			if !reflect.DeepEqual(big, bigDir()) {
				t.Errorf("big readdir differs: %d entries", len(big))
			}

			dp, err := c.ReadDirPlus(ctx, 10)
			noErr(t, "readdirplus", err)
			var wantDP []DirEntryPlus
			for _, d := range fixtureDir {
				wantDP = append(wantDP, DirEntryPlus{DirEntry: d, Entry: entryFor(d.Name)})
			}
			eq(t, "readdirplus", dp, wantDP)

			e, err = c.Mkdir(ctx, 11, "dir", 0o755)
			noErr(t, "mkdir", err)
			eq(t, "mkdir", e, entryFor("dir"))
			eq(t, "mkdir args", fs.lastArgs("mkdir"), []any{NodeID(11), "dir", uint32(0o755)})

			e, err = c.Mknod(ctx, 12, "fifo", syscall.S_IFIFO|0o600, 0x1234)
			noErr(t, "mknod", err)
			eq(t, "mknod", e, entryFor("fifo"))
			eq(t, "mknod args", fs.lastArgs("mknod"), []any{NodeID(12), "fifo", uint32(syscall.S_IFIFO | 0o600), uint64(0x1234)})

			e, or, err := c.Create(ctx, 13, "new", syscall.O_RDWR|syscall.O_EXCL, 0o640)
			noErr(t, "create", err)
			eq(t, "create", e, entryFor("new"))
			eq(t, "create args", fs.lastArgs("create"), []any{NodeID(13), "new", uint32(syscall.O_RDWR | syscall.O_EXCL), uint32(0o640)})
			eq(t, "create flags", or.Flags, OpenKeepCache)
			if tr.fds != (or.File != nil) {
				t.Errorf("create: File = %v, want a descriptor: %v", or.File, tr.fds)
			}
			if or.File != nil {
				or.File.Close()
			}
			noErr(t, "release", c.Release(ctx, or.Handle))

			noErr(t, "unlink", c.Unlink(ctx, 14, "gone"))
			eq(t, "unlink args", fs.lastArgs("unlink"), []any{NodeID(14), "gone"})
			noErr(t, "rmdir", c.Rmdir(ctx, 15, "gonedir"))
			eq(t, "rmdir args", fs.lastArgs("rmdir"), []any{NodeID(15), "gonedir"})
			noErr(t, "rename", c.Rename(ctx, 16, "old", 17, "new", 2))
			eq(t, "rename args", fs.lastArgs("rename"), []any{NodeID(16), "old", NodeID(17), "new", uint32(2)})

			e, err = c.Link(ctx, 18, 19, "hard")
			noErr(t, "link", err)
			eq(t, "link", e, entryFor("hard"))
			eq(t, "link args", fs.lastArgs("link"), []any{NodeID(18), NodeID(19), "hard"})
			e, err = c.Symlink(ctx, 20, "sym", "/abs/target")
			noErr(t, "symlink", err)
			eq(t, "symlink", e, entryFor("sym"))
			eq(t, "symlink args", fs.lastArgs("symlink"), []any{NodeID(20), "sym", "/abs/target"})
			s, err := c.Readlink(ctx, 21)
			noErr(t, "readlink", err)
			eq(t, "readlink", s, "../target/of/the link")

			x, err := c.GetXattr(ctx, 22, "user.a")
			noErr(t, "getxattr", err)
			eq(t, "getxattr", x, []byte{0, 1, 2, 255})
			xl, err := c.ListXattr(ctx, 23)
			noErr(t, "listxattr", err)
			eq(t, "listxattr", xl, []string{"user.a", "trusted.herd.translator"})
			noErr(t, "setxattr", c.SetXattr(ctx, 24, "user.b", []byte("value\x00"), 1))
			eq(t, "setxattr args", fs.lastArgs("setxattr"), []any{NodeID(24), "user.b", []byte("value\x00"), uint32(1)})
			noErr(t, "removexattr", c.RemoveXattr(ctx, 25, "user.b"))
			eq(t, "removexattr args", fs.lastArgs("removexattr"), []any{NodeID(25), "user.b"})
			st, err := c.StatFS(ctx, 26)
			noErr(t, "statfs", err)
			eq(t, "statfs", st, fixtureStatFS)

			or, err = c.Open(ctx, 27, syscall.O_RDONLY)
			noErr(t, "open", err)
			eq(t, "open flags", or.Flags, OpenDirectIO)
			if or.File != nil {
				or.File.Close()
			}
			h := or.Handle
			data, err := c.Read(ctx, h, 1<<40, 128<<10)
			noErr(t, "read", err)
			eq(t, "read", data, payload(1<<40, 128<<10))
			data, err = c.Read(ctx, h, 5, 3<<20) // more than one frame
			noErr(t, "big read", err)
			if !reflect.DeepEqual(data, payload(5, 3<<20)) {
				t.Errorf("big read differs")
			}
			wdata := payload(9, 3<<20+17)
			n, err := c.Write(ctx, h, -1, wdata)
			noErr(t, "write", err)
			eq(t, "write n", n, len(wdata))
			eq(t, "write args", fs.lastArgs("write"), []any{h, int64(-1), len(wdata), sum(wdata)})
			noErr(t, "fsync", c.Fsync(ctx, h, true))
			eq(t, "fsync args", fs.lastArgs("fsync"), []any{h, true})
			noErr(t, "fallocate", c.Fallocate(ctx, h, 3, 1<<33, 1<<34))
			eq(t, "fallocate args", fs.lastArgs("fallocate"), []any{h, uint32(3), int64(1 << 33), int64(1 << 34)})
			off, err := c.Lseek(ctx, h, 100, 3)
			noErr(t, "lseek", err)
			eq(t, "lseek", off, int64(4196))
			eq(t, "lseek args", fs.lastArgs("lseek"), []any{h, int64(100), 3})
			noErr(t, "release", c.Release(ctx, h))
			if got := fs.releasedOf(h); got != 1 {
				t.Errorf("handle %d released %d times, want 1", h, got)
			}
			if err := c.Release(ctx, h); !errors.Is(err, syscall.EBADF) {
				t.Errorf("second release: %v, want EBADF", err)
			}
		})
	}
}

func TestCallerTravels(t *testing.T) {
	fs := newTestFS(t)
	c, cleanup, err := Pipe(fs, ServerOptions{}, ClientOptions{})
	noErr(t, "pipe", err)
	defer cleanup()
	ctx := WithCaller(context.Background(), Caller{Uid: 1001, Gid: 1002, Pid: 4242})
	_, err = c.GetAttr(ctx, 3)
	noErr(t, "getattr", err)
	got, ok := fs.callerOf("getattr")
	if !ok || got != (Caller{Uid: 1001, Gid: 1002, Pid: 4242}) {
		t.Errorf("caller at the server: %v %v", got, ok)
	}
	_, err = c.StatFS(context.Background(), 3)
	noErr(t, "statfs", err)
	if got, ok := fs.callerOf("statfs"); ok {
		t.Errorf("statfs without a caller arrived with %v", got)
	}
}

func TestErrnoMapping(t *testing.T) {
	fs := newTestFS(t)
	c, cleanup, err := Pipe(fs, ServerOptions{}, ClientOptions{})
	noErr(t, "pipe", err)
	defer cleanup()
	ctx := context.Background()

	_, err = c.Lookup(ctx, 1, "enoent")
	if !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("lookup enoent: %v", err)
	}
	var pe *Error
	if !errors.As(err, &pe) || pe.Errno != syscall.ENOENT || pe.Msg != `testfs: "enoent": no such file or directory` {
		t.Errorf("error = %#v", err)
	}
	if ToErrno(err) != syscall.ENOENT {
		t.Errorf("ToErrno = %v", ToErrno(err))
	}
	if err := c.Unlink(ctx, 1, "eacces"); !errors.Is(err, syscall.EACCES) {
		t.Errorf("unlink eacces: %v", err)
	}
	// An error without errno reaches the client as EIO with its text.
	err = c.Rmdir(ctx, 1, "plain")
	if !errors.Is(err, syscall.EIO) || err.Error() != "an error without errno" {
		t.Errorf("rmdir plain: %v", err)
	}
	if _, err := c.GetXattr(ctx, 1, "user.missing"); !errors.Is(err, syscall.ENODATA) {
		t.Errorf("getxattr: %v", err)
	}
	if err := c.Goaway(ctx, 0); !errors.Is(err, syscall.EBUSY) {
		t.Errorf("goaway: %v", err)
	}
	// A panicking implementation fails the call, not the server.
	if _, err := c.Lookup(ctx, 1, "panic"); !errors.Is(err, syscall.EIO) || !strings.Contains(err.Error(), "asked to panic") {
		t.Errorf("lookup that panics: %v", err)
	}
	// An expired context fails before anything is sent.
	expired, cancel := context.WithTimeout(ctx, -time.Second)
	defer cancel()
	if _, err := c.GetAttr(expired, 1); !errors.Is(err, syscall.ETIMEDOUT) {
		t.Errorf("getattr with an expired context: %v", err)
	}
	// A handle this session never opened.
	if _, err := c.Read(ctx, 12345, 0, 10); !errors.Is(err, syscall.EBADF) {
		t.Errorf("read of a foreign handle: %v", err)
	}

	for _, tc := range []struct {
		err  error
		want syscall.Errno
	}{
		{nil, 0},
		{syscall.EEXIST, syscall.EEXIST},
		{&os.PathError{Op: "open", Path: "x", Err: syscall.ENOTDIR}, syscall.ENOTDIR},
		{context.DeadlineExceeded, syscall.ETIMEDOUT},
		{context.Canceled, syscall.EINTR},
		{io.EOF, syscall.EIO},
		{&Error{Errno: syscall.EXDEV, Msg: "x"}, syscall.EXDEV},
	} {
		if got := ToErrno(tc.err); got != tc.want {
			t.Errorf("ToErrno(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// TestDeadline: a server that never answers gives ETIMEDOUT, the
// connection stays usable, and the late reply is dropped.
func TestDeadline(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			fs := newTestFS(t)
			c, _ := tr.connect(t, fs, ClientOptions{Timeout: 300 * time.Millisecond})
			_, err := c.GetAttr(context.Background(), hangNode)
			if !errors.Is(err, syscall.ETIMEDOUT) {
				t.Fatalf("getattr on a hung server: %v, want ETIMEDOUT", err)
			}
			// A context deadline wins over the default.
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			if _, err := c.Lookup(ctx, hangNode, "x"); !errors.Is(err, syscall.ETIMEDOUT) {
				t.Fatalf("lookup with a ctx deadline: %v, want ETIMEDOUT", err)
			}
			// Cancellation without a deadline is an interruption.
			ctx2, cancel2 := context.WithCancel(context.Background())
			go func() { <-fs.entered; <-fs.entered; <-fs.entered; cancel2() }()
			ctx2, cancel3 := context.WithTimeout(ctx2, time.Hour)
			defer cancel3()
			if _, err := c.Open(ctx2, hangNode, 0); !errors.Is(err, syscall.EINTR) {
				t.Fatalf("open with a cancelled ctx: %v, want EINTR", err)
			}
			fs.unhang() // the late replies now arrive and must be dropped
			for range 3 {
				if _, err := c.GetAttr(context.Background(), 5); err != nil {
					t.Fatalf("after the timeouts: %v", err)
				}
			}
			select {
			case <-c.Done():
				t.Fatalf("connection lost: %v", c.Err())
			default:
			}
		})
	}
}

// TestServerClosed: every pending and later call returns EIO at once and
// Done closes.
func TestServerClosed(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			fs := newTestFS(t)
			c, srv := tr.connect(t, fs, ClientOptions{Timeout: time.Hour})
			var wg sync.WaitGroup
			errs := make(chan error, 4)
			for range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, err := c.GetAttr(context.Background(), hangNode)
					errs <- err
				}()
			}
			for range 4 {
				<-fs.entered
			}
			srv.Close()
			select {
			case <-c.Done():
			case <-time.After(time.Minute):
				t.Fatal("Done did not close")
			}
			if c.Err() == nil {
				t.Error("Err is nil after Done")
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if !errors.Is(err, syscall.EIO) {
					t.Errorf("pending call: %v, want EIO", err)
				}
			}
			if _, err := c.Root(context.Background()); !errors.Is(err, syscall.EIO) {
				t.Errorf("later call: %v, want EIO", err)
			}
		})
	}
}

func TestFDPassing(t *testing.T) {
	fs := newTestFS(t)
	_, sock := serveUnix(t, fs, ServerOptions{})
	c, err := Dial(sock, ClientOptions{})
	noErr(t, "dial", err)
	defer c.Close()
	or, err := c.Open(context.Background(), 3, syscall.O_RDONLY)
	noErr(t, "open", err)
	if or.File == nil || !c.FilePassing() {
		t.Fatal("no descriptor came with Open over a unix socket")
	}
	defer or.File.Close()
	b, err := io.ReadAll(or.File)
	noErr(t, "read from the passed descriptor", err)
	eq(t, "content", string(b), "hello through a descriptor\n")
	// Over TCP the same call has no descriptor.
	_, addr := serveTCP(t, fs, ServerOptions{})
	conn, err := net.Dial("tcp", addr)
	noErr(t, "dial tcp", err)
	tc, err := NewClient(conn, ClientOptions{})
	noErr(t, "tcp client", err)
	defer tc.Close()
	or2, err := tc.Open(context.Background(), 3, syscall.O_RDONLY)
	noErr(t, "tcp open", err)
	if or2.File != nil || tc.FilePassing() {
		t.Error("a descriptor over TCP")
	}
}

// TestSessionEndReleases: what a client held when it went away is
// forgotten and released by the server runtime.
func TestSessionEndReleases(t *testing.T) {
	fs := newTestFS(t)
	_, sock := serveUnix(t, fs, ServerOptions{})
	c, err := Dial(sock, ClientOptions{})
	noErr(t, "dial", err)
	ctx := context.Background()
	for range 3 {
		_, err := c.Lookup(ctx, 1, "x")
		noErr(t, "lookup", err)
	}
	_, err = c.Mkdir(ctx, 1, "d", 0o755)
	noErr(t, "mkdir", err)
	_, err = c.ReadDirPlus(ctx, 1)
	noErr(t, "readdirplus", err)
	_, err = c.Root(ctx)
	noErr(t, "root", err)
	o1, err := c.Open(ctx, 5, 0)
	noErr(t, "open", err)
	o1.File.Close()
	_, o2, err := c.Create(ctx, 1, "f", syscall.O_RDWR, 0o600)
	noErr(t, "create", err)
	o2.File.Close()
	o3, err := c.Open(ctx, 5, 0)
	noErr(t, "open", err)
	o3.File.Close()
	noErr(t, "release", c.Release(ctx, o3.Handle))
	c.Forget(ctx, entryFor("x").Node, 1)
	// Forgetting more than this session holds must not reach the server.
	c.Forget(ctx, 424242, 7)
	// A round trip after the Forgets: they have been applied.
	_, err = c.GetAttr(ctx, 1)
	noErr(t, "getattr", err)
	eq(t, "forgotten x before the end", fs.forgottenOf(entryFor("x").Node), uint64(1))
	c.Close()

	want := map[NodeID]uint64{
		entryFor("x").Node: 3, entryFor("d").Node: 1, rootNode: 1, entryFor("f").Node: 1,
		entryFor("a").Node: 1, entryFor("").Node: 1, entryFor("ünïcode name").Node: 1,
	}
	waitFor(t, "forgets and releases at session end", func() bool {
		for n, cnt := range want {
			if fs.forgottenOf(n) != cnt {
				return false
			}
		}
		return fs.releasedOf(o1.Handle) == 1 && fs.releasedOf(o2.Handle) == 1
	})
	eq(t, "released o3 once", fs.releasedOf(o3.Handle), 1)
	eq(t, "foreign forget", fs.forgottenOf(424242), uint64(0))
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type notes struct{ ch chan string }

func (n *notes) InvalNode(node NodeID, off, length int64) {
	n.ch <- fmt.Sprintf("node %d %d %d", node, off, length)
}

func (n *notes) InvalEntry(parent NodeID, name string) {
	n.ch <- fmt.Sprintf("entry %d %s", parent, name)
}

func TestNotifications(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			fs := newTestFS(t)
			n := &notes{ch: make(chan string, 10)}
			tr.connect(t, fs, ClientOptions{Notifier: n})
			fs.mu.Lock()
			nf := fs.notifier
			fs.mu.Unlock()
			if nf == nil {
				t.Fatal("the server did not give the FileSystem a Notifier")
			}
			nf.InvalNode(42, 4096, 0)
			nf.InvalEntry(7, "name")
			for _, want := range []string{"node 42 4096 0", "entry 7 name"} {
				select {
				case got := <-n.ch:
					eq(t, "notification", got, want)
				case <-time.After(time.Minute):
					t.Fatalf("notification %q did not arrive", want)
				}
			}
		})
	}
}

// TestNotificationsBroadcast: every live session gets them.
func TestNotificationsBroadcast(t *testing.T) {
	fs := newTestFS(t)
	_, sock := serveUnix(t, fs, ServerOptions{})
	var ns []*notes
	for range 3 {
		n := &notes{ch: make(chan string, 10)}
		c, err := Dial(sock, ClientOptions{Notifier: n})
		noErr(t, "dial", err)
		defer c.Close()
		ns = append(ns, n)
	}
	fs.mu.Lock()
	nf := fs.notifier
	fs.mu.Unlock()
	nf.InvalEntry(1, "x")
	for i, n := range ns {
		select {
		case got := <-n.ch:
			eq(t, "notification", got, "entry 1 x")
		case <-time.After(time.Minute):
			t.Fatalf("client %d got no notification", i)
		}
	}
}

// TestConcurrentCalls: replies reach the callers that asked, whatever the
// order the server answers in.
func TestConcurrentCalls(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			fs := newTestFS(t)
			c, _ := tr.connect(t, fs, ClientOptions{Timeout: time.Minute})
			or, err := c.Open(context.Background(), 5, 0)
			noErr(t, "open", err)
			if or.File != nil {
				or.File.Close()
			}
			var wg sync.WaitGroup
			for g := range 16 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range 100 {
						name := fmt.Sprintf("g%d-%d", g, i)
						e, err := c.Lookup(context.Background(), 1, name)
						if err != nil {
							t.Error(err)
							return
						}
						if e != entryFor(name) {
							t.Errorf("lookup %s got the entry of another call", name)
							return
						}
						if i%50 == 0 { // long messages, cut in frames, between the small ones
							size := 2<<20 + g
							d, err := c.Read(context.Background(), or.Handle, int64(i), size)
							if err != nil || !bytes.Equal(d, payload(int64(i), size)) {
								t.Errorf("read %d bytes: %v", size, err)
							}
						}
					}
				}()
			}
			wg.Wait()
		})
	}
}

// TestGoawayAnswered: a program that closes its server as soon as Goaway
// succeeded still gets the answer to its client.
func TestGoawayAnswered(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			fs := newTestFS(t)
			fs.gone = make(chan struct{})
			c, srv := tr.connect(t, fs, ClientOptions{})
			go func() {
				<-fs.gone
				srv.Close()
			}()
			if err := c.Goaway(context.Background(), GoawayForce); err != nil {
				t.Fatalf("goaway: %v", err)
			}
			select {
			case <-c.Done():
			case <-time.After(time.Minute):
				t.Fatal("the connection stayed up after the server closed")
			}
		})
	}
}
