package control

import (
	"errors"
	"fmt"
	"io"
	"syscall"

	"github.com/spf13/pflag"
)

const showtransDoc = `Usage: showtrans [OPTION...] NODE...
Show NODE's passive translator record (default), or with -a the active
translator running on it. On the host the passive record is the file's
user.herd.translator xattr and the active translator is the one settrans -a
mounted (found from /proc/self/mountinfo); inside a subenvironment the fs
server answers. The exit status is 0 if some NODE has a translator, 1 if
none has, 2 on errors.

Options:
`

// Showtrans is the showtrans program.
func Showtrans(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("showtrans", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	passive := fs.BoolP("passive", "p", false, "show the passive translator record (default)")
	active := fs.BoolP("active", "a", false, "show the active translator")
	translated := fs.BoolP("translated", "t", false, "only show nodes that have translators")
	silent := fs.BoolP("silent", "s", false, "no output; the exit status says whether a translator was found")
	fs.BoolP("quiet", "q", false, "same as --silent")
	prefix := fs.Bool("prefix", false, "always print `NODE: ' before the translator")
	noPrefix := fs.BoolP("no-prefix", "P", false, "never print `NODE: ' before the translator")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Fprint(stdout, showtransDoc+fs.FlagUsages())
			return 0
		}
		fmt.Fprintf(stderr, "showtrans: %v (see showtrans --help)\n", err)
		return 2
	}
	if q, _ := fs.GetBool("quiet"); q {
		*silent = true
	}
	nodes := fs.Args()
	if len(nodes) == 0 {
		fmt.Fprintln(stderr, "showtrans: missing NODE (see showtrans --help)")
		return 2
	}
	showPrefix := len(nodes) > 1
	if *prefix {
		showPrefix = true
	}
	if *noPrefix {
		showPrefix = false
	}
	both := *active && *passive
	status := 1
	failed := false
	for _, n := range nodes {
		var lines []string
		var err error
		passiveLine := func() {
			var p []string
			if p, err = ShowPassive(n); err == nil && len(p) > 0 {
				lines = append(lines, ShowArgv(p))
			}
		}
		activeLine := func() {
			var a string
			if a, err = ShowActive(n); err == nil && a != "" {
				lines = append(lines, a)
			}
		}
		switch {
		case both:
			passiveLine()
			if err == nil && len(lines) == 1 {
				lines[0] = "passive: " + lines[0]
			}
			if err == nil {
				had := len(lines)
				activeLine()
				if len(lines) > had {
					lines[had] = "active: " + lines[had]
				}
			}
		case *active:
			activeLine()
		default:
			passiveLine()
		}
		if err != nil {
			fmt.Fprintf(stderr, "showtrans: %s: %v\n", n, err)
			failed = true
			continue
		}
		if len(lines) > 0 {
			status = 0
		}
		if *silent {
			continue
		}
		if len(lines) == 0 {
			if showPrefix && !*translated {
				fmt.Fprintln(stdout, n)
			}
			continue
		}
		for _, l := range lines {
			if showPrefix {
				fmt.Fprintf(stdout, "%s: %s\n", n, l)
			} else {
				fmt.Fprintln(stdout, l)
			}
		}
	}
	if failed && status != 0 {
		return 2
	}
	return status
}

// ShowPassive returns NODE's passive translator record (nil: none).
func ShowPassive(nodeArg string) ([]string, error) {
	node, inside, err := locate(nodeArg)
	if err != nil {
		return nil, err
	}
	if inside {
		return insideGet(node, XattrPassive)
	}
	host := node
	if act, err := FindActive(node); err != nil {
		return nil, err
	} else if act != nil {
		if host = act.UnderPath(); host == "" {
			return nil, errors.New("cannot reach the file under its active translator")
		}
	}
	return GetPassive(host)
}

// ShowActive returns the command line of NODE's active translator, as
// showtrans prints it ("" for none).
func ShowActive(nodeArg string) (string, error) {
	argv, act, err := activeOf(nodeArg)
	if act != nil {
		return act.Show(), err
	}
	return ShowArgv(argv), err
}

// activeOf returns NODE's active translator: its argv inside a
// subenvironment, its host mount outside.
func activeOf(nodeArg string) ([]string, *Active, error) {
	node, inside, err := locate(nodeArg)
	if err != nil {
		return nil, nil, err
	}
	if inside {
		argv, err := insideGet(node, XattrActive)
		if xattrRefused(err) {
			return nil, nil, nil
		}
		return argv, nil, err
	}
	act, err := FindActive(node)
	return nil, act, err
}

// locate returns NODE's canonical path and whether it lies inside a
// subenvironment. NODE must exist.
func locate(nodeArg string) (string, bool, error) {
	node, err := Canonical(nodeArg)
	if err != nil {
		return "", false, err
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(node, &st); err != nil {
		if errors.Is(err, syscall.ENOENT) {
			return "", false, errors.New("no such file or directory")
		}
		return "", false, err
	}
	mounts, err := ReadMounts()
	if err != nil {
		return "", false, err
	}
	m, _ := MountOf(mounts, node)
	return node, m.IsSubenv(), nil
}
