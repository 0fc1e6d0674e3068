package fs

import (
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The *xattrat calls (Linux 6.13) act on dirfd+name without following a
// final symlink and without going through /proc; older kernels fall back
// to the /proc/self/fd path. So does the directory itself (name ""): with
// AT_EMPTY_PATH they refuse the O_PATH descriptors the layers are.

type xattrArgs struct {
	value uint64
	size  uint32
	flags uint32
}

var noXattrAt atomic.Bool

func atArgs(name string) (*byte, uintptr, error) {
	flags := uintptr(unix.AT_SYMLINK_NOFOLLOW)
	if name == "" {
		flags = unix.AT_EMPTY_PATH
	}
	p, err := unix.BytePtrFromString(name)
	return p, flags, err
}

func getXattrAt(dirfd int, name, attr string) ([]byte, error) {
	if noXattrAt.Load() || name == "" {
		return getXattrPath(xpath(dirfd, name), attr)
	}
	p, flags, err := atArgs(name)
	if err != nil {
		return nil, err
	}
	a, err := unix.BytePtrFromString(attr)
	if err != nil {
		return nil, err
	}
	// The size is asked first (no buffer): most names have no such
	// attribute (a translator record, an owner record), and a listing asks
	// for every entry.
	var buf []byte
	for {
		args := xattrArgs{size: uint32(len(buf))}
		if len(buf) > 0 {
			args.value = uint64(uintptr(unsafe.Pointer(&buf[0])))
		}
		n, _, e := unix.Syscall6(unix.SYS_GETXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)), flags,
			uintptr(unsafe.Pointer(a)), uintptr(unsafe.Pointer(&args)), unsafe.Sizeof(args))
		switch {
		case e == unix.ENOSYS:
			noXattrAt.Store(true)
			return getXattrPath(xpath(dirfd, name), attr)
		case e == unix.ERANGE:
			buf = nil // grew meanwhile: ask the size again
			continue
		case e != 0:
			return nil, e
		case n == 0:
			return nil, nil
		case buf == nil:
			buf = make([]byte, n)
			continue
		}
		return buf[:n], nil
	}
}

func listXattrsAt(dirfd int, name string) ([]string, error) {
	if noXattrAt.Load() || name == "" {
		return listXattrsPath(xpath(dirfd, name))
	}
	p, flags, err := atArgs(name)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, 4096)
	for {
		n, _, e := unix.Syscall6(unix.SYS_LISTXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)), flags,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0)
		switch {
		case e == unix.ENOSYS:
			noXattrAt.Store(true)
			return listXattrsPath(xpath(dirfd, name))
		case e == unix.ERANGE && len(buf) < 1<<20:
			buf = make([]byte, len(buf)*8)
			continue
		case e != 0:
			return nil, e
		}
		return splitNul(buf[:n]), nil
	}
}

func setXattrAt(dirfd int, name, attr string, value []byte, xflags int) error {
	if noXattrAt.Load() || name == "" {
		return setXattrPath(xpath(dirfd, name), attr, value, xflags)
	}
	p, flags, err := atArgs(name)
	if err != nil {
		return err
	}
	a, err := unix.BytePtrFromString(attr)
	if err != nil {
		return err
	}
	var v uint64
	if len(value) > 0 {
		v = uint64(uintptr(unsafe.Pointer(&value[0])))
	}
	args := xattrArgs{value: v, size: uint32(len(value)), flags: uint32(xflags)}
	_, _, e := unix.Syscall6(unix.SYS_SETXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)), flags,
		uintptr(unsafe.Pointer(a)), uintptr(unsafe.Pointer(&args)), unsafe.Sizeof(args))
	if e == unix.ENOSYS {
		noXattrAt.Store(true)
		return setXattrPath(xpath(dirfd, name), attr, value, xflags)
	}
	if e != 0 {
		return e
	}
	return nil
}

func removeXattrAt(dirfd int, name, attr string) error {
	if noXattrAt.Load() || name == "" {
		return removeXattrPath(xpath(dirfd, name), attr)
	}
	p, flags, err := atArgs(name)
	if err != nil {
		return err
	}
	a, err := unix.BytePtrFromString(attr)
	if err != nil {
		return err
	}
	_, _, e := unix.Syscall6(unix.SYS_REMOVEXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)), flags,
		uintptr(unsafe.Pointer(a)), 0, 0)
	if e == unix.ENOSYS {
		noXattrAt.Store(true)
		return removeXattrPath(xpath(dirfd, name), attr)
	}
	if e != 0 {
		return e
	}
	return nil
}

// copyXattrsAt copies every xattr the kernel lets us copy.
func copyXattrsAt(fromDir int, from string, toDir int, to string) {
	names, err := listXattrsAt(fromDir, from)
	if err != nil {
		return
	}
	for _, n := range names {
		if v, err := getXattrAt(fromDir, from, n); err == nil {
			setXattrAt(toDir, to, n, v, 0)
		}
	}
}
