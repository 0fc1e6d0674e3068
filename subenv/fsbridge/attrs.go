package fsbridge

import "herd/proto"

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
// Only the root server's attributes are cached: translators may not notify,
// and the kernel refreshes theirs every second.

// changed drops every cached attribute.
func (b *Bridge) changed() { b.attrGen.Add(1) }

// cachedAttr returns n's cached attributes, if they are still good.
func (b *Bridge) cachedAttr(n *inode) (proto.Attr, bool) {
	if n.conn != b.root {
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
	if n.conn != b.root {
		return
	}
	b.mu.Lock()
	if n.writers == 0 && gen == b.attrGen.Load() {
		n.attr, n.attrGen, n.attrOK = *a, gen, true
	}
	b.mu.Unlock()
}
