// Command firmlink is the firmlink translator (herd/translators/firmlink).
package main

import (
	"herd/translators/firmlink"
	"herd/translators/kit"
)

func main() { kit.Main(firmlink.Translator()) }
