package ftpfs

import (
	"context"
	"fmt"
	"path"
	"sync"
	"syscall"
	"time"

	"herd/proto"
	"herd/translators/kit"
)

// remote is the server and the tree of nodes seen so far.
//
// Locking: mu guards the tree's shape (every node's parent, name, and a
// directory's children and listing time); a file's contents have their own
// lock (fileNode.mu), taken before mu when both are needed. No lock is held
// while talking to the server, except a file's own while it loads or
// stores its contents.
type remote struct {
	pool    *pool
	ttl     func() time.Duration
	listing func() string // "auto", "mlsd" or "list"

	mu    sync.Mutex
	dirty map[*fileNode]bool
}

// base is what every node has: its place in the tree.
type base struct {
	r      *remote
	parent *dirNode // nil for the root
	name   string   // for the root: its absolute path on the server
	e      entry    // from the last listing
}

func (b *base) path() string {
	b.r.mu.Lock()
	defer b.r.mu.Unlock()
	return b.pathLocked()
}

func (b *base) pathLocked() string {
	if b.parent == nil {
		return b.name
	}
	return path.Join(b.parent.pathLocked(), b.name)
}

func fill(e entry, out *proto.Attr) {
	out.Mode = e.mode
	out.Size = uint64(e.size)
	if !e.mtime.IsZero() {
		ts := proto.Timespec{Sec: e.mtime.Unix(), Nsec: uint32(e.mtime.Nanosecond())}
		out.Mtime, out.Ctime, out.Atime = ts, ts, ts
	}
}

// dirNode is a directory on the server, listed when looked into and the
// listing kept for ttl.
type dirNode struct {
	base
	children map[string]kit.Node
	listed   time.Time
}

var (
	_ kit.Lookuper  = (*dirNode)(nil)
	_ kit.Readdirer = (*dirNode)(nil)
	_ kit.Creater   = (*dirNode)(nil)
	_ kit.Mkdirer   = (*dirNode)(nil)
	_ kit.Unlinker  = (*dirNode)(nil)
	_ kit.Rmdirer   = (*dirNode)(nil)
	_ kit.Renamer   = (*dirNode)(nil)
	_ kit.Setattrer = (*dirNode)(nil)
)

func (d *dirNode) Getattr(ctx context.Context, out *proto.Attr) syscall.Errno {
	d.r.mu.Lock()
	defer d.r.mu.Unlock()
	fill(d.e, out)
	out.Size = 4096
	out.Nlink = 2
	return 0
}

// list refreshes the listing when it is older than the cache timeout.
func (d *dirNode) list() syscall.Errno {
	d.r.mu.Lock()
	fresh := time.Since(d.listed) < d.r.ttl()
	d.r.mu.Unlock()
	if fresh {
		return 0
	}
	p := d.path()
	var ents []entry
	err := d.r.pool.do(func(c *conn) error {
		mlsd := c.mlsd
		switch d.r.listing() {
		case "mlsd":
			mlsd = true
		case "list":
			mlsd = false
		}
		if mlsd {
			data, err := c.retrieve("MLSD %s", p)
			ents = parseMLSD(data)
			return err
		}
		data, err := c.retrieve("LIST %s", p)
		ents = parseLIST(data, time.Now())
		return err
	})
	if err != nil {
		return errnoOf(err)
	}
	d.r.mu.Lock()
	defer d.r.mu.Unlock()
	old := d.children
	d.children = make(map[string]kit.Node, len(ents))
	for _, e := range ents {
		d.children[e.name] = d.r.update(d, old[e.name], e)
	}
	// A file being written that the server does not show yet stays.
	for name, n := range old {
		if f, ok := n.(*fileNode); ok && d.children[name] == nil && d.r.dirty[f] {
			d.children[name] = f
		}
	}
	d.listed = time.Now()
	return 0
}

