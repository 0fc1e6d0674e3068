// Package ftpfs is the ftpfs translator: a directory on an FTP server as a
// tree, read-write. It speaks FTP itself (RFC 959 with EPSV, MLSD, SIZE
// from RFC 2428 and 3659), over a few pooled control connections that are
// dialled again when the server drops them.
//
// Listings (MLSD where the server offers it, else LIST in the Unix "ls -l"
// style) are kept for --cache-timeout. A file's contents are fetched whole
// at the first open that needs them and kept in memory; a changed file is
// sent back whole (STOR) when its writer closes it, at fsync, and when the
// translator syncs or goes away. Creating, removing, renaming and chmod
// are done on the server at once (STOR of an empty file, DELE, MKD, RMD,
// RNFR/RNTO, SITE CHMOD).
//
// Errors: a refusal becomes the errno it means (530 EACCES, 550 ENOENT
// and friends); a server that drops the connection, dies or stops
// answering (60 s) gives EIO for the call that needed it. A server that
// refuses the login at start is a one-line error and exit status 1.
package ftpfs

import (
	"fmt"
	"net"
	"path"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"herd/translators/kit"
)

// Target is where ftpfs connects: HOST[:PORT][/PATH] with an optional
// USER[:PASSWORD]@ and ftp:// in front.
type Target struct {
	User, Password string
	Addr           string // host:port
	Path           string // "" = the login directory
}

// ParseTarget reads a target argument.
func ParseTarget(s string) (Target, error) {
	t := Target{User: "anonymous", Password: "herd@"}
	if rest, ok := strings.CutPrefix(s, "ftp://"); ok {
		s = rest
	} else if strings.Contains(s, "://") {
		return t, fmt.Errorf("%q: only ftp:// is served", s)
	}
	hostpath := s
	if i := strings.LastIndex(s, "@"); i >= 0 {
		userinfo := s[:i]
		hostpath = s[i+1:]
		u, p, hasPass := strings.Cut(userinfo, ":")
		if u == "" {
			return t, fmt.Errorf("%q: empty user name", s)
		}
		t.User = u
		if hasPass {
			t.Password = p
		} else {
			t.Password = ""
		}
	}
	host, p, _ := strings.Cut(hostpath, "/")
	if host == "" {
		return t, fmt.Errorf("%q: no host", s)
	}
	if p != "" {
		t.Path = path.Clean("/" + p)
	}
	if _, _, err := net.SplitHostPort(host); err != nil {
		host = net.JoinHostPort(strings.Trim(host, "[]"), "21")
	}
	t.Addr = host
	return t, nil
}

// String is the target without its password (for fsysopts and the mount's
// source in /proc/self/mountinfo, which every user can read).
func (t Target) String() string {
	s := t.Addr + t.Path
	if t.User != "anonymous" {
		s = t.User + "@" + s
	}
	return s
}

// Translator is ftpfs, for kit.Main.
func Translator() kit.Translator {
	flags := pflag.NewFlagSet("ftpfs", pflag.ContinueOnError)
	ttl := flags.Duration("cache-timeout", 5*time.Second, "how long a directory listing is kept before the server is asked again")
	listing := flags.String("listing", "auto", "how to list directories: mlsd, list (Unix ls -l style) or auto (MLSD when the server has it)")
	conns := flags.Int("connections", 4, "control connections to keep open at most")
	var r *remote
	var target Target
	return kit.Translator{
		Name:  "ftpfs",
		Args:  "[USER[:PASSWORD]@]HOST[:PORT][/PATH]  (or the Hurd's PATH HOST)",
		Doc:   "Serves a directory of an FTP server (anonymous unless USER is given), read-write: listings are cached briefly, files are fetched into memory from their first open (reads wait only for the bytes they want) and sent back when closed after a change.",
		Flags: flags,
		Root: func(args []string) (kit.Node, error) {
			switch len(args) {
			case 1:
			case 2: // the Hurd's REMOTE_FS SERVER
				args = []string{strings.TrimSuffix(args[1], "/") + "/" + strings.TrimPrefix(args[0], "/")}
			default:
				return nil, kit.Usagef("want one HOST[:PORT][/PATH], got %d arguments", len(args))
			}
			var err error
			if target, err = ParseTarget(args[0]); err != nil {
				return nil, kit.Usagef("%v", err)
			}
			switch *listing {
			case "auto", "mlsd", "list":
			default:
				return nil, kit.Usagef("--listing %q: want auto, mlsd or list", *listing)
			}
			if *conns < 1 {
				return nil, kit.Usagef("--connections must be at least 1")
			}
			r = &remote{
				pool:    newPool(target.Addr, target.User, target.Password, *conns),
				ttl:     func() time.Duration { return *ttl },
				listing: func() string { return *listing },
				dirty:   map[*fileNode]bool{},
			}
			// Log in now, so a refusal is an error at start, and find
			// where PATH (or the login directory) is.
			root := target.Path
			err = r.pool.do(func(c *conn) error {
				if root != "" {
					if _, _, err := c.cmd(250, "CWD %s", root); err != nil {
						return fmt.Errorf("%s: %w", root, err)
					}
				}
				_, msg, err := c.cmd(257, "PWD")
				if err == nil {
					root = parsePWD(msg)
				}
				return err
			})
			if err != nil {
				return nil, fmt.Errorf("%s: %w", target, err)
			}
			return &dirNode{base: base{r: r, name: root, e: entry{mode: 0o040755, mtime: time.Now()}}}, nil
		},
		SetOptions: func(changed []string) error {
			for _, c := range changed {
				switch c {
				case "listing":
					if *listing != "auto" && *listing != "mlsd" && *listing != "list" {
						return fmt.Errorf("--listing %q: want auto, mlsd or list", *listing)
					}
				case "connections":
					return fmt.Errorf("--connections cannot change at run time")
				}
			}
			return nil
		},
		GetOptions: func() []string {
			out := []string{"ftpfs"}
			flags.VisitAll(func(f *pflag.Flag) {
				if f.Changed {
					out = append(out, "--"+f.Name+"="+f.Value.String())
				}
			})
			return append(out, target.String())
		},
		Sync: func() error {
			if r == nil {
				return nil
			}
			return r.sync()
		},
	}
}

// parsePWD reads `257 "/the/dir" is the current directory` ("" doubled
// inside the name).
func parsePWD(msg string) string {
	i := strings.Index(msg, `"`)
	if i < 0 {
		return "/"
	}
	var b strings.Builder
	for j := i + 1; j < len(msg); j++ {
		if msg[j] == '"' {
			if j+1 < len(msg) && msg[j+1] == '"' {
				b.WriteByte('"')
				j++
				continue
			}
			break
		}
		b.WriteByte(msg[j])
	}
	if b.Len() == 0 {
		return "/"
	}
	return b.String()
}
