package fsbridge

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"herd/proto"
)

// conn is one server the bridge talks to: the root server, or a translator
// reached through a redirect.
type conn struct {
	fs   proto.FileSystem
	plus proto.DirPlusReader // nil when the server has no READDIRPLUS
	// noPlus: the server answered ENOSYS to ReadDirPlus (a proto client
	// always offers the call; the server behind it may not serve it).
	noPlus atomic.Bool
	socket string // translator's socket; "" for the root server
	idx    uint64 // mixed into st_ino so translators' inodes do not collide
	// hasDeadlines: fs is a connection whose calls carry their own
	// deadlines (a proto client); other servers get one from the bridge.
	hasDeadlines bool
	dead         atomic.Bool
	owned        bool // the bridge dialed it and closes it
	translator   bool // the root server is a translator (Options.Translator)
}

type doner interface {
	Done() <-chan struct{}
}

func (b *Bridge) newConn(fs proto.FileSystem, socket string) *conn {
	c := &conn{fs: fs, socket: socket}
	c.plus, _ = fs.(proto.DirPlusReader)
	_, c.hasDeadlines = fs.(doner)
	b.mu.Lock()
	c.idx = b.nconns
	b.nconns++
	b.mu.Unlock()
	return c
}

func (c *conn) close() {
	c.dead.Store(true)
	if cl, ok := c.fs.(interface{ Close() error }); ok && c.owned {
		cl.Close()
	}
}

// watch marks c dead when its connection is lost: its nodes answer EIO from
// then on. For the root server ServerGone is called; for a translator the
// names it was attached at are invalidated, so the next lookup asks the
// parent server again (which restarts a passive translator).
func (b *Bridge) watch(c *conn) {
	d, ok := c.fs.(doner)
	if !ok {
		return
	}
	go func() {
		select {
		case <-d.Done():
		case <-b.done:
			return
		}
		c.dead.Store(true)
		if c == b.root {
			b.gone.Do(func() {
				if b.opts.ServerGone != nil {
					var err error
					if e, ok := c.fs.(interface{ Err() error }); ok {
						err = e.Err()
					}
					if err == nil {
						err = syscall.EIO
					}
					b.opts.ServerGone(err)
				}
			})
			return
		}
		b.translatorGone(c)
	}()
}

func (b *Bridge) translatorGone(c *conn) {
	b.mu.Lock()
	if b.conns[c.socket] == c {
		delete(b.conns, c.socket)
	}
	var at []attachment
	var sps []*spare
	var unders []*underNode
	for _, in := range b.inodes {
		if in.conn == c {
			for a := range in.attached {
				at = append(at, a)
			}
			if in.spare != nil {
				sps = append(sps, b.unlinkSpare(in.spare))
			}
			if in.under != nil {
				unders = append(unders, in.under)
				in.under = nil
			}
		}
	}
	b.mu.Unlock()
	b.releaseSpares(sps) // the connection is dead: this only closes the files
	for _, u := range unders {
		b.forgetUnder(u)
	}
	for _, a := range at {
		b.notes.push(func() { b.srv.EntryNotify(a.parent, a.name) })
	}
	c.close()
}

// translator returns the connection to the translator listening on socket,
// dialing it the first time.
func (b *Bridge) translator(socket string) (*conn, error) {
	b.mu.Lock()
	c := b.conns[socket]
	b.mu.Unlock()
	if c != nil && !c.dead.Load() {
		return c, nil
	}
	var fs proto.FileSystem
	var err error
	n := &Notifier{}
	if b.opts.Dial != nil {
		fs, err = b.opts.Dial(socket)
	} else {
		fs, err = defaultDial(socket, n)
	}
	if err != nil {
		return nil, err
	}
	c = b.newConn(fs, socket)
	c.owned = true
	n.attach(b, c)
	b.mu.Lock()
	if old := b.conns[socket]; old != nil && !old.dead.Load() {
		// Another lookup dialed it at the same time: use that one.
		b.mu.Unlock()
		c.close()
		return old, nil
	}
	b.conns[socket] = c
	b.mu.Unlock()
	b.watch(c)
	return c, nil
}

