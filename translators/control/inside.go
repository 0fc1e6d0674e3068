package control

import (
	"errors"

	"golang.org/x/sys/unix"
)

// Inside a subenvironment the fs server that owns a node keeps its
// translator records; these reach it through xattrs on the node.

// insideGet returns the argv an xattr holds, nil when it has none.
func insideGet(path, name string) ([]string, error) {
	v, err := getxattr(path, name)
	if errors.Is(err, unix.ENODATA) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return DecodeArgv(v), nil
}

func insideSetPassive(path string, argv []string) error {
	if len(argv) == 0 {
		err := unix.Removexattr(path, XattrPassive)
		if errors.Is(err, unix.ENODATA) {
			return nil
		}
		return err
	}
	return unix.Setxattr(path, XattrPassive, EncodeArgv(argv), 0)
}

func insideStart(path string, argv []string) error {
	return unix.Setxattr(path, XattrActive, EncodeArgv(argv), 0)
}

func insideGoaway(path string, force bool) error {
	v := []byte{}
	if force {
		v = []byte("force")
	}
	return unix.Setxattr(path, XattrGoaway, v, 0)
}

func insideSetOptions(path string, opts []string) error {
	return unix.Setxattr(path, XattrOptions, EncodeArgv(opts), 0)
}
