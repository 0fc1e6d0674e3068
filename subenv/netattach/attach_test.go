package netattach_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
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
	"herd/proto"
	"herd/subenv/netattach"
	"herd/subenv/netattach/nstest"
)

var herdNet string

func TestMain(m *testing.M) {
	nstest.Main()
	if os.Getenv("HERD_NETATTACH_ROLE") == "unpriv" {
		os.Exit(unprivScenario())
	}
	herdNet = testbin.MustBuild("herd-net")
	code := m.Run()
	testbin.Cleanup()
	os.Exit(code)
}

func hostHTTP(t testing.TB) int { return hostHTTPOn(t, "127.0.0.1:0") }

// hostHTTP6 is hostHTTP on the host's ::1.
func hostHTTP6(t testing.TB) int { return hostHTTPOn(t, "[::1]:0") }

func hostHTTPOn(t testing.TB, addr string) int {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var n int64
		if _, err := fmt.Sscanf(r.URL.Path, "/blob/%d", &n); err == nil {
			w.Header().Set("Content-Length", fmt.Sprint(n))
			io.Copy(w, io.LimitReader(&blobReader{}, n))
			return
		}
		fmt.Fprintf(w, "host page %s\n", r.URL.Path)
	})}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

func TestParseMode(t *testing.T) {
	for _, c := range []struct {
		in   string
		want netattach.Mode
		bad  bool
	}{
		{in: "", want: netattach.Mode{Kind: netattach.KindNAT}},
		{in: "nat", want: netattach.Mode{Kind: netattach.KindNAT}},
		{in: "none", want: netattach.Mode{Kind: netattach.KindNone}},
		{in: "host", want: netattach.Mode{Kind: netattach.KindHost}},
		{in: "lan:test", want: netattach.Mode{Kind: netattach.KindLAN, LAN: "test"}},
		{in: "lan:x,nat", want: netattach.Mode{Kind: netattach.KindLAN, LAN: "x", NAT: true}},
		{in: "./mynet", want: netattach.Mode{Kind: netattach.KindProg, Prog: "./mynet"}},
		{in: "lan:", bad: true},
		{in: "lan:a/b", bad: true},
		{in: "lan:a,foo", bad: true},
		{in: "slirp", bad: true},
	} {
		got, err := netattach.ParseMode(c.in)
		if (err != nil) != c.bad {
			t.Errorf("ParseMode(%q): err %v", c.in, err)
			continue
		}
		if !c.bad && fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("ParseMode(%q) = %+v, want %+v", c.in, got, c.want)
		}
	}
	plan, err := netattach.Prepare(netattach.Mode{Kind: netattach.KindNAT}, t.TempDir(), netattach.Options{})
	if err != nil || plan.TUN() == nil || *plan.TUN() != netattach.ServerConfig("eth0", netattach.DefaultMTU) {
		t.Fatalf("Prepare(nat).TUN() = %+v, %v", plan.TUN(), err)
	}
	for _, cfg := range []netattach.TUNConfig{netattach.NATConfig("eth0", 1500), netattach.ServerConfig("eth0", 1500)} {
		back, err := netattach.ParseTUNConfig(cfg.String())
		if err != nil || back != cfg {
			t.Errorf("TUNConfig round trip: %+v %v", back, err)
		}
	}
}

// TestStartNAT is the launcher's path: TUN made inside by CreateTUN and
// passed out, herd-net started by Start, a page fetched with curl, the
// control socket answering proto, and death detection when the namespace
// goes away.
func TestStartNAT(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Fatal("curl is required (Debian package curl)")
	}
	port := hostHTTP(t)
	cfg := netattach.NATConfig("eth0", netattach.DefaultMTU)
	ns, err := nstest.Start(nstest.Options{TUN: &cfg})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	rt := t.TempDir()
	pubPort := freePort(t)
	n, err := netattach.Start("nat", ns.TUN, rt, netattach.Options{Binary: herdNet,
		Args: []string{"--publish", fmt.Sprintf("%d:8080", pubPort)}})
	ns.TUN = nil
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	out, code, err := ns.Run(time.Minute, curl, "-sS", fmt.Sprintf("http://10.0.2.2:%d/x", port))
	if err != nil || code != 0 || out != "host page /x\n" {
		t.Fatalf("curl: %v exit %d: %q", err, code, out)
	}

	// Control over proto: options, and the stats file.
	c, err := proto.Dial(n.Socket, proto.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	opts, err := c.GetOptions(ctx)
	if err != nil || !strings.Contains(strings.Join(opts, " "), fmt.Sprintf("--publish=%d:8080", pubPort)) {
		t.Fatalf("GetOptions: %q %v", opts, err)
	}
	stats := readFile(t, c, "stats")
	if !strings.Contains(stats, "tcp_connections ") || strings.Contains(stats, "tcp_connections 0\n") {
		t.Fatalf("stats:\n%s", stats)
	}
	if err := c.SetOptions(ctx, []string{"--deny=10.0.2.2"}); err != nil {
		t.Fatal(err)
	}
	if got, err := ns.Dial(time.Minute, "tcp", fmt.Sprintf("10.0.2.2:%d", port), 1, false); got != "ECONNREFUSED" {
		t.Fatalf("after --deny: dial gave %q (%v), want ECONNREFUSED", got, err)
	}
	if err := c.SetOptions(ctx, []string{"--deny=", "--bogus"}); err == nil {
		t.Fatal("SetOptions with an unknown flag succeeded")
	}

	// The net server dies: the launcher learns it from Done, and the
	// programs inside get ENETUNREACH (the TUN, and with it eth0 and its
	// routes, is gone).
	syscall.Kill(n.Pid(), syscall.SIGKILL)
	select {
	case <-n.Done():
		t.Logf("net server gone: %v", n.Err())
	case <-time.After(30 * time.Second):
		t.Fatal("Done did not fire after the net server was killed")
	}
	if got, _ := ns.Dial(time.Minute, "tcp", fmt.Sprintf("10.0.2.2:%d", port), 1, false); got != "ENETUNREACH" {
		t.Fatalf("after the server died: dial gave %q, want ENETUNREACH", got)
	}
}

