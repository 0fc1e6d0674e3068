package fsbridge

import (
	"errors"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"herd/proto"
)

// This file turns the kernel's requests on nodes into proto calls.

func (c *conn) ttl() time.Duration {
	if c.notifies() {
		return longTimeout
	}
	return translatorTimeout
}

// notifies: the server is one whose notifications the bridge relies on
// (the root server, unless Options.Translator says it is a translator).
// Translators may not notify: the kernel keeps their entries and
// attributes briefly, and the bridge does not cache their attributes.
func (c *conn) notifies() bool { return c.socket == "" && !c.translator }

// fillAttr converts a server's attributes (host ids) to the kernel's view.
func (b *Bridge) fillAttr(c *conn, a *proto.Attr, out *fuse.Attr) {
	m := b.opts.IDMap
	ino := a.Ino
	if c.idx != 0 {
		// Keep (st_dev, st_ino) unique across the servers of one mount, so
		// find and tar do not see loops or false hard links.
		ino ^= c.idx << 48
	}
	*out = fuse.Attr{
		Ino:       ino,
		Size:      a.Size,
		Blocks:    a.Blocks,
		Atime:     uint64(a.Atime.Sec),
		Mtime:     uint64(a.Mtime.Sec),
		Ctime:     uint64(a.Ctime.Sec),
		Atimensec: a.Atime.Nsec,
		Mtimensec: a.Mtime.Nsec,
		Ctimensec: a.Ctime.Nsec,
		Mode:      a.Mode,
		Nlink:     a.Nlink,
		Owner: fuse.Owner{
			Uid: m.uidFromHost(a.Uid),
			Gid: m.gidFromHost(a.Gid),
		},
		Rdev:    uint32(a.Rdev),
		Blksize: a.Blksize,
	}
}

func setEntryTimeouts(out *fuse.EntryOut, d time.Duration) {
	out.SetEntryTimeout(d)
	out.SetAttrTimeout(d)
}

// reply hands e, found as name in parent, to the kernel: it follows a
// redirect, records the lookup and fills out.
func (b *Bridge) reply(h *fuse.InHeader, p *inode, name string, e proto.Entry, out *fuse.EntryOut) fuse.Status {
	c := p.conn
	if e.Redirect != nil {
		tc, root, st := b.follow(h, p, e)
		if !st.Ok() {
			return st
		}
		in := b.add(tc, &root, 1)
		b.keepUnder(in, c, e.Node)
		b.mu.Lock()
		if in.attached == nil {
			in.attached = map[attachment]struct{}{}
		}
		in.attached[attachment{p.id, name}] = struct{}{}
		b.mu.Unlock()
		b.fillEntry(tc, in, &root, out)
		// The name belongs to the parent, which notifies when it changes
		// (and the bridge invalidates it when the translator dies); the
		// attributes are the translator's.
		out.SetEntryTimeout(c.ttl())
		return fuse.OK
	}
	in := b.add(c, &e, 1)
	b.named(in, p, name)
	b.fillEntry(c, in, &e, out)
	return fuse.OK
}

func (b *Bridge) fillEntry(c *conn, in *inode, e *proto.Entry, out *fuse.EntryOut) {
	out.NodeId = in.id
	out.Generation = 0
	setEntryTimeouts(out, c.ttl())
	b.fillAttr(c, &e.Attr, &out.Attr)
}

// follow continues a lookup at the translator e redirects to (the Hurd's
// FS_RETRY): the kernel sees the translator's root in place of the node.
// On success the caller keeps the underlying node's lookup (keepUnder);
// on failure it goes back to its server here.
func (b *Bridge) follow(h *fuse.InHeader, p *inode, e proto.Entry) (tc *conn, root proto.Entry, st fuse.Status) {
	c := p.conn
	node := e.Node
	defer func() {
		if !st.Ok() {
			b.forget.push(func() { c.fs.Forget(b.bgCtx(), node, 1) })
		}
	}()
	tc, err := b.translator(e.Redirect.Socket)
	if err != nil {
		b.logf("redirect to %s: %v", e.Redirect.Socket, err)
		return nil, proto.Entry{}, fuse.EIO
	}
	ctx, cancel := b.ctx(tc, h)
	defer cancel()
	root, err = tc.fs.Root(ctx)
	if err != nil {
		b.logf("redirect to %s: root: %v", e.Redirect.Socket, err)
		return nil, proto.Entry{}, fuse.EIO
	}
	if root.Redirect != nil {
		// A translator's root is not itself redirected; refuse rather than
		// loop.
		tc.fs.Forget(b.bgCtx(), root.Node, 1)
		return nil, proto.Entry{}, fuse.EIO
	}
	return tc, root, fuse.OK
}

