package acceptance_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// nodeKind is what a translator sits on.
type nodeKind int

const (
	fileNode nodeKind = iota // an empty file
	dirNode                  // an empty directory
	tarNode                  // inside: a copy of the tar archive (tarfs serves the node it sits on)
	zipNode                  // inside: a copy of the zip archive
)

// tcase is one row of the matrix: a translator, its arguments, and a
// check that reads through the translated node N.
type tcase struct {
	name string
	// node: inside a subenvironment (passive); on the host (active) an
	// archive node is a directory and the archive an argument.
	node nodeKind
	// args gives the translator's command line; inside tells which side.
	args func(e *env, inside bool) []string
	// check is a shell script reading through the node, which it finds
	// in $N; want is what it must print.
	check func(e *env) string
	want  string
}

var matrix = []tcase{
	{
		name: "hello", node: fileNode,
		args:  func(e *env, _ bool) []string { return []string{"hello", "--contents=hello, acceptance"} },
		check: func(*env) string { return `cat "$N"` },
		want:  "hello, acceptance",
	},
	{
		name: "symlink", node: fileNode,
		args: func(e *env, _ bool) []string { return []string{"symlink", filepath.Join(fx.tree, "a.txt")} },
		check: func(*env) string {
			return `test -L "$N" && readlink "$N" && cat "$N"`
		},
		// want: the target, then its contents (see wantFor: fx is set
		// after the table is).
	},
	{
		name: "firmlink", node: dirNode,
		args:  func(e *env, _ bool) []string { return []string{"firmlink", fx.tree} },
		check: func(*env) string { return `cat "$N/sub/b.txt" && ls "$N"` },
		want:  "bbb\na.txt\nsub\n",
	},
	{
		name: "tmpfs", node: dirNode,
		args: func(e *env, _ bool) []string { return []string{"tmpfs", "--size=1M"} },
		check: func(*env) string {
			return `echo x > "$N/y" && mkdir "$N/d" && mv "$N/y" "$N/d/z" && cat "$N/d/z" && ls -R "$N"`
		},
		want: "x\n" + "$N:\nd\n\n$N/d:\nz\n",
	},
	{
		name: "tarfs", node: tarNode,
		args: func(e *env, inside bool) []string {
			if inside {
				return []string{"tarfs"} // the node it sits on
			}
			return []string{"tarfs", e.copyFile(fx.tar, "tree.tar")}
		},
		check: func(*env) string { return `cat "$N/a.txt" "$N/sub/b.txt" && ls -R "$N"` },
		want:  "aaa\nbbb\n" + "$N:\na.txt\nsub\n\n$N/sub:\nb.txt\n",
	},
	{
		name: "zipfs", node: zipNode,
		args: func(e *env, inside bool) []string {
			if inside {
				return []string{"zipfs"}
			}
			return []string{"zipfs", e.copyFile(fx.zip, "tree.zip")}
		},
		check: func(*env) string { return `cat "$N/a.txt" "$N/sub/b.txt" && ls -R "$N"` },
		want:  "aaa\nbbb\n" + "$N:\na.txt\nsub\n\n$N/sub:\nb.txt\n",
	},
	{
		name: "unionfs", node: dirNode,
		args: func(e *env, _ bool) []string {
			return []string{"unionfs", "-w", filepath.Join(e.dir, "branch"), fx.tree}
		},
		check: func(e *env) string {
			return `cat "$N/sub/b.txt" && echo new > "$N/sub/n" && cat ` + shq(filepath.Join(e.dir, "branch", "sub", "n")) + ` && ls "$N" "$N/sub"`
		},
		want: "bbb\nnew\n" + "$N:\na.txt\nsub\n\n$N/sub:\nb.txt\nn\n",
	},
	{
		name: "hostmux", node: dirNode,
		args:  func(e *env, _ bool) []string { return []string{"hostmux", "hello", "--contents"} },
		check: func(*env) string { return `cat "$N/example.org" && echo && cat "$N/localhost"` },
		want:  "example.org\nlocalhost",
	},
	{
		name: "usermux", node: dirNode,
		args:  func(e *env, _ bool) []string { return []string{"usermux", "hello", "--contents=${user}:${uid}"} },
		check: func(*env) string { return `cat "$N/root"` },
		want:  "root:0",
	},
	{
		name: "ftpfs", node: dirNode,
		args: func(e *env, _ bool) []string {
			// A passive translator runs on the host, beside the fs
			// server (outside the subenvironment's network): 127.0.0.1
			// is the host's on both sides.
			return []string{"ftpfs", "127.0.0.1:" + strconv.Itoa(fx.ftpPort)}
		},
		check: func(*env) string { return `cat "$N/a.txt" "$N/sub/b.txt" && ls -R "$N"` },
		want:  "aaa\nbbb\n" + "$N:\na.txt\nsub\n\n$N/sub:\nb.txt\n",
	},
	{
		name: "httpfs", node: dirNode,
		args: func(e *env, _ bool) []string {
			return []string{"httpfs", "http://127.0.0.1:" + strconv.Itoa(fx.httpPort) + "/"}
		},
		check: func(*env) string { return `cat "$N/a.txt" "$N/sub/b.txt" && ls -R "$N"` },
		want:  "aaa\nbbb\n" + "$N:\na.txt\nsub\n\n$N/sub:\nb.txt\n",
	},
}

