// Command tarfs serves a tar archive as a directory (herd/translators/tarfs).
package main

import (
	"herd/translators/kit"
	"herd/translators/tarfs"
)

func main() { kit.Main(tarfs.Translator()) }
