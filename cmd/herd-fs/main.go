// Command herd-fs serves a host directory tree over herd's protocol: by
// default the host root read-only, with a copy-on-write upper directory
// when one is given (--upper or $HERD_UPPER), or writing through (--rw).
// See herd/servers/fs and `herd-fs --help`. (subenv runs the same program
// as its default fs server: `subenv herd-fs`.)
package main

import (
	"os"

	"herd/servers/fs"
)

func main() { os.Exit(fs.Main(os.Args[1:])) }
