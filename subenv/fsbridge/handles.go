package fsbridge

import (
	"errors"
	"log"
	"os"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"herd/proto"
)

var logger = log.New(os.Stderr, "", log.LstdFlags)

// handle is an open file or directory, under the number the kernel uses.
type handle struct {
	conn *conn
	in   *inode
	h    proto.HandleID

	// file is the backing descriptor the server handed over: reads and
	// writes go to it directly (or, with passthrough, the kernel does).
	file        *os.File
	resFlags    uint32 // the server's OpenResult.Flags
	flags       uint32 // the open's flags
	passthrough bool
	cached      bool // counted in in.cachedOpens
	writer      bool // counted in in.writers
	write       bool // opened for writing
	// direct: opened by the bridge through a directory capability
	// (caps.go); the server holds no handle for it.
	direct bool
	// gen is the inode's dataGen when the open was made: an open from
	// before a change must not become a spare after it (spares.go).
	gen uint64

	mu    sync.Mutex
	dirty bool // protocol writes since the last flush
}

func (h *handle) closeFile() {
	if h.file != nil {
		h.file.Close()
		h.file = nil
	}
}

func (b *Bridge) handle(fh uint64) *handle {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.handles[fh]
}

func (b *Bridge) addHandle(h *handle) uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	fh := b.nextFh
	b.nextFh++
	b.handles[fh] = h
	return fh
}

// getHandle returns the open file fh, or EIO when its server is gone.
func (b *Bridge) getHandle(fh uint64) (*handle, fuse.Status) {
	h := b.handle(fh)
	if h == nil {
		return nil, fuse.EBADF
	}
	if h.conn.dead.Load() || b.dying.Load() {
		return nil, fuse.EIO
	}
	return h, fuse.OK
}

func isWrite(flags uint32) bool {
	return flags&syscall.O_ACCMODE != syscall.O_RDONLY
}

// setupOpen makes the kernel-facing side of an open: cache flags, and the
// backing file's use (passthrough, or the bridge's own pread/pwrite).
func (b *Bridge) setupOpen(n *inode, h *handle, res *proto.OpenResult, out *fuse.OpenOut) fuse.Status {
	if res.Flags&proto.OpenKeepCache != 0 {
		out.OpenFlags |= fuse.FOPEN_KEEP_CACHE
	}
	direct := res.Flags&proto.OpenDirectIO != 0
	if direct {
		out.OpenFlags |= fuse.FOPEN_DIRECT_IO
	}
	h.file = res.File
	st := b.passthrough(n, h, out)
	if !st.Ok() {
		return st
	}
	if h.write {
		b.mu.Lock()
		n.writers++
		b.mu.Unlock()
		h.writer = true
		b.changed()
	}
	if h.file != nil || !h.write {
		// Flush has nothing to do for this handle (see Flush): spare the
		// kernel the round trip on every close.
		out.OpenFlags |= fuse.FOPEN_NOFLUSH
	}
	switch {
	case h.passthrough:
		b.opensPassthrough.Add(1)
	case h.file != nil:
		b.opensFD.Add(1)
	default:
		b.opensProto.Add(1)
	}
	if !h.passthrough && !direct {
		// The kernel puts the inode in cached mode; it then refuses
		// passthrough opens until this one is released.
		b.mu.Lock()
		if n.staleCache {
			// An open from before the last change may have put old
			// data back in the page cache after its invalidation: do
			// not keep it, until no such open is left.
			out.OpenFlags &^= fuse.FOPEN_KEEP_CACHE
			if n.cachedOpens == 0 {
				n.staleCache = false
			}
		}
		n.cachedOpens++
		b.mu.Unlock()
		h.cached = true
	}
	return fuse.OK
}

