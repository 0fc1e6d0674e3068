// Command showtrans: see `showtrans --help` and package herd/translators/control.
package main

import (
	"os"

	"herd/translators/control"
)

func main() { os.Exit(control.Showtrans(os.Args[1:], os.Stdout, os.Stderr)) }
