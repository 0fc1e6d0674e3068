package fsbridge

import (
	"container/list"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"herd/proto"
)

// Directory capabilities (proto.OpenDirCap), gVisor's "directfs" idea: a
// server may hand the bridge a read-only descriptor of a directory, with
// the promise that every regular child the bridge looked up there is, for
// reading, what openat(dir, name, O_RDONLY|O_NOFOLLOW) gives. The bridge
// then serves a read-only open of such a child itself: no Open and no
// Release round trip, which is most of what open+close and cat cost when
// the server is another process. (Spare opens, spares.go, only help for
// files opened again within seconds, and only for a thousand of them.)
//
// The promise holds until the server revokes it: any InvalNode of the
// directory or of a child the bridge knows, any InvalEntry in the
// directory. The bridge's own changes do not wait for the notification:
// every call that may change a child or the directory drops the
// capability before it is sent (capsChanging), and a capability fetched
// while a change was under way is not kept (capGen). And each open checks
// that the file it got is a regular file with the st_ino the server gave
// the child (a rename behind the bridge's back, a stale name): anything
// else is closed and the open goes to the server.
//
// Nothing escapes: the name is one the server looked up in that directory
// (one component, never "." or ".."), resolved with openat2
// RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS (a symlink put there meanwhile
// fails the open). Capabilities are asked for only from servers whose
// notifications the bridge relies on (the root server), at the first
// read-only open of a regular child of a directory, and kept for at most
// maxCaps directories (least recently used go first): one descriptor each
// here and one in the server.

const maxCaps = 2048

// dirCap is a directory capability.
type dirCap struct {
	dir  *inode
	file *os.File
	h    proto.HandleID // the server's handle of the open: released when the cap goes
	el   *list.Element
	refs int // the table's reference plus openers using file; b.mu
}

// capTable is the bridge's capabilities, least recently used first.
type capTable struct {
	lru *list.List
	// epoch counts drops of every capability (a refresh, the end): a
	// capability fetched across one is not kept.
	epoch uint64
	// For tests and benchmarks: opens served through a capability, and
	// capabilities asked for.
	opens, fetches, prefetches atomic.Int64
	lastOpen                   atomic.Int64 // unix ns of the last read-only open of a regular file
}

// dropCaps drops the capabilities of directories about to change.
func (b *Bridge) dropCaps(dirs ...*inode) {
	var drop []*dirCap
	b.mu.Lock()
	for _, d := range dirs {
		if c := b.dropCapLocked(d); c != nil {
			drop = append(drop, c)
		}
	}
	b.mu.Unlock()
	for _, c := range drop {
		b.unrefCap(c)
	}
}

// named records where the kernel found in: name in directory p.
func (b *Bridge) named(in, p *inode, name string) {
	b.mu.Lock()
	b.dropDentryLocked(in)
	in.parent, in.name = p, name
	b.dentries[attachment{p.id, name}] = in
	b.mu.Unlock()
}

// capOf returns a reference to the capability of n's parent for opening
// n, or nil. b.mu held.
func (b *Bridge) capForLocked(n *inode) (*dirCap, *inode) {
	p := n.parent
	if p == nil || n.name == "" || p.conn != n.conn || b.inodes[p.id] != p {
		return nil, nil
	}
	if c := p.cap; c != nil {
		c.refs++
		b.caps.lru.MoveToBack(c.el)
		return c, p
	}
	return nil, p
}

// unrefCap gives back a reference; the last one closes the descriptor and
// releases the server's handle.
func (b *Bridge) unrefCap(c *dirCap) {
	b.mu.Lock()
	c.refs--
	last := c.refs == 0
	b.mu.Unlock()
	if last {
		b.closeCap(c)
	}
}

func (b *Bridge) closeCap(c *dirCap) {
	c.file.Close()
	conn, h := c.dir.conn, c.h
	if !conn.dead.Load() {
		b.forget.push(func() { conn.fs.Release(b.bgCtx(), h) })
	}
}

