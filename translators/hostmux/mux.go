// Package hostmux is the Hurd's hostmux: a directory where looking up a
// name starts a translator for that name (`settrans -c ~/ftp: hostmux ftpfs
// /` then `ls ~/ftp:/localhost`). Its engine, Mux, is shared with usermux.
//
// A child translator is started (package launch) with its listening
// socket as fd 3 (LISTEN_FDS=1) in a private directory of the runtime dir,
// and the lookup answers with a redirect to that socket: the client (the
// fs bridge) talks to the child directly, the mux never relays its
// traffic. A child that
// dies is started again by the next lookup of its name. Children stop when
// the mux goes away (goaway or signal; if the mux is killed outright, the
// kernel kills them: PDEATHSIG).
//
// Locking: Mux.mu guards the children table; a child's own start is
// serialised by its mutex (child.mu), taken before Mux.mu and never held
// by Mux.mu's holders.
package hostmux

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"herd/proto"
	"herd/translators/control"
	"herd/translators/launch"
	"herd/translators/search"
)

// Child says what a name in the mux is: a translator to start (Argv), or
// a symbolic link (Symlink) the mux serves itself.
type Child struct {
	Argv    []string
	Symlink string
}

// Mux is a proto.FileSystem whose root directory starts a translator for
// each name looked up in it.
type Mux struct {
	proto.Unimplemented
	// Name is the mux's name for messages and its socket directory.
	Name string
	// Resolve says what name is; an error carrying ENOENT refuses it.
	Resolve func(name string) (Child, error)
	// Timeout bounds a child's start-up handshake (default 60 s).
	Timeout time.Duration
	// Logf logs what happens to children (nil: stderr).
	Logf func(format string, args ...any)

	once    sync.Once
	dir     string
	dirErr  error
	uid     uint32
	gid     uint32
	start   proto.Timespec
	mu      sync.Mutex
	byName  map[string]*child
	byNode  map[proto.NodeID]*child
	listed  map[string]proto.Entry // names whose child started: what a lookup answered
	next    proto.NodeID
	nsock   int // sockets made, for unique names
	stopped bool
}

const rootNode proto.NodeID = 1

type child struct {
	name string
	node proto.NodeID

	mu     sync.Mutex // serialises starting
	spec   Child
	attr   proto.Attr
	socket string
	proc   *launch.Process // nil until started, and for a symlink
}

func (m *Mux) init() {
	m.once.Do(func() {
		m.byName = map[string]*child{}
		m.byNode = map[proto.NodeID]*child{}
		m.listed = map[string]proto.Entry{}
		m.next = rootNode + 1
		m.uid, m.gid = uint32(os.Geteuid()), uint32(os.Getegid())
		now := time.Now()
		m.start = proto.Timespec{Sec: now.Unix(), Nsec: uint32(now.Nanosecond())}
		if m.Timeout <= 0 {
			m.Timeout = control.DefaultTimeout
		}
		if m.Logf == nil {
			m.Logf = func(format string, args ...any) { fmt.Fprintf(os.Stderr, m.Name+": "+format+"\n", args...) }
		}
	})
}

// socketDir makes the private directory of the children's sockets: in the
// runtime dir the subenvironment gives its servers, else the caller's.
func (m *Mux) socketDir() (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.dir != "" || m.dirErr != nil {
		return m.dir, m.dirErr
	}
	base := os.Getenv("HERD_RUNTIME_DIR")
	if base == "" {
		base, m.dirErr = control.RuntimeDir()
		if m.dirErr != nil {
			return "", m.dirErr
		}
	}
	m.dir, m.dirErr = os.MkdirTemp(base, "mx")
	return m.dir, m.dirErr
}

func (m *Mux) rootAttr() proto.Attr {
	return proto.Attr{Ino: uint64(rootNode), Mode: syscall.S_IFDIR | 0o555, Nlink: 2, Uid: m.uid, Gid: m.gid,
		Blksize: 4096, Atime: m.start, Mtime: m.start, Ctime: m.start}
}

