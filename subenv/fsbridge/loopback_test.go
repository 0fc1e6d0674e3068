package fsbridge

import (
	"context"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// go-fuse's loopback hands its files to the kernel for passthrough whenever
// it runs as root. To compare with it as the plain user's case (passthrough
// refused), these nodes hide the descriptor: same code, no passthrough.

func newLoopbackNoPassthrough(path string) (gofs.InodeEmbedder, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return nil, err
	}
	root := &gofs.LoopbackRoot{Path: path, Dev: uint64(st.Dev)}
	root.NewNode = func(r *gofs.LoopbackRoot, parent *gofs.Inode, name string, st *syscall.Stat_t) gofs.InodeEmbedder {
		return &noPTNode{gofs.LoopbackNode{RootData: r}}
	}
	n := root.NewNode(root, nil, "", &st)
	root.RootNode = n
	return n, nil
}

type noPTNode struct{ gofs.LoopbackNode }

func (n *noPTNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	fh, fl, errno := n.LoopbackNode.Open(ctx, flags)
	if errno != 0 {
		return nil, 0, errno
	}
	return &noPTFile{fh}, fl, 0
}

func (n *noPTNode) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	in, fh, fl, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	return in, &noPTFile{fh}, fl, 0
}

// noPTFile forwards everything but PassthroughFd.
type noPTFile struct{ f gofs.FileHandle }

func (p *noPTFile) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	return p.f.(gofs.FileReader).Read(ctx, dest, off)
}

func (p *noPTFile) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	return p.f.(gofs.FileWriter).Write(ctx, data, off)
}

func (p *noPTFile) Flush(ctx context.Context) syscall.Errno {
	return p.f.(gofs.FileFlusher).Flush(ctx)
}

func (p *noPTFile) Release(ctx context.Context) syscall.Errno {
	return p.f.(gofs.FileReleaser).Release(ctx)
}

func (p *noPTFile) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	return p.f.(gofs.FileFsyncer).Fsync(ctx, flags)
}

func (p *noPTFile) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	return p.f.(gofs.FileGetattrer).Getattr(ctx, out)
}

func (p *noPTFile) Setattr(ctx context.Context, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return p.f.(gofs.FileSetattrer).Setattr(ctx, in, out)
}

func (p *noPTFile) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	return p.f.(gofs.FileLseeker).Lseek(ctx, off, whence)
}

func (p *noPTFile) Allocate(ctx context.Context, off uint64, size uint64, mode uint32) syscall.Errno {
	return p.f.(gofs.FileAllocater).Allocate(ctx, off, size, mode)
}