// passthrough hands h's backing file to the kernel, which then reads and
// writes it without asking the bridge. The kernel allows one backing file
// per inode, and no mixing with cached opens; it refuses (EPERM) unless the
// bridge is root in the initial user namespace, and the bridge stops trying
// after that.
func (b *Bridge) passthrough(n *inode, h *handle, out *fuse.OpenOut) fuse.Status {
	b.mu.Lock()
	defer b.mu.Unlock()
	if n.backingRefs > 0 {
		// Every open of a passthrough inode must use the same backing
		// file: the same file or refuse (never write to another one, such
		// as a lower layer a copy-up replaced).
		if h.file == nil || !sameFile(h.file, n.backingDev, n.backingIno) {
			return fuse.Status(syscall.ETXTBSY)
		}
		n.backingRefs++
		h.passthrough = true
		out.OpenFlags &^= fuse.FOPEN_KEEP_CACHE // refused with passthrough
		out.OpenFlags |= fuse.FOPEN_PASSTHROUGH
		out.BackingID = n.backingID
		return fuse.OK
	}
	if !b.opts.Passthrough || b.noPassthrough.Load() || h.file == nil || n.cachedOpens > 0 ||
		out.OpenFlags&fuse.FOPEN_DIRECT_IO != 0 {
		return fuse.OK
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(h.file.Fd()), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fuse.OK
	}
	id, errno := b.srv.RegisterBackingFd(&fuse.BackingMap{Fd: int32(h.file.Fd())})
	if errno != 0 {
		if errno != syscall.EMFILE && errno != syscall.ENFILE {
			// EPERM in a user namespace, ENOTTY/EINVAL/EOPNOTSUPP on
			// kernels without it: do not ask again.
			b.noPassthrough.Store(true)
			b.logf("passthrough refused (%v); reading backing files directly", errno)
		}
		return fuse.OK
	}
	n.backingID, n.backingRefs = id, 1
	n.backingDev, n.backingIno = uint64(st.Dev), st.Ino
	h.passthrough = true
	out.OpenFlags &^= fuse.FOPEN_KEEP_CACHE // refused with passthrough
	out.OpenFlags |= fuse.FOPEN_PASSTHROUGH
	out.BackingID = id
	return fuse.OK
}

func sameFile(f *os.File, dev, ino uint64) bool {
	var st unix.Stat_t
	if unix.Fstat(int(f.Fd()), &st) != nil {
		return false
	}
	return uint64(st.Dev) == dev && st.Ino == ino
}

func (b *Bridge) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	n, st := b.get(in.NodeId)
	if !st.Ok() {
		return st
	}
	ctx, done := b.ctx(n.conn, &in.InHeader)
	defer done()
	var res proto.OpenResult
	gen := b.dataGenOf(n)
	direct := false
	if sp := b.spareFor(n, in.Flags); sp != nil {
		b.opensSpare.Add(1)
		res = proto.OpenResult{Handle: sp.h, File: sp.file, Flags: sp.resFlags}
	} else if f := b.directOpen(n, in.Flags, &in.InHeader); f != nil {
		// No round trip: the server's capability on the parent says this
		// is the file its Open would give (caps.go).
		b.caps.opens.Add(1)
		res = proto.OpenResult{File: f, Flags: proto.OpenKeepCache}
		direct = true
	} else {
		if isWrite(in.Flags) || in.Flags&syscall.O_TRUNC != 0 {
			b.capsChanging(n) // a write open may copy it up
		}
		var err error
		res, err = n.conn.fs.Open(ctx, n.node, in.Flags)
		if err != nil {
			return errno(err)
		}
	}
	h := &handle{conn: n.conn, in: n, h: res.Handle, write: isWrite(in.Flags), flags: in.Flags, resFlags: res.Flags, gen: gen, direct: direct}
	if st := b.setupOpen(n, h, &res, out); !st.Ok() {
		h.closeFile()
		if !direct {
			n.conn.fs.Release(ctx, res.Handle)
		}
		return st
	}
	out.Fh = b.addHandle(h)
	return fuse.OK
}

// spareFor returns a spare open of n that serves an open with flags, and
// drops n's spare when the open may change the file.
func (b *Bridge) spareFor(n *inode, flags uint32) *spare {
	if reusableFlags(flags) {
		return b.takeSpare(n)
	}
	b.dropSpare(n)
	return nil
}

