// Package unionfs is the unionfs translator: several host directories (the
// branches) seen as one. A name is looked up in the branches in order and
// the first that has it wins; directories are merged, each name listed
// once.
//
// As the Hurd's unionfs, the union is read-only unless a branch is named
// writable with -w/--writable DIR. The first writable branch takes every
// change: a file of another branch that is written, truncated, chmodded or
// renamed is first copied up into it (contents, mode, owner, times, with
// its parent directories); new names are made in it; a deleted name that
// another branch still has is hidden by a whiteout, an empty file
// .wh.NAME beside it in the writable branch (aufs' convention; names
// starting with .wh. are never shown and cannot be made), and a directory
// made again where one was deleted gets .wh..wh..opq inside so the old
// contents do not show through. A directory that has contents in another
// branch cannot be renamed (EXDEV, as overlayfs: mv copies instead).
//
// Branches are in the order given: -w/--writable and -a/--add options
// first, in their order, then the positional DIRs, then with -u/--underlying
// the node the translator sits on (read-only), as the Hurd's --underlying. At run time (fsysopts)
// -a/--add DIR appends a read-only branch (lowest priority), -w/--writable
// DIR puts a writable one in front, -r/--remove DIR removes one; fsysopts
// with no options lists the branches. A name is looked up anew in the
// branches at every call (no cache), so a change shows at once.
package unionfs

import (
	"fmt"
	"slices"
	"syscall"

	"github.com/spf13/pflag"

	"herd/proto"
	"herd/translators/kit"
)

type opKind int

const (
	opAdd opKind = iota
	opAddWritable
	opRemove
)

type op struct {
	kind opKind
	dir  string
}

// opValue is a flag whose every use queues an operation on the branch
// list, in command-line order.
type opValue struct {
	kind opKind
	ops  *[]op
}

func (v *opValue) String() string { return "" }
func (v *opValue) Type() string   { return "DIR" }
func (v *opValue) Set(s string) error {
	if s == "" {
		return fmt.Errorf("empty directory name")
	}
	*v.ops = append(*v.ops, op{v.kind, s})
	return nil
}

// Translator is unionfs, for kit.Main.
func Translator() kit.Translator {
	flags := pflag.NewFlagSet("unionfs", pflag.ContinueOnError)
	var ops []op
	flags.VarP(&opValue{opAddWritable, &ops}, "writable", "w", "a writable branch `DIR`: changes are made in the first one (without one the union is read-only)")
	flags.VarP(&opValue{opAdd, &ops}, "add", "a", "a read-only branch `DIR` (at run time: appended, lowest priority)")
	flags.VarP(&opValue{opRemove, &ops}, "remove", "r", "remove the branch `DIR` (at run time)")
	underlying := flags.BoolP("underlying", "u", false, "add the node the translator sits on as the last, read-only branch (settrans -a DIR unionfs -u -w UPPER: DIR's own contents show through)")
	u := &union{nodes: map[nodeKey]*node{}, lookedUp: map[[2]string]bool{}}
	var fs *kit.FS
	apply := func(start bool) error {
		defer func() { ops = nil }()
		for _, o := range ops {
			var err error
			switch o.kind {
			case opAdd:
				err = u.add(o.dir, false, false)
			case opAddWritable:
				err = u.add(o.dir, true, !start)
			case opRemove:
				if start {
					return kit.Usagef("--remove %s: there are no branches to remove at start", o.dir)
				}
				err = u.remove(o.dir)
			}
			if err != nil {
				return err
			}
		}
		return nil
	}
	return kit.Translator{
		Name:  "unionfs",
		Args:  "[DIR...]",
		Doc:   "Serves the union of the branch directories: the first that has a name wins, directories are merged. Read-only unless a branch is given with -w (changes go there, with copy-up and .wh.NAME whiteouts). fsysopts NODE -a DIR / -w DIR / -r DIR changes the branches at run time.",
		Flags: flags,
		FileSystem: func(args []string) (proto.FileSystem, error) {
			for _, a := range args {
				ops = append(ops, op{opAdd, a})
			}
			if len(ops) == 0 && !*underlying {
				return nil, kit.Usagef("no branches: give at least one DIR")
			}
			if err := apply(true); err != nil {
				u.close()
				return nil, err
			}
			if *underlying {
				if err := u.addUnderlying(kit.Underlying()); err != nil {
					u.close()
					return nil, err
				}
			}
			fs = kit.NewFS(u.nodeAt("", syscall.S_IFDIR))
			return fs, nil
		},
		SetOptions: func(changed []string) error {
			if slices.Contains(changed, "underlying") {
				ops = nil
				return fmt.Errorf("--underlying cannot change at run time")
			}
			err := apply(false)
			u.invalidate(fs) // what was applied before an error counts too
			return err
		},
		GetOptions: func() []string {
			out := []string{"unionfs"}
			for _, b := range u.snapshot() {
				if b.dir == underlyingName {
					out = append(out, "--underlying")
				} else if b.writable {
					out = append(out, "--writable="+b.dir)
				} else {
					out = append(out, b.dir)
				}
			}
			return out
		},
	}
}
