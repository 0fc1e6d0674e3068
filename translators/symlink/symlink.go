// Package symlink is the symlink translator: the node it sits on becomes a
// symbolic link to TARGET, as the Hurd's /hurd/symlink makes one without
// the filesystem below knowing symlinks.
package symlink

import (
	"context"
	"syscall"

	"herd/proto"
	"herd/translators/kit"
)

// Link is a node that is a symbolic link.
type Link struct{ Target string }

var _ kit.Readlinker = (*Link)(nil)

func (l *Link) Getattr(ctx context.Context, out *proto.Attr) syscall.Errno {
	out.Mode = syscall.S_IFLNK | 0o777
	out.Size = uint64(len(l.Target))
	return 0
}

func (l *Link) Readlink(ctx context.Context) (string, syscall.Errno) { return l.Target, 0 }

// Translator is symlink, for kit.Main.
func Translator() kit.Translator {
	return kit.Translator{
		Name: "symlink",
		Args: "TARGET",
		Doc:  "The node becomes a symbolic link to TARGET.",
		Root: func(args []string) (kit.Node, error) {
			switch {
			case len(args) == 0:
				return nil, kit.Usagef("missing TARGET")
			case len(args) > 1:
				return nil, kit.Usagef("one TARGET only, got %d arguments", len(args))
			case args[0] == "":
				return nil, kit.Usagef("empty TARGET")
			case len(args[0]) >= 4096:
				return nil, kit.Usagef("TARGET longer than PATH_MAX")
			}
			return &Link{Target: args[0]}, nil
		},
	}
}