// update makes the node for e: the old one when it is of the same type
// (a node keeps its number while the name means the same thing), with
// the listing's attributes; a file whose size or time changed on the
// server drops its cached contents unless it has changes of its own.
// Called with r.mu held.
func (r *remote) update(parent *dirNode, old kit.Node, e entry) kit.Node {
	b := base{r: r, parent: parent, name: e.name, e: e}
	switch e.mode & syscall.S_IFMT {
	case syscall.S_IFDIR:
		if d, ok := old.(*dirNode); ok {
			d.e = e
			return d
		}
		return &dirNode{base: b}
	case syscall.S_IFLNK:
		if l, ok := old.(*linkNode); ok {
			l.e = e
			return l
		}
		return &linkNode{base: b}
	}
	if f, ok := old.(*fileNode); ok {
		if !r.dirty[f] {
			if f.e.size != e.size || !f.e.mtime.Equal(e.mtime) {
				f.stale = true
			}
			f.e = e
		}
		return f
	}
	return &fileNode{base: b}
}

func (d *dirNode) Lookup(ctx context.Context, name string) (kit.Node, syscall.Errno) {
	if errno := d.list(); errno != 0 {
		return nil, errno
	}
	d.r.mu.Lock()
	defer d.r.mu.Unlock()
	if n := d.children[name]; n != nil {
		return n, 0
	}
	return nil, syscall.ENOENT
}

func (d *dirNode) Readdir(ctx context.Context) ([]proto.DirEntry, syscall.Errno) {
	if errno := d.list(); errno != 0 {
		return nil, errno
	}
	d.r.mu.Lock()
	defer d.r.mu.Unlock()
	out := make([]proto.DirEntry, 0, len(d.children))
	for name, n := range d.children {
		var mode uint32
		switch n.(type) {
		case *dirNode:
			mode = syscall.S_IFDIR
		case *linkNode:
			mode = syscall.S_IFLNK
		default:
			mode = syscall.S_IFREG
		}
		out = append(out, proto.DirEntry{Name: name, Mode: mode})
	}
	return out, 0
}

// forgetListing makes the next look into d ask the server.
func (d *dirNode) forgetListing() {
	d.r.mu.Lock()
	d.listed = time.Time{}
	d.r.mu.Unlock()
}

func (d *dirNode) adopt(name string, n kit.Node) {
	d.r.mu.Lock()
	if d.children == nil {
		d.children = map[string]kit.Node{}
	}
	d.children[name] = n
	d.r.mu.Unlock()
}

func (d *dirNode) Create(ctx context.Context, name string, flags, mode uint32) (kit.Node, kit.Handle, uint32, syscall.Errno) {
	if !validName(name) {
		return nil, nil, 0, syscall.EINVAL
	}
	p := path.Join(d.path(), name)
	// The file exists on the server from now on, as after creat(2).
	if err := d.r.pool.do(func(c *conn) error { return c.store(p, nil) }); err != nil {
		return nil, nil, 0, errnoOf(err)
	}
	f := &fileNode{base: base{r: d.r, parent: d, name: name, e: entry{name: name, mode: syscall.S_IFREG | mode&07777, mtime: time.Now()}}, loaded: true}
	d.adopt(name, f)
	return f, &handle{write: flags&syscall.O_ACCMODE != syscall.O_RDONLY}, 0, 0
}

func (d *dirNode) Mkdir(ctx context.Context, name string, mode uint32) (kit.Node, syscall.Errno) {
	if !validName(name) {
		return nil, syscall.EINVAL
	}
	p := path.Join(d.path(), name)
	if err := d.r.pool.do(func(c *conn) error { _, _, err := c.cmd(257, "MKD %s", p); return err }); err != nil {
		return nil, errnoOf(err)
	}
	n := &dirNode{base: base{r: d.r, parent: d, name: name, e: entry{name: name, mode: syscall.S_IFDIR | mode&07777, mtime: time.Now()}}}
	d.adopt(name, n)
	return n, 0
}

func (d *dirNode) remove(name, verb string) syscall.Errno {
	p := path.Join(d.path(), name)
	if err := d.r.pool.do(func(c *conn) error { _, _, err := c.cmd(250, "%s %s", verb, p); return err }); err != nil {
		d.forgetListing()
		return errnoOf(err)
	}
	d.r.mu.Lock()
	if f, ok := d.children[name].(*fileNode); ok {
		delete(d.r.dirty, f) // nothing to write back to
	}
	delete(d.children, name)
	d.r.mu.Unlock()
	return 0
}