func (b *Bridge) logf(format string, args ...any) {
	if b.opts.Debug {
		logger.Printf("fsbridge: "+format, args...)
	}
}

func (b *Bridge) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	p, st := b.get(h.NodeId)
	if !st.Ok() {
		return st
	}
	ctx, done := b.ctx(p.conn, h)
	defer done()
	gen := b.attrGen.Load()
	e, err := p.conn.fs.Lookup(ctx, p.node, name)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) {
			// A negative entry: the kernel remembers the name is absent
			// until the server says otherwise.
			b.forgetDentry(p, name)
			*out = fuse.EntryOut{}
			out.SetEntryTimeout(p.conn.ttl())
			return fuse.OK
		}
		return errno(err)
	}
	st = b.reply(h, p, name, e, out)
	if st.Ok() && e.Redirect == nil {
		// The kernel asks again after a read (atime): answer that from
		// these attributes while nothing changed (attrs.go).
		b.cacheAttrOf(p.conn, e.Node, gen, &e.Attr)
	}
	return st
}

func (b *Bridge) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	n, st := b.get(in.NodeId)
	if !st.Ok() {
		return st
	}
	if a, ok := b.cachedAttr(n); ok {
		b.fillAttr(n.conn, &a, &out.Attr)
		out.SetTimeout(n.conn.ttl())
		return fuse.OK
	}
	gen := b.attrGen.Load()
	ctx, done := b.ctx(n.conn, &in.InHeader)
	defer done()
	a, err := n.conn.fs.GetAttr(ctx, n.node)
	if err != nil {
		return errno(err)
	}
	b.cacheAttr(n, gen, &a)
	b.setIno(n, a.Ino)
	b.fillAttr(n.conn, &a, &out.Attr)
	out.SetTimeout(n.conn.ttl())
	return fuse.OK
}

func (b *Bridge) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	n, st := b.get(in.NodeId)
	if !st.Ok() {
		return st
	}
	m := b.opts.IDMap
	var s proto.SetAttrIn
	if in.Valid&fuse.FATTR_MODE != 0 {
		s.Valid |= proto.SetAttrMode
		s.Mode = in.Mode & 07777
	}
	if in.Valid&fuse.FATTR_UID != 0 {
		s.Valid |= proto.SetAttrUid
		s.Uid = m.uidToHost(in.Uid)
	}
	if in.Valid&fuse.FATTR_GID != 0 {
		s.Valid |= proto.SetAttrGid
		s.Gid = m.gidToHost(in.Gid)
	}
	if in.Valid&fuse.FATTR_SIZE != 0 {
		s.Valid |= proto.SetAttrSize
		s.Size = in.Size
	}
	if in.Valid&fuse.FATTR_ATIME != 0 {
		if in.Valid&fuse.FATTR_ATIME_NOW != 0 {
			s.Valid |= proto.SetAttrAtimeNow
		} else {
			s.Valid |= proto.SetAttrAtime
			s.Atime = proto.Timespec{Sec: int64(in.Atime), Nsec: in.Atimensec}
		}
	}
	if in.Valid&fuse.FATTR_MTIME != 0 {
		if in.Valid&fuse.FATTR_MTIME_NOW != 0 {
			s.Valid |= proto.SetAttrMtimeNow
		} else {
			s.Valid |= proto.SetAttrMtime
			s.Mtime = proto.Timespec{Sec: int64(in.Mtime), Nsec: in.Mtimensec}
		}
	}
	if fh, ok := in.GetFh(); ok {
		if h := b.handle(fh); h != nil && h.conn == n.conn && !h.direct {
			s.Valid |= proto.SetAttrHandle
			s.Handle = h.h
		}
	}
	b.dropSpare(n)
	b.capsChanging(n) // it may be copied up
	b.changed()
	ctx, done := b.ctx(n.conn, &in.InHeader)
	defer done()
	a, err := n.conn.fs.SetAttr(ctx, n.node, s)
	b.changed()
	if err != nil {
		return errno(err)
	}
	b.setIno(n, a.Ino)
	b.fillAttr(n.conn, &a, &out.Attr)
	out.SetTimeout(n.conn.ttl())
	return fuse.OK
}

