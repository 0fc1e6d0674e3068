package fsbridge

import (
	"slices"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"

	"herd/proto"
)

// A cold walk (find, du, tar, a build's globbing) is a chain of listings:
// list a directory, go into a subdirectory, list it... and the walker waits
// for each listing: a round trip plus the server's stat of every entry. So
// when a directory is listed, the bridge asks the server, on the side, for
// the listings of the subdirectories the walker will most likely enter
// next: the first subdirectory, and the next siblings (prefetchAhead of
// them), in listing order (find, tar) and in name order (Go's WalkDir,
// ls -R). The server then works while the walker goes through the entries
// it has, on another CPU. While files are being opened, the capabilities of
// those siblings are asked for too (caps.go).
//
// A prefetched listing is used only if nothing changed since it was asked
// for (attrGen: any change through the bridge, any notification from the
// server), as for cached attributes; otherwise it is given back and the
// listing is asked for again. Prefetched listings hold the server's
// lookups of their entries like any listing, so one that is not used is
// given back (Forget); at most maxPrefetched are held. Only the root server
// is prefetched from (it notifies changes), and only a walk that lists:
// lookups and opens prefetch nothing.

const maxPrefetched = 8

// prefetchAhead is how many directories past the one being listed are
// asked for once the walker's order shows. One ahead left the walker
// waiting for the server on every directory of a cold walk (bench/files.sh
// stat: 24-54 ms of 0.2 s spent waiting for listings); three ahead, about
// 11 ms. Each is at most a listing the server makes early.
const prefetchAhead = 3

type prefetcher struct {
	mu    sync.Mutex
	m     map[nodeKey]*prefetched
	order []nodeKey // oldest first
	// For tests and benchmarks: listings asked for ahead, and used.
	asked, used atomic.Int64
}

type prefetched struct {
	done chan struct{}
	gen  uint64 // attrGen when asked
	ents []proto.DirEntryPlus
	err  error
}

// subdirs is what a listing told about a directory's subdirectories, for
// guessing the next one a walker enters. Guarded by Bridge.mu.
type subdirs struct {
	nodes  []proto.NodeID // listing order
	names  []string
	sorted []int // indexes in name order
	rank   []int // index -> place in sorted
	pos    map[proto.NodeID]int
	asked  []bool // listed or prefetched already
	last   int    // the last one listed, -1 before the first
}

// takePrefetched returns n's prefetched listing if there is one and it is
// still good (waiting for it if it is still on its way).
func (b *Bridge) takePrefetched(n *inode) ([]proto.DirEntryPlus, uint64, bool) {
	pf := &b.prefetch
	key := nodeKey{n.conn, n.node}
	pf.mu.Lock()
	p := pf.m[key]
	if p != nil {
		delete(pf.m, key)
		pf.order = slices.DeleteFunc(pf.order, func(k nodeKey) bool { return k == key })
	}
	pf.mu.Unlock()
	if p == nil {
		return nil, 0, false
	}
	<-p.done
	if p.err != nil {
		return nil, 0, false
	}
	if p.gen != b.attrGen.Load() {
		b.giveBack(n.conn, p)
		return nil, 0, false
	}
	pf.used.Add(1)
	return p.ents, p.gen, true
}

// giveBack returns the lookups of an unused prefetched listing.
func (b *Bridge) giveBack(c *conn, p *prefetched) {
	go func() {
		<-p.done
		for i := range p.ents {
			node := p.ents[i].Entry.Node
			if node == 0 {
				continue
			}
			b.forget.push(func() { c.fs.Forget(b.bgCtx(), node, 1) })
		}
	}()
}

