package subenv

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"herd/internal/testbin"
)

// U's test user: a plain user with /etc/subuid and /etc/subgid ranges.
const subUser = "herdsub"

// newSubEnv is newEnv for herdsub, making sure the user exists and has
// ranges (Debian's useradd adds them when /etc/subuid exists; else
// usermod does).
func newSubEnv(t *testing.T) *env {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the unprivileged tests need root to create their user")
	}
	if _, err := user.Lookup(subUser); err != nil {
		if out, err := exec.Command("useradd", "-M", "-s", "/bin/sh", subUser).CombinedOutput(); err != nil {
			if _, err2 := user.Lookup(subUser); err2 != nil {
				t.Fatalf("useradd %s: %v: %s", subUser, err, out)
			}
		}
	}
	for _, f := range []struct{ file, flag string }{{"/etc/subuid", "--add-subuids"}, {"/etc/subgid", "--add-subgids"}} {
		if _, _, ok := subIDRange(f.file, subUser, -1); ok {
			continue
		}
		end := uint64(100000)
		b, _ := os.ReadFile(f.file)
		for _, line := range strings.Split(string(b), "\n") {
			if p := strings.Split(line, ":"); len(p) == 3 {
				s, _ := strconv.ParseUint(p[1], 10, 32)
				c, _ := strconv.ParseUint(p[2], 10, 32)
				end = max(end, s+c)
			}
		}
		r := strconv.FormatUint(end, 10) + "-" + strconv.FormatUint(end+65535, 10)
		if out, err := exec.Command("usermod", f.flag, r, subUser).CombinedOutput(); err != nil {
			t.Fatalf("usermod %s %s %s: %v: %s", f.flag, r, subUser, err, out)
		}
	}
	u, err := user.Lookup(subUser)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	for _, dev := range []string{"/dev/fuse", "/dev/net/tun"} {
		if err := os.Chmod(dev, 0o666); err != nil {
			t.Fatal(err)
		}
	}
	e := newEnv(t, false)
	e.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	for _, d := range []string{e.runtime, e.data, e.home} {
		if err := os.Chown(d, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

// What a user expects of ids inside, as a plain user with a range (the
// default): chown shows, a process switched to uid 1000 creates files as
// 1000 and cannot write root's, and root still changes /etc (into the
// copy-on-write layer), also a file whose mode shuts out its owner.
const idScript = `set -e
wc -l < /proc/self/uid_map
echo a > /tmp/f; chown 1000:1000 /tmp/f; stat -c '%u %g' /tmp/f
ls -ln /tmp/f | awk '{print $3, $4}'
as1000() { setpriv --reuid 1000 --regid 1000 --clear-groups "$@"; }
as1000 touch /tmp/g; stat -c '%u %g' /tmp/g
echo r > /tmp/r; chmod 644 /tmp/r
if as1000 sh -c 'echo y >> /tmp/r' 2>/dev/null; then echo wrote-root-file; else echo denied; fi
if as1000 sh -c 'echo y >> /etc/passwd' 2>/dev/null; then echo wrote-passwd; else echo denied; fi
echo 'herdsubtest:x:4242:4242::/:/bin/sh' >> /etc/passwd; grep -c '^herdsubtest:' /etc/passwd
mkdir /tmp/d; chown 1000:1000 /tmp/d; as1000 sh -c 'echo hi > /tmp/d/x'; stat -c '%u %g' /tmp/d/x
chown 0:0 /tmp/f; stat -c '%u %g' /tmp/f
echo a > /tmp/m; chmod 400 /tmp/m; echo b > /tmp/m; cat /tmp/m; stat -c %a /tmp/m
`

const idWant = "2\n1000 1000\n1000 1000\n1000 1000\ndenied\ndenied\n1\n1000 1000\n0 0\nb\n400\n"

func TestSubuidDefault(t *testing.T) {
	e := newSubEnv(t)
	r := e.run("", "run", "-v", "--", "sh", "-c", idScript)
	if r.code != 0 || r.stdout != idWant {
		t.Fatalf("exit %d, stdout %q, want %q; stderr: %s", r.code, r.stdout, idWant, r.stderr)
	}
	if !strings.Contains(r.stderr, "your /etc/subuid range") {
		t.Errorf("-v does not say what was mapped: %s", r.stderr)
	}
	if b, _ := os.ReadFile("/etc/passwd"); strings.Contains(string(b), "herdsubtest") {
		t.Fatal("the host's /etc/passwd changed")
	}
	// An external fs server (a program of its own, as any --fs) records
	// owners the same way.
	fs, err := testbin.Build("herd-fs")
	if err != nil {
		t.Fatal(err)
	}
	r = e.run("", "run", "--fs", fs+" --hide-tmp", "--", "sh", "-c", idScript)
	if r.code != 0 || r.stdout != idWant {
		t.Fatalf("--fs herd-fs: exit %d, stdout %q, want %q; stderr: %s", r.code, r.stdout, idWant, r.stderr)
	}
}

// With the range turned off, the user is root inside, alone, as before.
func TestSubuidOff(t *testing.T) {
	e := newSubEnv(t)
	const script = `wc -l < /proc/self/uid_map; id -u; echo hi > /tmp/x; cat /tmp/x; stat -c '%u %g' /etc/passwd
if chown 1000 /tmp/x 2>/dev/null; then echo chowned; else echo refused; fi
chmod 400 /tmp/x; echo b > /tmp/x; cat /tmp/x; stat -c %a /tmp/x`
	for _, flag := range []string{"--subuid=false", "--no-subuid"} {
		r := e.run("", "run", "-v", flag, "--", "sh", "-c", script)
		if want := "1\n0\nhi\n0 0\nrefused\nb\n400\n"; r.code != 0 || r.stdout != want {
			t.Errorf("%s: exit %d, stdout %q, want %q; stderr: %s", flag, r.code, r.stdout, want, r.stderr)
		}
		if !strings.Contains(r.stderr, "alone") {
			t.Errorf("%s: -v does not say only you are mapped: %s", flag, r.stderr)
		}
	}
}

// As root nothing changes: the whole range, real owners.
func TestSubuidRoot(t *testing.T) {
	e := newEnv(t, false)
	r := e.run("", "run", "-v", "--", "sh", "-c", `cat /proc/self/uid_map | tr -s ' ' | sed 's/^ //'; echo a > /tmp/f; chown 1000:1000 /tmp/f; stat -c '%u %g' /tmp/f`)
	if want := "0 0 4294967295\n1000 1000\n"; r.code != 0 || r.stdout != want {
		t.Fatalf("exit %d, stdout %q, want %q; stderr: %s", r.code, r.stdout, want, r.stderr)
	}
	if !strings.Contains(r.stderr, "the whole range") {
		t.Errorf("-v does not say what was mapped: %s", r.stderr)
	}
}

// A user without a range gets none (and the launcher maps them alone).
func TestSubIDRangeLookup(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "subuid")
	if err := os.WriteFile(f, []byte("alice:100000:65536\n1234:200000:10\nbob:x:1\ncarol:300000:0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name         string
		id           int
		start, count int
		ok           bool
	}{{"alice", 1, 100000, 65536, true}, {"dave", 1234, 200000, 10, true}, {"bob", 5, 0, 0, false}, {"carol", 6, 0, 0, false}, {"erin", 7, 0, 0, false}} {
		s, n, ok := subIDRange(f, c.name, c.id)
		if ok != c.ok || s != c.start || n != c.count {
			t.Errorf("%s: %d %d %v, want %d %d %v", c.name, s, n, ok, c.start, c.count, c.ok)
		}
	}
}

// When newuidmap fails (a broken or refusing helper), the user is mapped
// alone, as without a range, and -v says why.
func TestSubuidHelpersFail(t *testing.T) {
	e := newSubEnv(t)
	fake := filepath.Join(e.base, "fake")
	if err := os.Mkdir(fake, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"newuidmap", "newgidmap"} {
		if err := os.WriteFile(filepath.Join(fake, n), []byte("#!/bin/sh\necho refused >&2\nexit 1\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := e.command(ctx, "run", "-v", "--", "sh", "-c", "wc -l < /proc/self/uid_map; id -u; echo hi > /tmp/x; cat /tmp/x")
	cmd.Env = append(cmd.Env, "PATH="+fake+":"+os.Getenv("PATH"))
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil || out.String() != "1\n0\nhi\n" {
		t.Fatalf("%v: stdout %q, stderr %s", err, out.String(), errb.String())
	}
	if !strings.Contains(errb.String(), "could not be mapped") || !strings.Contains(errb.String(), "refused") {
		t.Errorf("-v does not say why: %s", errb.String())
	}
}

// Root inside writes a lower file whose mode shuts out even its owner
// (0444) and creates in a 0555 lower directory, as on ext4: the copy-up
// keeps the server's access and records the mode.
func TestSubuidReadOnlyLower(t *testing.T) {
	e := newSubEnv(t)
	// Not under /tmp, which is empty inside.
	dir, err := os.MkdirTemp("/var/tmp", "subenv-subuid-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ro := filepath.Join(dir, "ro")
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(ro, 0o755); err != nil {
		t.Fatal(err)
	}
	defer os.Chmod(ro, 0o755)
	if err := os.WriteFile(filepath.Join(ro, "f"), []byte("a\n"), 0o444); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(ro, 0o555); err != nil {
		t.Fatal(err)
	}
	r := e.run("", "run", "--", "sh", "-c", "cd "+ro+" && echo b >> f && cat f && stat -c %a f && touch new && stat -c %a .")
	if want := "a\nb\n444\n555\n"; r.code != 0 || r.stdout != want {
		t.Fatalf("exit %d, stdout %q, want %q; stderr: %s", r.code, r.stdout, want, r.stderr)
	}
	if b, _ := os.ReadFile(filepath.Join(ro, "f")); string(b) != "a\n" {
		t.Fatalf("the host's file changed: %q", b)
	}
}
