// Command httpfs is the HTTP filesystem translator (herd/translators/httpfs).
package main

import (
	"herd/translators/httpfs"
	"herd/translators/kit"
)

func main() { kit.Main(httpfs.Translator()) }
