package control

import (
	"errors"
	"fmt"

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

// controlErr explains a refused control xattr: on a translated node the
// kernel's path lookup ends at the translator's root, so the request went
// to the translator (which does not know it) instead of the fs server.
func controlErr(err error) error {
	if err != nil && xattrRefused(err) {
		return fmt.Errorf("the node is translated and the request reached its translator, not the fs server (translator control of a translated node is not routed through the fs bridge yet): %w", err)
	}
	return err
}

func insideSetPassive(path string, argv []string) error {
	if len(argv) == 0 {
		err := unix.Removexattr(path, XattrPassive)
		if errors.Is(err, unix.ENODATA) {
			return nil
		}
		return controlErr(err)
	}
	return controlErr(unix.Setxattr(path, XattrPassive, EncodeArgv(argv), 0))
}

func insideStart(path string, argv []string) error {
	return controlErr(unix.Setxattr(path, XattrActive, EncodeArgv(argv), 0))
}

func insideGoaway(path string, force bool) error {
	v := []byte{}
	if force {
		v = []byte("force")
	}
	return controlErr(unix.Setxattr(path, XattrGoaway, v, 0))
}

func insideSetOptions(path string, opts []string) error {
	return controlErr(unix.Setxattr(path, XattrOptions, EncodeArgv(opts), 0))
}
