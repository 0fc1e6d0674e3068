package fsbridge

import (
	"context"
	"sort"
	"sync"
	"syscall"

	"herd/proto"
)

// memFS is a small in-memory server for the tests that need a server to
// misbehave on purpose (hang, redirect, notify on demand).
type memFS struct {
	proto.Unimplemented

	mu       sync.Mutex
	nodes    map[proto.NodeID]*memNode
	next     proto.NodeID
	handles  map[proto.HandleID]proto.NodeID
	nextH    proto.HandleID
	notifier proto.Notifier
	lookups  map[string]int // Lookup calls by name
	listings int            // ReadDir calls

	// redirect: names whose lookup answers a redirect to a socket.
	redirect map[string]string
	// hang: names whose lookup and getattr block until release is closed.
	hang    map[string]bool
	release chan struct{}
	// keepCache: opens let the kernel keep its cached pages.
	keepCache bool
}

type memNode struct {
	id       proto.NodeID
	mode     uint32
	data     []byte
	children map[string]proto.NodeID
	nlookup  uint64
}

func newMemFS() *memFS {
	m := &memFS{
		nodes:    map[proto.NodeID]*memNode{},
		next:     2,
		handles:  map[proto.HandleID]proto.NodeID{},
		nextH:    1,
		lookups:  map[string]int{},
		redirect: map[string]string{},
		hang:     map[string]bool{},
		release:  make(chan struct{}),
	}
	m.nodes[1] = &memNode{id: 1, mode: syscall.S_IFDIR | 0o755, children: map[string]proto.NodeID{}}
	return m
}

func (m *memFS) SetNotifier(n proto.Notifier) {
	m.mu.Lock()
	m.notifier = n
	m.mu.Unlock()
}

// add makes a node under parent (test set-up).
func (m *memFS) add(parent proto.NodeID, name string, mode uint32, data string) proto.NodeID {
	m.mu.Lock()
	defer m.mu.Unlock()
	id := m.next
	m.next++
	n := &memNode{id: id, mode: mode, data: []byte(data)}
	if mode&syscall.S_IFMT == syscall.S_IFDIR {
		n.children = map[string]proto.NodeID{}
	}
	m.nodes[id] = n
	m.nodes[parent].children[name] = id
	return id
}

func (m *memFS) attr(n *memNode) proto.Attr {
	return proto.Attr{Ino: uint64(n.id), Mode: n.mode, Size: uint64(len(n.data)), Nlink: 1, Blksize: 4096}
}

func (m *memFS) Root(ctx context.Context) (proto.Entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.nodes[1].nlookup++
	return proto.Entry{Node: 1, Attr: m.attr(m.nodes[1])}, nil
}

// held returns the lookups and handles clients hold.
func (m *memFS) held() (lookups map[proto.NodeID]uint64, handles int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	lookups = map[proto.NodeID]uint64{}
	for id, n := range m.nodes {
		if n.nlookup != 0 {
			lookups[id] = n.nlookup
		}
	}
	return lookups, len(m.handles)
}

// memPlus is memFS with READDIRPLUS.
type memPlus struct{ *memFS }

func (m memPlus) ReadDirPlus(ctx context.Context, dir proto.NodeID) ([]proto.DirEntryPlus, error) {
	ents, err := m.ReadDir(ctx, dir)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]proto.DirEntryPlus, len(ents))
	for i, e := range ents {
		n := m.nodes[proto.NodeID(e.Ino)]
		n.nlookup++
		out[i] = proto.DirEntryPlus{DirEntry: e, Entry: proto.Entry{Node: n.id, Attr: m.attr(n)}}
	}
	return out, nil
}

func (m *memFS) lookupCount(name string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lookups[name]
}

func (m *memFS) Lookup(ctx context.Context, parent proto.NodeID, name string) (proto.Entry, error) {
	m.mu.Lock()
	m.lookups[name]++
	hang := m.hang[name]
	m.mu.Unlock()
	if hang {
		select {
		case <-m.release:
		case <-ctx.Done():
			return proto.Entry{}, ctx.Err()
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	p := m.nodes[parent]
	if p == nil || p.children == nil {
		return proto.Entry{}, syscall.ENOENT
	}
	id, ok := p.children[name]
	if !ok {
		return proto.Entry{}, syscall.ENOENT
	}
	n := m.nodes[id]
	n.nlookup++
	e := proto.Entry{Node: id, Attr: m.attr(n)}
	if s, ok := m.redirect[name]; ok {
		e.Redirect = &proto.Redirect{Socket: s}
		e.Attr.Mode = syscall.S_IFDIR | 0o755
	}
	return e, nil
}

func (m *memFS) Forget(ctx context.Context, node proto.NodeID, n uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if x := m.nodes[node]; x != nil {
		x.nlookup -= n
	}
}

func (m *memFS) GetAttr(ctx context.Context, node proto.NodeID) (proto.Attr, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := m.nodes[node]
	if n == nil {
		return proto.Attr{}, syscall.ESTALE
	}
	return m.attr(n), nil
}

func (m *memFS) ReadDir(ctx context.Context, dir proto.NodeID) ([]proto.DirEntry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.listings++
	n := m.nodes[dir]
	if n == nil || n.children == nil {
		return nil, syscall.ENOTDIR
	}
	var out []proto.DirEntry
	for name, id := range n.children {
		out = append(out, proto.DirEntry{Name: name, Ino: uint64(id), Mode: m.nodes[id].mode & syscall.S_IFMT})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (m *memFS) Open(ctx context.Context, node proto.NodeID, flags uint32) (proto.OpenResult, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	h := m.nextH
	m.nextH++
	m.handles[h] = node
	if m.keepCache {
		return proto.OpenResult{Handle: h, Flags: proto.OpenKeepCache}, nil
	}
	return proto.OpenResult{Handle: h}, nil
}

func (m *memFS) Read(ctx context.Context, h proto.HandleID, off int64, size int) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := m.nodes[m.handles[h]]
	if n == nil {
		return nil, syscall.EBADF
	}
	if off >= int64(len(n.data)) {
		return nil, nil
	}
	end := min(off+int64(size), int64(len(n.data)))
	return append([]byte(nil), n.data[off:end]...), nil
}

func (m *memFS) Release(ctx context.Context, h proto.HandleID) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.handles, h)
	return nil
}

// setData changes a file behind the kernel's back and tells the clients.
func (m *memFS) setData(node proto.NodeID, data string) {
	m.mu.Lock()
	m.nodes[node].data = []byte(data)
	n := m.notifier
	m.mu.Unlock()
	if n != nil {
		n.InvalNode(node, 0, 0)
	}
}

// addNotify adds a name behind the kernel's back and tells the clients.
func (m *memFS) addNotify(parent proto.NodeID, name, data string) {
	m.add(parent, name, syscall.S_IFREG|0o644, data)
	m.mu.Lock()
	n := m.notifier
	m.mu.Unlock()
	if n != nil {
		n.InvalEntry(parent, name)
	}
}