func (b *Bridge) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	p, st := b.get(in.NodeId)
	if !st.Ok() {
		return st
	}
	ctx, done := b.ctx(p.conn, &in.InHeader)
	defer done()
	b.dropCaps(p)
	b.changed()
	e, res, err := p.conn.fs.Create(ctx, p.node, name, in.Flags, in.Mode)
	b.changed()
	if err != nil {
		return errno(err)
	}
	if e.Redirect != nil {
		// Creating a file never lands on a translator; do not follow.
		p.conn.fs.Release(ctx, res.Handle)
		if res.File != nil {
			res.File.Close()
		}
		p.conn.fs.Forget(ctx, e.Node, 1)
		return fuse.EIO
	}
	n := b.add(p.conn, &e, 1)
	b.named(n, p, name)
	h := &handle{conn: p.conn, in: n, h: res.Handle, write: isWrite(in.Flags), flags: in.Flags, resFlags: res.Flags}
	if st := b.setupOpen(n, h, &res, &out.OpenOut); !st.Ok() {
		h.closeFile()
		p.conn.fs.Release(ctx, res.Handle)
		// The kernel never hears of the entry: give the lookup back.
		b.Forget(n.id, 1)
		return st
	}
	b.fillEntry(p.conn, n, &e, &out.EntryOut)
	out.Fh = b.addHandle(h)
	return fuse.OK
}

func (b *Bridge) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	h, st := b.getHandle(in.Fh)
	if !st.Ok() {
		return nil, st
	}
	if len(buf) > int(in.Size) {
		buf = buf[:in.Size]
	}
	if f := h.file; f != nil {
		// The server gave us the real file: read it, no round trip. go-fuse
		// splices from it into /dev/fuse where it can (no copy through
		// the bridge), and preads otherwise. The descriptor outlives the
		// request: the kernel releases a file only after its reads.
		return fuse.ReadResultFd(f.Fd(), int64(in.Offset), int(in.Size)), fuse.OK
	}
	ctx, done := b.ctx(h.conn, &in.InHeader)
	defer done()
	data, err := h.conn.fs.Read(ctx, h.h, int64(in.Offset), int(in.Size))
	if err != nil {
		return nil, errno(err)
	}
	return fuse.ReadResultData(data), fuse.OK
}

func preadFull(f *os.File, buf []byte, off int64) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := unix.Pread(int(f.Fd()), buf[n:], off+int64(n))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, err
		}
		if m == 0 {
			break
		}
		n += m
	}
	return n, nil
}

func (b *Bridge) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	h, st := b.getHandle(in.Fh)
	if !st.Ok() {
		return 0, st
	}
	if f := h.file; f != nil {
		n := 0
		for n < len(data) {
			m, err := unix.Pwrite(int(f.Fd()), data[n:], int64(in.Offset)+int64(n))
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				if n > 0 {
					break
				}
				return 0, errno(err)
			}
			n += m
		}
		return uint32(n), fuse.OK
	}
	ctx, done := b.ctx(h.conn, &in.InHeader)
	defer done()
	n, err := h.conn.fs.Write(ctx, h.h, int64(in.Offset), data)
	if err != nil {
		return 0, errno(err)
	}
	h.mu.Lock()
	h.dirty = true
	h.mu.Unlock()
	return uint32(n), fuse.OK
}

// Flush (each close of a descriptor) syncs protocol-backed writes, so a
// write error the server met late is seen by close. Writes to a backing
// file already are where they belong.
func (b *Bridge) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	h, st := b.getHandle(in.Fh)
	if !st.Ok() {
		return st
	}
	h.mu.Lock()
	dirty := h.dirty
	h.dirty = false
	h.mu.Unlock()
	if !dirty || h.file != nil || !h.write {
		return fuse.OK
	}
	ctx, done := b.ctx(h.conn, &in.InHeader)
	defer done()
	return errno(h.conn.fs.Fsync(ctx, h.h, false))
}

