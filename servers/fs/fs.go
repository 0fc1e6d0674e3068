// Package fs is herd's file server: it serves a host directory tree over
// proto, either writing through to it or keeping every change in a
// copy-on-write upper directory so the tree underneath is never modified.
//
// Confinement: every path is resolved beneath a layer's root with
// openat2(RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS), and the last component of
// an operation is always a single name acted on relative to its parent's
// descriptor without following symlinks. So `..`, absolute or relative
// symlinks and renames racing with us cannot reach outside the root.
//
// Nodes: the server keeps a tree of the nodes it handed out (parent, name);
// a node's path is computed from the tree, so a rename moves a node and its
// descendants follow. A node lives while its lookup count is above zero or
// it has live children or open handles.
//
// Copy-on-write layout (AUFS style, readable by other tools): a deleted name
// is a whiteout file `.wh.NAME` in the upper directory, a directory whose
// lower contents are hidden holds `.wh..wh..opq`. Both are hidden from
// listings. A renamed directory is copied up whole and marked opaque.
//
// Translators (the Hurd's): a passive translator is a command line stored
// on a node, as the xattr user.herd.translator (argv joined with NUL) or, where
// the node cannot carry user xattrs, in the directory's hidden side table
// .herd-translators. With Options.RuntimeDir set, a lookup that reaches such
// a node starts the translator (as the node's owner when we are root) with
// its socket as fd 3 and the node itself as fd 4, and answers with a redirect
// to it. Control xattrs: user.herd.active (start now / show), user.herd.goaway
// ("" or "force"), user.herd.options (get/set the translator's options).
//
// Locks: treeMu orders namespace operations (mutations hold it exclusively
// for their whole duration, lookups and reads share it); mu guards the node
// table (and each node's translator), hmu the handle table, cmu the
// directory cache. Lock order: treeMu, then mu, hmu or cmu (never two of
// those). I/O on an open handle takes only the handle's own lock.
package fs

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"herd/proto"
)

// Options configure a Server.
type Options struct {
	Root       string // host directory served (default "/")
	Upper      string // copy-on-write upper dir; "" = write through to Root (or read-only if ReadOnly)
	ReadOnly   bool
	HideTmp    bool   // /tmp starts empty (an opaque dir in the upper layer); needs Upper
	RuntimeDir string // where translator sockets go (issue 3), "" = none
	// TranslatorTimeout bounds a translator's start-up handshake (default 60 s, the Hurd's).
	TranslatorTimeout time.Duration
	// Logf, when set, receives one line per noteworthy event (translator starts and stops).
	Logf func(format string, args ...any)
}

const (
	whPrefix   = ".wh."
	opaqueName = ".wh..wh..opq"
	rootID     = proto.NodeID(1)
)

type node struct {
	id       proto.NodeID
	parent   *node // nil for the root and for detached (removed) nodes
	name     string
	lookups  uint64
	children map[string]*node
	handles  int // open handles on this node
	// lowerHidden: the lower layer must not be consulted for this node's
	// path (an ancestor is opaque or upper-only). Only meaningful in
	// copy-on-write mode.
	lowerHidden bool
	detached    bool
	trans       *translator // running translator attached to this node, if any
}

type handle struct {
	mu     sync.RWMutex // held shared while fd is in use, exclusively to close it
	closed bool
	id     proto.HandleID
	fd     int
	node   *node
	upper  bool // fd is on the writable layer (changes through it are allowed)
	// write: opened for writing. Clients that got a dup of fd write to the
	// file without telling the server, so its release tells the others.
	write bool
}

// Server serves a host directory tree. It implements proto.FileSystem,
// proto.DirPlusReader and proto.NotifierSetter.
type Server struct {
	opts  Options
	upper int // writable layer: Upper, or Root in write-through mode; -1 when none
	lower int // read-only layer under Upper in copy-on-write mode; -1 otherwise
	cow   bool
	root  *node
	euid  int
	umask uint32

	treeMu sync.RWMutex

	cmu        sync.Mutex // directory cache (dircache.go)
	dirCache   map[dirKey]int
	cacheDirty bool
	mu         sync.Mutex
	nodes      map[proto.NodeID]*node
	nextID     proto.NodeID

	hmu     sync.Mutex
	handles map[proto.HandleID]*handle
	nextH   proto.HandleID

	notifier proto.Notifier
	readOnly bool
	rootUp   atomic.Bool // copy-on-write: the root's attributes are the upper root's
	own      ownerState  // owner records (owner.go)

	transDir  string     // RuntimeDir/trans/PID.N: this server's translator sockets
	tmu       sync.Mutex // translators
	transSeq  int
	closed    bool
	done      chan struct{}
	closeOnce sync.Once
}

