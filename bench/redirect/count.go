// Package redirect measures what a redirect (subenv root -> translator)
// costs a lookup, against a lookup the fs server answers alone (issue 3:
// no more than one protocol round trip more for the first lookup, none for
// later ones). The test counts round trips; the benchmarks time them.
package redirect

import (
	"context"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"

	"herd/proto"
)

// Counting is a proto client that counts the calls made through it: every
// call but Forget (a one-way message) is one round trip.
type Counting struct {
	*proto.Client
	calls, forgets atomic.Int64
	mu             sync.Mutex
	byOp           map[string]int64
}

// ByOp returns the round trips so far by call name.
func (c *Counting) ByOp() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := map[string]int64{}
	for k, v := range c.byOp {
		m[k] = v
	}
	return m
}

// Calls returns the round trips made so far.
func (c *Counting) Calls() int64 { return c.calls.Load() }

// rt counts one round trip of the calling method.
func (c *Counting) rt() {
	c.calls.Add(1)
	pc, _, _, _ := runtime.Caller(1)
	name := runtime.FuncForPC(pc).Name()
	name = name[strings.LastIndex(name, ".")+1:]
	c.mu.Lock()
	if c.byOp == nil {
		c.byOp = map[string]int64{}
	}
	c.byOp[name]++
	c.mu.Unlock()
}

func (c *Counting) Root(ctx context.Context) (proto.Entry, error) {
	c.rt()
	return c.Client.Root(ctx)
}
func (c *Counting) GetOptions(ctx context.Context) ([]string, error) {
	c.rt()
	return c.Client.GetOptions(ctx)
}
func (c *Counting) SetOptions(ctx context.Context, o []string) error {
	c.rt()
	return c.Client.SetOptions(ctx, o)
}
func (c *Counting) Goaway(ctx context.Context, flags uint32) error {
	c.rt()
	return c.Client.Goaway(ctx, flags)
}
func (c *Counting) Lookup(ctx context.Context, p proto.NodeID, name string) (proto.Entry, error) {
	c.rt()
	return c.Client.Lookup(ctx, p, name)
}
func (c *Counting) Forget(ctx context.Context, n proto.NodeID, nl uint64) {
	c.forgets.Add(1)
	c.Client.Forget(ctx, n, nl)
}
func (c *Counting) GetAttr(ctx context.Context, n proto.NodeID) (proto.Attr, error) {
	c.rt()
	return c.Client.GetAttr(ctx, n)
}
func (c *Counting) SetAttr(ctx context.Context, n proto.NodeID, in proto.SetAttrIn) (proto.Attr, error) {
	c.rt()
	return c.Client.SetAttr(ctx, n, in)
}
func (c *Counting) ReadDir(ctx context.Context, d proto.NodeID) ([]proto.DirEntry, error) {
	c.rt()
	return c.Client.ReadDir(ctx, d)
}
func (c *Counting) ReadDirPlus(ctx context.Context, d proto.NodeID) ([]proto.DirEntryPlus, error) {
	c.rt()
	return c.Client.ReadDirPlus(ctx, d)
}
func (c *Counting) Mkdir(ctx context.Context, p proto.NodeID, name string, mode uint32) (proto.Entry, error) {
	c.rt()
	return c.Client.Mkdir(ctx, p, name, mode)
}
func (c *Counting) Mknod(ctx context.Context, p proto.NodeID, name string, mode uint32, rdev uint64) (proto.Entry, error) {
	c.rt()
	return c.Client.Mknod(ctx, p, name, mode, rdev)
}
func (c *Counting) Create(ctx context.Context, p proto.NodeID, name string, flags, mode uint32) (proto.Entry, proto.OpenResult, error) {
	c.rt()
	return c.Client.Create(ctx, p, name, flags, mode)
}
func (c *Counting) Unlink(ctx context.Context, p proto.NodeID, name string) error {
	c.rt()
	return c.Client.Unlink(ctx, p, name)
}
func (c *Counting) Rmdir(ctx context.Context, p proto.NodeID, name string) error {
	c.rt()
	return c.Client.Rmdir(ctx, p, name)
}
func (c *Counting) Rename(ctx context.Context, op proto.NodeID, on string, np proto.NodeID, nn string, flags uint32) error {
	c.rt()
	return c.Client.Rename(ctx, op, on, np, nn, flags)
}
func (c *Counting) Link(ctx context.Context, n, np proto.NodeID, nn string) (proto.Entry, error) {
	c.rt()
	return c.Client.Link(ctx, n, np, nn)
}
func (c *Counting) Symlink(ctx context.Context, p proto.NodeID, name, target string) (proto.Entry, error) {
	c.rt()
	return c.Client.Symlink(ctx, p, name, target)
}
func (c *Counting) Readlink(ctx context.Context, n proto.NodeID) (string, error) {
	c.rt()
	return c.Client.Readlink(ctx, n)
}
func (c *Counting) GetXattr(ctx context.Context, n proto.NodeID, name string) ([]byte, error) {
	c.rt()
	return c.Client.GetXattr(ctx, n, name)
}
func (c *Counting) ListXattr(ctx context.Context, n proto.NodeID) ([]string, error) {
	c.rt()
	return c.Client.ListXattr(ctx, n)
}
func (c *Counting) SetXattr(ctx context.Context, n proto.NodeID, name string, v []byte, flags uint32) error {
	c.rt()
	return c.Client.SetXattr(ctx, n, name, v, flags)
}
func (c *Counting) RemoveXattr(ctx context.Context, n proto.NodeID, name string) error {
	c.rt()
	return c.Client.RemoveXattr(ctx, n, name)
}
func (c *Counting) StatFS(ctx context.Context, n proto.NodeID) (proto.StatFS, error) {
	c.rt()
	return c.Client.StatFS(ctx, n)
}
func (c *Counting) Open(ctx context.Context, n proto.NodeID, flags uint32) (proto.OpenResult, error) {
	c.rt()
	return c.Client.Open(ctx, n, flags)
}
func (c *Counting) Read(ctx context.Context, h proto.HandleID, off int64, size int) ([]byte, error) {
	c.rt()
	return c.Client.Read(ctx, h, off, size)
}
func (c *Counting) Write(ctx context.Context, h proto.HandleID, off int64, data []byte) (int, error) {
	c.rt()
	return c.Client.Write(ctx, h, off, data)
}
func (c *Counting) Fsync(ctx context.Context, h proto.HandleID, datasync bool) error {
	c.rt()
	return c.Client.Fsync(ctx, h, datasync)
}
func (c *Counting) Fallocate(ctx context.Context, h proto.HandleID, mode uint32, off, length int64) error {
	c.rt()
	return c.Client.Fallocate(ctx, h, mode, off, length)
}
func (c *Counting) Lseek(ctx context.Context, h proto.HandleID, off int64, whence int) (int64, error) {
	c.rt()
	return c.Client.Lseek(ctx, h, off, whence)
}
func (c *Counting) Release(ctx context.Context, h proto.HandleID) error {
	c.rt()
	return c.Client.Release(ctx, h)
}

var _ proto.FileSystem = (*Counting)(nil)
var _ proto.DirPlusReader = (*Counting)(nil)