func (b *Bridge) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	h, st := b.getHandle(in.Fh)
	if !st.Ok() {
		return st
	}
	datasync := in.FsyncFlags&1 != 0
	if f := h.file; f != nil {
		if datasync {
			return errno(unix.Fdatasync(int(f.Fd())))
		}
		return errno(unix.Fsync(int(f.Fd())))
	}
	ctx, done := b.ctx(h.conn, &in.InHeader)
	defer done()
	return errno(h.conn.fs.Fsync(ctx, h.h, datasync))
}

func (b *Bridge) Fallocate(cancel <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	h, st := b.getHandle(in.Fh)
	if !st.Ok() {
		return st
	}
	if f := h.file; f != nil {
		return errno(unix.Fallocate(int(f.Fd()), in.Mode, int64(in.Offset), int64(in.Length)))
	}
	ctx, done := b.ctx(h.conn, &in.InHeader)
	defer done()
	return errno(h.conn.fs.Fallocate(ctx, h.h, in.Mode, int64(in.Offset), int64(in.Length)))
}

func (b *Bridge) Lseek(cancel <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	h, st := b.getHandle(in.Fh)
	if !st.Ok() {
		return st
	}
	if in.Whence != unix.SEEK_DATA && in.Whence != unix.SEEK_HOLE {
		return fuse.EINVAL
	}
	if f := h.file; f != nil {
		off, err := unix.Seek(int(f.Fd()), int64(in.Offset), int(in.Whence))
		if err != nil {
			return errno(err)
		}
		out.Offset = uint64(off)
		return fuse.OK
	}
	ctx, done := b.ctx(h.conn, &in.InHeader)
	defer done()
	off, err := h.conn.fs.Lseek(ctx, h.h, int64(in.Offset), int(in.Whence))
	if err != nil {
		return errno(err)
	}
	out.Offset = uint64(off)
	return fuse.OK
}

func (b *Bridge) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	b.mu.Lock()
	h := b.handles[in.Fh]
	delete(b.handles, in.Fh)
	var unregister int32 = -1
	if h != nil {
		n := h.in
		if h.cached {
			n.cachedOpens--
		}
		if h.writer {
			n.writers--
		}
		if h.passthrough {
			n.backingRefs--
			if n.backingRefs == 0 {
				unregister = n.backingID
			}
		}
	}
	b.mu.Unlock()
	if h == nil {
		return
	}
	if h.writer {
		b.changed() // what was written shows in the next GETATTR
	}
	if unregister >= 0 {
		b.srv.UnregisterBackingFd(unregister)
	}
	if h.direct {
		h.closeFile() // the server never heard of it
		return
	}
	if reusableFlags(h.flags) && b.putSpare(h.in, h) {
		return
	}
	h.closeFile()
	if h.conn.dead.Load() {
		return
	}
	ctx, done := b.ctx(h.conn, &in.InHeader)
	defer done()
	h.conn.fs.Release(ctx, h.h)
}

// dirSnapshot is a directory listing taken at the first READDIR from offset
// 0; later offsets are indexes into it, so a listing is consistent however
// the kernel pages it.
type dirSnapshot struct {
	mu        sync.Mutex
	ents      []proto.DirEntry
	plus      []proto.DirEntryPlus // when the server does READDIRPLUS
	delivered []bool               // plus entries whose lookup the kernel got
	gen       uint64               // attrGen before the listing: its attributes may be cached while it holds
	loaded    bool                 // taken from the server
}

// OpenDir is answered ENOSYS, once: the kernel then opens directories
// itself, with no OPENDIR or RELEASEDIR round trip (FUSE's no_opendir), and
// keeps their listings in its page cache (FOPEN_KEEP_CACHE|FOPEN_CACHE_DIR,
// the flags the bridge gave anyway) until the bridge drops them: on a
// server's notification (inodes.go), or at once for a server that does not
// notify (readDir). A walk costs one round trip less per directory, cold or
// warm (bench/files.sh: cold stat 0.18-0.26 s -> 0.15-0.18 s, warm
// 0.054-0.064 s -> 0.044-0.052 s).
func (b *Bridge) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	b.dirOpens.Add(1)
	return fuse.ENOSYS
}

