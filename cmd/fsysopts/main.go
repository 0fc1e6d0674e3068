// Command fsysopts: see `fsysopts --help` and package herd/translators/control.
package main

import (
	"os"

	"herd/translators/control"
)

func main() { os.Exit(control.Fsysopts(os.Args[1:], os.Stdout, os.Stderr)) }