func (m *Mux) Root(ctx context.Context) (proto.Entry, error) {
	m.init()
	return proto.Entry{Node: rootNode, Attr: m.rootAttr()}, nil
}

func (m *Mux) GetAttr(ctx context.Context, node proto.NodeID) (proto.Attr, error) {
	m.init()
	if node == rootNode {
		return m.rootAttr(), nil
	}
	m.mu.Lock()
	c := m.byNode[node]
	m.mu.Unlock()
	if c == nil {
		return proto.Attr{}, syscall.ENOENT
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.attr, nil
}

func (m *Mux) Readlink(ctx context.Context, node proto.NodeID) (string, error) {
	m.mu.Lock()
	c := m.byNode[node]
	m.mu.Unlock()
	if c == nil || c.spec.Symlink == "" {
		return "", syscall.EINVAL
	}
	return c.spec.Symlink, nil
}

func (m *Mux) StatFS(ctx context.Context, node proto.NodeID) (proto.StatFS, error) {
	return proto.StatFS{Bsize: 4096, Frsize: 4096, NameLen: 255}, nil
}

func (m *Mux) Open(ctx context.Context, node proto.NodeID, flags uint32) (proto.OpenResult, error) {
	if node != rootNode {
		return proto.OpenResult{}, syscall.EIO // children are reached through their redirect
	}
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		return proto.OpenResult{}, syscall.EISDIR
	}
	return proto.OpenResult{Handle: 1}, nil
}

