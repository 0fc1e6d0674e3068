// Package firmlink is the firmlink translator, the Hurd's half-way between
// a symbolic link and a hard link: the node becomes TARGET (a directory or
// a file on the host), served read-write by opening TARGET, so a program
// sees TARGET's contents at the node's name and cannot tell it is a link
// (no readlink, no symlink following; ".." stays the node's parent).
package firmlink

import (
	"herd/translators/kit"
)

// Translator is firmlink, for kit.Main.
func Translator() kit.Translator {
	return kit.Translator{
		Name: "firmlink",
		Args: "TARGET",
		Doc:  "The node becomes TARGET, a host directory or file, read-write: like a symlink it is by name, like a hard link it is not seen as a link.",
		Root: func(args []string) (kit.Node, error) {
			switch {
			case len(args) == 0:
				return nil, kit.Usagef("missing TARGET")
			case len(args) > 1:
				return nil, kit.Usagef("one TARGET only, got %d arguments", len(args))
			}
			return kit.Loopback(args[0])
		},
	}
}
