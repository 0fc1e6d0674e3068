package fs

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"herd/proto"
)

var bg = context.Background()

type env struct {
	t     *testing.T
	s     *Server
	lower string // Root
	upper string // "" in write-through mode
	cow   bool
}

// newEnv makes a server over fresh directories; the lower tree is filled by fill.
func newEnv(t *testing.T, cow bool, fill func(dir string)) *env {
	t.Helper()
	base := t.TempDir()
	lower := filepath.Join(base, "lower")
	must(t, os.Mkdir(lower, 0o755))
	if fill != nil {
		fill(lower)
	}
	opts := Options{Root: lower}
	e := &env{t: t, lower: lower, cow: cow}
	if cow {
		e.upper = filepath.Join(base, "upper")
		must(t, os.Mkdir(e.upper, 0o755))
		opts.Upper = e.upper
	}
	s, err := New(opts)
	must(t, err)
	t.Cleanup(func() { s.Close() })
	e.s = s
	return e
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func wantErrno(t testing.TB, err error, want syscall.Errno) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("got error %v, want %v", err, want)
	}
}

// walk looks up a slash-separated path from the root.
func (e *env) walk(p string) (proto.Entry, error) {
	e.t.Helper()
	en, err := e.s.Root(bg)
	if err != nil {
		return en, err
	}
	for _, c := range strings.Split(p, "/") {
		if c == "" {
			continue
		}
		en, err = e.s.Lookup(bg, en.Node, c)
		if err != nil {
			return en, err
		}
	}
	return en, nil
}

func (e *env) node(p string) proto.NodeID {
	e.t.Helper()
	en, err := e.walk(p)
	if err != nil {
		e.t.Fatalf("walk %s: %v", p, err)
	}
	return en.Node
}

func (e *env) split(p string) (proto.NodeID, string) {
	dir, name := filepath.Split(p)
	return e.node(dir), name
}

func (e *env) writeFile(p string, data string) {
	e.t.Helper()
	parent, name := e.split(p)
	var r proto.OpenResult
	if en, err := e.s.Lookup(bg, parent, name); err == nil {
		r, err = e.s.Open(bg, en.Node, unix.O_WRONLY|unix.O_TRUNC)
		must(e.t, err)
	} else {
		_, r, err = e.s.Create(bg, parent, name, unix.O_WRONLY, 0o644)
		must(e.t, err)
	}
	if r.File != nil {
		r.File.Close()
	}
	_, err := e.s.Write(bg, r.Handle, 0, []byte(data))
	must(e.t, err)
	must(e.t, e.s.Release(bg, r.Handle))
}

func (e *env) readFile(p string) (string, error) {
	en, err := e.walk(p)
	if err != nil {
		return "", err
	}
	r, err := e.s.Open(bg, en.Node, unix.O_RDONLY)
	if err != nil {
		return "", err
	}
	if r.File != nil {
		r.File.Close()
	}
	defer e.s.Release(bg, r.Handle)
	var out []byte
	for {
		b, err := e.s.Read(bg, r.Handle, int64(len(out)), 1<<16)
		if err != nil {
			return "", err
		}
		if len(b) == 0 {
			return string(out), nil
		}
		out = append(out, b...)
	}
}

func (e *env) list(p string) []string {
	e.t.Helper()
	ents, err := e.s.ReadDir(bg, e.node(p))
	must(e.t, err)
	var names []string
	for _, d := range ents {
		names = append(names, d.Name)
	}
	sort.Strings(names)
	return names
}

// snapshot describes a host tree: names, types, modes, owners, sizes, times,
// contents, link targets and xattrs. Two equal snapshots mean nothing changed.
func snapshot(t testing.TB, root string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		rel, _ := filepath.Rel(root, p)
		fmt.Fprintf(&b, "%s %o %d:%d %d %d.%d", rel, st.Mode, st.Uid, st.Gid, st.Size, st.Mtim.Sec, st.Mtim.Nsec)
		if p != root {
			// A directory's ctime changes when listed? No: but atime may; skip atime.
			fmt.Fprintf(&b, " c%d.%d", st.Ctim.Sec, st.Ctim.Nsec)
		}
		switch {
		case fi.Mode().IsRegular():
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			h := sha256.New()
			hashData(h, f, st.Size)
			f.Close()
			fmt.Fprintf(&b, " %x", h.Sum(nil)[:8])
		case fi.Mode()&os.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			fmt.Fprintf(&b, " ->%s", l)
		}
		if names, err := listXattrsPath(p); err == nil {
			sort.Strings(names)
			for _, n := range names {
				v, _ := getXattrPath(p, n)
				fmt.Fprintf(&b, " %s=%q", n, v)
			}
		}
		b.WriteByte('\n')
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func writeHost(t testing.TB, p, data string) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Dir(p), 0o755))
	must(t, os.WriteFile(p, []byte(data), 0o644))
}

// hashData hashes a file's data extents with their offsets (holes are
// skipped, so a large sparse file is cheap).
func hashData(h io.Writer, f *os.File, size int64) {
	fd := int(f.Fd())
	for off := int64(0); off < size; {
		d, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if err != nil {
			return
		}
		hole, err := unix.Seek(fd, d, unix.SEEK_HOLE)
		if err != nil {
			hole = size
		}
		fmt.Fprintf(h, "@%d:", d)
		io.Copy(h, io.NewSectionReader(f, d, hole-d))
		off = hole
	}
}

func (e *env) nodeB(b *testing.B, p string) proto.NodeID {
	en, err := e.s.Root(bg)
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range strings.Split(p, "/") {
		if en, err = e.s.Lookup(bg, en.Node, c); err != nil {
			b.Fatal(err)
		}
	}
	return en.Node
}
