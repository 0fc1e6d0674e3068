package control_test

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// processesWith returns the pids whose command line contains marker.
func processesWith(marker string) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, de := range ents {
		pid, err := strconv.Atoi(de.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", de.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), marker) && !strings.Contains(string(b), "-test.") {
			out = append(out, pid)
		}
	}
	return out
}

func waitNoProcesses(t *testing.T, marker string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		left := processesWith(marker)
		alive := 0
		for _, pid := range left {
			if controlAlive(pid) {
				alive++
			}
		}
		if alive == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes left: %v", left)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestHostmux: looking up a name in the mux starts a translator for it
// (hello, with the name as its contents), reached by redirect; the
// children stop with the mux.
func TestHostmux(t *testing.T) {
	for _, who := range identities {
		t.Run(who, func(t *testing.T) {
			e := newEnv(t, who)
			mux := filepath.Join(e.dir, "ftp:")
			marker := fmt.Sprintf("mux-%d-%s", time.Now().UnixNano(), who)
			e.ok("settrans", "-ac", mux, "hostmux", "hello", "--contents", marker+":${host}")
			if fi, err := os.Stat(mux); err != nil && who == "root" || err == nil && !fi.IsDir() {
				t.Fatalf("mux node: %v %v", fi, err)
			}
			if got := e.ok("ls", mux); got != "" {
				t.Fatalf("fresh mux lists %q", got)
			}
			if got := e.ok("ls", filepath.Join(mux, "foo")); strings.TrimSpace(got) != filepath.Join(mux, "foo") {
				t.Fatalf("ls NODE/foo = %q", got)
			}
			if got := e.ok("cat", filepath.Join(mux, "foo")); got != marker+":foo" {
				t.Fatalf("cat NODE/foo = %q", got)
			}
			if got := e.ok("cat", filepath.Join(mux, "bar.example")); got != marker+":bar.example" {
				t.Fatalf("cat NODE/bar.example = %q", got)
			}
			if got := e.ok("ls", mux); got != "bar.example\nfoo\n" {
				t.Fatalf("mux lists %q", got)
			}
			for _, name := range []string{"foo", "bar.example"} {
				if n := len(processesWith(marker + ":" + name)); n != 1 {
					t.Fatalf("%d children for %s running, want 1", n, name)
				}
			}
			if got := e.ok("showtrans", "-a", mux); !strings.HasPrefix(got, "hostmux hello --contents") {
				t.Fatalf("showtrans -a = %q", got)
			}
			st := e.state(mux)
			e.ok("settrans", "-g", mux)
			waitGone(t, st.TranslatorPid)
			waitNoProcesses(t, marker)
			if mounted(t, mux) {
				t.Fatal("mux still mounted")
			}
		})
	}
}

// TestHostmuxBadChild: a child that cannot start makes the lookup fail,
// and the mux goes on serving.
func TestHostmuxBadChild(t *testing.T) {
	e := newEnv(t, "root")
	mux := filepath.Join(e.dir, "m")
	e.ok("settrans", "-ac", mux, "hostmux", "no-such-translator")
	if r := e.run("cat", filepath.Join(mux, "x")); r.Code == 0 || !strings.Contains(r.Stderr, "No such file") {
		t.Fatalf("lookup with a missing child translator: %+v", r)
	}
	e.ok("settrans", "-g", mux)
	mux2 := filepath.Join(e.dir, "m2")
	e.ok("settrans", "-ac", mux2, "hostmux", "hello", "--no-such-flag")
	if r := e.run("cat", filepath.Join(mux2, "x")); r.Code == 0 {
		t.Fatalf("lookup with a failing child: %+v", r)
	}
	e.ok("settrans", "-g", mux2)
}

// TestUsermux: user names become links to their homes, or the translator
// given, with the patterns replaced.
func TestUsermux(t *testing.T) {
	for _, who := range identities {
		t.Run(who, func(t *testing.T) {
			e := newEnv(t, who)
			root, err := user.Lookup("root")
			if err != nil {
				t.Fatal(err)
			}
			um := filepath.Join(e.dir, "users")
			// With the firmlink translator installed beside usermux, a
			// user's name is their home directory itself.
			e.ok("settrans", "-ac", um, "usermux")
			if got := e.ok("stat", "-c", "%F", filepath.Join(um, "root")); got != "directory\n" {
				t.Fatalf("users/root is a %q", got)
			}
			if who == "root" {
				want, _ := os.ReadDir(root.HomeDir)
				got, err := os.ReadDir(filepath.Join(um, "root"))
				if err != nil || len(got) != len(want) {
					t.Fatalf("users/root lists %d names (%v), the home %d", len(got), err, len(want))
				}
			}
			e.fails("No such file", "ls", filepath.Join(um, "no-such-user-here"))
			e.ok("settrans", "-g", um)

			// Without it, a symbolic link.
			r := e.runEnv([]string{"HERD_TRANSLATORS=" + filepath.Join(e.dir, "none"), "PATH=/usr/bin:/bin"},
				filepath.Join(binDir, "settrans"), "-a", um, filepath.Join(binDir, "usermux"))
			if r.Code != 0 {
				t.Fatalf("settrans usermux: %+v", r)
			}
			if got := e.ok("readlink", filepath.Join(um, "root")); got != root.HomeDir+"\n" {
				t.Fatalf("readlink = %q", got)
			}
			e.ok("settrans", "-g", um)

			marker := fmt.Sprintf("um-%d-%s", time.Now().UnixNano(), who)
			e.ok("settrans", "-ac", um, "usermux", "hello", "--contents", marker+" ${user} ${uid} ${home}")
			if got := e.ok("cat", filepath.Join(um, "root")); got != marker+" root 0 "+root.HomeDir {
				t.Fatalf("cat users/root = %q", got)
			}
			e.ok("settrans", "-g", um)
			waitNoProcesses(t, marker)
		})
	}
}

// TestHostmuxKilled: children do not outlive a mux killed outright.
func TestHostmuxKilled(t *testing.T) {
	e := newEnv(t, "user")
	mux := filepath.Join(e.dir, "m")
	marker := fmt.Sprintf("killed-%d", time.Now().UnixNano())
	e.ok("settrans", "-ac", mux, "hostmux", "hello", "--contents", marker+":${host}")
	if got := e.ok("cat", filepath.Join(mux, "a")); got != marker+":a" {
		t.Fatalf("cat = %q", got)
	}
	st := e.state(mux)
	if err := syscall.Kill(st.TranslatorPid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitNoProcesses(t, marker)
	if mounted(t, mux) {
		t.Fatal("still mounted")
	}
}