func (d *dirNode) Unlink(ctx context.Context, name string) syscall.Errno {
	if n, errno := d.Lookup(ctx, name); errno != 0 {
		return errno
	} else if _, dir := n.(*dirNode); dir {
		return syscall.EISDIR
	}
	return d.remove(name, "DELE")
}

func (d *dirNode) Rmdir(ctx context.Context, name string) syscall.Errno {
	if n, errno := d.Lookup(ctx, name); errno != 0 {
		return errno
	} else if _, dir := n.(*dirNode); !dir {
		return syscall.ENOTDIR
	}
	return d.remove(name, "RMD")
}

func (d *dirNode) Rename(ctx context.Context, name string, newParent kit.Node, newName string, flags uint32) syscall.Errno {
	nd, ok := newParent.(*dirNode)
	if !ok || nd.r != d.r {
		return syscall.EXDEV
	}
	if !validName(newName) {
		return syscall.EINVAL
	}
	if flags&^1 != 0 { // RENAME_EXCHANGE, RENAME_WHITEOUT: FTP cannot
		return syscall.EINVAL
	}
	n, errno := d.Lookup(ctx, name)
	if errno != 0 {
		return errno
	}
	if _, errno := nd.Lookup(ctx, newName); errno == 0 && flags&1 != 0 { // RENAME_NOREPLACE
		return syscall.EEXIST
	}
	from, to := path.Join(d.path(), name), path.Join(nd.path(), newName)
	err := d.r.pool.do(func(c *conn) error {
		if _, _, err := c.cmd(350, "RNFR %s", from); err != nil {
			return err
		}
		_, _, err := c.cmd(250, "RNTO %s", to)
		return err
	})
	if err != nil {
		d.forgetListing()
		nd.forgetListing()
		return errnoOf(err)
	}
	d.r.mu.Lock()
	delete(d.children, name)
	if nd.children == nil {
		nd.children = map[string]kit.Node{}
	}
	nd.children[newName] = n
	switch n := n.(type) {
	case *fileNode:
		n.parent, n.name = nd, newName
	case *dirNode:
		n.parent, n.name = nd, newName
	case *linkNode:
		n.parent, n.name = nd, newName
	}
	d.r.mu.Unlock()
	return 0
}

// Setattr on a directory: chmod through SITE CHMOD; times are the server's.
func (d *dirNode) Setattr(ctx context.Context, h kit.Handle, in proto.SetAttrIn, out *proto.Attr) syscall.Errno {
	if errno := chmod(&d.base, in); errno != 0 {
		return errno
	}
	return d.Getattr(ctx, out)
}

func chmod(b *base, in proto.SetAttrIn) syscall.Errno {
	if in.Valid&(proto.SetAttrUid|proto.SetAttrGid) != 0 {
		return syscall.EPERM // FTP has no chown
	}
	if in.Valid&proto.SetAttrMode == 0 {
		return 0
	}
	p := b.path()
	err := b.r.pool.do(func(c *conn) error {
		_, _, err := c.cmd(200, "SITE CHMOD %o %s", in.Mode&07777, p)
		return err
	})
	if err != nil {
		if errnoOf(err) == syscall.ENOTSUP {
			return syscall.EPERM
		}
		return errnoOf(err)
	}
	b.r.mu.Lock()
	b.e.mode = b.e.mode&syscall.S_IFMT | in.Mode&07777
	b.r.mu.Unlock()
	return 0
}

// linkNode is a symbolic link as a LIST listing shows it.
type linkNode struct{ base }

var _ kit.Readlinker = (*linkNode)(nil)

func (l *linkNode) Getattr(ctx context.Context, out *proto.Attr) syscall.Errno {
	l.r.mu.Lock()
	defer l.r.mu.Unlock()
	fill(l.e, out)
	return 0
}

func (l *linkNode) Readlink(ctx context.Context) (string, syscall.Errno) {
	l.r.mu.Lock()
	defer l.r.mu.Unlock()
	if l.e.target == "" {
		return "", syscall.EINVAL
	}
	return l.e.target, 0
}

