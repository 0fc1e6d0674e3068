// Command subenv here is cmd/subenv with the net modes of subenvnet
// linked in, for subenvnet's tests (until cmd/subenv imports it).
package main

import (
	"os"

	"herd/subenv"
	_ "herd/subenv/netattach/subenvnet"
)

func main() { os.Exit(subenv.Main(os.Args[1:])) }
