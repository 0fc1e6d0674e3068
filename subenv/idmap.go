package subenv

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"herd/subenv/fsbridge"
)

// subIDs is what a plain user may map besides themself: the ranges that
// /etc/subuid and /etc/subgid grant, written into the init's maps by the
// setuid helpers newuidmap and newgidmap (shadow's uidmap package). With
// them, programs inside can switch to other uids (apt's _apt, daemons
// dropping privileges), and the fs bridge shows files of those uids as
// theirs (the fs server records owners it cannot set on the host, see
// servers/fs/owner.go). Without them the user maps only themself, to root.
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

// idMap is what the bridge needs to know of the maps.
func (s *subIDs) idMap() fsbridge.IDMap {
	return fsbridge.IDMap{HostUid: uint32(s.uid), HostGid: uint32(s.gid),
		UidStart: uint32(s.uidStart), UidCount: uint32(s.uidCount),
		GidStart: uint32(s.gidStart), GidCount: uint32(s.gidCount)}
}

func (s *subIDs) String() string {
	return fmt.Sprintf("uid 0 inside is you (%d); uids 1-%d are your /etc/subuid range from %d, gids 1-%d your /etc/subgid range from %d",
		s.uid, s.uidCount, s.uidStart, s.gidCount, s.gidStart)
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

// allCaps is every capability the kernel knows. The init is exec'd before
// newuidmap has mapped its uid, and an exec by an unmapped uid would drop
// its capabilities in the new namespace; as ambient capabilities they
// survive that exec (Go's exec raises them in the child before execve), so
// the init need not exec itself again once mapped. It clears them before
// it starts the program (dropAmbient).
func allCaps() []uintptr {
	last := uintptr(unix.CAP_LAST_CAP)
	if b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n >= 0 && n < 64 {
			last = uintptr(n)
		}
	}
	caps := make([]uintptr, 0, last+1)
	for c := uintptr(0); c <= last; c++ {
		caps = append(caps, c)
	}
	return caps
}

// dropAmbient clears this thread's ambient and inheritable capabilities,
// so that a program started from it begins as a root would: with the
// capabilities of its uid, and none left over once it switches to another.
// The caller has locked the thread and forks from it.
func dropAmbient() error {
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("clearing ambient capabilities: %v", err)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capget: %v", err)
	}
	data[0].Inheritable, data[1].Inheritable = 0, 0
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capset: %v", err)
	}
	return nil
}

// netBeforeMaps: the net mode's init half needs no mapped uid, only the
// capabilities the init has from the start (it makes a TUN and brings up
// loopback), so it may run while newuidmap works. A lan reads the host uid
// from the uid map, and unknown modes are not assumed to be so modest.
func netBeforeMaps(ns NetSetup) bool {
	switch ns.(type) {
	case tunSetup, netNone, netHost:
		return true
	}
	return false
}
