package acceptance_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"herd/translators/internal/transtest"
)

// TestBadInputInside: inside a subenvironment, settrans with a translator
// that does not exist, on a node the caller does not own, and on a node
// that already has a translator (without -f) fails with a clear one-line
// error and leaves the node as it was. (The host side is
// translators/control's TestBadInput.)
func TestBadInputInside(t *testing.T) {
	for _, who := range identities {
		t.Run(who, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, who)
			// A file of root's: not the caller's inside root's
			// subenvironment (the caller becomes the test user first); in
			// a plain user's, where they are root, it is theirs.
			theirs := filepath.Join(e.dir, "theirs")
			if err := os.WriteFile(theirs, []byte("theirs\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			asOther := ""
			if who == "root" {
				uid, gid := transtest.User(t, testUserName)
				asOther = "setpriv --reuid=" + strconv.Itoa(int(uid)) + " --regid=" + strconv.Itoa(int(gid)) + " --clear-groups "
			}
			// step runs a command that must fail and reports its status,
			// the number of lines it wrote to stderr and those lines.
			step := func(name, cmd string) string {
				return cmd + " 2>/tmp/err; echo \"" + name + ": $? $(wc -l </tmp/err) $(cat /tmp/err)\"\n"
			}
			script := `N=/tmp/node; touch "$N"
` + step("missing", `settrans -p "$N" no-such-translator`) + `
echo "missing-node: $(cat "$N" | wc -c) [$(showtrans "$N")]"
` + step("notowner", asOther+`settrans -p `+shq(theirs)+` hello`) + `
echo "notowner-node: $(cat ` + shq(theirs) + `)"
settrans -ac /tmp/busy hello --contents=first || echo "settrans -ac failed"
` + step("busy", `settrans -a /tmp/busy hello --contents=second`) + `
echo "busy-node: $(cat /tmp/busy)"
` + step("exclusive", `settrans -x /tmp/busy hello --contents=second`) + `
echo "exclusive-node: $(cat /tmp/busy)"
`
			r := e.inSubenv(script)
			if r.Code != 0 {
				t.Fatalf("subenv: %s", r)
			}
			got := map[string]string{}
			for _, l := range strings.Split(strings.TrimSpace(r.Stdout), "\n") {
				k, v, _ := strings.Cut(l, ": ")
				got[k] = v
			}
			fails := func(name, want string) {
				t.Helper()
				f := strings.SplitN(got[name], " ", 3)
				if len(f) != 3 || f[0] == "0" || f[1] != "1" || !strings.Contains(f[2], want) {
					t.Errorf("%s: status, stderr lines, message = %q; want a failure with one line containing %q", name, got[name], want)
				}
			}
			fails("missing", "translator no-such-translator not found")
			if got["missing-node"] != "0 []" {
				t.Errorf("node after a missing translator: %q; want it empty and without a record", got["missing-node"])
			}
			if who == "root" {
				// Another user inside root's subenvironment: the fs
				// server says "not the owner".
				fails("notowner", "not permitted")
				if got["notowner-node"] != "theirs" {
					t.Errorf("node not owned after settrans: %q", got["notowner-node"])
				}
			} else if !strings.HasPrefix(got["notowner"], "0 ") || got["notowner-node"] != "Hello, world!" {
				// A plain user is root in their own subenvironment and
				// every node there is theirs (fsbridge.IDMap): the record
				// goes on their copy-on-write copy, the host file stays
				// as it was (checked below).
				t.Errorf("settrans on a host file inside a plain user's subenvironment: %q, node %q; want it set in their copy",
					got["notowner"], got["notowner-node"])
			}
			if _, err := unix.Getxattr(theirs, "user.herd.translator", make([]byte, 256)); err != unix.ENODATA {
				t.Errorf("the host file got a translator record (%v)", err)
			}
			if strings.Contains(r.Stdout, "settrans -ac failed") {
				t.Fatalf("settrans -ac inside failed: %s", r)
			}
			fails("busy", "translat")
			if got["busy-node"] != "first" {
				t.Errorf("node with a translator after settrans -a without -f: %q; want the first translator", got["busy-node"])
			}
			fails("exclusive", "translat")
			if got["exclusive-node"] != "first" {
				t.Errorf("node with a translator after settrans -x: %q; want the first translator", got["exclusive-node"])
			}
			t.Logf("messages: %q", got)
		})
	}
}