// ReadDir lists the names looked up so far, as the Hurd's hostmux does.
func (m *Mux) ReadDir(ctx context.Context, dir proto.NodeID) ([]proto.DirEntry, error) {
	if dir != rootNode {
		return nil, syscall.ENOTDIR
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []proto.DirEntry
	for name, e := range m.listed {
		out = append(out, proto.DirEntry{Name: name, Ino: uint64(e.Node), Mode: e.Attr.Mode & syscall.S_IFMT})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// ReadDirPlus is ReadDir with the lookups' answers: children come with
// their redirect (the client looks them up itself, which restarts one that
// died), links with their attributes.
func (m *Mux) ReadDirPlus(ctx context.Context, dir proto.NodeID) ([]proto.DirEntryPlus, error) {
	ents, err := m.ReadDir(ctx, dir)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]proto.DirEntryPlus, 0, len(ents))
	for _, de := range ents {
		out = append(out, proto.DirEntryPlus{DirEntry: de, Entry: m.listed[de.Name]})
	}
	return out, nil
}

// Lookup starts (or finds running) the translator for name and redirects
// the client to it.
func (m *Mux) Lookup(ctx context.Context, parent proto.NodeID, name string) (proto.Entry, error) {
	m.init()
	if parent != rootNode {
		return proto.Entry{}, syscall.ENOTDIR
	}
	if name == "" || name == "." || name == ".." || strings.Contains(name, "/") {
		return proto.Entry{}, syscall.ENOENT
	}
	m.mu.Lock()
	if m.stopped {
		m.mu.Unlock()
		return proto.Entry{}, syscall.ESHUTDOWN
	}
	c := m.byName[name]
	if c == nil {
		// Registered at once, so that concurrent lookups of a new name
		// start one child; listed once it runs.
		c = &child{name: name, node: m.next}
		m.next++
		m.byName[name] = c
		m.byNode[c.node] = c
	}
	m.mu.Unlock()

	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.running() {
		spec, err := m.Resolve(name)
		if err != nil {
			return proto.Entry{}, err
		}
		c.spec = spec
		if spec.Symlink != "" {
			c.attr = proto.Attr{Ino: uint64(c.node), Mode: syscall.S_IFLNK | 0o777, Nlink: 1, Size: uint64(len(spec.Symlink)),
				Uid: m.uid, Gid: m.gid, Blksize: 4096, Atime: m.start, Mtime: m.start, Ctime: m.start}
		} else if err := m.startChild(ctx, c); err != nil {
			m.Logf("%s: %v", name, err)
			return proto.Entry{}, err
		}
		m.mu.Lock()
		stopped := m.stopped
		m.listed[name] = c.entry()
		m.mu.Unlock()
		if stopped {
			c.stop()
			return proto.Entry{}, syscall.ESHUTDOWN
		}
	}
	return c.entry(), nil
}

// entry is the answer to a lookup of the child. Called with c.mu held.
func (c *child) entry() proto.Entry {
	e := proto.Entry{Node: c.node, Attr: c.attr}
	if c.spec.Symlink == "" {
		e.Redirect = &proto.Redirect{Socket: c.socket}
	}
	return e
}

// running reports whether the child is there to be used (a symlink always
// is, once resolved). Called with c.mu held.
func (c *child) running() bool {
	if c.spec.Symlink != "" {
		return true
	}
	if c.proc == nil {
		return false
	}
	select {
	case <-c.proc.Exited():
		return false
	default:
		return true
	}
}

func (m *Mux) startChild(ctx context.Context, c *child) error {
	argv := c.spec.Argv
	if len(argv) == 0 {
		return syscall.ENOENT
	}
	program, err := search.Resolve(argv[0])
	if err != nil {
		m.Logf("%v", err)
		return syscall.ENOENT
	}
	dir, err := m.socketDir()
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.nsock++
	n := m.nsock
	m.mu.Unlock()
	c.socket = filepath.Join(dir, socketName(c.name, n))
	p, err := launch.Start(launch.Spec{Program: program, Argv: argv, Socket: c.socket})
	if err != nil {
		return err
	}
	c.proc = p
	m.Logf("%s: started %s (pid %d)", c.name, control.ShowArgv(argv), p.Pid())

	fail := func(err error) error {
		c.stop()
		return err
	}
	dctx, cancel := context.WithTimeout(ctx, m.Timeout)
	defer cancel()
	cl, err := p.Dial(dctx, proto.ClientOptions{})
	switch {
	case errors.Is(err, launch.ErrExited):
		return fail(fmt.Errorf("translator %s exited at start: %w", argv[0], syscall.EIO))
	case ctx.Err() != nil:
		return fail(ctx.Err())
	case err != nil:
		return fail(fmt.Errorf("translator %s did not answer within %v: %w", argv[0], m.Timeout, syscall.ETIMEDOUT))
	}
	root, err := cl.Root(dctx)
	if err != nil {
		return fail(fmt.Errorf("translator %s: root: %w", argv[0], err))
	}
	cl.Forget(dctx, root.Node, 1)
	c.attr = root.Attr
	c.attr.Ino = uint64(c.node)
	return nil
}

// stop asks the child to go away, then makes sure it does. Called with
// c.mu held (or once the mux is stopped).
func (c *child) stop() {
	if c.proc == nil {
		return
	}
	c.proc.Stop()
	os.Remove(c.socket)
}

// Stop stops every child and removes the sockets' directory. The mux
// answers ESHUTDOWN to lookups from then on.
func (m *Mux) Stop() {
	m.init()
	m.mu.Lock()
	m.stopped = true
	var cs []*child
	for _, c := range m.byName {
		cs = append(cs, c)
	}
	dir := m.dir
	m.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.mu.Lock()
			defer c.mu.Unlock()
			c.stop()
		}()
	}
	wg.Wait()
	if dir != "" {
		os.RemoveAll(dir)
	}
}

// Goaway: the kit has called Sync (which stops the children) already.
func (m *Mux) Goaway(ctx context.Context, flags uint32) error { return nil }

// socketName keeps a child's socket name short and safe: a unix socket's
// path has 108 bytes in all.
func socketName(name string, n int) string {
	var b strings.Builder
	for _, r := range name {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	s := b.String()
	if len(s) > 16 {
		s = s[:16]
	}
	return fmt.Sprintf("%s-%d.sock", s, n)
}

var (
	_ proto.FileSystem    = (*Mux)(nil)
	_ proto.DirPlusReader = (*Mux)(nil)
)
