package control

import (
	"errors"
	"fmt"
	"syscall"
	"time"

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

// controlErr explains a refused control xattr. The fs bridge sends the
// control xattrs of a translated node to the server that owns the node
// (not to its translator), so a refusal means that server keeps no
// translators (it is not herd's fs server, or it runs without a runtime
// directory).
func controlErr(err error) error {
	if err != nil && xattrRefused(err) {
		return fmt.Errorf("the server that owns the node does not control translators: %w", err)
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

// insideGoaway stops NODE's running translator, then waits (briefly) until
// NODE no longer shows it: the fs server tells the kernel that the name
// changed meaning a moment after it answers, and the next program must not
// find the stopped translator's root (EIO) in the kernel's cache.
func insideGoaway(path string, force bool) error {
	var before syscall.Stat_t
	translated := syscall.Stat(path, &before) == nil
	v := []byte{}
	if force {
		v = []byte("force")
	}
	if err := unix.Setxattr(path, XattrGoaway, v, 0); err != nil {
		return controlErr(err)
	}
	if translated {
		waitDetached(path, &before, 5*time.Second)
	}
	return nil
}

// waitDetached waits until NODE shows something other than before (the
// file under the stopped translator, or a passive translator started
// anew), or until timeout: only a wait, never an error.
func waitDetached(node string, before *syscall.Stat_t, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		var st syscall.Stat_t
		err := syscall.Stat(node, &st)
		if err == nil && (st.Ino != before.Ino || st.Dev != before.Dev) {
			return
		}
		if err != nil && !errors.Is(err, syscall.EIO) {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func insideSetOptions(path string, opts []string) error {
	return controlErr(unix.Setxattr(path, XattrOptions, EncodeArgv(opts), 0))
}
