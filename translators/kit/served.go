package kit

import (
	"context"

	"herd/proto"
)

// served is an Instance's FileSystem: the translator's own, with the fsys
// calls answered by the kit and every call holding the options lock for
// reading.
type served struct{ in *Instance }

// servedPlus adds READDIRPLUS when the translator's FileSystem has it.
type servedPlus struct{ *served }

var _ proto.FileSystem = (*served)(nil)
var _ proto.DirPlusReader = servedPlus{}
var _ proto.NotifierSetter = (*served)(nil)

func (s *served) fs() (proto.FileSystem, func()) {
	s.in.mu.RLock()
	return s.in.inner, s.in.mu.RUnlock
}

// Name names the mount (fuse.NAME in /proc/self/mountinfo).
func (s *served) Name() string { return s.in.t.Name }

func (s *served) SetNotifier(n proto.Notifier) {
	if ns, ok := s.in.inner.(proto.NotifierSetter); ok {
		ns.SetNotifier(n)
	}
}

func (s servedPlus) ReadDirPlus(ctx context.Context, dir proto.NodeID) ([]proto.DirEntryPlus, error) {
	fs, done := s.fs()
	defer done()
	return fs.(proto.DirPlusReader).ReadDirPlus(ctx, dir)
}

func (s *served) Root(ctx context.Context) (proto.Entry, error) {
	fs, done := s.fs()
	defer done()
	return fs.Root(ctx)
}

func (s *served) GetOptions(ctx context.Context) ([]string, error) {
	s.in.mu.RLock()
	defer s.in.mu.RUnlock()
	return s.in.options(), nil
}

func (s *served) SetOptions(ctx context.Context, opts []string) error {
	return s.in.setOptions(opts)
}

func (s *served) Goaway(ctx context.Context, flags uint32) error {
	return s.in.doGoaway(ctx, flags)
}

func (s *served) Lookup(ctx context.Context, parent proto.NodeID, name string) (proto.Entry, error) {
	fs, done := s.fs()
	defer done()
	return fs.Lookup(ctx, parent, name)
}

func (s *served) Forget(ctx context.Context, node proto.NodeID, nlookup uint64) {
	fs, done := s.fs()
	defer done()
	fs.Forget(ctx, node, nlookup)
}

func (s *served) GetAttr(ctx context.Context, node proto.NodeID) (proto.Attr, error) {
	fs, done := s.fs()
	defer done()
	return fs.GetAttr(ctx, node)
}

func (s *served) SetAttr(ctx context.Context, node proto.NodeID, in proto.SetAttrIn) (proto.Attr, error) {
	fs, done := s.fs()
	defer done()
	return fs.SetAttr(ctx, node, in)
}

func (s *served) ReadDir(ctx context.Context, dir proto.NodeID) ([]proto.DirEntry, error) {
	fs, done := s.fs()
	defer done()
	return fs.ReadDir(ctx, dir)
}

func (s *served) Mkdir(ctx context.Context, parent proto.NodeID, name string, mode uint32) (proto.Entry, error) {
	fs, done := s.fs()
	defer done()
	return fs.Mkdir(ctx, parent, name, mode)
}

func (s *served) Mknod(ctx context.Context, parent proto.NodeID, name string, mode uint32, rdev uint64) (proto.Entry, error) {
	fs, done := s.fs()
	defer done()
	return fs.Mknod(ctx, parent, name, mode, rdev)
}

func (s *served) Create(ctx context.Context, parent proto.NodeID, name string, flags, mode uint32) (proto.Entry, proto.OpenResult, error) {
	fs, done := s.fs()
	defer done()
	return fs.Create(ctx, parent, name, flags, mode)
}

func (s *served) Unlink(ctx context.Context, parent proto.NodeID, name string) error {
	fs, done := s.fs()
	defer done()
	return fs.Unlink(ctx, parent, name)
}

func (s *served) Rmdir(ctx context.Context, parent proto.NodeID, name string) error {
	fs, done := s.fs()
	defer done()
	return fs.Rmdir(ctx, parent, name)
}

func (s *served) Rename(ctx context.Context, oldParent proto.NodeID, oldName string, newParent proto.NodeID, newName string, flags uint32) error {
	fs, done := s.fs()
	defer done()
	return fs.Rename(ctx, oldParent, oldName, newParent, newName, flags)
}

func (s *served) Link(ctx context.Context, node proto.NodeID, newParent proto.NodeID, newName string) (proto.Entry, error) {
	fs, done := s.fs()
	defer done()
	return fs.Link(ctx, node, newParent, newName)
}

func (s *served) Symlink(ctx context.Context, parent proto.NodeID, name, target string) (proto.Entry, error) {
	fs, done := s.fs()
	defer done()
	return fs.Symlink(ctx, parent, name, target)
}

func (s *served) Readlink(ctx context.Context, node proto.NodeID) (string, error) {
	fs, done := s.fs()
	defer done()
	return fs.Readlink(ctx, node)
}

func (s *served) GetXattr(ctx context.Context, node proto.NodeID, name string) ([]byte, error) {
	fs, done := s.fs()
	defer done()
	return fs.GetXattr(ctx, node, name)
}

func (s *served) ListXattr(ctx context.Context, node proto.NodeID) ([]string, error) {
	fs, done := s.fs()
	defer done()
	return fs.ListXattr(ctx, node)
}

func (s *served) SetXattr(ctx context.Context, node proto.NodeID, name string, value []byte, flags uint32) error {
	fs, done := s.fs()
	defer done()
	return fs.SetXattr(ctx, node, name, value, flags)
}

func (s *served) RemoveXattr(ctx context.Context, node proto.NodeID, name string) error {
	fs, done := s.fs()
	defer done()
	return fs.RemoveXattr(ctx, node, name)
}

func (s *served) StatFS(ctx context.Context, node proto.NodeID) (proto.StatFS, error) {
	fs, done := s.fs()
	defer done()
	return fs.StatFS(ctx, node)
}

func (s *served) Open(ctx context.Context, node proto.NodeID, flags uint32) (proto.OpenResult, error) {
	fs, done := s.fs()
	defer done()
	return fs.Open(ctx, node, flags)
}

func (s *served) Read(ctx context.Context, h proto.HandleID, off int64, size int) ([]byte, error) {
	fs, done := s.fs()
	defer done()
	return fs.Read(ctx, h, off, size)
}

func (s *served) Write(ctx context.Context, h proto.HandleID, off int64, data []byte) (int, error) {
	fs, done := s.fs()
	defer done()
	return fs.Write(ctx, h, off, data)
}

func (s *served) Fsync(ctx context.Context, h proto.HandleID, datasync bool) error {
	fs, done := s.fs()
	defer done()
	return fs.Fsync(ctx, h, datasync)
}

func (s *served) Fallocate(ctx context.Context, h proto.HandleID, mode uint32, off, length int64) error {
	fs, done := s.fs()
	defer done()
	return fs.Fallocate(ctx, h, mode, off, length)
}

func (s *served) Lseek(ctx context.Context, h proto.HandleID, off int64, whence int) (int64, error) {
	fs, done := s.fs()
	defer done()
	return fs.Lseek(ctx, h, off, whence)
}

func (s *served) Release(ctx context.Context, h proto.HandleID) error {
	fs, done := s.fs()
	defer done()
	return fs.Release(ctx, h)
}