// listing returns directory n's listing for a READDIR at offset: a new one
// at offset 0 (a reader starting over, or the kernel filling its cache),
// else the one being read. The one it replaces gives back its lookups. Nil
// when n is no directory.
func (b *Bridge) listing(n *inode, offset uint64) *dirSnapshot {
	b.mu.Lock()
	if n.mode&syscall.S_IFMT != syscall.S_IFDIR {
		b.mu.Unlock()
		return nil
	}
	old := n.listing
	d := old
	if offset == 0 || d == nil {
		d = &dirSnapshot{}
		n.listing = d
	}
	b.mu.Unlock()
	if old != nil && old != d {
		old.mu.Lock()
		b.giveBackListing(n.conn, old)
		old.mu.Unlock()
	}
	return d
}

// dropListing lets go of n's listing d once read to its end. d.mu held.
func (b *Bridge) dropListing(n *inode, d *dirSnapshot) {
	b.mu.Lock()
	if n.listing == d {
		n.listing = nil
	}
	b.mu.Unlock()
	b.giveBackListing(n.conn, d)
}

// giveBackListing returns the server lookups of the entries of d the kernel
// never got. d.mu held.
func (b *Bridge) giveBackListing(c *conn, d *dirSnapshot) {
	for i := range d.plus {
		if d.delivered[i] {
			continue
		}
		d.delivered[i] = true
		if node := d.plus[i].Entry.Node; node != 0 && !c.dead.Load() {
			b.forget.push(func() { c.fs.Forget(b.bgCtx(), node, 1) })
		}
	}
}

// loadDir takes directory n's listing into d. d.mu held, or d not shared.
func (b *Bridge) loadDir(n *inode, d *dirSnapshot, h *fuse.InHeader) fuse.Status {
	b.prefetchCap(n, h)
	ctx, done := b.ctx(n.conn, h)
	defer done()
	d.gen = b.attrGen.Load()
	plus := n.conn.plus != nil && !n.conn.noPlus.Load()
	if plus {
		if ents, gen, ok := b.takePrefetched(n); ok {
			d.gen = gen
			d.plus = ents
			d.delivered = make([]bool, len(ents))
			b.listed(n, ents, h)
			d.addDots()
			d.loaded = true
			return fuse.OK
		}
		ents, err := n.conn.plus.ReadDirPlus(ctx, n.node)
		switch {
		case errors.Is(err, syscall.ENOSYS):
			n.conn.noPlus.Store(true)
			plus = false
		case err != nil:
			return errno(err)
		default:
			if ents == nil {
				ents = []proto.DirEntryPlus{}
			}
			d.plus = ents
			d.delivered = make([]bool, len(ents))
			b.listed(n, ents, h)
		}
	}
	if !plus {
		ents, err := n.conn.fs.ReadDir(ctx, n.node)
		if err != nil {
			return errno(err)
		}
		d.ents = ents
	}
	d.addDots()
	d.loaded = true
	return fuse.OK
}

// addDots puts "." and ".." first when the server leaves them out, as
// readdir(3) users expect them.
func (d *dirSnapshot) addDots() {
	for i := 0; i < d.len(); i++ {
		if d.entry(i).Name == "." {
			return
		}
	}
	dots := []proto.DirEntry{{Name: ".", Mode: syscall.S_IFDIR}, {Name: "..", Mode: syscall.S_IFDIR}}
	if d.plus != nil {
		d.plus = append([]proto.DirEntryPlus{{DirEntry: dots[0]}, {DirEntry: dots[1]}}, d.plus...)
		d.delivered = make([]bool, len(d.plus))
		d.delivered[0], d.delivered[1] = true, true // nothing to give back
		return
	}
	d.ents = append(dots, d.ents...)
}

func (d *dirSnapshot) len() int {
	if d.plus != nil {
		return len(d.plus)
	}
	return len(d.ents)
}

func (d *dirSnapshot) entry(i int) *proto.DirEntry {
	if d.plus != nil {
		return &d.plus[i].DirEntry
	}
	return &d.ents[i]
}