var (
	_ proto.FileSystem     = (*Server)(nil)
	_ proto.DirPlusReader  = (*Server)(nil)
	_ proto.NotifierSetter = (*Server)(nil)
)

// New opens the layers and returns a server for them.
func New(opts Options) (*Server, error) {
	if opts.Root == "" {
		opts.Root = "/"
	}
	if opts.TranslatorTimeout == 0 {
		opts.TranslatorTimeout = 60 * time.Second
	}
	s := &Server{
		opts:     opts,
		upper:    -1,
		lower:    -1,
		nodes:    map[proto.NodeID]*node{},
		handles:  map[proto.HandleID]*handle{},
		dirCache: map[dirKey]int{},
		nextID:   rootID + 1,
		nextH:    1,
		euid:     os.Geteuid(),
		umask:    readUmask(),
		readOnly: opts.ReadOnly,
		done:     make(chan struct{}),
	}
	rootFD, err := openRootDir(opts.Root)
	if err != nil {
		return nil, fmt.Errorf("fs: root %s: %w", opts.Root, err)
	}
	if opts.Upper != "" {
		upFD, err := openRootDir(opts.Upper)
		if err != nil {
			unix.Close(rootFD)
			return nil, fmt.Errorf("fs: upper %s: %w", opts.Upper, err)
		}
		s.upper, s.lower, s.cow = upFD, rootFD, true
		s.rootUp.Store(exists(upFD, rootMarker))
	} else {
		s.upper = rootFD
	}
	if opts.RuntimeDir != "" {
		s.transDir = filepath.Join(opts.RuntimeDir, "trans", fmt.Sprintf("%d.%d", os.Getpid(), serverSeq.Add(1)))
	}
	s.root = &node{id: rootID, lookups: 1, children: map[string]*node{}}
	s.nodes[rootID] = s.root
	if opts.HideTmp && s.cow && !opts.ReadOnly {
		if err := s.hideTmp(); err != nil {
			s.closeFDs()
			return nil, fmt.Errorf("fs: hide /tmp: %w", err)
		}
	}
	return s, nil
}

func openRootDir(path string) (int, error) {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	return fd, nil
}

// hideTmp makes /tmp of the merged view an empty opaque directory of mode
// 1777 unless the upper layer already has one (a kept upper layer keeps its
// /tmp).
func (s *Server) hideTmp() error {
	var st unix.Stat_t
	if err := unix.Fstatat(s.upper, "tmp", &st, unix.AT_SYMLINK_NOFOLLOW); err == nil {
		return nil
	}
	if err := unix.Mkdirat(s.upper, "tmp", 0o777); err != nil {
		return err
	}
	if err := unix.Fchmodat(s.upper, "tmp", 0o1777, 0); err != nil {
		return err
	}
	if s.euid == 0 {
		unix.Fchownat(s.upper, "tmp", 0, 0, unix.AT_SYMLINK_NOFOLLOW)
	}
	fd, err := openBeneath(s.upper, "tmp", unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := markOpaque(fd); err != nil {
		return err
	}
	unix.Unlinkat(s.upper, whPrefix+"tmp", 0)
	return nil
}

func readUmask() uint32 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0o022
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Umask:"); ok {
			u, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32)
			if err == nil {
				return uint32(u)
			}
		}
	}
	return 0o022
}

// Close stops the translators, closes open handles and the layers.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.stopAllTranslators()
		if s.transDir != "" {
			os.RemoveAll(s.transDir)
			os.Remove(filepath.Dir(s.transDir)) // the shared trans/, if now empty
		}
		s.hmu.Lock()
		hs := make([]*handle, 0, len(s.handles))
		for id, h := range s.handles {
			hs = append(hs, h)
			delete(s.handles, id)
		}
		s.hmu.Unlock()
		for _, h := range hs {
			closeHandle(h)
		}
		// Tree operations use the layer descriptors under treeMu; -1 makes
		// any later call fail (EBADF) instead of using a reused number.
		s.treeMu.Lock()
		s.dropDirCache()
		s.closeFDs()
		s.upper, s.lower = -1, -1
		s.treeMu.Unlock()
		close(s.done)
	})
	return nil
}

// Done is closed when the server was asked to go away (Goaway) or closed.
func (s *Server) Done() <-chan struct{} { return s.done }

func (s *Server) closeFDs() {
	if s.upper >= 0 {
		unix.Close(s.upper)
	}
	if s.lower >= 0 {
		unix.Close(s.lower)
	}
}

// SetNotifier implements proto.NotifierSetter.
func (s *Server) SetNotifier(n proto.Notifier) {
	s.mu.Lock()
	s.notifier = n
	s.mu.Unlock()
}

