package fsbridge

import (
	"strings"
	"time"

	"herd/proto"
)

// The kernel asks for a file's attributes again after every read, only
// because the read made its cached atime stale; the server's answer costs a
// round trip and a path walk on its side. So the bridge answers GETATTR from
// the last answer it got while nothing can have changed since: no call that
// changes anything went through the bridge, no notification came from the
// server (any of these bumps attrGen and so drops every cached answer), and
// nobody has the file open for writing (data written to a backing
// descriptor never reaches the server, so it cannot tell us). The one thing
// this leaves stale is atime, as on a noatime mount.
//
// Only the root server's attributes are cached (unless it is a translator,
// Options.Translator): translators may not notify, and the kernel refreshes
// theirs every second.

// changed drops every cached attribute.
func (b *Bridge) changed() { b.attrGen.Add(1) }

// cachedAttr returns n's cached attributes, if they are still good.
func (b *Bridge) cachedAttr(n *inode) (proto.Attr, bool) {
	if !n.conn.notifies() {
		return proto.Attr{}, false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if n.attrOK && n.writers == 0 && n.attrGen == b.attrGen.Load() {
		return n.attr, true
	}
	return proto.Attr{}, false
}

// cacheAttr remembers a, fetched when attrGen was gen.
func (b *Bridge) cacheAttr(n *inode, gen uint64, a *proto.Attr) {
	if !n.conn.notifies() {
		return
	}
	b.mu.Lock()
	if n.writers == 0 && gen == b.attrGen.Load() {
		n.attr, n.attrGen, n.attrOK = *a, gen, true
	}
	b.mu.Unlock()
}

// Translator control names the bridge itself answers or watches.
const (
	// xattrRefresh: reading it on a node makes the bridge drop, before it
	// answers, everything it and the kernel cache of the node's server
	// (attributes, data, spare opens). fsysopts on the host reads it after
	// changing a translator's options: the translator's own notifications
	// travel apart from its answer, and the next read must not race them.
	xattrRefresh = "user.herd.refresh"
	// xattrOptions: the fs server relays it to the translator on the node
	// (fsysopts inside a subenvironment).
	xattrOptions = "user.herd.options"
)

// translatorControl: setting or removing this xattr puts a translator on a
// node or takes it off (a passive record, an active one, goaway).
func translatorControl(attr string) bool {
	return strings.HasPrefix(attr, "user.herd.") && attr != xattrOptions && attr != xattrRefresh
}

// translatorChanged makes the kernel forget its entry for n, whose
// translator was just set or taken off through this bridge, before the
// answer goes back: the very next open of the node must find the
// translator (or the node beneath), and the server's own notice of the
// change travels apart from its answer, maybe later. The entry is dropped
// from the notification queue (never from a request's goroutine: see
// Notifier), and the answer waits until the queue has done it.
func (b *Bridge) translatorChanged(n *inode) {
	b.mu.Lock()
	p, name := n.parent, n.name
	b.dropDentryLocked(n)
	b.mu.Unlock()
	if p != nil {
		b.notes.push(func() { b.srv.EntryNotify(p.id, name) })
	}
	b.notes.drain(2 * time.Second)
}

// refresh drops, synchronously, what the bridge and the kernel cache of c's
// nodes: their attributes and data (the kernel's page cache), and spare
// opens (a reused open would read what it read before).
func (b *Bridge) refresh(c *conn) {
	b.changed()
	var ids []uint64
	var sps []*spare
	var dcs []*dirCap
	b.mu.Lock()
	for _, in := range b.inodes {
		if in.conn != c {
			continue
		}
		ids = append(ids, in.id)
		in.linkOK = false
		in.dataGen++
		if in.spare != nil {
			sps = append(sps, b.unlinkSpare(in.spare))
		}
		if dc := b.dropCapLocked(in); dc != nil {
			dcs = append(dcs, dc)
		}
		in.capNo = false
	}
	b.mu.Unlock()
	for _, dc := range dcs {
		b.unrefCap(dc)
	}
	b.releaseSpares(sps)
	for _, id := range ids {
		// From the request's goroutine: an inode's invalidation takes no
		// lock the kernel holds while it waits for this answer.
		b.srv.InodeNotify(id, 0, 0)
	}
}

// cacheAttrOf caches the attributes of (c, node), fetched when attrGen was
// gen, if the kernel knows the node.
func (b *Bridge) cacheAttrOf(c *conn, node proto.NodeID, gen uint64, a *proto.Attr) {
	if !c.notifies() {
		return
	}
	b.mu.Lock()
	if in := b.byNode[nodeKey{c, node}]; in != nil && in.writers == 0 && gen == b.attrGen.Load() {
		in.attr, in.attrGen, in.attrOK = *a, gen, true
	}
	b.mu.Unlock()
}

// xattrCaps is what the kernel asks for before every write to a file
// (file_remove_privs: may the write have to drop file capabilities?).
// FUSE filesystems get no SB_NOSEC, so the question comes once per write
// call: a round trip to the server per megabyte of a sequential write,
// even when the data itself goes by passthrough. The server's "none" is
// kept while nothing changed (attrGen), as attributes are: a capability
// can only appear by a setxattr, through this bridge (which bumps
// attrGen) or through another client (the server's notification does).
const xattrCaps = "security.capability"

// knownNoCaps says whether n is known to have no security.capability.
func (b *Bridge) knownNoCaps(n *inode) bool {
	if !n.conn.notifies() {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return n.noCaps && n.noCapsGen == b.attrGen.Load()
}

// cacheNoCaps remembers that n had no security.capability when attrGen
// was gen.
func (b *Bridge) cacheNoCaps(n *inode, gen uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if gen == b.attrGen.Load() {
		n.noCaps, n.noCapsGen = true, gen
	}
}
