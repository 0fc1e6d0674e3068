package control_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"herd/translators/internal/transtest"
)

// inSubenv runs sh -c script in a subenvironment as the env's identity,
// with the programs under test first on PATH (inside and for the fs
// server, which finds translators there).
func (e *env) inSubenv(script string, flags ...string) transtest.Result {
	e.t.Helper()
	// No network: these tests need none (and the net server is not theirs).
	args := append(append([]string{"run", "--net", "none"}, flags...), "--", "sh", "-c", script)
	return e.runEnv([]string{"PATH=" + visibleBinDir + ":/usr/local/bin:/usr/bin:/bin", "XDG_DATA_HOME=" + filepath.Join(e.runtime, "data")},
		filepath.Join(visibleBinDir, "subenv"), args...)
}

// visibleDir makes a directory a subenvironment sees (not under /tmp),
// owned by the env's identity.
func (e *env) visibleDir() string {
	e.t.Helper()
	d, err := os.MkdirTemp("/var/tmp", "herd-control-nodes-")
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { os.RemoveAll(d) })
	os.Chmod(d, 0o755)
	if e.cred != nil {
		os.Chown(d, int(e.cred.Uid), int(e.cred.Gid))
	}
	return d
}

// TestPassiveFromHostInSubenv: a record settrans -p stores on a host file
// takes effect where herd serves that tree: in a subenvironment, the
// node is the translator.
func TestPassiveFromHostInSubenv(t *testing.T) {
	for _, who := range identities {
		t.Run(who, func(t *testing.T) {
			e := newEnv(t, who)
			d := e.visibleDir()
			node := filepath.Join(d, "h")
			e.ok("sh", "-c", "echo underneath > "+node)
			e.ok("settrans", "-p", node, "hello", "--contents", "from the host\n")
			r := e.inSubenv("cat " + node)
			if r.Code != 0 || r.Stdout != "from the host\n" {
				t.Fatalf("cat inside: %+v", r)
			}
			// On the host the file is unchanged, the record still there.
			if got := e.ok("cat", node); got != "underneath\n" {
				t.Fatalf("host file = %q", got)
			}
			if got := e.ok("showtrans", node); got != "hello --contents $'from the host\\n'\n" {
				t.Fatalf("showtrans on the host = %q", got)
			}
		})
	}
}

// TestActiveInSubenv: inside a subenvironment settrans -a asks the fs
// server to start the translator; bad input gets clear errors there too.
func TestActiveInSubenv(t *testing.T) {
	for _, who := range identities {
		t.Run(who, func(t *testing.T) {
			e := newEnv(t, who)
			r := e.inSubenv(`settrans -ac /tmp/h hello --contents "active inside
" && cat /tmp/h`)
			if r.Code != 0 || r.Stdout != "active inside\n" {
				t.Fatalf("settrans -a inside: %+v", r)
			}
			r = e.inSubenv(`settrans -a /tmp/missing hello`)
			if r.Code == 0 || !strings.Contains(r.Stderr, "settrans: /tmp/missing: no such file or directory") {
				t.Fatalf("missing node inside: %+v", r)
			}
			r = e.inSubenv(`touch /tmp/x && settrans -a /tmp/x no-such-translator`)
			if r.Code == 0 || !strings.Contains(r.Stderr, "translator no-such-translator not found") {
				t.Fatalf("missing translator inside: %+v", r)
			}
		})
	}
}

// TestHostmuxInSubenv: the mux as an active translator inside, its
// children reached by redirect from the fs bridge.
func TestHostmuxInSubenv(t *testing.T) {
	e := newEnv(t, "user")
	r := e.inSubenv(`settrans -ac /tmp/mux hostmux hello --contents && cat /tmp/mux/foo && echo && ls /tmp/mux`)
	if r.Code != 0 || r.Stdout != "foo\nfoo\n" {
		t.Fatalf("hostmux inside: %+v", r)
	}
}

// TestPassiveInSubenv: a passive record set inside a subenvironment (on
// its copy-on-write layer) starts its translator on a later lookup: here in
// the next subenvironment on the same kept layer.
func TestPassiveInSubenv(t *testing.T) {
	for _, who := range identities {
		t.Run(who, func(t *testing.T) {
			e := newEnv(t, who)
			os.Mkdir(filepath.Join(e.runtime, "data"), 0o700)
			if e.cred != nil {
				os.Chown(filepath.Join(e.runtime, "data"), int(e.cred.Uid), int(e.cred.Gid))
			}
			// Inside /tmp: a plain user's subenvironment writes there (and
			// --keep keeps it).
			node := "/tmp/herd-control-passive"
			r := e.inSubenv(`settrans -pc `+node+` hello --contents "set inside
"`, "--keep", "ctl")
			if r.Code != 0 {
				t.Fatalf("settrans -p inside: %+v", r)
			}
			r = e.inSubenv("cat "+node, "--keep", "ctl")
			if r.Code != 0 || r.Stdout != "set inside\n" {
				t.Fatalf("cat in the next subenvironment: %+v", r)
			}
		})
	}
}

// TestPassiveSameSubenv is the primer inside: settrans -p, then cat.
func TestPassiveSameSubenv(t *testing.T) {
	for _, who := range identities {
		t.Run(who, func(t *testing.T) {
			e := newEnv(t, who)
			r := e.inSubenv(`settrans -pc /tmp/h hello --contents "passive inside
" && cat /tmp/h`)
			if r.Code != 0 || r.Stdout != "passive inside\n" {
				t.Fatalf("settrans -p then cat inside: %+v", r)
			}
		})
	}
}

// TestControlTranslatedInSubenv: inside a subenvironment the commands
// control a node that already has a translator (the fs bridge sends
// translator control to the fs server that owns the node, not to the
// translator): showtrans -a/-p show it, fsysopts shows and changes its
// options (and the next read, through the page cache, sees the change),
// settrans -g stops it.
func TestControlTranslatedInSubenv(t *testing.T) {
	for _, who := range identities {
		t.Run(who, func(t *testing.T) {
			e := newEnv(t, who)
			loop := strings.ReplaceAll(freshReadsScript, "$1", "$node")
			r := e.inSubenv(`set -u
settrans -ac /tmp/h hello --contents=one || exit 1
echo "a:$(showtrans -a /tmp/h)"
echo "o:$(fsysopts /tmp/h)"
node=/tmp/h; (` + loop + `) || exit 1
settrans -g /tmp/h || exit 1
echo "g:$(cat /tmp/h)"
showtrans -a /tmp/h; echo "a2:$?"
settrans -pc /tmp/p hello --contents=pp || exit 1
echo "p:$(showtrans -p /tmp/p)"
echo "c:$(cat /tmp/p)"
echo "pa:$(showtrans -a /tmp/p)"
echo "po:$(fsysopts /tmp/p)"
node=/tmp/p; (` + loop + `) || exit 1
settrans -g /tmp/p || exit 1
echo "pg:$(cat /tmp/p)"
showtrans -p /tmp/p; echo "pp:$?"
`)
			want := `a:hello --contents=one
o:hello --contents=one
g:
a2:1
p:hello --contents=pp
c:pp
pa:hello --contents=pp
po:hello --contents=pp
pg:
pp:1
`
			if r.Code != 0 || r.Stdout != want {
				t.Fatalf("control of translated nodes inside: code %d, stderr %q\ngot:\n%s\nwant:\n%s", r.Code, r.Stderr, r.Stdout, want)
			}
		})
	}
}