func (s *Server) invalNode(n *node) {
	s.mu.Lock()
	nt := s.notifier
	s.mu.Unlock()
	if nt != nil && n != nil {
		nt.InvalNode(n.id, 0, 0)
	}
}

func (s *Server) invalRange(n *node, off, length int64) {
	s.mu.Lock()
	nt := s.notifier
	s.mu.Unlock()
	if nt != nil {
		nt.InvalNode(n.id, off, length)
	}
}

func (s *Server) invalEntry(parent *node, name string) {
	s.mu.Lock()
	nt := s.notifier
	s.mu.Unlock()
	if nt != nil && parent != nil {
		nt.InvalEntry(parent.id, name)
	}
}

// ---- node table ----

func (s *Server) getNode(id proto.NodeID) (*node, error) {
	s.mu.Lock()
	n := s.nodes[id]
	s.mu.Unlock()
	if n == nil {
		return nil, syscall.ESTALE
	}
	return n, nil
}

// pathOf returns n's components from the root; ENOENT for a detached node.
func (s *Server) pathOf(n *node) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pathOfLocked(n)
}

func (s *Server) pathOfLocked(n *node) ([]string, error) {
	var rev []string
	for c := n; c != s.root; c = c.parent {
		if c == nil || c.detached {
			return nil, syscall.ENOENT
		}
		rev = append(rev, c.name)
	}
	for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
		rev[i], rev[j] = rev[j], rev[i]
	}
	return rev, nil
}

// child returns parent's child node for name, creating it, and counts one lookup.
// setChild enters c as n's child name. A node's children map is made at
// its first child: most nodes (files) never get one, and a listing makes a
// node for every name.
func (n *node) setChild(name string, c *node) {
	if n.children == nil {
		n.children = map[string]*node{}
	}
	n.children[name] = c
}

func (s *Server) childLocked(parent *node, name string, lowerHidden bool) *node {
	c := parent.children[name]
	if c == nil {
		c = &node{id: s.nextID, parent: parent, name: name}
		s.nextID++
		s.nodes[c.id] = c
		parent.setChild(name, c)
	}
	c.lowerHidden = lowerHidden
	c.lookups++
	return c
}

// detachLocked removes n from its parent: its name now means something else.
func (s *Server) detachLocked(n *node) {
	if n == nil || n.parent == nil {
		return
	}
	if n.parent.children[n.name] == n {
		delete(n.parent.children, n.name)
	}
	p := n.parent
	n.parent = nil
	n.detached = true
	s.maybeFreeLocked(n)
	s.maybeFreeLocked(p)
}

func (s *Server) maybeFreeLocked(n *node) {
	for n != nil && n != s.root && n.lookups == 0 && len(n.children) == 0 && n.handles == 0 && n.trans == nil {
		delete(s.nodes, n.id)
		p := n.parent
		if p != nil && p.children[n.name] == n {
			delete(p.children, n.name)
		}
		n.parent = nil
		n = p
	}
}

// moveLocked renames n to (np, name), detaching whatever was there.
func (s *Server) moveLocked(n *node, np *node, name string) {
	if old := np.children[name]; old != nil && old != n {
		s.detachLocked(old)
	}
	op := n.parent
	if op != nil && op.children[n.name] == n {
		delete(op.children, n.name)
	}
	n.parent, n.name = np, name
	np.setChild(name, n)
	if op != nil {
		s.maybeFreeLocked(op)
	}
}

func setHiddenLocked(n *node) {
	n.lowerHidden = true
	for _, c := range n.children {
		setHiddenLocked(c)
	}
}

// ---- errors ----

func errno(err error) error {
	if err == nil {
		return nil
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return syscall.EIO
}

func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') || strings.ContainsRune(name, 0) {
		return syscall.EINVAL
	}
	if len(name) > 255 {
		return syscall.ENAMETOOLONG
	}
	return nil
}

// hiddenName reports names the server keeps for itself in a directory.
func (s *Server) hiddenName(name string) bool {
	if name == transTable {
		return true
	}
	return s.cow && strings.HasPrefix(name, whPrefix)
}

// callerOf returns the caller a context carries.
func callerOf(ctx context.Context) (proto.Caller, bool) { return proto.CallerFrom(ctx) }

// Path returns the slash-separated path of a node beneath the served root
// ("" for the root itself), for servers that wrap this one and decide by
// name (see examples/confguard).
func (s *Server) Path(id proto.NodeID) (string, error) {
	n, err := s.getNode(id)
	if err != nil {
		return "", err
	}
	comps, err := s.pathOf(n)
	if err != nil {
		return "", err
	}
	return strings.Join(comps, "/"), nil
}
