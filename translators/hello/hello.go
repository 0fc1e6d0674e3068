// Package hello is the Hurd's hello translator: the node it sits on becomes
// a file saying "Hello, world!", or what --contents (or fsysopts) says.
package hello

import (
	"github.com/spf13/pflag"

	"herd/translators/kit"
)

// Translator is hello, for kit.Main.
func Translator() kit.Translator {
	flags := pflag.NewFlagSet("hello", pflag.ContinueOnError)
	contents := flags.String("contents", "Hello, world!\n", "what the file says")
	return kit.Translator{
		Name:  "hello",
		Doc:   "The node becomes a file that says hello (fsysopts NODE --contents=... changes it).",
		Flags: flags,
		Root: func([]string) (kit.Node, error) {
			return kit.File(func() []byte { return []byte(*contents) }), nil
		},
	}
}
