// Command ftpfs is the FTP filesystem translator (herd/translators/ftpfs).
package main

import (
	"herd/translators/ftpfs"
	"herd/translators/kit"
)

func main() { kit.Main(ftpfs.Translator()) }