// fileNode is a file on the server. Its contents are fetched (RETR) in
// the background from the first open, kept, and served to reads as soon
// as the bytes they want have arrived, so no call waits for more of a
// long transfer than it needs. Changes are sent back whole (STOR) when a
// writer closes, at fsync, and at sync.
type fileNode struct {
	base
	mu      sync.Mutex // guards the fields below; taken before r.mu
	cnd     *sync.Cond // on mu: the fetch made progress or ended
	data    []byte
	loaded  bool          // data is the whole file (or the file as changed here)
	loading bool          // a fetch is running
	loadErr syscall.Errno // why the last fetch failed
	gen     uint64        // bumped when data is replaced: a running fetch is no longer wanted
	stale   bool          // the server's copy changed: fetch again at the next open (set under r.mu)
}

type handle struct{ write bool }

var (
	_ kit.Opener    = (*fileNode)(nil)
	_ kit.Reader    = (*fileNode)(nil)
	_ kit.Writer    = (*fileNode)(nil)
	_ kit.Setattrer = (*fileNode)(nil)
	_ kit.Fsyncer   = (*fileNode)(nil)
	_ kit.Releaser  = (*fileNode)(nil)
)

func (f *fileNode) cond() *sync.Cond {
	if f.cnd == nil {
		f.cnd = sync.NewCond(&f.mu)
	}
	return f.cnd
}

func (f *fileNode) Getattr(ctx context.Context, out *proto.Attr) syscall.Errno {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.r.mu.Lock()
	defer f.r.mu.Unlock()
	fill(f.e, out)
	if f.loaded {
		out.Size = uint64(len(f.data))
	}
	return 0
}

// replace drops what is here for data (nil and not loaded: fetch again);
// a running fetch stops (f.mu held).
func (f *fileNode) replace(data []byte, loaded bool) {
	f.gen++
	f.data, f.loaded, f.loading, f.loadErr = data, loaded, false, 0
	f.cond().Broadcast()
}

// start begins fetching the contents unless they are here or coming
// (f.mu held).
func (f *fileNode) start() {
	f.r.mu.Lock()
	if f.stale && !f.r.dirty[f] {
		f.stale = false
		f.r.mu.Unlock()
		f.replace(nil, false)
	} else {
		f.r.mu.Unlock()
	}
	if f.loaded || f.loading {
		return
	}
	f.loading, f.loadErr = true, 0
	f.data = nil
	gen, p := f.gen, f.path()
	go func() {
		err := f.r.pool.do(func(c *conn) error {
			f.mu.Lock()
			if f.gen != gen {
				f.mu.Unlock()
				return errAborted
			}
			f.data = f.data[:0] // a second attempt starts over
			f.mu.Unlock()
			return c.retrieveTo(writerFunc(func(b []byte) (int, error) {
				f.mu.Lock()
				defer f.mu.Unlock()
				if f.gen != gen {
					return 0, errAborted
				}
				f.data = append(f.data, b...)
				f.cond().Broadcast()
				return len(b), nil
			}), "RETR %s", p)
		})
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.gen != gen {
			return
		}
		f.loading = false
		if err != nil {
			f.data, f.loadErr = nil, errnoOf(err)
		} else {
			f.loaded = true
		}
		f.cond().Broadcast()
	}()
}

type writerFunc func([]byte) (int, error)

func (w writerFunc) Write(b []byte) (int, error) { return w(b) }

// wait waits until the first n bytes are here (n < 0: the whole file), the
// fetch failed, or ctx ends (f.mu held).
func (f *fileNode) wait(ctx context.Context, n int64) syscall.Errno {
	f.start()
	stop := context.AfterFunc(ctx, func() {
		f.mu.Lock()
		f.cond().Broadcast()
		f.mu.Unlock()
	})
	defer stop()
	for {
		switch {
		case f.loaded:
			return 0
		case n >= 0 && int64(len(f.data)) >= n:
			return 0
		case !f.loading:
			if f.loadErr != 0 {
				return f.loadErr
			}
			return syscall.EIO
		case ctx.Err() != nil:
			return syscall.EINTR
		}
		f.cond().Wait()
	}
}

