// Package usermux is the Hurd's usermux: a directory whose names are user
// names, each translated into something for that user, by default a link to
// the user's home directory (`settrans -ac ~/users usermux` then
// `ls ~/users/alice` lists alice's home). It runs on hostmux's engine: a
// looked-up name starts its translator, and the lookup redirects to it.
package usermux

import (
	"errors"
	"os/user"
	"strings"
	"syscall"

	"github.com/spf13/pflag"

	"herd/proto"
	"herd/translators/hostmux"
	"herd/translators/kit"
	"herd/translators/search"
)

// Patterns replaced in the translator's arguments, as the Hurd's usermux.
const (
	DefaultUserPattern = "${user}"
	DefaultHomePattern = "${home}"
	DefaultUIDPattern  = "${uid}"
)

// Patterns says what to replace by what.
type Patterns struct{ User, Home, UID string }

// Argv is the command line of the translator for u: the patterns replaced
// in template's arguments; where none occurs, the home directory is
// appended (the Hurd's rule).
func Argv(template []string, p Patterns, u *user.User) []string {
	argv := append([]string(nil), template...)
	found := false
	for i := 1; i < len(argv); i++ {
		for _, r := range [][2]string{{p.User, u.Username}, {p.Home, u.HomeDir}, {p.UID, u.Uid}} {
			if r[0] != "" && strings.Contains(argv[i], r[0]) {
				argv[i] = strings.ReplaceAll(argv[i], r[0], r[1])
				found = true
			}
		}
	}
	if !found {
		argv = append(argv, u.HomeDir)
	}
	return argv
}

// Child says what the name of user u is: the template's translator, or by
// default a firmlink to the home directory when the firmlink translator is
// installed, else a symbolic link to it that the mux serves itself.
func Child(template []string, p Patterns, u *user.User) hostmux.Child {
	if len(template) == 0 {
		if _, err := search.Resolve("firmlink"); err == nil {
			return hostmux.Child{Argv: []string{"firmlink", u.HomeDir}}
		}
		return hostmux.Child{Symlink: u.HomeDir}
	}
	return hostmux.Child{Argv: Argv(template, p, u)}
}

// Translator is the usermux program.
func Translator() kit.Translator {
	flags := pflag.NewFlagSet("usermux", pflag.ContinueOnError)
	var p Patterns
	flags.StringVar(&p.User, "user-pattern", DefaultUserPattern, "the string replaced by the user name in the translator's arguments")
	flags.StringVar(&p.Home, "home-pattern", DefaultHomePattern, "the string replaced by the user's home directory")
	flags.StringVar(&p.UID, "uid-pattern", DefaultUIDPattern, "the string replaced by the user's uid")
	clear := flags.BoolP("clear-patterns", "C", false, "replace no patterns (the home directory is appended)")
	mux := &hostmux.Mux{Name: "usermux"}
	return kit.Translator{
		Name: "usermux",
		Args: "[TRANSLATOR [ARG...]]",
		Doc: "A directory whose names are user names: looking one up starts TRANSLATOR\n" +
			"for that user, with ${user}, ${home} and ${uid} in its arguments replaced\n" +
			"(where none occurs, the home directory is appended). Without TRANSLATOR\n" +
			"each name is a firmlink to the user's home (a symlink when the firmlink\n" +
			"translator is not installed). Put `--` before TRANSLATOR when its arguments\n" +
			"start with a dash.",
		Flags: flags,
		FileSystem: func(args []string) (proto.FileSystem, error) {
			template := append([]string(nil), args...)
			mux.Resolve = func(name string) (hostmux.Child, error) {
				u, err := user.Lookup(name)
				var unknown user.UnknownUserError
				if errors.As(err, &unknown) {
					return hostmux.Child{}, syscall.ENOENT
				}
				if err != nil {
					return hostmux.Child{}, syscall.EIO
				}
				pp := p
				if *clear {
					pp = Patterns{}
				}
				return Child(template, pp, u), nil
			}
			return mux, nil
		},
		Sync: func() error { mux.Stop(); return nil },
	}
}
