package netattach_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"herd/subenv/netattach"
	"herd/subenv/netattach/nstest"
)

// lanMember is one subenvironment on a lan, joined the way the launcher
// does it: Prepare (join/start the keeper, get an address), the init
// creates the TUN with that address, Start attaches it. It returns the
// member's IPv4 address (and lanAddr6 its IPv6 one).
func lanMember(t *testing.T, mode string) (*nstest.NS, *netattach.Net, string) {
	t.Helper()
	m, err := netattach.ParseMode(mode)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := netattach.Prepare(m, t.TempDir(), netattach.Options{Binary: herdNet})
	if err != nil {
		t.Fatal(err)
	}
	cfg := plan.TUN()
	ns, err := nstest.Start(nstest.Options{TUN: cfg})
	if err != nil {
		plan.Abort()
		t.Fatal(err)
	}
	n, err := plan.Start(ns.TUN)
	ns.TUN = nil
	if err != nil {
		ns.Close()
		t.Fatal(err)
	}
	if !cfg.Addr6.IsValid() {
		ns.Close()
		n.Close()
		t.Fatalf("lan member without an IPv6 address: %+v", cfg)
	}
	lanV6[cfg.Addr.Addr().String()] = "[" + cfg.Addr6.Addr().String() + "]"
	return ns, n, cfg.Addr.Addr().String()
}

// lanV6 maps members' IPv4 addresses to their IPv6 ones in URL form.
var lanV6 = map[string]string{}

