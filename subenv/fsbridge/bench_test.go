package fsbridge

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// The benchmarks run each loop natively (on the directory servers/fs
// serves), through go-fuse's loopback and through the bridge, in the same
// run, so ratios can be reported. "bridge" is the subenvironment's case for
// a plain user (the bridge reads backing descriptors itself) and compares
// with "loopback" (passthrough off); "passthrough" is root's and compares
// with "loopback-pt".

const benchFiles = 1000

// benchTree fills dir with benchFiles small files in 10 directories.
func benchTree(b *testing.B, dir string) []string {
	b.Helper()
	var files []string
	for d := 0; d < 10; d++ {
		sub := filepath.Join(dir, fmt.Sprintf("d%d", d))
		if err := os.Mkdir(sub, 0o755); err != nil {
			b.Fatal(err)
		}
		for i := 0; i < benchFiles/10; i++ {
			rel := filepath.Join(fmt.Sprintf("d%d", d), fmt.Sprintf("f%d", i))
			if err := os.WriteFile(filepath.Join(dir, rel), make([]byte, 4096), 0o644); err != nil {
				b.Fatal(err)
			}
			files = append(files, rel)
		}
	}
	return files
}

// benchTargets returns the roots to compare: native, and the same tree
// through the bridge (without and with passthrough).
func benchTargets(b *testing.B, setup func(b *testing.B, dir string)) map[string]string {
	b.Helper()
	out := map[string]string{}
	native := b.TempDir()
	setup(b, native)
	out["native"] = native
	for name, pt := range map[string]bool{"bridge": false, "passthrough": true} {
		dir, lower := mountCOW(b, Options{Passthrough: pt})
		setup(b, lower)
		out[name] = dir
	}
	out["loopback"] = mountLoopback(b, setup, false)
	out["loopback-pt"] = mountLoopback(b, setup, true)
	return out
}

// mountLoopback mounts go-fuse's own loopback file system (its example,
// 1 s timeouts: the ANCHORS.md set-up), which has no protocol hop: the
// figure to beat. Without pt its files are not handed to the kernel.
func mountLoopback(b *testing.B, setup func(b *testing.B, dir string), pt bool) string {
	b.Helper()
	orig := b.TempDir()
	setup(b, orig)
	mnt := b.TempDir()
	newRoot := newLoopbackNoPassthrough
	if pt {
		newRoot = gofs.NewLoopbackRoot
	}
	root, err := newRoot(orig)
	if err != nil {
		b.Fatal(err)
	}
	sec := time.Second
	srv, err := gofs.Mount(mnt, root, &gofs.Options{
		AttrTimeout:  &sec,
		EntryTimeout: &sec,
		MountOptions: fuse.MountOptions{
			DirectMountStrict: true,
			AllowOther:        true,
			Options:           []string{"default_permissions"},
			FsName:            "loopback",
			Name:              "loopback",
		},
	})
	if err != nil {
		b.Fatalf("loopback mount: %v", err)
	}
	b.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
	})
	return mnt
}

var benchOrder = []string{"native", "loopback", "bridge", "loopback-pt", "passthrough"}

