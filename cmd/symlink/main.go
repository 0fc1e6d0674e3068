// Command symlink is the symlink translator (herd/translators/symlink).
package main

import (
	"herd/translators/kit"
	"herd/translators/symlink"
)

func main() { kit.Main(symlink.Translator()) }