// v6Ready waits until ns can send from its IPv6 address (a fresh link's
// address may take a moment) by dialing addr until it answers.
func v6Ready(t *testing.T, ns *nstest.NS, addr string) string {
	var got string
	for i := 0; i < 100; i++ {
		got, _ = ns.Dial(time.Minute, "tcp", addr, 1, true)
		if got == "ok" {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	return got
}

func TestLAN(t *testing.T) {
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatal("busybox is required (Debian package busybox)")
	}
	t.Setenv("XDG_RUNTIME_DIR", runtimeDir(t))
	www := t.TempDir()
	os.Chmod(www, 0o755)
	if err := os.WriteFile(filepath.Join(www, "index.html"), []byte("hello neighbour\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	ns1, n1, a1 := lanMember(t, "lan:test")
	ns2, n2, a2 := lanMember(t, "lan:test")
	ns3, n3, a3 := lanMember(t, "lan:other")
	if a1 == a2 {
		t.Fatalf("two members of lan:test got the same address %s", a1)
	}
	t.Logf("lan:test %s %s, lan:other %s", a1, a2, a3)

	// A web server in the first; the second fetches from it.
	if _, err := ns1.StartBG(bb, "httpd", "-f", "-p", "80", "-h", www); err != nil {
		t.Fatal(err)
	}
	var out string
	var code int
	for i := 0; i < 100; i++ { // until httpd listens
		out, code, err = ns2.Run(time.Minute, bb, "wget", "-q", "-O", "-", "http://"+a1+"/index.html")
		if err != nil {
			t.Fatal(err)
		}
		if code == 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code != 0 || out != "hello neighbour\n" {
		t.Fatalf("wget from %s to %s: exit %d %q", a2, a1, code, out)
	}
	// Both directions: the first reaches the second too.
	if _, err := ns2.Echo("tcp", ":7000"); err != nil {
		t.Fatal(err)
	}
	if got, _ := ns1.Dial(time.Minute, "tcp", a2+":7000", 3, true); got != "ok" {
		t.Fatalf("%s -> %s: %s", a1, a2, got)
	}
	// And over IPv6, both ways (fd00:0:0:3::15 and ::16).
	v1, v2 := lanV6[a1], lanV6[a2]
	if got := v6Ready(t, ns1, v2+":7000"); got != "ok" {
		t.Fatalf("%s -> %s over IPv6: %s", v1, v2, got)
	}
	out, code, err = ns2.Run(time.Minute, bb, "wget", "-q", "-O", "-", "http://"+v1+"/index.html")
	if err != nil || code != 0 || out != "hello neighbour\n" {
		t.Fatalf("wget from %s to %s: exit %d %v %q", v2, v1, code, err, out)
	}
	// lan:other is another server: lan:test's second member is nobody
	// there (and its first member's address is lan:other's own).
	if got, _ := ns3.Dial(time.Minute, "tcp", a2+":7000", 1, true); got != "ECONNREFUSED" {
		t.Fatalf("lan:other %s -> %s:7000: %s, want ECONNREFUSED", a3, a2, got)
	}
	if got, _ := ns3.Dial(time.Minute, "tcp", v2+":7000", 1, true); got != "ECONNREFUSED" {
		t.Fatalf("lan:other %s -> %s:7000: %s, want ECONNREFUSED", lanV6[a3], v2, got)
	}
	for _, a := range []string{a1, v1} {
		out, code, _ = ns3.Run(time.Minute, bb, "wget", "-q", "-T", "5", "-O", "-", "http://"+a+"/index.html")
		if code == 0 || strings.Contains(out, "neighbour") {
			t.Fatalf("lan:other reached lan:test at %s: exit %d %q", a, code, out)
		}
	}
	// Without nat a lan has no way out.
	for _, a := range []string{"10.0.2.2:80", "[fd00::2]:80"} {
		if got, _ := ns1.Dial(time.Minute, "tcp", a, 1, false); got != "ENETUNREACH" {
			t.Fatalf("lan without nat, dial the host at %s: %s, want ENETUNREACH", a, got)
		}
	}

	// The keeper of lan:test exits when its last member leaves.
	join := filepath.Join(netattach.LANDir(), "test.join")
	if _, err := os.Stat(join); err != nil {
		t.Fatalf("keeper's join socket: %v", err)
	}
	n1.Close()
	ns1.Close()
	if _, err := os.Stat(join); err != nil {
		t.Fatalf("keeper left after its first member: %v", err)
	}
	n2.Close()
	ns2.Close()
	n3.Close()
	ns3.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, e1 := os.Stat(join)
		_, e2 := os.Stat(filepath.Join(netattach.LANDir(), "other.join"))
		if os.IsNotExist(e1) && os.IsNotExist(e2) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("lan keepers still there after their last member left")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Keeper processes are gone too (nothing of ours left running).
	waitNoKeeper(t)
}

// waitNoKeeper waits until no herd-net process started from our test
// binary directory runs.
func waitNoKeeper(t *testing.T) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		found := ""
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			exe, err := os.Readlink("/proc/" + e.Name() + "/exe")
			if err == nil && exe == herdNet {
				found = e.Name()
			}
		}
		if found == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("herd-net (pid %s) still running", found)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var _ = fmt.Sprint

// TestLANNAT: a lan with nat reaches the host through its gateway too.
func TestLANNAT(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Fatal("curl is required (Debian package curl)")
	}
	t.Setenv("XDG_RUNTIME_DIR", runtimeDir(t))
	port := hostHTTP(t)
	ns1, n1, a1 := lanMember(t, "lan:out,nat")
	defer waitNoKeeper(t)
	defer ns1.Close()
	defer n1.Close()
	out, code, err := ns1.Run(time.Minute, curl, "-sS", fmt.Sprintf("http://10.0.3.2:%d/lan", port))
	if err != nil || code != 0 || out != "host page /lan\n" {
		t.Fatalf("%s on lan:out,nat -> host: exit %d %v %q", a1, code, err, out)
	}
	// The host's ::1 is the lan's IPv6 gateway.
	port6 := hostHTTP6(t)
	for i := 0; i < 100; i++ { // until the fresh link's IPv6 address is usable
		out, code, err = ns1.Run(time.Minute, curl, "-sS", "-g", fmt.Sprintf("http://[fd00:0:0:3::2]:%d/lan6", port6))
		if err != nil || code == 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil || code != 0 || out != "host page /lan6\n" {
		t.Fatalf("%s on lan:out,nat -> host ::1: exit %d %v %q", lanV6[a1], code, err, out)
	}
	// A member asking for the same lan without nat is refused with a reason.
	m, _ := netattach.ParseMode("lan:out")
	if _, err := netattach.Prepare(m, t.TempDir(), netattach.Options{Binary: herdNet}); err == nil || !strings.Contains(err.Error(), "nat") {
		t.Fatalf("joining lan:out without nat: %v", err)
	}
}

// runtimeDir is a private XDG_RUNTIME_DIR for a test, not under /tmp (where
// the launcher's init cannot see it, see netattach.LANDir).
func runtimeDir(t *testing.T) string {
	d, err := os.MkdirTemp("/dev/shm", "herd-xdg-")
	if err != nil {
		d, err = os.MkdirTemp("/var/tmp", "herd-xdg-")
	}
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(d, 0o700)
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}
