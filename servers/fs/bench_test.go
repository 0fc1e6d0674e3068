package fs

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkLookup: a lookup and a getattr five levels deep, in-process.
func BenchmarkLookup(b *testing.B) {
	for _, cow := range []bool{false, true} {
		b.Run(fmt.Sprintf("cow=%v", cow), func(b *testing.B) {
			base := b.TempDir()
			lower := filepath.Join(base, "l")
			os.MkdirAll(filepath.Join(lower, "a/b/c/d"), 0o755)
			os.WriteFile(filepath.Join(lower, "a/b/c/d/f"), []byte("x"), 0o644)
			opts := Options{Root: lower, RuntimeDir: filepath.Join(base, "run")}
			if cow {
				opts.Upper = filepath.Join(base, "u")
				os.Mkdir(opts.Upper, 0o755)
			}
			s, err := New(opts)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			e := &env{s: s}
			d := e.nodeB(b, "a/b/c/d")
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				en, err := s.Lookup(bg, d, "f")
				if err != nil {
					b.Fatal(err)
				}
				if _, err := s.GetAttr(bg, en.Node); err != nil {
					b.Fatal(err)
				}
				s.Forget(bg, en.Node, 1)
			}
		})
	}
}

// BenchmarkReadDirPlus: the listing of a directory of 100 files with every
// entry's attributes, as a cold find asks for it (copy-on-write over a lower
// directory, translator records looked for), in-process.
func BenchmarkReadDirPlus(b *testing.B) {
	for _, trans := range []bool{false, true} {
		b.Run(fmt.Sprintf("trans=%v", trans), func(b *testing.B) {
			base := b.TempDir()
			lower := filepath.Join(base, "l")
			os.MkdirAll(filepath.Join(lower, "d"), 0o755)
			for i := 0; i < 100; i++ {
				os.WriteFile(filepath.Join(lower, "d", fmt.Sprintf("f%d", i)), []byte("x"), 0o644)
			}
			opts := Options{Root: lower, Upper: filepath.Join(base, "u")}
			if trans {
				opts.RuntimeDir = filepath.Join(base, "run")
			}
			os.Mkdir(opts.Upper, 0o755)
			s, err := New(opts)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			e := &env{s: s}
			d := e.nodeB(b, "d")
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				ents, err := s.ReadDirPlus(bg, d)
				if err != nil || len(ents) != 100 {
					b.Fatal(len(ents), err)
				}
				for _, en := range ents {
					s.Forget(bg, en.Entry.Node, 1)
				}
			}
		})
	}
}