func readFile(t *testing.T, c *proto.Client, name string) string {
	t.Helper()
	ctx := context.Background()
	root, err := c.Root(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e, err := c.Lookup(ctx, root.Node, name)
	if err != nil {
		t.Fatalf("lookup %s: %v", name, err)
	}
	h, err := c.Open(ctx, e.Node, uint32(os.O_RDONLY))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Release(ctx, h.Handle)
	var out []byte
	for {
		b, err := c.Read(ctx, h.Handle, int64(len(out)), 65536)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) == 0 {
			break
		}
		out = append(out, b...)
	}
	c.Forget(ctx, e.Node, 1)
	return string(out)
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestStartNATUnprivileged runs the whole path as the unprivileged user
// herdnet: its own user and network namespace, /dev/net/tun at mode 0666 as
// distributions ship it, herd-net running as herdnet.
func TestStartNATUnprivileged(t *testing.T) {
	if os.Geteuid() != 0 {
		// Already unprivileged: the scenario runs as ourselves.
		if code := unprivScenarioEnv(hostHTTP(t)); code != 0 {
			t.Fatalf("unprivileged scenario failed (%d)", code)
		}
		return
	}
	u := ensureUser(t, "herdnet")
	chmodTun(t)
	port := hostHTTP(t)
	dir, err := testbin.Dir()
	if err != nil {
		t.Fatal(err)
	}
	self, _ := os.Executable()
	bin := filepath.Join(dir, "netattach.test")
	copyFile(t, self, bin)
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), "HERD_NETATTACH_ROLE=unpriv", "HERD_NET_BIN="+herdNet,
		"HERD_TEST_PORT="+strconv.Itoa(port), "HOME=/", "XDG_RUNTIME_DIR=")
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, Pdeathsig: syscall.SIGKILL}
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	t.Logf("as herdnet: %s", out)
	if err != nil || !strings.Contains(string(out), "UNPRIV-OK") {
		t.Fatalf("as herdnet: %v\n%s", err, out)
	}
}

func unprivScenarioEnv(port int) int {
	os.Setenv("HERD_TEST_PORT", strconv.Itoa(port))
	if os.Getenv("HERD_NET_BIN") == "" {
		os.Setenv("HERD_NET_BIN", herdNet)
	}
	return unprivScenario()
}

func unprivScenario() int {
	fail := func(f string, a ...any) int { fmt.Printf("FAIL: "+f+"\n", a...); return 1 }
	port := os.Getenv("HERD_TEST_PORT")
	cfg := netattach.NATConfig("eth0", netattach.DefaultMTU)
	ns, err := nstest.Start(nstest.Options{TUN: &cfg})
	if err != nil {
		return fail("namespace as uid %d: %v", os.Getuid(), err)
	}
	defer ns.Close()
	rt, err := os.MkdirTemp("", "herdnet-rt-")
	if err != nil {
		return fail("%v", err)
	}
	defer os.RemoveAll(rt)
	n, err := netattach.Start("nat", ns.TUN, rt, netattach.Options{Binary: os.Getenv("HERD_NET_BIN")})
	ns.TUN = nil
	if err != nil {
		return fail("%v", err)
	}
	defer n.Close()
	curl, err := exec.LookPath("curl")
	if err != nil {
		return fail("curl is required")
	}
	out, code, err := ns.Run(time.Minute, curl, "-sS", "http://10.0.2.2:"+port+"/unpriv")
	if err != nil || code != 0 || out != "host page /unpriv\n" {
		return fail("curl: %v exit %d: %q", err, code, out)
	}
	// And 200 MB, checksummed.
	const size = 200 << 20
	h := sha256.New()
	io.Copy(h, io.LimitReader(&blobReader{}, size))
	want := hex.EncodeToString(h.Sum(nil))
	out, code, err = ns.Run(5*time.Minute, "sh", "-c", fmt.Sprintf("%s -sS http://10.0.2.2:%s/blob/%d | sha256sum", curl, port, size))
	if err != nil || code != 0 || !strings.HasPrefix(out, want) {
		return fail("200 MB: %v exit %d: %q, want %s", err, code, out, want)
	}
	fmt.Printf("UNPRIV-OK uid=%d\n", os.Getuid())
	return 0
}

// blobReader is an endless deterministic stream: byte i is i mod 251.
type blobReader struct{ off int64 }

func (b *blobReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte((b.off + int64(i)) % 251)
	}
	b.off += int64(len(p))
	return len(p), nil
}

func ensureUser(t *testing.T, name string) *user.User {
	t.Helper()
	u, err := user.Lookup(name)
	if err != nil {
		if out, err := exec.Command("useradd", "-M", "-s", "/bin/sh", name).CombinedOutput(); err != nil {
			// Another test binary may have created it meanwhile.
			if _, err2 := user.Lookup(name); err2 != nil {
				t.Fatalf("useradd %s: %v %s", name, err, out)
			}
		}
		u, err = user.Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
	}
	return u
}

// chmodTun makes /dev/net/tun 0666, as distributions ship it. (Not put
// back: tests of other packages running at the same time may need it.)
func chmodTun(t *testing.T) {
	if err := os.Chmod("/dev/net/tun", 0o666); err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, from, to string) {
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	out.Close()
}