func BenchmarkStat(b *testing.B) {
	var files []string
	roots := benchTargets(b, func(b *testing.B, dir string) { files = benchTree(b, dir) })
	for _, name := range benchOrder {
		root := roots[name]
		b.Run(name, func(b *testing.B) {
			var st syscall.Stat_t
			for i := 0; b.Loop(); i++ {
				if err := syscall.Lstat(filepath.Join(root, files[i%len(files)]), &st); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkOpenClose(b *testing.B) {
	var files []string
	roots := benchTargets(b, func(b *testing.B, dir string) { files = benchTree(b, dir) })
	for _, name := range benchOrder {
		root := roots[name]
		b.Run(name, func(b *testing.B) {
			for i := 0; b.Loop(); i++ {
				fd, err := syscall.Open(filepath.Join(root, files[i%len(files)]), syscall.O_RDONLY, 0)
				if err != nil {
					b.Fatal(err)
				}
				syscall.Close(fd)
			}
		})
	}
}

// BenchmarkReadSmall is open+read+close of 4 KiB files (cat of each).
func BenchmarkReadSmall(b *testing.B) {
	var files []string
	roots := benchTargets(b, func(b *testing.B, dir string) { files = benchTree(b, dir) })
	for _, name := range benchOrder {
		root := roots[name]
		b.Run(name, func(b *testing.B) {
			buf := make([]byte, 8192)
			b.SetBytes(4096)
			for i := 0; b.Loop(); i++ {
				fd, err := syscall.Open(filepath.Join(root, files[i%len(files)]), syscall.O_RDONLY, 0)
				if err != nil {
					b.Fatal(err)
				}
				if n, err := syscall.Read(fd, buf); err != nil || n != 4096 {
					b.Fatalf("read: %d %v", n, err)
				}
				syscall.Close(fd)
			}
		})
	}
}

// BenchmarkFind walks the whole tree, lstat-ing every name (find -type f).
func BenchmarkFind(b *testing.B) {
	roots := benchTargets(b, func(b *testing.B, dir string) { benchTree(b, dir) })
	for _, name := range benchOrder {
		root := roots[name]
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				n := 0
				err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
					if err != nil {
						return err
					}
					if _, err := d.Info(); err != nil {
						return err
					}
					n++
					return nil
				})
				if err != nil || n < benchFiles {
					b.Fatalf("walk: %d names, %v", n, err)
				}
			}
		})
	}
}

const benchBig = 256 << 20

func BenchmarkReadSeq(b *testing.B) {
	roots := benchTargets(b, func(b *testing.B, dir string) {
		f, err := os.Create(filepath.Join(dir, "big"))
		if err != nil {
			b.Fatal(err)
		}
		chunk := make([]byte, 1<<20)
		for i := range chunk {
			chunk[i] = byte(i)
		}
		for i := 0; i < benchBig/len(chunk); i++ {
			f.Write(chunk)
		}
		f.Close()
	})
	for _, name := range benchOrder {
		root := roots[name]
		b.Run(name, func(b *testing.B) {
			buf := make([]byte, 1<<20)
			b.SetBytes(benchBig)
			for b.Loop() {
				f, err := os.Open(filepath.Join(root, "big"))
				if err != nil {
					b.Fatal(err)
				}
				n, err := io.CopyBuffer(io.Discard, onlyReader{f}, buf)
				f.Close()
				if err != nil || n != benchBig {
					b.Fatalf("read %d: %v", n, err)
				}
			}
		})
	}
}

func BenchmarkWriteSeq(b *testing.B) {
	roots := benchTargets(b, func(b *testing.B, dir string) {})
	for _, name := range benchOrder {
		root := roots[name]
		b.Run(name, func(b *testing.B) {
			chunk := make([]byte, 1<<20)
			b.SetBytes(benchBig)
			for b.Loop() {
				f, err := os.Create(filepath.Join(root, "out"))
				if err != nil {
					b.Fatal(err)
				}
				for i := 0; i < benchBig/len(chunk); i++ {
					if _, err := f.Write(chunk); err != nil {
						b.Fatal(err)
					}
				}
				if err := f.Close(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// onlyReader hides os.File's WriterTo, so the copy reads in 1 MiB calls.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

// BenchmarkCat is cat of a 4 KiB file: open, fstat, read, close.
func BenchmarkCat(b *testing.B) {
	var files []string
	roots := benchTargets(b, func(b *testing.B, dir string) { files = benchTree(b, dir) })
	for _, name := range benchOrder {
		root := roots[name]
		b.Run(name, func(b *testing.B) {
			buf := make([]byte, 8192)
			b.SetBytes(4096)
			var st syscall.Stat_t
			for i := 0; b.Loop(); i++ {
				fd, err := syscall.Open(filepath.Join(root, files[i%len(files)]), syscall.O_RDONLY, 0)
				if err != nil {
					b.Fatal(err)
				}
				if err := syscall.Fstat(fd, &st); err != nil {
					b.Fatal(err)
				}
				if n, err := syscall.Read(fd, buf); err != nil || n != 4096 {
					b.Fatalf("read: %d %v", n, err)
				}
				syscall.Close(fd)
			}
		})
	}
}
