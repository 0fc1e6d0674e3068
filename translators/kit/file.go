package kit

import (
	"context"
	"sync"
	"syscall"

	"herd/proto"
)

// FileNode is a one-file translator's node (the Hurd's libtrivfs case):
// the translated node itself is a regular file whose contents come from a
// function. Make one with File.
type FileNode struct {
	contents func() []byte
	// Mode is the permission bits (default 0444, or 0644 when Save is set).
	Mode uint32
	// Save, when set, makes the file writable: after every write or
	// truncation the whole new contents of the writer's open file are
	// handed to Save, before the write returns (small files: settings).
	Save func(data []byte) error
	// DirectIO makes every read reach the translator (no page cache), for
	// contents that change on their own (clocks, counters).
	DirectIO bool
}

// File returns a node whose contents are contents(), taken anew at every
// open (so an open file reads one consistent version).
func File(contents func() []byte) *FileNode {
	return &FileNode{contents: contents}
}

// StaticFile is File with fixed contents.
func StaticFile(data []byte) *FileNode {
	return File(func() []byte { return data })
}

var (
	_ Node      = (*FileNode)(nil)
	_ Opener    = (*FileNode)(nil)
	_ Reader    = (*FileNode)(nil)
	_ Writer    = (*FileNode)(nil)
	_ Setattrer = (*FileNode)(nil)
	_ Releaser  = (*FileNode)(nil)
	_ Fsyncer   = (*FileNode)(nil)
)

// fileHandle is one open of a FileNode: its own copy of the contents.
type fileHandle struct {
	mu   sync.Mutex
	data []byte
}

func (f *FileNode) mode() uint32 {
	if f.Mode != 0 {
		return f.Mode & 07777
	}
	if f.Save != nil {
		return 0o644
	}
	return 0o444
}

func (f *FileNode) Getattr(ctx context.Context, out *proto.Attr) syscall.Errno {
	out.Mode = syscall.S_IFREG | f.mode()
	out.Size = uint64(len(f.contents()))
	return 0
}

func (f *FileNode) Open(ctx context.Context, flags uint32) (Handle, uint32, syscall.Errno) {
	h := &fileHandle{}
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		if f.Save == nil {
			return nil, 0, syscall.EACCES
		}
	}
	if flags&syscall.O_TRUNC != 0 && f.Save != nil {
		if err := f.Save(nil); err != nil {
			return nil, 0, proto.ToErrno(err)
		}
	} else {
		h.data = append([]byte(nil), f.contents()...)
	}
	var oflags uint32
	if f.DirectIO {
		oflags = proto.OpenDirectIO
	}
	return h, oflags, 0
}

func (f *FileNode) Read(ctx context.Context, h Handle, off int64, size int) ([]byte, syscall.Errno) {
	fh, ok := h.(*fileHandle)
	if !ok {
		return nil, syscall.EBADF
	}
	fh.mu.Lock()
	defer fh.mu.Unlock()
	if off >= int64(len(fh.data)) {
		return nil, 0
	}
	end := min(off+int64(size), int64(len(fh.data)))
	return append([]byte(nil), fh.data[off:end]...), 0
}

func (f *FileNode) Write(ctx context.Context, h Handle, off int64, data []byte) (int, syscall.Errno) {
	fh, ok := h.(*fileHandle)
	if !ok || f.Save == nil {
		return 0, syscall.EBADF
	}
	fh.mu.Lock()
	defer fh.mu.Unlock()
	if end := off + int64(len(data)); end > int64(len(fh.data)) {
		fh.data = append(fh.data, make([]byte, end-int64(len(fh.data)))...)
	}
	copy(fh.data[off:], data)
	if err := f.Save(append([]byte(nil), fh.data...)); err != nil {
		return 0, proto.ToErrno(err)
	}
	return len(data), 0
}

func (f *FileNode) Setattr(ctx context.Context, h Handle, in proto.SetAttrIn, out *proto.Attr) syscall.Errno {
	if in.Valid&^(proto.SetAttrSize|proto.SetAttrHandle|proto.SetAttrAtime|proto.SetAttrMtime|proto.SetAttrAtimeNow|proto.SetAttrMtimeNow) != 0 {
		return syscall.EPERM
	}
	if in.Valid&proto.SetAttrSize != 0 {
		if f.Save == nil {
			return syscall.EACCES
		}
		if fh, ok := h.(*fileHandle); ok {
			fh.mu.Lock()
			fh.data = append([]byte(nil), fh.data[:min(int64(len(fh.data)), int64(in.Size))]...)
			fh.data = append(fh.data, make([]byte, max(0, int64(in.Size)-int64(len(fh.data))))...)
			err := f.Save(append([]byte(nil), fh.data...))
			fh.mu.Unlock()
			if err != nil {
				return proto.ToErrno(err)
			}
		} else {
			data := f.contents()
			data = append([]byte(nil), data[:min(int64(len(data)), int64(in.Size))]...)
			if err := f.Save(append(data, make([]byte, max(0, int64(in.Size)-int64(len(data))))...)); err != nil {
				return proto.ToErrno(err)
			}
		}
	}
	// Times are not kept: a generated file is always "now".
	return f.Getattr(ctx, out)
}

func (f *FileNode) Fsync(ctx context.Context, h Handle, datasync bool) syscall.Errno { return 0 }

func (f *FileNode) Release(ctx context.Context, h Handle) syscall.Errno { return 0 }
