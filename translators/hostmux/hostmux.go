package hostmux

import (
	"strings"
	"syscall"

	"github.com/spf13/pflag"

	"herd/proto"
	"herd/translators/kit"
)

// DefaultPattern is replaced by the host name in the translator's
// arguments, as the Hurd's hostmux --host-pattern.
const DefaultPattern = "${host}"

// Argv is the command line of the translator for host: pattern replaced
// in template's arguments; where it does not occur, the host goes in front
// of an argument that is a remote path ("/" or "/pub": `hostmux ftpfs /`
// looks up localhost as `ftpfs localhost/`), or else is appended (the
// Hurd's default).
func Argv(template []string, pattern, host string) []string {
	argv := append([]string(nil), template...)
	found := false
	if pattern != "" {
		for i := 1; i < len(argv); i++ {
			if strings.Contains(argv[i], pattern) {
				argv[i] = strings.ReplaceAll(argv[i], pattern, host)
				found = true
			}
		}
	}
	if found {
		return argv
	}
	if last := len(argv) - 1; last >= 1 && strings.HasPrefix(argv[last], "/") {
		argv[last] = host + argv[last]
		return argv
	}
	return append(argv, host)
}

// Translator is the hostmux program.
func Translator() kit.Translator {
	flags := pflag.NewFlagSet("hostmux", pflag.ContinueOnError)
	pattern := flags.StringP("host-pattern", "H", DefaultPattern, "the string replaced by the host name in the translator's arguments")
	mux := &Mux{Name: "hostmux"}
	return kit.Translator{
		Name: "hostmux",
		Args: "TRANSLATOR [ARG...]",
		Doc: "A directory where looking up a host name starts TRANSLATOR for that host\n" +
			"(`settrans -ac ~/ftp: hostmux ftpfs /` then `ls ~/ftp:/localhost` runs\n" +
			"`ftpfs localhost/`). --host-pattern in an argument is replaced by the host;\n" +
			"without it the host goes in front of a /PATH argument, or at the end.\n" +
			"Put `--` before TRANSLATOR when its arguments start with a dash.",
		Flags: flags,
		FileSystem: func(args []string) (proto.FileSystem, error) {
			if len(args) == 0 {
				return nil, kit.Usagef("missing TRANSLATOR")
			}
			template := append([]string(nil), args...)
			mux.Resolve = func(host string) (Child, error) {
				if strings.ContainsAny(host, " \t\n") {
					return Child{}, syscall.ENOENT
				}
				return Child{Argv: Argv(template, *pattern, host)}, nil
			}
			return mux, nil
		},
		// The mux writes nothing back; Sync is the kit's last call before
		// the program exits (and the first of a goaway): the children stop.
		Sync: func() error { mux.Stop(); return nil },
	}
}
