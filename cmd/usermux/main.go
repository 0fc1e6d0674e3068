// Command usermux is the Hurd's usermux: see `usermux --help` and package
// herd/translators/usermux.
package main

import (
	"os"

	"herd/translators/hostmux"
	"herd/translators/kit"
	"herd/translators/usermux"
)

func main() {
	os.Exit(kit.Run(usermux.Translator(), hostmux.CommandLine(os.Args[1:], "--user-pattern", "--home-pattern", "--uid-pattern")))
}
