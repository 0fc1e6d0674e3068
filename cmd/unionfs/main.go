// Command unionfs is the union filesystem translator (herd/translators/unionfs).
package main

import (
	"herd/translators/kit"
	"herd/translators/unionfs"
)

func main() { kit.Main(unionfs.Translator()) }