// create runs a call that makes a node in parent and hands it to the kernel.
func (b *Bridge) create(h *fuse.InHeader, name string, out *fuse.EntryOut, call func(p *inode) (proto.Entry, error)) fuse.Status {
	p, st := b.get(h.NodeId)
	if !st.Ok() {
		return st
	}
	b.dropCaps(p)
	b.changed()
	e, err := call(p)
	b.changed()
	if err != nil {
		return errno(err)
	}
	return b.reply(h, p, name, e, out)
}

func (b *Bridge) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	return b.create(&in.InHeader, name, out, func(p *inode) (proto.Entry, error) {
		ctx, done := b.ctx(p.conn, &in.InHeader)
		defer done()
		return p.conn.fs.Mkdir(ctx, p.node, name, in.Mode)
	})
}

func (b *Bridge) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	return b.create(&in.InHeader, name, out, func(p *inode) (proto.Entry, error) {
		ctx, done := b.ctx(p.conn, &in.InHeader)
		defer done()
		return p.conn.fs.Mknod(ctx, p.node, name, in.Mode, uint64(in.Rdev))
	})
}

func (b *Bridge) Symlink(cancel <-chan struct{}, h *fuse.InHeader, target string, name string, out *fuse.EntryOut) fuse.Status {
	return b.create(h, name, out, func(p *inode) (proto.Entry, error) {
		ctx, done := b.ctx(p.conn, h)
		defer done()
		return p.conn.fs.Symlink(ctx, p.node, name, target)
	})
}

func (b *Bridge) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	old, st := b.get(in.Oldnodeid)
	if !st.Ok() {
		return st
	}
	return b.create(&in.InHeader, name, out, func(p *inode) (proto.Entry, error) {
		if p.conn != old.conn {
			return proto.Entry{}, syscall.EXDEV
		}
		b.capsChanging(old) // it may be copied up
		ctx, done := b.ctx(p.conn, &in.InHeader)
		defer done()
		e, err := p.conn.fs.Link(ctx, old.node, p.node, name)
		if err == nil && e.Node != old.node {
			// The new name is another node (servers/fs has one per
			// name), so the kernel updates only its inode; the old one
			// keeps its nlink until the server's notification comes,
			// which a stat right after the link may beat. Its
			// attributes only (offset -1): that takes no lock the
			// kernel holds for this LINK.
			b.srv.InodeNotify(old.id, -1, 0)
		}
		return e, err
	})
}

func (b *Bridge) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	p, st := b.get(h.NodeId)
	if !st.Ok() {
		return st
	}
	ctx, done := b.ctx(p.conn, h)
	defer done()
	b.dropCaps(p)
	b.forgetDentry(p, name)
	b.changed()
	err := p.conn.fs.Unlink(ctx, p.node, name)
	b.changed()
	return errno(err)
}

func (b *Bridge) Rmdir(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	p, st := b.get(h.NodeId)
	if !st.Ok() {
		return st
	}
	ctx, done := b.ctx(p.conn, h)
	defer done()
	b.dropCaps(p)
	b.forgetDentry(p, name)
	b.changed()
	err := p.conn.fs.Rmdir(ctx, p.node, name)
	b.changed()
	return errno(err)
}

func (b *Bridge) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName string, newName string) fuse.Status {
	p, st := b.get(in.NodeId)
	if !st.Ok() {
		return st
	}
	np, st := b.get(in.Newdir)
	if !st.Ok() {
		return st
	}
	if p.conn != np.conn {
		return fuse.EXDEV
	}
	ctx, done := b.ctx(p.conn, &in.InHeader)
	defer done()
	// Both directories change. What moves keeps its inode, and its
	// capability stays good: the server copies a moved directory up whole
	// (the same contents) and notifies, and each open checks st_ino.
	b.dropCaps(p, np)
	b.forgetDentry(p, oldName)
	b.forgetDentry(np, newName)
	b.changed()
	err := p.conn.fs.Rename(ctx, p.node, oldName, np.node, newName, in.Flags)
	b.changed()
	return errno(err)
}

func (b *Bridge) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	n, st := b.get(h.NodeId)
	if !st.Ok() {
		return nil, st
	}
	b.mu.Lock()
	if n.linkOK {
		l := n.link
		b.mu.Unlock()
		return []byte(l), fuse.OK
	}
	b.mu.Unlock()
	ctx, done := b.ctx(n.conn, h)
	defer done()
	l, err := n.conn.fs.Readlink(ctx, n.node)
	if err != nil {
		return nil, errno(err)
	}
	b.mu.Lock()
	n.link, n.linkOK = l, true
	b.mu.Unlock()
	return []byte(l), fuse.OK
}

