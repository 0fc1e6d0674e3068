// Package search resolves a translator name the way the Hurd resolves
// /hurd/NAME: a bare name is looked up first in the directory of installed
// herd translators, then in $PATH; a name with a slash is a path, taken as
// given (made absolute, since the translator may be started from another
// working directory).
package search

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// EnvDir names the directory of installed translators when set; otherwise it
// is the directory of the running executable (./bin after `make build`,
// /usr/local/bin after `make install`), where settrans and the translators
// are installed together.
const EnvDir = "HERD_TRANSLATORS"

// NotFoundError says where a translator was looked for.
type NotFoundError struct {
	Name   string
	Looked []string
}

func (e *NotFoundError) Error() string {
	if len(e.Looked) == 0 {
		return fmt.Sprintf("translator %s not found", e.Name)
	}
	return fmt.Sprintf("translator %s not found (looked in %s)", e.Name, strings.Join(e.Looked, ", "))
}

// Is lets errors.Is(err, os.ErrNotExist) hold.
func (e *NotFoundError) Is(target error) bool { return target == os.ErrNotExist }

// Dirs is the search path, in order: the translator directory, then $PATH.
func Dirs() []string {
	var dirs []string
	if d := os.Getenv(EnvDir); d != "" {
		dirs = append(dirs, filepath.SplitList(d)...)
	} else if exe, err := os.Executable(); err == nil {
		if real, err := filepath.EvalSymlinks(exe); err == nil {
			exe = real
		}
		dirs = append(dirs, filepath.Dir(exe))
	}
	for _, d := range filepath.SplitList(os.Getenv("PATH")) {
		if d == "" {
			d = "."
		}
		dirs = append(dirs, d)
	}
	return dedup(dirs)
}

// Resolve returns the absolute path of the translator program NAME.
func Resolve(name string) (string, error) {
	if name == "" {
		return "", errors.New("empty translator name")
	}
	if strings.Contains(name, "/") {
		p, err := filepath.Abs(name)
		if err != nil {
			return "", err
		}
		if err := executable(p); err != nil {
			return "", fmt.Errorf("translator %s: %w", name, err)
		}
		return p, nil
	}
	dirs := Dirs()
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if executable(p) == nil {
			if abs, err := filepath.Abs(p); err == nil {
				p = abs
			}
			return p, nil
		}
	}
	return "", &NotFoundError{Name: name, Looked: dirs}
}

func executable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return errors.New("is a directory")
	}
	if fi.Mode()&0o111 == 0 {
		return errors.New("not executable")
	}
	return nil
}

func dedup(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
