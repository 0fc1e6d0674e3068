package zipfs

import (
	"context"
	"syscall"

	"herd/proto"
	"herd/translators/kit"
)

// readOnly serves a kit.FS with every change refused (EROFS). The FS's
// READDIRPLUS, notifier and invalidation come through the embedding.
type readOnly struct{ *kit.FS }

// ReadOnly returns fs with every call that would change it answering EROFS.
func ReadOnly(fs *kit.FS) proto.FileSystem { return readOnly{fs} }

var _ proto.DirPlusReader = readOnly{}

var errROFS error = syscall.EROFS

func (readOnly) SetAttr(context.Context, proto.NodeID, proto.SetAttrIn) (proto.Attr, error) {
	return proto.Attr{}, errROFS
}
func (readOnly) Mkdir(context.Context, proto.NodeID, string, uint32) (proto.Entry, error) {
	return proto.Entry{}, errROFS
}
func (readOnly) Mknod(context.Context, proto.NodeID, string, uint32, uint64) (proto.Entry, error) {
	return proto.Entry{}, errROFS
}
func (readOnly) Create(context.Context, proto.NodeID, string, uint32, uint32) (proto.Entry, proto.OpenResult, error) {
	return proto.Entry{}, proto.OpenResult{}, errROFS
}
func (readOnly) Unlink(context.Context, proto.NodeID, string) error { return errROFS }
func (readOnly) Rmdir(context.Context, proto.NodeID, string) error  { return errROFS }
func (readOnly) Rename(context.Context, proto.NodeID, string, proto.NodeID, string, uint32) error {
	return errROFS
}
func (readOnly) Link(context.Context, proto.NodeID, proto.NodeID, string) (proto.Entry, error) {
	return proto.Entry{}, errROFS
}
func (readOnly) Symlink(context.Context, proto.NodeID, string, string) (proto.Entry, error) {
	return proto.Entry{}, errROFS
}
func (readOnly) SetXattr(context.Context, proto.NodeID, string, []byte, uint32) error { return errROFS }
func (readOnly) RemoveXattr(context.Context, proto.NodeID, string) error              { return errROFS }
func (readOnly) Write(context.Context, proto.HandleID, int64, []byte) (int, error)    { return 0, errROFS }
func (readOnly) Fallocate(context.Context, proto.HandleID, uint32, int64, int64) error {
	return errROFS
}

func (r readOnly) Open(ctx context.Context, node proto.NodeID, flags uint32) (proto.OpenResult, error) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&syscall.O_TRUNC != 0 {
		return proto.OpenResult{}, errROFS
	}
	return r.FS.Open(ctx, node, flags)
}

func (r readOnly) StatFS(ctx context.Context, node proto.NodeID) (proto.StatFS, error) {
	st, err := r.FS.StatFS(ctx, node)
	st.Bfree, st.Bavail, st.Ffree = 0, 0, 0
	return st, err
}