// underNode is a lookup held on a parent server's node under a translator.
type underNode struct {
	conn *conn
	node proto.NodeID
	n    uint64
}

type nodeKey struct {
	c    *conn
	node proto.NodeID
}

// attachment is a name in a kernel directory where a translator's root
// appears.
type attachment struct {
	parent uint64
	name   string
}

// inode is what the kernel knows as one node id.
type inode struct {
	id   uint64
	conn *conn
	node proto.NodeID
	mode uint32
	// kernel counts the lookups the kernel holds (replies that carried id);
	// server counts the lookups the bridge holds on the server. They differ
	// because a READDIRPLUS entry may be handed out more than once. When the
	// kernel forgets its last, the bridge gives the server all of its.
	kernel, server uint64
	attached       map[attachment]struct{} // translator roots: where they hang
	// under: for a translator's root reached through a redirect, the node
	// the translator sits on, on the parent server, with the lookups the
	// bridge holds there. Translator control (the user.herd.* xattrs) goes
	// to it, as the Hurd sends fsys and settrans calls to the node
	// underneath. Given back when the kernel forgets the inode or the
	// translator's connection dies.
	under *underNode

	subdirs *subdirs     // from its last listing (prefetch.go)
	listing *dirSnapshot // the listing being read (readDir); guarded by Bridge.mu

	link   string // cached symlink target
	linkOK bool

	// Passthrough: the kernel allows one backing file per inode, and no
	// mixing of passthrough and cached opens.
	backingID   int32
	backingRefs int
	backingDev  uint64
	backingIno  uint64
	cachedOpens int
	// staleCache: a notification came while cached opens were live; their
	// reads may refill the page cache with what was there before.
	staleCache bool

	// Directory capabilities (caps.go): where the kernel last found this
	// node (parent, name) and its st_ino, and for a directory its
	// capability; capGen counts changes that void one, capNo says the
	// server gave none (until the next change).
	parent *inode
	name   string
	ino    uint64
	cap    *dirCap
	capGen uint64
	capNo  bool
	// capFetch: a fetch of its capability is under way; closed when done.
	capFetch chan struct{}

	spare *spare // a released read-only open kept for reuse (spares.go)
	// dataGen counts changes to the node's data the bridge made or was
	// asked to drop caches for (writes, setattr, refresh): opens from an
	// older generation are not kept as spares.
	dataGen uint64

	// Cached attributes (attrs.go); writers counts opens for writing.
	attr    proto.Attr
	attrGen uint64
	attrOK  bool
	writers int

	// noCaps: the server said the node has no security.capability when
	// attrGen was noCapsGen (see GetXAttr).
	noCaps    bool
	noCapsGen uint64
}

// get returns the inode the kernel calls id, or an error status: ESTALE
// for an unknown id, EIO when its server is gone.
func (b *Bridge) get(id uint64) (*inode, fuse.Status) {
	if b.dying.Load() {
		return nil, fuse.EIO
	}
	b.mu.Lock()
	in := b.inodes[id]
	b.mu.Unlock()
	if in == nil {
		return nil, fuse.Status(syscall.ESTALE)
	}
	if in.conn.dead.Load() {
		return nil, fuse.EIO
	}
	return in, fuse.OK
}

// add records that the kernel is about to receive e (one server lookup, one
// kernel lookup) and returns its inode.
func (b *Bridge) add(c *conn, e *proto.Entry, serverLookups uint64) *inode {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.addLocked(c, e, serverLookups)
}

// addLocked is add with b.mu held.
func (b *Bridge) addLocked(c *conn, e *proto.Entry, serverLookups uint64) *inode {
	key := nodeKey{c, e.Node}
	in := b.byNode[key]
	if in == nil {
		in = &inode{id: b.nextID, conn: c, node: e.Node}
		b.nextID++
		b.inodes[in.id] = in
		b.byNode[key] = in
	}
	in.mode = e.Attr.Mode
	in.ino = e.Attr.Ino
	in.kernel++
	in.server += serverLookups
	return in
}