// listed notes directory n's listing (ents, without dots) and prefetches
// what a walker probably lists next. h is the listing request's header:
// prefetches are asked as its caller.
func (b *Bridge) listed(n *inode, ents []proto.DirEntryPlus, h *fuse.InHeader) {
	c := n.conn
	if !c.notifies() || c.plus == nil || c.noPlus.Load() || c.dead.Load() {
		return
	}
	var sd *subdirs
	for i := range ents {
		e := &ents[i]
		if e.Entry.Redirect != nil || e.Entry.Node == 0 || e.Entry.Attr.Mode&syscall.S_IFMT != syscall.S_IFDIR ||
			e.Name == "." || e.Name == ".." {
			continue
		}
		if sd == nil {
			sd = &subdirs{pos: map[proto.NodeID]int{}}
		}
		sd.pos[e.Entry.Node] = len(sd.nodes)
		sd.nodes = append(sd.nodes, e.Entry.Node)
		sd.names = append(sd.names, e.Name)
	}
	if sd != nil {
		sd.asked = make([]bool, len(sd.nodes))
		sd.sorted = make([]int, len(sd.nodes))
		for i := range sd.sorted {
			sd.sorted[i] = i
		}
		slices.SortFunc(sd.sorted, func(x, y int) int {
			switch {
			case sd.names[x] < sd.names[y]:
				return -1
			case sd.names[x] > sd.names[y]:
				return 1
			}
			return 0
		})
		sd.rank = make([]int, len(sd.nodes))
		for k, i := range sd.sorted {
			sd.rank[i] = k
		}
		sd.last = -1
	}
	var next []proto.NodeID
	b.mu.Lock()
	n.subdirs = sd
	if sd != nil {
		next = append(next, sd.take(0)...)
		next = append(next, sd.take(sd.sorted[0])...)
	}
	if p := n.parent; p != nil && p.conn == c && p.subdirs != nil && b.inodes[p.id] == p {
		psd := p.subdirs
		if i, ok := psd.pos[n.node]; ok {
			// Follow the walker's order once it shows: a guess in the
			// other order would be a listing asked for long before its
			// use (given back when it ages out).
			inListing, inNames := i == 0, psd.rank[i] == 0
			if psd.last >= 0 {
				inListing, inNames = i == psd.last+1, psd.rank[i] == psd.rank[psd.last]+1
			}
			psd.last = i
			psd.asked[i] = true
			if inListing {
				next = append(next, psd.after(i, prefetchAhead)...)
			}
			if inNames {
				next = append(next, psd.afterSorted(i, prefetchAhead)...)
			}
		}
	}
	// And their capabilities, if files are being opened (a tar, a cat):
	// asked for only when the walker lists the directory, the capability
	// came after the first open in it, which waited for it (a cold tar of
	// Go's src: 730 such waits of about 230 µs, behind the listings asked
	// ahead). A subdirectory the kernel does not know yet gets its own
	// when it is listed.
	var ins []*inode
	for _, node := range next {
		if in := b.byNode[nodeKey{c, node}]; in != nil {
			ins = append(ins, in)
		}
	}
	b.mu.Unlock()
	if len(next) == 0 {
		return
	}
	hc := *h
	for _, node := range next {
		b.prefetchList(c, node, &hc)
	}
	for _, in := range ins {
		b.prefetchCap(in, &hc)
	}
}

// take marks subdirectory i asked and returns it unless it was asked.
func (sd *subdirs) take(i int) []proto.NodeID {
	if sd.asked[i] {
		return nil
	}
	sd.asked[i] = true
	return []proto.NodeID{sd.nodes[i]}
}

// after returns the subdirectories not yet asked among the k after i, in
// listing order.
func (sd *subdirs) after(i, k int) []proto.NodeID {
	var out []proto.NodeID
	for j := i + 1; j < len(sd.nodes) && j <= i+k; j++ {
		out = append(out, sd.take(j)...)
	}
	return out
}

// afterSorted is after in name order.
func (sd *subdirs) afterSorted(i, k int) []proto.NodeID {
	var out []proto.NodeID
	for j := sd.rank[i] + 1; j < len(sd.sorted) && j <= sd.rank[i]+k; j++ {
		out = append(out, sd.take(sd.sorted[j])...)
	}
	return out
}

// prefetchList asks for node's listing on the side.
func (b *Bridge) prefetchList(c *conn, node proto.NodeID, h *fuse.InHeader) {
	pf := &b.prefetch
	key := nodeKey{c, node}
	p := &prefetched{done: make(chan struct{}), gen: b.attrGen.Load()}
	pf.mu.Lock()
	if pf.m == nil {
		pf.m = map[nodeKey]*prefetched{}
	}
	if pf.m[key] != nil {
		pf.mu.Unlock()
		return
	}
	var old *prefetched
	if len(pf.order) >= maxPrefetched {
		old = pf.m[pf.order[0]]
		delete(pf.m, pf.order[0])
		pf.order = pf.order[1:]
	}
	pf.m[key] = p
	pf.order = append(pf.order, key)
	pf.mu.Unlock()
	if old != nil {
		b.giveBack(c, old)
	}
	pf.asked.Add(1)
	ctx, done := b.ctx(c, h)
	go func() {
		defer close(p.done)
		defer done()
		p.ents, p.err = c.plus.ReadDirPlus(ctx, node)
	}()
}