// wantFor is c.want with $N spelled out.
func (c tcase) wantFor(node string) string {
	if c.name == "symlink" {
		return filepath.Join(fx.tree, "a.txt") + "\naaa\n" // fx is set after init
	}
	return strings.ReplaceAll(c.want, "$N", node)
}

var identities = []string{"root", "user"}

// TestPassiveInside: each translator set as a passive translator inside a
// subenvironment, started by the fs server on the first lookup, read
// through the node.
func TestPassiveInside(t *testing.T) {
	for _, c := range matrix {
		for _, who := range identities {
			t.Run(c.name+"/"+who, func(t *testing.T) {
				t.Parallel()
				e := newEnv(t, who)
				if c.name == "unionfs" {
					e.mkdir("branch")
					os.Mkdir(filepath.Join(e.dir, "branch", "sub"), 0o755)
					e.own(filepath.Join(e.dir, "branch", "sub"))
				}
				node := "/tmp/node-" + c.name
				var prep string
				switch c.node {
				case fileNode:
					prep = `touch "$N"`
				case dirNode:
					prep = `mkdir "$N"`
				case tarNode:
					prep = `cp ` + shq(fx.tar) + ` "$N"`
				case zipNode:
					prep = `cp ` + shq(fx.zip) + ` "$N"`
				}
				script := "set -e; N=" + shq(node) + "; " + prep + "; settrans -p \"$N\" " + shJoin(c.args(e, true)) + "; " + c.check(e)
				r := e.inSubenv(script)
				if r.Code != 0 || r.Stdout != c.wantFor(node) {
					t.Fatalf("inside: %s\nwant stdout %q\nscript: %s", r, c.wantFor(node), script)
				}
			})
		}
	}
}

// TestActiveHost: each translator started with settrans -a on the host
// (mounted by FUSE), read through the node, then made to go away.
func TestActiveHost(t *testing.T) {
	for _, c := range matrix {
		for _, who := range identities {
			t.Run(c.name+"/"+who, func(t *testing.T) {
				t.Parallel()
				e := newEnv(t, who)
				if c.name == "unionfs" {
					e.mkdir("branch")
					os.Mkdir(filepath.Join(e.dir, "branch", "sub"), 0o755)
					e.own(filepath.Join(e.dir, "branch", "sub"))
				}
				node := filepath.Join(e.dir, "node-"+c.name)
				flags := "-a"
				switch {
				case c.name == "symlink":
					// The one cell Linux cannot do: the kernel refuses a
					// FUSE mount whose root is a symlink (rootmode S_IFLNK
					// gives EINVAL; fusermount3 takes the type of the
					// mount point, which cannot be a symlink either).
					// settrans must say so in one line and leave nothing
					// behind; inside a subenvironment (TestPassiveInside)
					// the symlink translator works.
					r := e.run("settrans", "-ac", node, "symlink", filepath.Join(fx.tree, "a.txt"))
					if r.Code == 0 || !strings.Contains(r.Stderr, "root is a symlink") || strings.Count(strings.TrimSpace(r.Stderr), "\n") > 0 {
						t.Fatalf("settrans -a of a symlink translator on the host: %s\nwant a one-line refusal naming symlinks", r)
					}
					if _, err := os.Lstat(node); !os.IsNotExist(err) {
						t.Fatalf("refused settrans -ac left %s behind (%v)", node, err)
					}
					for _, m := range fuseMounts() {
						if m == node {
							t.Fatalf("%s mounted after a refused settrans", node)
						}
					}
					return
				case c.node == fileNode:
					if err := os.WriteFile(node, nil, 0o644); err != nil {
						t.Fatal(err)
					}
					e.own(node)
				default:
					e.mkdir(filepath.Base(node))
				}
				e.ok("settrans", append([]string{flags, node}, c.args(e, false)...)...)
				r := e.run("sh", "-c", "N="+shq(node)+"; "+c.check(e))
				// Whatever the check found, the translator goes.
				g := e.run("settrans", "-g", node)
				if r.Code != 0 || r.Stdout != c.wantFor(node) {
					t.Errorf("through the mount: %s\nwant stdout %q", r, c.wantFor(node))
				}
				if g.Code != 0 {
					t.Fatalf("settrans -g: %s", g)
				}
				for _, m := range fuseMounts() {
					if m == node {
						t.Fatalf("%s still mounted after settrans -g", node)
					}
				}
			})
		}
	}
}
