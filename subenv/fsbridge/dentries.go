package fsbridge

import (
	"syscall"

	"herd/proto"
)

// The server notifies every change to a name, also those made through this
// mount, and its notice travels apart from the answer: it may reach the
// bridge after the kernel got the answer and went on. An entry notification
// makes the kernel d_invalidate the name, and the kernel detaches whatever
// is mounted on a dentry it invalidates (or a mount(2) on it still under
// way fails with ENOENT): subenv's init makes staging/dev and mounts a
// tmpfs on it at once, and the mkdir's late notice took the tmpfs away.
// (The kernel's FUSE_EXPIRE_ONLY would only expire the entry, but go-fuse
// sends no flags.) So before it drops a name the kernel holds, the bridge
// asks the server whether the name still is the node the kernel was told;
// if so only the directory is invalidated.
//
// b.dentries holds, per (kernel parent id, name), the inode the kernel was
// last told the name is (lookup, create, READDIRPLUS). A name leaves it when
// the kernel may hold something else there: a negative lookup, an unlink,
// rmdir or rename through the bridge, an entry notification, the inode's
// forget. One name per inode is kept (servers/fs has a node per name); an
// inode's other names fall back to the notification.

// dropDentryLocked removes in's recorded name. b.mu held.
func (b *Bridge) dropDentryLocked(in *inode) {
	if in.parent == nil {
		return
	}
	k := attachment{in.parent.id, in.name}
	if b.dentries[k] == in {
		delete(b.dentries, k)
	}
}

// forgetDentry removes what is recorded for name in p.
func (b *Bridge) forgetDentry(p *inode, name string) {
	b.mu.Lock()
	delete(b.dentries, attachment{p.id, name})
	b.mu.Unlock()
}

// entryHolds says whether name in parent (kernel id pid) on c is still the
// node the kernel was told it is (child): same node, type and st_ino. On no,
// the record goes (the caller drops the kernel's entry).
func (b *Bridge) entryHolds(c *conn, parent proto.NodeID, pid uint64, name string, child *inode) bool {
	if c.dead.Load() {
		return false
	}
	e, err := c.fs.Lookup(b.bgCtx(), parent, name)
	if err == nil {
		node := e.Node
		b.forget.push(func() { c.fs.Forget(b.bgCtx(), node, 1) })
	}
	k := attachment{pid, name}
	b.mu.Lock()
	defer b.mu.Unlock()
	ok := err == nil && e.Redirect == nil && child.conn == c && e.Node == child.node &&
		b.dentries[k] == child && b.inodes[child.id] == child &&
		e.Attr.Mode&syscall.S_IFMT == child.mode&syscall.S_IFMT && e.Attr.Ino == child.ino
	if !ok && b.dentries[k] == child {
		delete(b.dentries, k)
	}
	return ok
}