// Access is left to the kernel: the mount has default_permissions.
func (b *Bridge) Access(cancel <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	return fuse.ENOSYS
}

func (b *Bridge) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	n, st := b.get(h.NodeId)
	if !st.Ok() {
		return 0, st
	}
	if attr == xattrRefresh {
		b.refresh(n.conn)
		return 0, fuse.OK
	}
	if attr == xattrCaps && b.knownNoCaps(n) {
		return 0, fuse.Status(syscall.ENODATA)
	}
	gen := b.attrGen.Load()
	c, node := b.controlTarget(n, attr)
	ctx, done := b.ctx(c, h)
	defer done()
	v, err := c.fs.GetXattr(ctx, node, attr)
	if err != nil {
		if attr == xattrCaps && errors.Is(err, syscall.ENODATA) {
			b.cacheNoCaps(n, gen)
		}
		return 0, errno(err)
	}
	if len(dest) < len(v) {
		return uint32(len(v)), fuse.ERANGE
	}
	return uint32(copy(dest, v)), fuse.OK
}

func (b *Bridge) ListXAttr(cancel <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	n, st := b.get(h.NodeId)
	if !st.Ok() {
		return 0, st
	}
	ctx, done := b.ctx(n.conn, h)
	defer done()
	names, err := n.conn.fs.ListXattr(ctx, n.node)
	if err != nil {
		return 0, errno(err)
	}
	names = b.addControlNames(h, n, names)
	size := 0
	for _, s := range names {
		size += len(s) + 1
	}
	if len(dest) < size {
		return uint32(size), fuse.ERANGE
	}
	off := 0
	for _, s := range names {
		off += copy(dest[off:], s)
		dest[off] = 0
		off++
	}
	return uint32(size), fuse.OK
}

// addControlNames replaces the user.herd.* names of a translator's root's
// listing with those of the node underneath, where translator control
// lives.
func (b *Bridge) addControlNames(h *fuse.InHeader, n *inode, names []string) []string {
	c, node := b.controlTarget(n, controlPrefix)
	if c == n.conn {
		return names
	}
	ctx, done := b.ctx(c, h)
	defer done()
	under, err := c.fs.ListXattr(ctx, node)
	if err != nil {
		return names
	}
	out := names[:0:0]
	for _, s := range names {
		if !strings.HasPrefix(s, controlPrefix) {
			out = append(out, s)
		}
	}
	for _, s := range under {
		if strings.HasPrefix(s, controlPrefix) {
			out = append(out, s)
		}
	}
	return out
}

func (b *Bridge) SetXAttr(cancel <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	n, st := b.get(in.NodeId)
	if !st.Ok() {
		return st
	}
	c, node := b.controlTarget(n, attr)
	ctx, done := b.ctx(c, &in.InHeader)
	defer done()
	b.capsChanging(n) // a copy-up, or a translator record
	b.changed()
	err := c.fs.SetXattr(ctx, node, attr, append([]byte(nil), data...), in.Flags)
	b.changed()
	if err == nil && translatorControl(attr) {
		b.translatorChanged(n)
	}
	if err == nil && attr == xattrOptions && c != n.conn {
		// fsysopts through the parent: the translator's contents may have
		// changed. Its own notifications travel apart from this answer;
		// the caller's next read must not race them.
		b.refresh(n.conn)
	}
	return errno(err)
}

func (b *Bridge) RemoveXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string) fuse.Status {
	n, st := b.get(h.NodeId)
	if !st.Ok() {
		return st
	}
	c, node := b.controlTarget(n, attr)
	ctx, done := b.ctx(c, h)
	defer done()
	b.capsChanging(n)
	b.changed()
	err := c.fs.RemoveXattr(ctx, node, attr)
	b.changed()
	if err == nil && translatorControl(attr) {
		b.translatorChanged(n)
	}
	return errno(err)
}

func (b *Bridge) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	n, st := b.get(h.NodeId)
	if !st.Ok() {
		return st
	}
	ctx, done := b.ctx(n.conn, h)
	defer done()
	s, err := n.conn.fs.StatFS(ctx, n.node)
	if err != nil {
		return errno(err)
	}
	*out = fuse.StatfsOut{
		Blocks: s.Blocks, Bfree: s.Bfree, Bavail: s.Bavail,
		Files: s.Files, Ffree: s.Ffree,
		Bsize: s.Bsize, Frsize: s.Frsize, NameLen: s.NameLen,
	}
	return fuse.OK
}

func (b *Bridge) Init(s *fuse.Server) { b.srv = s }

func (b *Bridge) OnUnmount() {}
