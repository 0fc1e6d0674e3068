package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// GetPassive returns the passive translator record of the host file at
// path, or nil when it has none.
func GetPassive(path string) ([]string, error) {
	v, err := getxattr(path, XattrPassive)
	if err == nil {
		return DecodeArgv(v), nil
	}
	if !errors.Is(err, unix.ENODATA) && !xattrRefused(err) {
		return nil, err
	}
	t, err := readSideTable(filepath.Dir(path))
	if err != nil {
		return nil, err
	}
	return DecodeArgv([]byte(t[filepath.Base(path)])), nil
}

// SetPassive stores argv as the passive translator of the host file at
// path (nil or empty argv clears it): in the xattr, or in the directory's
// side table where the filesystem refuses xattrs.
func SetPassive(path string, argv []string) error {
	var err error
	if len(argv) == 0 {
		err = unix.Removexattr(path, XattrPassive)
		if errors.Is(err, unix.ENODATA) {
			err = nil
		}
	} else {
		err = unix.Setxattr(path, XattrPassive, EncodeArgv(argv), 0)
	}
	if err == nil || recordRefused(err) {
		// Clear (or, when refused, set) the side table's record, so the
		// two never disagree.
		var rec []string
		if err != nil {
			rec = argv
		}
		if terr := updateSideTable(filepath.Dir(path), filepath.Base(path), rec); terr != nil {
			if err != nil {
				return fmt.Errorf("xattrs refused (%v) and side table: %w", err, terr)
			}
			return terr
		}
		return nil
	}
	return &os.PathError{Op: "setxattr " + XattrPassive, Path: path, Err: err}
}

// xattrRefused reports an error that means "this file cannot carry user
// xattrs" (a filesystem without them, or a node type that refuses them).
func xattrRefused(err error) bool {
	return errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EOPNOTSUPP)
}

// recordRefused is xattrRefused for setting a record: user xattrs are
// also refused (EPERM) on symlinks and special files.
func recordRefused(err error) bool {
	return xattrRefused(err) || errors.Is(err, unix.EPERM)
}

func getxattr(path, name string) ([]byte, error) {
	buf := make([]byte, 4096)
	for {
		n, err := unix.Getxattr(path, name, buf)
		if errors.Is(err, unix.ERANGE) {
			buf = make([]byte, 2*len(buf))
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}

// The side table maps a name in the directory to its passive record (JSON,
// the record NUL-joined as in the xattr: servers/fs reads the same file).
func readSideTable(dir string) (map[string]string, error) {
	b, err := os.ReadFile(filepath.Join(dir, SideTable))
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.EACCES) {
		return map[string]string{}, nil
	}
	if err != nil {
		return nil, err
	}
	t := map[string]string{}
	if len(b) > 0 {
		if err := json.Unmarshal(b, &t); err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir, SideTable), err)
		}
	}
	return t, nil
}

func updateSideTable(dir, name string, argv []string) error {
	p := filepath.Join(dir, SideTable)
	t, err := readSideTable(dir)
	if err != nil {
		return err
	}
	if _, had := t[name]; !had && len(argv) == 0 {
		return nil
	}
	if len(argv) == 0 {
		delete(t, name)
	} else {
		t[name] = string(EncodeArgv(argv))
	}
	if len(t) == 0 {
		return os.Remove(p)
	}
	b, err := json.Marshal(t)
	if err != nil {
		return err
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}
