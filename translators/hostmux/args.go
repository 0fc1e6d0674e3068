package hostmux

import "strings"

// kitValueFlags are the kit's own flags that take a value.
var kitValueFlags = []string{"--mount", "--socket"}

// CommandLine prepares a mux's command line for kit.Run, which parses
// flags anywhere: a "--" goes before TRANSLATOR, so that the translator's
// own flags (`hostmux hello --contents`) are its arguments and not the
// mux's. valueFlags are the mux's flags that take a separate value.
func CommandLine(args []string, valueFlags ...string) []string {
	takesValue := map[string]bool{}
	for _, f := range append(valueFlags, kitValueFlags...) {
		takesValue[f] = true
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			return args
		case strings.HasPrefix(a, "-") && a != "-":
			if takesValue[a] {
				i++
			}
		default:
			out := append([]string(nil), args[:i]...)
			out = append(out, "--")
			return append(out, args[i:]...)
		}
	}
	return args
}