// Forget gives back the kernel's lookups; when none are left, the server
// gets back the bridge's.
func (b *Bridge) Forget(id, nlookup uint64) {
	if id == fuse.FUSE_ROOT_ID {
		return
	}
	b.mu.Lock()
	in := b.inodes[id]
	if in == nil {
		b.mu.Unlock()
		return
	}
	if in.kernel > nlookup {
		in.kernel -= nlookup
		b.mu.Unlock()
		return
	}
	delete(b.inodes, id)
	b.dropDentryLocked(in)
	if b.byNode[nodeKey{in.conn, in.node}] == in {
		delete(b.byNode, nodeKey{in.conn, in.node})
	}
	n := in.server
	var sp *spare
	if in.spare != nil {
		sp = b.unlinkSpare(in.spare)
	}
	u := in.under
	in.under = nil
	dc := b.dropCapLocked(in)
	l := in.listing
	in.listing = nil
	b.mu.Unlock()
	if dc != nil {
		b.unrefCap(dc)
	}
	if l != nil {
		l.mu.Lock()
		b.giveBackListing(in.conn, l)
		l.mu.Unlock()
	}
	if sp != nil {
		b.releaseSpares([]*spare{sp})
	}
	if n > 0 && !in.conn.dead.Load() {
		c, node := in.conn, in.node
		b.forget.push(func() { c.fs.Forget(b.bgCtx(), node, n) })
	}
	b.forgetUnder(u)
}

// forgetUnder gives the parent server back the lookups of a node under a
// translator.
func (b *Bridge) forgetUnder(u *underNode) {
	if u == nil || u.n == 0 || u.conn.dead.Load() {
		return
	}
	b.forget.push(func() { u.conn.fs.Forget(b.bgCtx(), u.node, u.n) })
}

// keepUnder records one more lookup of the node under the translator whose
// root is in; a lookup the inode cannot keep goes back at once.
func (b *Bridge) keepUnder(in *inode, c *conn, node proto.NodeID) {
	b.mu.Lock()
	switch {
	case in.under == nil && !in.conn.dead.Load():
		in.under = &underNode{conn: c, node: node, n: 1}
		b.mu.Unlock()
		return
	case in.under != nil && in.under.conn == c && in.under.node == node:
		in.under.n++
		b.mu.Unlock()
		return
	}
	b.mu.Unlock()
	// The same translator's root attached over another node (or its
	// connection already died): keep the first.
	b.forgetUnder(&underNode{conn: c, node: node, n: 1})
}

// controlTarget is where a call about xattr attr on in goes: the node
// under the translator for translator control (user.herd.*), else in.
func (b *Bridge) controlTarget(in *inode, attr string) (*conn, proto.NodeID) {
	if strings.HasPrefix(attr, controlPrefix) {
		b.mu.Lock()
		u := in.under
		b.mu.Unlock()
		if u != nil && !u.conn.dead.Load() {
			return u.conn, u.node
		}
	}
	return in.conn, in.node
}

// controlPrefix names the xattrs of translator control (user.herd.translator,
// .active, .goaway, .options), answered by the server the node lives on.
const controlPrefix = "user.herd."

func (b *Bridge) bgCtx() context.Context {
	return proto.WithCaller(context.Background(), proto.Caller{Uid: b.uid})
}

// Notifier carries a server's invalidations to the kernel's caches.
type Notifier struct {
	mu sync.Mutex
	b  *Bridge
	c  *conn
}

// NewNotifier returns a Notifier for the root server's client; pass it as
// proto.ClientOptions.Notifier and as Options.Notifier.
func NewNotifier() *Notifier { return &Notifier{} }

func (n *Notifier) attach(b *Bridge, c *conn) {
	n.mu.Lock()
	n.b, n.c = b, c
	n.mu.Unlock()
}

func (n *Notifier) target() (*Bridge, *conn) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.b, n.c
}

