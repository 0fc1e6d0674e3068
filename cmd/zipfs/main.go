// Command zipfs serves a zip archive as a read-only directory (herd/translators/zipfs).
package main

import (
	"herd/translators/kit"
	"herd/translators/zipfs"
)

func main() { kit.Main(zipfs.Translator()) }
