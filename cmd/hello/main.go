// Command hello is the Hurd's hello translator (herd/translators/hello).
package main

import (
	"herd/translators/hello"
	"herd/translators/kit"
)

func main() { kit.Main(hello.Translator()) }
