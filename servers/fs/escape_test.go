package fs

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"herd/proto"
)

const secret = "SECRET-OUTSIDE"

// outside makes a directory beside the served tree holding a sentinel
// (an /etc/shadow stand-in) and returns a function that checks nothing in it
// was changed or added.
func outside(t *testing.T, base string) (dir string, check func()) {
	dir = filepath.Join(base, "outside")
	writeHost(t, filepath.Join(dir, "shadow"), secret)
	must(t, os.Chmod(filepath.Join(dir, "shadow"), 0o600))
	before := snapshot(t, dir)
	return dir, func() {
		t.Helper()
		if after := snapshot(t, dir); after != before {
			t.Fatalf("outside changed:\nbefore:\n%s\nafter:\n%s", before, after)
		}
	}
}

func TestEscape(t *testing.T) {
	for _, cow := range []bool{false, true} {
		t.Run(map[bool]string{false: "rw", true: "cow"}[cow], func(t *testing.T) {
			e := newEnv(t, cow, nil)
			base := filepath.Dir(e.lower)
			out, check := outside(t, base)
			rel := strings.Repeat("../", 12) + strings.TrimPrefix(out, "/")
			os.Symlink(filepath.Join(out, "shadow"), filepath.Join(e.lower, "abs"))
			os.Symlink(rel+"/shadow", filepath.Join(e.lower, "rel"))
			os.Symlink(out, filepath.Join(e.lower, "absdir"))
			os.Symlink("../outside", filepath.Join(e.lower, "reldir"))
			os.Mkdir(filepath.Join(e.lower, "sub"), 0o755)
			os.Symlink("../../outside/shadow", filepath.Join(e.lower, "sub/up"))

			root := e.node("")
			for _, bad := range []string{"..", ".", "../outside", "../../outside/shadow", "a/../../outside", ""} {
				_, err := e.s.Lookup(bg, root, bad)
				wantErrno(t, err, syscall.EINVAL)
				_, _, err = e.s.Create(bg, root, bad, unix.O_WRONLY, 0o644)
				wantErrno(t, err, syscall.EINVAL)
				wantErrno(t, e.s.Rename(bg, root, "sub", root, bad, 0), syscall.EINVAL)
			}
			for _, l := range []string{"abs", "rel", "sub/up"} {
				n := e.node(l)
				_, err := e.s.Open(bg, n, unix.O_RDONLY)
				wantErrno(t, err, syscall.ELOOP)
				_, err = e.s.Open(bg, n, unix.O_RDWR|unix.O_TRUNC)
				if err == nil {
					t.Fatalf("opening symlink %s for writing worked", l)
				}
				e.s.SetAttr(bg, n, proto.SetAttrIn{Valid: proto.SetAttrMode | proto.SetAttrSize, Mode: 0o666, Size: 0})
				e.s.SetAttr(bg, n, proto.SetAttrIn{Valid: proto.SetAttrMode, Mode: 0o666})
				e.s.SetAttr(bg, n, proto.SetAttrIn{Valid: proto.SetAttrUid, Uid: 99})
				e.s.SetXattr(bg, n, "user.x", []byte("y"), 0)
				e.s.SetXattr(bg, n, "trusted.x", []byte("y"), 0)
				e.s.GetXattr(bg, n, "user.x")
				e.s.Link(bg, n, root, "hl-"+strings.ReplaceAll(l, "/", "-"))
				if b, err := e.readFile("hl-" + strings.ReplaceAll(l, "/", "-")); err == nil && strings.Contains(b, secret) {
					t.Fatalf("read the secret through a hard link of %s", l)
				}
			}
			for _, d := range []string{"absdir", "reldir"} {
				n := e.node(d)
				_, err := e.s.Lookup(bg, n, "shadow")
				wantErrno(t, err, syscall.ENOTDIR)
				_, _, err = e.s.Create(bg, n, "planted", unix.O_WRONLY, 0o644)
				wantErrno(t, err, syscall.ENOTDIR)
				_, err = e.s.ReadDir(bg, n)
				wantErrno(t, err, syscall.ENOTDIR)
				_, err = e.s.Mkdir(bg, n, "planted", 0o755)
				wantErrno(t, err, syscall.ENOTDIR)
				wantErrno(t, e.s.Unlink(bg, n, "shadow"), syscall.ENOTDIR)
				wantErrno(t, e.s.Rename(bg, n, "shadow", root, "stolen", 0), syscall.ENOTDIR)
			}
			// A client plants its own symlink and tries to walk through it.
			en, err := e.s.Symlink(bg, root, "mine", out)
			must(t, err)
			_, err = e.s.Lookup(bg, en.Node, "shadow")
			wantErrno(t, err, syscall.ENOTDIR)
			check()

			// Rename race: a directory the client is working in is swapped
			// with a symlink to outside, over and over, by the host (and, in
			// copy-on-write mode, in both layers).
			layers := []string{e.lower}
			if cow {
				layers = append(layers, e.upper)
			}
			for _, l := range layers {
				writeHost(t, filepath.Join(l, "race/shadow"), "inside")
				must(t, os.Symlink(out, filepath.Join(l, "evil")))
			}
			race := e.node("race")
			var stop atomic.Bool
			var wg sync.WaitGroup
			for _, l := range layers {
				wg.Add(1)
				go func(l string) {
					defer wg.Done()
					a, b := filepath.Join(l, "race"), filepath.Join(l, "evil")
					for !stop.Load() {
						unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE)
					}
				}(l)
			}
			for i := 0; i < 3000; i++ {
				if en, err := e.s.Lookup(bg, race, "shadow"); err == nil {
					if r, err := e.s.Open(bg, en.Node, unix.O_RDWR); err == nil {
						b, _ := e.s.Read(bg, r.Handle, 0, 100)
						if strings.Contains(string(b), secret) {
							stop.Store(true)
							t.Fatalf("read the secret through the race")
						}
						e.s.Write(bg, r.Handle, 0, []byte("pwned"))
						r.File.Close()
						e.s.Release(bg, r.Handle)
					}
					e.s.SetAttr(bg, en.Node, proto.SetAttrIn{Valid: proto.SetAttrMode, Mode: 0o666})
					e.s.Forget(bg, en.Node, 1)
				}
				if _, r, err := e.s.Create(bg, race, "planted", unix.O_WRONLY, 0o644); err == nil {
					r.File.Close()
					e.s.Release(bg, r.Handle)
					e.s.Unlink(bg, race, "planted")
				}
				e.s.ReadDir(bg, race)
				e.s.Mkdir(bg, race, "pd", 0o755)
				e.s.Rmdir(bg, race, "pd")
				e.s.Rename(bg, race, "shadow", race, "shadow2", 0)
				e.s.Rename(bg, race, "shadow2", race, "shadow", 0)
			}
			stop.Store(true)
			wg.Wait()
			check()
		})
	}
}