// InvalNode implements proto.Notifier. The kernel is told from a queue, never
// from the caller's goroutine: a notification can wait for a directory lock
// held by a request that waits for this server's answer.
func (n *Notifier) InvalNode(node proto.NodeID, off, length int64) {
	b, c := n.target()
	if b == nil {
		return
	}
	b.changed()
	b.mu.Lock()
	in := b.byNode[nodeKey{c, node}]
	var id uint64
	var sp *spare
	var dcs [2]*dirCap
	if in != nil {
		id = in.id
		in.linkOK = false
		// Opens made before this must not become spares: their release
		// may come after it (a spare of the lower file, kept after its
		// copy-up, would be reused for as long as it is reused).
		in.dataGen++
		if in.cachedOpens > 0 {
			in.staleCache = true
		}
		if in.spare != nil {
			sp = b.unlinkSpare(in.spare)
		}
		// Revokes a capability on it (a directory), and on its parent
		// (a child changed, e.g. copied up).
		dcs[0], dcs[1] = b.dropCapLocked(in), b.dropCapLocked(in.parent)
		in.capNo = false // it changed: it may be given one now
	}
	b.mu.Unlock()
	for _, dc := range dcs {
		if dc != nil {
			b.unrefCap(dc)
		}
	}
	if sp != nil {
		b.releaseSpares([]*spare{sp})
	}
	if id != 0 {
		b.notes.push(func() { b.srv.InodeNotify(id, off, length) })
	}
}

// InvalEntry implements proto.Notifier.
func (n *Notifier) InvalEntry(parent proto.NodeID, name string) {
	b, c := n.target()
	if b == nil {
		return
	}
	b.changed() // the directory's own attributes changed too
	b.mu.Lock()
	var id uint64
	var dc *dirCap
	if in := b.byNode[nodeKey{c, parent}]; in != nil {
		id = in.id
		dc = b.dropCapLocked(in) // revoked: a name in it changed
	}
	b.mu.Unlock()
	if dc != nil {
		b.unrefCap(dc)
	}
	if id != 0 {
		b.notes.push(func() {
			// The kernel's entry for the name as it is now, not when
			// the notice came: a late notice (of an rmdir) must not
			// drop the entry a later mkdir of the same name made, and
			// with it what was mounted there.
			b.mu.Lock()
			child := b.dentries[attachment{id, name}]
			b.mu.Unlock()
			if child != nil && b.entryHolds(c, parent, id, name, child) {
				// The kernel's entry is still right (typically this
				// notice echoes a change made through this mount, and
				// the kernel has the answer already): dropping it
				// would detach what is mounted on it. Only the
				// directory changed.
				b.srv.InodeNotify(id, 0, 0)
				return
			}
			b.srv.EntryNotify(id, name)
			// The kernel drops a cached listing (FOPEN_CACHE_DIR) on an
			// entry notification only when it has a dentry for the
			// name; a name it never saw (created elsewhere) needs the
			// directory's pages dropped.
			b.srv.InodeNotify(id, 0, 0)
		})
	}
}

// queue runs functions one at a time, in order, on its own goroutine; push
// never blocks.
type queue struct {
	mu     sync.Mutex
	cond   *sync.Cond
	items  []func()
	closed bool
}

func newQueue() *queue {
	q := &queue{}
	q.cond = sync.NewCond(&q.mu)
	return q
}

func (q *queue) push(f func()) {
	q.mu.Lock()
	if !q.closed {
		q.items = append(q.items, f)
		q.cond.Signal()
	}
	q.mu.Unlock()
}

// drain waits until everything pushed so far has run, or for at most
// limit (a queued notification may wait for a kernel lock that a request
// holds while it waits for a server).
func (q *queue) drain(limit time.Duration) {
	done := make(chan struct{})
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	q.items = append(q.items, func() { close(done) })
	q.cond.Signal()
	q.mu.Unlock()
	select {
	case <-done:
	case <-time.After(limit):
	}
}

func (q *queue) close() {
	q.mu.Lock()
	q.closed = true
	q.cond.Broadcast()
	q.mu.Unlock()
}

func (q *queue) run() {
	for {
		q.mu.Lock()
		for len(q.items) == 0 && !q.closed {
			q.cond.Wait()
		}
		if q.closed {
			q.items = nil
			q.mu.Unlock()
			return
		}
		items := q.items
		q.items = nil
		q.mu.Unlock()
		for _, f := range items {
			f()
		}
	}
}
