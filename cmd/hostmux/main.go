// Command hostmux is the Hurd's hostmux: see `hostmux --help` and package
// herd/translators/hostmux.
package main

import (
	"os"

	"herd/translators/hostmux"
	"herd/translators/kit"
)

func main() {
	os.Exit(kit.Run(hostmux.Translator(), hostmux.CommandLine(os.Args[1:], "-H", "--host-pattern")))
}
