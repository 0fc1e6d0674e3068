package fsbridge

import (
	"container/list"
	"os"
	"syscall"
	"time"

	"herd/proto"
)

// Spare opens. Opening a file costs a protocol round trip (and releasing it
// another), which is most of what open+close costs through the bridge.
// Programs open the same files again and again (headers in a build,
// binaries in a shell loop), so a released read-only open is kept for a
// short while and handed to the next read-only open of the same node
// instead of asking the server.
//
// It is only given out while nothing says the node changed: a notification
// from the server about the node (a copy-up, a write through another
// client), a write open or a setattr through this bridge, or the kernel
// forgetting the node drop it. What a fresh open would see and what the
// spare sees are then the same file.

const (
	maxSpares = 1024
	spareTTL  = 5 * time.Second
)

type spare struct {
	in       *inode
	h        proto.HandleID
	file     *os.File
	resFlags uint32 // the server's OpenResult.Flags
	at       time.Time
	el       *list.Element
}

// reusableFlags: opens that only read, so any read-only open serves them.
func reusableFlags(flags uint32) bool {
	// O_LARGEFILE is 0 in Go on 64-bit systems, but the kernel sets its
	// 0x8000 in the flags it sends.
	// O_NOFOLLOW: the kernel resolved the name already (tar opens every
	// file with it).
	const ignored = 0x8000 /* O_LARGEFILE */ | syscall.O_NONBLOCK | syscall.O_CLOEXEC |
		syscall.O_NOATIME | syscall.O_NOCTTY | syscall.O_NOFOLLOW | 0x20 /* FMODE_EXEC */
	return flags&^ignored == syscall.O_RDONLY
}

// takeSpare returns n's spare open, if it has one.
func (b *Bridge) takeSpare(n *inode) *spare {
	b.mu.Lock()
	defer b.mu.Unlock()
	sp := n.spare
	if sp == nil {
		return nil
	}
	n.spare = nil
	b.spares.Remove(sp.el)
	return sp
}

// putSpare keeps a released open for reuse; false if it cannot be kept (the
// caller releases it).
func (b *Bridge) putSpare(n *inode, h *handle) bool {
	if b.dying.Load() || n.conn.dead.Load() {
		return false
	}
	now := time.Now()
	var evict []*spare
	b.mu.Lock()
	if n.spare != nil || b.inodes[n.id] != n || h.gen != n.dataGen {
		// (An open made before the node last changed reads what was
		// there then: kit's files take their contents at open. Kept,
		// it would outlive the change's notification.)
		b.mu.Unlock()
		return false
	}
	sp := &spare{in: n, h: h.h, file: h.file, resFlags: h.resFlags, at: now}
	sp.el = b.spares.PushBack(sp)
	n.spare = sp
	for b.spares.Len() > maxSpares {
		evict = append(evict, b.unlinkSpare(b.spares.Front().Value.(*spare)))
	}
	for e := b.spares.Front(); e != nil && now.Sub(e.Value.(*spare).at) > spareTTL; e = b.spares.Front() {
		evict = append(evict, b.unlinkSpare(e.Value.(*spare)))
	}
	arm := b.spareTimer == nil
	if arm {
		b.spareTimer = time.AfterFunc(spareTTL, b.expireSpares)
	}
	b.mu.Unlock()
	b.releaseSpares(evict)
	return true
}

// unlinkSpare takes sp out of the tables; b.mu held.
func (b *Bridge) unlinkSpare(sp *spare) *spare {
	b.spares.Remove(sp.el)
	if sp.in.spare == sp {
		sp.in.spare = nil
	}
	return sp
}

// dataGenOf is n's data generation (see dropSpare).
func (b *Bridge) dataGenOf(n *inode) uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return n.dataGen
}

// dropSpare discards n's spare: n changed, or is going away. It also
// counts a change, so that opens made before it do not become spares.
func (b *Bridge) dropSpare(n *inode) {
	b.mu.Lock()
	n.dataGen++
	sp := n.spare
	if sp != nil {
		b.unlinkSpare(sp)
	}
	b.mu.Unlock()
	if sp != nil {
		b.releaseSpares([]*spare{sp})
	}
}

// expireSpares runs from a timer while spares exist.
func (b *Bridge) expireSpares() {
	now := time.Now()
	var evict []*spare
	b.mu.Lock()
	for e := b.spares.Front(); e != nil && now.Sub(e.Value.(*spare).at) > spareTTL; e = b.spares.Front() {
		evict = append(evict, b.unlinkSpare(e.Value.(*spare)))
	}
	if b.spares.Len() > 0 {
		b.spareTimer = time.AfterFunc(spareTTL, b.expireSpares)
	} else {
		b.spareTimer = nil
	}
	b.mu.Unlock()
	b.releaseSpares(evict)
}

// releaseSpares gives spares back to their servers, off the caller's
// goroutine.
func (b *Bridge) releaseSpares(sps []*spare) {
	for _, sp := range sps {
		if sp.file != nil {
			sp.file.Close()
		}
		c, h := sp.in.conn, sp.h
		if !c.dead.Load() {
			b.forget.push(func() { c.fs.Release(b.bgCtx(), h) })
		}
	}
}

// allSpares empties the spare table (the bridge stops); b.mu held.
func (b *Bridge) allSparesLocked() []*spare {
	var out []*spare
	for e := b.spares.Front(); e != nil; e = b.spares.Front() {
		out = append(out, b.unlinkSpare(e.Value.(*spare)))
	}
	if b.spareTimer != nil {
		b.spareTimer.Stop()
		b.spareTimer = nil
	}
	return out
}
