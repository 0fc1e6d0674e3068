// Package tarfs is the tarfs translator: a tar archive (plain, gzip, bzip2
// or xz) served as a directory tree that shows what `tar tvf` lists and can
// be changed; changes are written back to the archive on sync and goaway.
//
// The index is built from the headers alone (Archive, ReadIndex): a file's
// data is read from the archive when the file is read, and held in memory
// only once it is changed. A compressed archive is decompressed once into an
// unlinked temporary file first. A damaged archive serves what precedes the
// damage; members it cuts give EIO.
package tarfs

import (
	"fmt"
	"os"

	"github.com/spf13/pflag"

	"herd/translators/kit"
)

// Translator is tarfs, for kit.Main.
func Translator() kit.Translator {
	flags := pflag.NewFlagSet("tarfs", pflag.ContinueOnError)
	gz := flags.BoolP("gzip", "z", false, "the archive is gzip-compressed (default: tell from its first bytes)")
	bz := flags.BoolP("bzip2", "j", false, "the archive is bzip2-compressed")
	xz := flags.BoolP("xz", "J", false, "the archive is xz-compressed")
	create := flags.BoolP("create", "c", false, "create ARCHIVE (empty) if it does not exist")
	var a *Archive
	return kit.Translator{
		Name: "tarfs",
		Args: "[ARCHIVE]",
		Doc: "Serves the tar archive ARCHIVE (tar, tar.gz, tar.bz2, tar.xz) as a directory, read-write: changes go\n" +
			"back into the archive on sync and when the translator goes away. Without ARCHIVE it serves the\n" +
			"node it sits on (settrans -p x.tar tarfs). bzip2 and xz archives need the bzip2 and xz programs.",
		Flags: flags,
		Root: func(args []string) (kit.Node, error) {
			opts := Options{Logf: func(format string, args ...any) {
				fmt.Fprintf(os.Stderr, "tarfs: "+format+"\n", args...)
			}}
			n := 0
			for c, set := range map[Compression]bool{Gzip: *gz, Bzip2: *bz, Xz: *xz} {
				if set {
					opts.Compression = c
					n++
				}
			}
			switch {
			case n > 1:
				return nil, kit.Usagef("give one of -z, -j, -J")
			case len(args) > 1:
				return nil, kit.Usagef("one ARCHIVE only")
			case len(args) == 1:
				opts.Path = args[0]
				if *create {
					f, err := os.OpenFile(args[0], os.O_CREATE|os.O_WRONLY, 0o644)
					if err != nil {
						return nil, err
					}
					f.Close()
				}
			case kit.Underlying() != nil:
				opts.File = kit.Underlying()
				if fi, err := opts.File.Stat(); err == nil && fi.IsDir() {
					return nil, kit.Usagef("no ARCHIVE given, and the node beneath is a directory")
				}
			default:
				return nil, kit.Usagef("no ARCHIVE, and no node beneath to read it from")
			}
			var err error
			if a, err = Open(opts); err != nil {
				return nil, err
			}
			return a.Mem.Root(), nil
		},
		SetOptions: func(changed []string) error {
			if len(changed) > 0 {
				return fmt.Errorf("--%s cannot change at run time", changed[0])
			}
			return nil
		},
		Sync: func() error { return a.Sync() },
	}
}