func (f *fileNode) Open(ctx context.Context, flags uint32) (kit.Handle, uint32, syscall.Errno) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if flags&syscall.O_TRUNC != 0 && flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		f.replace(nil, true)
		f.markDirty()
	} else {
		f.start()
	}
	return &handle{write: flags&syscall.O_ACCMODE != syscall.O_RDONLY}, 0, 0
}

func (f *fileNode) markDirty() {
	f.r.mu.Lock()
	f.r.dirty[f] = true
	f.stale = false
	f.r.mu.Unlock()
}

func (f *fileNode) Read(ctx context.Context, h kit.Handle, off int64, size int) ([]byte, syscall.Errno) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if errno := f.wait(ctx, off+int64(size)); errno != 0 {
		return nil, errno
	}
	if off >= int64(len(f.data)) {
		return nil, 0
	}
	end := min(off+int64(size), int64(len(f.data)))
	return append([]byte(nil), f.data[off:end]...), 0
}

func (f *fileNode) Write(ctx context.Context, h kit.Handle, off int64, data []byte) (int, syscall.Errno) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if errno := f.wait(ctx, -1); errno != 0 {
		return 0, errno
	}
	if end := off + int64(len(data)); end > int64(len(f.data)) {
		f.data = append(f.data, make([]byte, end-int64(len(f.data)))...)
	}
	copy(f.data[off:], data)
	f.markDirty()
	return len(data), 0
}

// flush sends the contents back if they changed (f.mu held).
func (f *fileNode) flush() syscall.Errno {
	f.r.mu.Lock()
	dirty := f.r.dirty[f]
	f.r.mu.Unlock()
	if !dirty {
		return 0
	}
	p := f.path()
	data := f.data
	if err := f.r.pool.do(func(c *conn) error { return c.store(p, data) }); err != nil {
		return errnoOf(err)
	}
	f.r.mu.Lock()
	delete(f.r.dirty, f)
	f.e.size, f.e.mtime = int64(len(data)), time.Now()
	if f.parent != nil {
		f.parent.listed = time.Time{} // the server's times and sizes are news
	}
	f.r.mu.Unlock()
	return 0
}

func (f *fileNode) Setattr(ctx context.Context, h kit.Handle, in proto.SetAttrIn, out *proto.Attr) syscall.Errno {
	if errno := chmod(&f.base, in); errno != 0 {
		return errno
	}
	if in.Valid&proto.SetAttrSize != 0 {
		f.mu.Lock()
		var errno syscall.Errno
		if in.Size == 0 {
			f.replace(nil, true) // no need for the old contents
		} else {
			errno = f.wait(ctx, -1)
		}
		if errno == 0 {
			size := int64(in.Size)
			if size <= int64(len(f.data)) {
				f.data = f.data[:size]
			} else {
				f.data = append(f.data, make([]byte, size-int64(len(f.data)))...)
			}
			f.markDirty()
			if h == nil { // truncate(2): no close will follow
				errno = f.flush()
			}
		}
		f.mu.Unlock()
		if errno != 0 {
			return errno
		}
	}
	// Times: FTP has no portable way to set them; the server's stand.
	return f.Getattr(ctx, out)
}

func (f *fileNode) Fsync(ctx context.Context, h kit.Handle, datasync bool) syscall.Errno {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.flush()
}

func (f *fileNode) Release(ctx context.Context, h kit.Handle) syscall.Errno {
	if hd, ok := h.(*handle); ok && hd.write {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.flush()
	}
	return 0
}

// sync writes back every changed file.
func (r *remote) sync() error {
	r.mu.Lock()
	var files []*fileNode
	for f := range r.dirty {
		files = append(files, f)
	}
	r.mu.Unlock()
	var first error
	for _, f := range files {
		f.mu.Lock()
		errno := f.flush()
		f.mu.Unlock()
		if errno != 0 && first == nil {
			first = fmt.Errorf("write back %s: %w", f.path(), errno)
		}
	}
	return first
}