// dropCapLocked voids d's capability and any being fetched; it returns the
// capability if the caller must unref it (after unlocking). A refusal
// (capNo) stays: what a child's change does to a directory the server
// would not give one for (a merged one) does not make it give one; a
// notification of the directory itself clears it. b.mu held.
func (b *Bridge) dropCapLocked(d *inode) *dirCap {
	if d == nil {
		return nil
	}
	d.capGen++
	c := d.cap
	if c == nil {
		return nil
	}
	d.cap = nil
	b.caps.lru.Remove(c.el)
	return c
}

// capsChanging drops the capabilities a change to these nodes may void:
// each node's own (a directory) and its parent's (a child). Called before
// the change is sent to the server.
func (b *Bridge) capsChanging(nodes ...*inode) {
	var drop []*dirCap
	b.mu.Lock()
	for _, n := range nodes {
		if n == nil {
			continue
		}
		if c := b.dropCapLocked(n); c != nil {
			drop = append(drop, c)
		}
		if c := b.dropCapLocked(n.parent); c != nil {
			drop = append(drop, c)
		}
	}
	b.mu.Unlock()
	for _, c := range drop {
		b.unrefCap(c)
	}
}

// dropAllCaps drops every capability (a directory moved: names below it
// changed).
func (b *Bridge) dropAllCaps() {
	b.mu.Lock()
	drop := b.takeAllCapsLocked()
	b.mu.Unlock()
	for _, c := range drop {
		b.unrefCap(c)
	}
}

// takeAllCapsLocked empties the table; the caller unrefs what it returns.
func (b *Bridge) takeAllCapsLocked() []*dirCap {
	b.caps.epoch++
	if b.caps.lru == nil {
		return nil
	}
	var out []*dirCap
	for e := b.caps.lru.Front(); e != nil; e = b.caps.lru.Front() {
		c := e.Value.(*dirCap)
		b.caps.lru.Remove(e)
		c.dir.cap = nil
		c.dir.capGen++
		out = append(out, c)
	}
	return out
}

// directOpen serves a read-only open of regular file n through its
// parent's capability, asking the server for one first if need be. It
// returns nil when it cannot (the caller asks the server to open n).
func (b *Bridge) directOpen(n *inode, flags uint32, h *fuse.InHeader) *os.File {
	if !n.conn.notifies() || !reusableFlags(flags) {
		return nil
	}
	b.mu.Lock()
	if n.mode&syscall.S_IFMT != syscall.S_IFREG || n.parent == nil {
		b.mu.Unlock()
		return nil
	}
	if b.caps.lru == nil {
		b.caps.lru = list.New()
	}
	b.caps.lastOpen.Store(time.Now().UnixNano())
	c, p := b.capForLocked(n)
	if c == nil && p != nil && p.capFetch != nil {
		// Being fetched (prefetchCap): wait for it rather than ask twice.
		ch := p.capFetch
		b.mu.Unlock()
		<-ch
		b.mu.Lock()
		c, p = b.capForLocked(n)
	}
	name, ino := n.name, n.ino
	var gen, epoch uint64
	fetch := false
	if c == nil && p != nil {
		gen, epoch, fetch = b.startFetchLocked(p)
	}
	b.mu.Unlock()
	if !validName(name) {
		if c != nil {
			b.unrefCap(c)
		}
		if fetch {
			b.endFetch(p)
		}
		return nil
	}
	if c == nil {
		if !fetch {
			return nil
		}
		if c = b.fetchCap(p, gen, epoch, h); c == nil {
			return nil
		}
	}
	defer b.unrefCap(c)
	how := unix.OpenHow{
		Flags:   uint64(unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_CLOEXEC | int(flags)&(unix.O_NONBLOCK|unix.O_NOATIME)),
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	fd, err := unix.Openat2(int(c.file.Fd()), name, &how)
	if err != nil {
		return nil
	}
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Ino != ino {
		unix.Close(fd)
		return nil
	}
	return os.NewFile(uintptr(fd), name)
}

// validName: one path component the server could have looked up.
func validName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsRune(name, '/') && !strings.ContainsRune(name, 0)
}