func (b *Bridge) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return b.readDir(in, out, false)
}

func (b *Bridge) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return b.readDir(in, out, true)
}

func (b *Bridge) readDir(in *fuse.ReadIn, out *fuse.DirEntryList, plus bool) fuse.Status {
	n, st := b.get(in.NodeId)
	if !st.Ok() {
		return st
	}
	d := b.listing(n, in.Offset)
	if d == nil {
		return fuse.ENOTDIR
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	defer func() {
		// Replaced meanwhile (another reader started over, the kernel
		// forgot the directory): no one gives its lookups back later.
		b.mu.Lock()
		detached := n.listing != d
		b.mu.Unlock()
		if detached {
			b.giveBackListing(n.conn, d)
		}
	}()
	if !d.loaded {
		if st := b.loadDir(n, d, &in.InHeader); !st.Ok() {
			b.dropListing(n, d)
			return st
		}
	}
	c := n.conn
	if !c.notifies() {
		// A server that does not notify changes cannot say when the
		// kernel's copy of a listing (FOPEN_CACHE_DIR) goes stale: have
		// the kernel drop what it keeps, so that every reader starting
		// over asks again, as each open of the directory did before
		// no_opendir.
		id := n.id
		b.notes.push(func() { b.srv.InodeNotify(id, 0, 0) })
	}
	if int(in.Offset) >= d.len() {
		// The end: the kernel has the whole listing.
		b.dropListing(n, d)
		return fuse.OK
	}
	for i := int(in.Offset); i < d.len(); i++ {
		de := d.entry(i)
		e := fuse.DirEntry{Name: de.Name, Mode: de.Mode, Ino: de.Ino, Off: uint64(i + 1)}
		if c.idx != 0 && e.Ino != 0 {
			e.Ino ^= c.idx << 48
		}
		if !plus {
			if !out.AddDirEntry(e) {
				break
			}
			continue
		}
		eo := out.AddDirLookupEntry(e)
		if eo == nil {
			break
		}
		if d.plus == nil || de.Name == "." || de.Name == ".." {
			continue // no attributes: the kernel looks the name up itself
		}
		p := &d.plus[i]
		if p.Entry.Redirect != nil {
			continue // the lookup follows the redirect
		}
		if !d.delivered[i] {
			d.delivered[i] = true
			child := b.addListed(c, &p.Entry, n, de.Name, d.gen)
			b.fillEntry(c, child, &p.Entry, eo)
			continue
		}
		// Handed out before (the directory was rewound): the bridge holds
		// no further server lookup for it, so only reuse a live inode.
		if child := b.addExisting(c, &p.Entry); child != nil {
			b.named(child, n, de.Name)
			b.fillEntry(c, child, &p.Entry, eo)
		}
	}
	return fuse.OK
}

// addListed is add, named and cacheAttrOf of a listed entry under one
// lock: a cold find or tar does it for every name.
func (b *Bridge) addListed(c *conn, e *proto.Entry, parent *inode, name string, gen uint64) *inode {
	cache := c.notifies()
	b.mu.Lock()
	defer b.mu.Unlock()
	in := b.addLocked(c, e, 1)
	in.parent, in.name = parent, name
	if cache && in.writers == 0 && gen == b.attrGen.Load() {
		in.attr, in.attrGen, in.attrOK = e.Attr, gen, true
	}
	return in
}

// addExisting counts one more kernel lookup of a node the kernel already
// knows; nil when it does not.
func (b *Bridge) addExisting(c *conn, e *proto.Entry) *inode {
	b.mu.Lock()
	defer b.mu.Unlock()
	in := b.byNode[nodeKey{c, e.Node}]
	if in == nil || in.server == 0 {
		return nil
	}
	in.kernel++
	return in
}

// ReleaseDir is never sent: OpenDir refuses (no_opendir).
func (b *Bridge) ReleaseDir(in *fuse.ReleaseIn) {}

func (b *Bridge) FsyncDir(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	return fuse.OK
}
