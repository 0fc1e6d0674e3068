// Command subenv runs programs in subenvironments; see subenv --help.
package main

import (
	"os"

	"herd/subenv"
)

func main() { os.Exit(subenv.Main(os.Args[1:])) }