// fetchCap asks the server for a capability on directory p (an Open of
// it); gen and epoch are p's capGen and the table's epoch when the caller
// saw p without one. It returns a reference, or nil when the server did not
// give one (remembered until p changes) or p changed meanwhile.
func (b *Bridge) fetchCap(p *inode, gen, epoch uint64, h *fuse.InHeader) *dirCap {
	defer b.endFetch(p)
	ctx, done := b.ctx(p.conn, h)
	defer done()
	b.caps.fetches.Add(1)
	res, err := p.conn.fs.Open(ctx, p.node, syscall.O_RDONLY|syscall.O_DIRECTORY)
	if err != nil || res.Flags&proto.OpenDirCap == 0 || res.File == nil {
		if err == nil {
			if res.File != nil {
				res.File.Close()
			}
			conn, fh := p.conn, res.Handle
			b.forget.push(func() { conn.fs.Release(b.bgCtx(), fh) })
		}
		// Not for this directory (a merged one, a server without
		// capabilities): do not ask again until a notification about the
		// directory itself. (Kept even if a child changed meanwhile: that
		// does not make the server give one; at worst one is missed.)
		b.mu.Lock()
		p.capNo = true
		b.mu.Unlock()
		return nil
	}
	c := &dirCap{dir: p, file: res.File, h: res.Handle, refs: 2}
	var evict []*dirCap
	b.mu.Lock()
	if p.capGen != gen || b.caps.epoch != epoch || p.cap != nil || b.inodes[p.id] != p || b.dying.Load() {
		// Changed meanwhile (or another open fetched one first): this one
		// may already be stale.
		b.mu.Unlock()
		b.closeCap(c)
		return nil
	}
	p.cap = c
	c.el = b.caps.lru.PushBack(c)
	for b.caps.lru.Len() > maxCaps {
		old := b.caps.lru.Front().Value.(*dirCap)
		evict = append(evict, b.dropCapLocked(old.dir))
	}
	b.mu.Unlock()
	for _, e := range evict {
		b.unrefCap(e)
	}
	return c
}

// startFetchLocked claims the fetch of p's capability: false when p has
// one, was refused one, or is being fetched. The caller calls fetchCap
// (which ends the claim) with the gen and epoch returned. b.mu held.
func (b *Bridge) startFetchLocked(p *inode) (gen, epoch uint64, ok bool) {
	if p.cap != nil || p.capNo || p.capFetch != nil {
		return 0, 0, false
	}
	p.capFetch = make(chan struct{})
	return p.capGen, b.caps.epoch, true
}

// endFetch ends a claim of startFetchLocked, waking those who wait.
func (b *Bridge) endFetch(p *inode) {
	b.mu.Lock()
	if p.capFetch != nil {
		close(p.capFetch)
		p.capFetch = nil
	}
	b.mu.Unlock()
}

// prefetchWindow: while files are being opened (tar, cat, a build), a
// directory's capability is asked for as soon as its listing is, on the
// side, so the first open in it finds it there instead of waiting for a
// round trip. A walk that opens nothing (find, stat) asks for none.
const prefetchWindow = time.Second

// prefetchCap starts fetching directory n's capability in the
// background, if files were opened lately and n has none.
func (b *Bridge) prefetchCap(n *inode, h *fuse.InHeader) {
	if !n.conn.notifies() || time.Now().UnixNano()-b.caps.lastOpen.Load() > int64(prefetchWindow) {
		return
	}
	b.mu.Lock()
	if b.caps.lru == nil {
		b.caps.lru = list.New()
	}
	gen, epoch, ok := b.startFetchLocked(n)
	b.mu.Unlock()
	if !ok {
		return
	}
	hdr := *h
	b.caps.prefetches.Add(1)
	go func() {
		if c := b.fetchCap(n, gen, epoch, &hdr); c != nil {
			b.unrefCap(c)
		}
	}()
}

// setIno records n's st_ino from fresh attributes (a copy-up changes it).
func (b *Bridge) setIno(n *inode, ino uint64) {
	b.mu.Lock()
	n.ino = ino
	b.mu.Unlock()
}
