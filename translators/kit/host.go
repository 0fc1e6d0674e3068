package kit

import (
	"context"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"herd/proto"
)

// What translators that pass host files on (Loopback, unionfs) share: the
// kernel's structures in proto's words, directory listings, and the open
// host file as a Handle.

// AttrOf is st in proto's words.
func AttrOf(st *unix.Stat_t) proto.Attr {
	return proto.Attr{
		Ino: st.Ino, Size: uint64(st.Size), Blocks: uint64(st.Blocks), Mode: st.Mode,
		Nlink: uint32(st.Nlink), Uid: st.Uid, Gid: st.Gid, Rdev: st.Rdev, Blksize: uint32(st.Blksize),
		Atime: proto.Timespec{Sec: st.Atim.Sec, Nsec: uint32(st.Atim.Nsec)},
		Mtime: proto.Timespec{Sec: st.Mtim.Sec, Nsec: uint32(st.Mtim.Nsec)},
		Ctime: proto.Timespec{Sec: st.Ctim.Sec, Nsec: uint32(st.Ctim.Nsec)},
	}
}

// StatFSOf is st in proto's words.
func StatFSOf(st *unix.Statfs_t) proto.StatFS {
	return proto.StatFS{
		Blocks: st.Blocks, Bfree: st.Bfree, Bavail: st.Bavail, Files: st.Files, Ffree: st.Ffree,
		Bsize: uint32(st.Bsize), Frsize: uint32(st.Frsize), NameLen: uint32(st.Namelen),
	}
}

// ReadDirFD lists the open directory fd (names, inode numbers, type bits),
// without "." and "..".
func ReadDirFD(fd int) ([]proto.DirEntry, error) {
	var out []proto.DirEntry
	buf := make([]byte, 32<<10)
	for {
		k, err := unix.Getdents(fd, buf)
		if err != nil {
			return nil, err
		}
		if k <= 0 {
			return out, nil
		}
		for b := buf[:k]; len(b) > 0; {
			// struct linux_dirent64: ino u64, off s64, reclen u16, type u8, name
			reclen := int(b[16]) | int(b[17])<<8
			ino := uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
				uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
			typ := b[18]
			name := b[19:reclen]
			for i, c := range name {
				if c == 0 {
					name = name[:i]
					break
				}
			}
			if s := string(name); s != "." && s != ".." {
				out = append(out, proto.DirEntry{Name: s, Ino: ino, Mode: uint32(typ) << 12})
			}
			b = b[reclen:]
		}
	}
}

// SetAttrOwner is the owner in asks for, as fchownat takes it (-1: keep);
// ok is false when in changes neither.
func SetAttrOwner(in proto.SetAttrIn) (uid, gid int, ok bool) {
	uid, gid = -1, -1
	if in.Valid&proto.SetAttrUid != 0 {
		uid = int(in.Uid)
	}
	if in.Valid&proto.SetAttrGid != 0 {
		gid = int(in.Gid)
	}
	return uid, gid, in.Valid&(proto.SetAttrUid|proto.SetAttrGid) != 0
}

// SetAttrTimes is the access and modification times in asks for, as
// utimensat takes them (UTIME_OMIT: keep); ok is false when in changes
// neither.
func SetAttrTimes(in proto.SetAttrIn) (ts []unix.Timespec, ok bool) {
	ts = []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
	set := func(i int, now, at uint32, t proto.Timespec) {
		switch {
		case in.Valid&now != 0:
			ts[i] = unix.Timespec{Nsec: unix.UTIME_NOW}
		case in.Valid&at != 0:
			ts[i] = unix.Timespec{Sec: t.Sec, Nsec: int64(t.Nsec)}
		}
	}
	set(0, proto.SetAttrAtimeNow, proto.SetAttrAtime, in.Atime)
	set(1, proto.SetAttrMtimeNow, proto.SetAttrMtime, in.Mtime)
	return ts, in.Valid&(proto.SetAttrAtime|proto.SetAttrMtime|proto.SetAttrAtimeNow|proto.SetAttrMtimeNow) != 0
}

// HostFile is an open host file as a Handle: a plain descriptor (no
// poller), read and written at offsets. A translator's own handle type may
// embed it, and its nodes embed HostIO to serve it.
type HostFile struct{ FD int }

func (f *HostFile) hostFile() *HostFile { return f }

// BackingFile lets the client read and write the host file itself (FUSE
// passthrough).
func (f *HostFile) BackingFile() (*os.File, error) {
	fd, err := unix.FcntlInt(uintptr(f.FD), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), "backing file"), nil
}

// Close closes the descriptor, for a node's Release.
func (f *HostFile) Close() syscall.Errno { return errnoOf(unix.Close(f.FD)) }

// HostIO, embedded in a node, reads, writes, syncs, allocates and seeks
// the node's open files, whose handles are HostFiles (or embed one).
type HostIO struct{}

var (
	_ Reader    = HostIO{}
	_ Writer    = HostIO{}
	_ Fsyncer   = HostIO{}
	_ Allocater = HostIO{}
	_ Lseeker   = HostIO{}
)

func hostFD(h Handle) (int, syscall.Errno) {
	if f, ok := h.(interface{ hostFile() *HostFile }); ok {
		return f.hostFile().FD, 0
	}
	return -1, syscall.EBADF
}

func (HostIO) Read(ctx context.Context, h Handle, off int64, size int) ([]byte, syscall.Errno) {
	fd, errno := hostFD(h)
	if errno != 0 {
		return nil, errno
	}
	buf := make([]byte, size)
	k, err := unix.Pread(fd, buf, off)
	if err != nil {
		return nil, errnoOf(err)
	}
	return buf[:k], 0
}

func (HostIO) Write(ctx context.Context, h Handle, off int64, data []byte) (int, syscall.Errno) {
	fd, errno := hostFD(h)
	if errno != 0 {
		return 0, errno
	}
	k, err := unix.Pwrite(fd, data, off)
	return k, errnoOf(err)
}

func (HostIO) Fsync(ctx context.Context, h Handle, datasync bool) syscall.Errno {
	fd, errno := hostFD(h)
	if errno != 0 {
		return 0 // a directory: nothing of ours to flush
	}
	if datasync {
		return errnoOf(unix.Fdatasync(fd))
	}
	return errnoOf(unix.Fsync(fd))
}

func (HostIO) Allocate(ctx context.Context, h Handle, mode uint32, off, length int64) syscall.Errno {
	fd, errno := hostFD(h)
	if errno != 0 {
		return errno
	}
	return errnoOf(unix.Fallocate(fd, mode, off, length))
}

func (HostIO) Lseek(ctx context.Context, h Handle, off int64, whence int) (int64, syscall.Errno) {
	fd, errno := hostFD(h)
	if errno != 0 {
		return 0, errno
	}
	o, err := unix.Seek(fd, off, whence)
	return o, errnoOf(err)
}
