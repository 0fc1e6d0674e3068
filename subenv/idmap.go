package subenv

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
)

// subIDs is what a plain user may map besides themself: the ranges that
// /etc/subuid and /etc/subgid grant, written into the init's maps by the
// setuid helpers newuidmap and newgidmap (shadow's uidmap package). With
// them, programs inside can switch to other uids (apt's _apt, daemons
// dropping privileges). Without them the user maps only themself, to root.
type subIDs struct {
	uid, gid             int
	uidStart, uidCount   int
	gidStart, gidCount   int
	newuidmap, newgidmap string
}

// lookupSubIDs returns the user's ranges, or nil when there are none or
// the helpers are missing.
func lookupSubIDs(uid, gid int) *subIDs {
	nu, err1 := exec.LookPath("newuidmap")
	ng, err2 := exec.LookPath("newgidmap")
	if err1 != nil || err2 != nil {
		return nil
	}
	name := ""
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		name = u.Username
	}
	us, uc, ok1 := subIDRange("/etc/subuid", name, uid)
	gs, gc, ok2 := subIDRange("/etc/subgid", name, uid)
	if !ok1 || !ok2 {
		return nil
	}
	return &subIDs{uid: uid, gid: gid, uidStart: us, uidCount: uc, gidStart: gs, gidCount: gc, newuidmap: nu, newgidmap: ng}
}

// subIDRange finds the first "name:start:count" (or "uid:start:count")
// line for the user in a subuid/subgid file.
func subIDRange(file, name string, id int) (start, count int, ok bool) {
	f, err := os.Open(file)
	if err != nil {
		return 0, 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(strings.TrimSpace(sc.Text()), ":")
		if len(fields) != 3 || (fields[0] != name && fields[0] != strconv.Itoa(id)) {
			continue
		}
		s, err1 := strconv.Atoi(fields[1])
		c, err2 := strconv.Atoi(fields[2])
		if err1 == nil && err2 == nil && c > 0 {
			return s, c, true
		}
	}
	return 0, 0, false
}

// apply writes the init's maps: the user as root, the range from uid 1 on.
// Both helpers run at once.
func (s *subIDs) apply(pid int) error {
	p := strconv.Itoa(pid)
	run := func(prog string, self, start, count int) chan error {
		ch := make(chan error, 1)
		go func() {
			cmd := exec.Command(prog, p, "0", strconv.Itoa(self), "1", "1", strconv.Itoa(start), strconv.Itoa(count))
			out, err := cmd.CombinedOutput()
			if err != nil {
				err = fmt.Errorf("%s: %v: %s", prog, err, strings.TrimSpace(string(out)))
			}
			ch <- err
		}()
		return ch
	}
	eu := run(s.newuidmap, s.uid, s.uidStart, s.uidCount)
	eg := run(s.newgidmap, s.gid, s.gidStart, s.gidCount)
	err1, err2 := <-eu, <-eg
	if err1 != nil {
		return err1
	}
	return err2
}

// writeOwnMaps maps only the user, to root, as an unprivileged process may
// (setgroups must be denied first). The fallback when the helpers fail.
func writeOwnMaps(pid, uid, gid int) error {
	dir := fmt.Sprintf("/proc/%d/", pid)
	// With newgidmap done and newuidmap failed, gid_map is already
	// written; what is left to write is what matters.
	os.WriteFile(dir+"setgroups", []byte("deny"), 0)
	os.WriteFile(dir+"gid_map", []byte(fmt.Sprintf("0 %d 1\n", gid)), 0)
	if err := os.WriteFile(dir+"uid_map", []byte(fmt.Sprintf("0 %d 1\n", uid)), 0); err != nil {
		return fmt.Errorf("uid map: %v", err)
	}
	return nil
}
