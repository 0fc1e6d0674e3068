// Command tmpfs is the memory filesystem translator (herd/translators/tmpfs).
package main

import (
	"herd/translators/kit"
	"herd/translators/tmpfs"
)

func main() { kit.Main(tmpfs.Translator()) }
