package subenv

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The network of `subenv run`, end to end: real curl and busybox inside,
// servers on the host's 127.0.0.1 (reached as 10.0.2.2). Only loopback and
// namespace-internal addresses are contacted.

const bigSize = 200 << 20

// hostHTTP serves "/" (a page) and "/big" (200 MB of pseudo-random bytes)
// on 127.0.0.1, and returns the port and the sha256 of /big.
func hostHTTP(t *testing.T) (int, string) {
	t.Helper()
	block := make([]byte, 1<<20)
	rand.New(rand.NewSource(42)).Read(block)
	h := sha256.New()
	for i := 0; i < bigSize/len(block); i++ {
		h.Write(block)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "page from the host\n") })
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(bigSize))
		for i := 0; i < bigSize/len(block); i++ {
			if _, err := w.Write(block); err != nil {
				return
			}
		}
	})
	return serveHTTP(t, mux), sum
}

func serveHTTP(t *testing.T, h http.Handler) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: h}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

func needProgs(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Fatalf("%s is required (Debian package %s)", n, n)
		}
	}
}

// Default flags: nat. curl fetches a page and 200 MB through 10.0.2.2,
// and resolv.conf names the net server's DNS forwarder.
func TestNetNAT(t *testing.T) {
	needProgs(t, "curl")
	port, sum := hostHTTP(t)
	for _, asUser := range []bool{false, true} {
		t.Run(fmt.Sprintf("user=%v", asUser), func(t *testing.T) {
			e := newEnv(t, asUser)
			url := fmt.Sprintf("http://10.0.2.2:%d", port)
			r := e.run("", "run", "--", "sh", "-c",
				fmt.Sprintf(`curl -sS %s/ && curl -sS %s/big | sha256sum && cat /etc/resolv.conf`, url, url))
			if r.code != 0 {
				t.Fatalf("exit %d, stderr: %s", r.code, r.stderr)
			}
			want := "page from the host\n" + sum + "  -\n" + "# herd: the net server's DNS forwarder, which asks the host's resolver\nnameserver 10.0.2.3\n"
			if r.stdout != want {
				t.Errorf("stdout %q, want %q", r.stdout, want)
			}
		})
	}
}

// TestNetIPv6: nat mode's IPv6 gateway fd00::2 is the host's ::1.
func TestNetIPv6(t *testing.T) {
	needProgs(t, "curl")
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Fatalf("the host has no IPv6 loopback: %v", err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "page from ::1\n") })}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	port := ln.Addr().(*net.TCPAddr).Port
	for _, asUser := range []bool{false, true} {
		t.Run(fmt.Sprintf("user=%v", asUser), func(t *testing.T) {
			e := newEnv(t, asUser)
			// Retried: a fresh link's IPv6 address may take a moment.
			r := e.run("", "run", "--", "sh", "-c",
				`for i in $(seq 100); do curl -sS -g "$1" 2>/dev/null && exit 0; sleep 0.05; done; curl -sS -g "$1"`, "sh",
				fmt.Sprintf("http://[fd00::2]:%d/", port))
			if r.code != 0 || r.stdout != "page from ::1\n" {
				t.Fatalf("exit %d, stdout %q, stderr: %s", r.code, r.stdout, r.stderr)
			}
		})
	}
}

// freePort finds a port on the host's 127.0.0.1 that nobody listens on.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// background is a subenv run that goes on while the test works; stop
// ends it (SIGTERM) and waits.
type background struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdout *bufio.Reader
	stderr *syncBuilder
	done   chan struct{} // closed when subenv ended; err is then its Wait error
	err    error
	cancel func()
}

func (e *env) start(args ...string) *background {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	cmd := e.command(ctx, args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	b := &background{t: e.t, cmd: cmd, stdout: bufio.NewReader(out), stderr: &syncBuilder{}, done: make(chan struct{}), cancel: cancel}
	cmd.Stderr = b.stderr
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	go func() { b.err = cmd.Wait(); close(b.done) }()
	e.t.Cleanup(b.stop)
	return b
}

func (b *background) line() string {
	b.t.Helper()
	l, err := b.stdout.ReadString('\n')
	if err != nil {
		b.t.Fatalf("subenv %q: %v; stderr: %s", b.cmd.Args, err, b.stderr.String())
	}
	return l
}

func (b *background) stop() {
	select {
	case <-b.done:
	default:
		b.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-b.done:
		case <-time.After(time.Minute):
			b.t.Errorf("subenv %q did not end on SIGTERM", b.cmd.Args)
			b.cmd.Process.Kill()
			<-b.done
		}
	}
	b.cancel()
}

// httpdScript serves a page from inside with busybox httpd on port 80,
// after printing its eth0 address.
const httpdScript = `mkdir -p /srv/www && echo "$1" > /srv/www/index.html && ` +
	`busybox ip -4 -o addr show eth0 && exec busybox httpd -f -p 80 -h /srv/www`

// --publish makes a server inside reachable on the host's 127.0.0.1.
func TestNetPublish(t *testing.T) {
	needProgs(t, "busybox")
	e := newEnv(t, false)
	hp := freePort(t)
	b := e.start("run", "--publish", fmt.Sprintf("%d:80", hp), "--", "sh", "-c", httpdScript, "sh", "published page")
	b.line()
	url := fmt.Sprintf("http://127.0.0.1:%d/index.html", hp)
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := http.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(body) == "published page\n" {
				break
			}
			err = fmt.Errorf("%s: %q", resp.Status, body)
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %v; subenv stderr: %s", url, err, b.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.stop()
	if _, err := http.Get(url); err == nil {
		t.Errorf("%s still answers after the subenvironment ended", url)
	}
}

// --forward: the host's ports at 127.0.0.1 inside, spliced (no stack in
// the way). curl fetches the page and 200 MB at the same port and at
// another port inside, as root and as a plain user; 10.0.2.2 still works
// beside it; a lan and a bad spec are refused with a clear error.
func TestNetForward(t *testing.T) {
	needProgs(t, "curl")
	port, sum := hostHTTP(t)
	inside := freePort(t)
	for _, asUser := range []bool{false, true} {
		t.Run(fmt.Sprintf("user=%v", asUser), func(t *testing.T) {
			e := newEnv(t, asUser)
			r := e.run("", "run", "--forward", fmt.Sprint(port), "--forward", fmt.Sprintf("%d:%d", inside, port), "--", "sh", "-c",
				fmt.Sprintf(`curl -sS http://127.0.0.1:%d/ && curl -sS http://127.0.0.1:%d/big | sha256sum && curl -sS http://10.0.2.2:%d/`, port, inside, port))
			if r.code != 0 {
				t.Fatalf("exit %d, stderr: %s", r.code, r.stderr)
			}
			want := "page from the host\n" + sum + "  -\n" + "page from the host\n"
			if r.stdout != want {
				t.Errorf("stdout %q, want %q", r.stdout, want)
			}
		})
	}
	e := newEnv(t, false)
	r := e.run("", "run", "--forward", "99999", "--", "true")
	if r.code != 2 || !strings.Contains(r.stderr, `forward "99999"`) {
		t.Errorf("--forward 99999: exit %d, stderr %q; want 2 and the spec named", r.code, r.stderr)
	}
	r = e.run("", "run", "--net", "lan:fwdtest", "--forward", fmt.Sprint(port), "--", "true")
	if r.code == 0 || !strings.Contains(r.stderr, "--forward is for nat") {
		t.Errorf("--forward with a lan: exit %d, stderr %q; want a refusal", r.code, r.stderr)
	}
}

// Two subenvironments on one lan talk; one on another lan cannot reach
// them; the lan leaves nothing behind when its last member is gone.
func TestNetLAN(t *testing.T) {
	needProgs(t, "busybox")
	e := newEnv(t, false)
	t1 := fmt.Sprintf("t1-%d", os.Getpid())
	t2 := fmt.Sprintf("t2-%d", os.Getpid())
	// e's runtime dir is under /tmp, so the lans live in /dev/shm (see
	// netattach.LANDir).
	lanDir := filepath.Join("/dev/shm", fmt.Sprintf("herd-%d", os.Geteuid()), "lan")
	b := e.start("run", "--net", "lan:"+t1, "--", "sh", "-c", httpdScript, "sh", "lan page")
	m := regexp.MustCompile(`inet (10\.0\.3\.[0-9]+)/`).FindStringSubmatch(b.line())
	if m == nil {
		t.Fatalf("server's address not found; stderr: %s", b.stderr.String())
	}
	url := "http://" + m[1] + "/index.html"
	// The same member over IPv6: 10.0.3.N is fd00:0:0:3::N.
	url6 := "http://[fd00:0:0:3::" + strings.TrimPrefix(m[1], "10.0.3.") + "]/index.html"
	// Retried until httpd listens (it starts after the address is printed).
	r := e.run("", "run", "--net", "lan:"+t1, "--", "sh", "-c",
		`for i in $(seq 600); do timeout 10 busybox wget -q -O - "$1" && exit 0; sleep 0.1; done; exit 1`, "sh", url)
	if r.code != 0 || r.stdout != "lan page\n" {
		t.Fatalf("second member of lan %s: exit %d, stdout %q, stderr %s", t1, r.code, r.stdout, r.stderr)
	}
	r = e.run("", "run", "--net", "lan:"+t1, "--", "sh", "-c",
		`for i in $(seq 100); do timeout 10 busybox wget -q -O - "$1" && exit 0; sleep 0.1; done; exit 1`, "sh", url6)
	if r.code != 0 || r.stdout != "lan page\n" {
		t.Fatalf("second member of lan %s over IPv6 (%s): exit %d, stdout %q, stderr %s", t1, url6, r.code, r.stdout, r.stderr)
	}
	// (busybox's wget -T crashes here; timeout bounds it instead.)
	r = e.run("", "run", "--net", "lan:"+t2, "--", "timeout", "10", "busybox", "wget", "-q", "-O", "-", url)
	if r.code == 0 || strings.Contains(r.stdout, "lan page") {
		t.Fatalf("lan %s reached lan %s: %q", t2, t1, r.stdout)
	}
	b.stop()
	deadline := time.Now().Add(90 * time.Second)
	for {
		var left []string
		for _, n := range []string{t1, t2} {
			ms, _ := filepath.Glob(filepath.Join(lanDir, n+".*"))
			left = append(left, ms...)
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("left behind after the lans' last members left: %q", left)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// --allow lets through what it names; another port is refused
// (ECONNREFUSED: bash's /dev/tcp prints strerror, "Connection refused").
func TestNetAllow(t *testing.T) {
	needProgs(t, "curl", "bash")
	ok := serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "allowed\n") }))
	other := serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "should not be reached\n") }))
	e := newEnv(t, false)
	r := e.run("", "run", "--allow", fmt.Sprintf("10.0.2.2:%d", ok), "--", "sh", "-c",
		fmt.Sprintf(`curl -sS http://10.0.2.2:%d/; bash -c ': <>/dev/tcp/10.0.2.2/%d' 2>&1; echo status=$?`, ok, other))
	if r.code != 0 {
		t.Fatalf("exit %d, stderr: %s", r.code, r.stderr)
	}
	if !strings.HasPrefix(r.stdout, "allowed\n") || !strings.Contains(r.stdout, "Connection refused") ||
		!strings.HasSuffix(r.stdout, "status=1\n") || strings.Contains(r.stdout, "should not") {
		t.Errorf("stdout %q: want the allowed page, then a refused connection", r.stdout)
	}
}

// --net none: loopback only and the host's resolv.conf; --net host: the
// host's interfaces.
func TestNetNoneHost(t *testing.T) {
	hostRC, _ := os.ReadFile("/etc/resolv.conf")
	var hostIfs []string
	ents, _ := os.ReadDir("/sys/class/net")
	for _, e := range ents {
		hostIfs = append(hostIfs, e.Name())
	}
	sort.Strings(hostIfs)
	for _, asUser := range []bool{false, true} {
		t.Run(fmt.Sprintf("user=%v", asUser), func(t *testing.T) {
			e := newEnv(t, asUser)
			r := e.run("", "run", "--net", "none", "--", "sh", "-c", "ls /sys/class/net; echo --; cat /etc/resolv.conf")
			if want := "lo\n--\n" + string(hostRC); r.code != 0 || r.stdout != want {
				t.Errorf("--net none: exit %d, stdout %q, want %q; stderr %s", r.code, r.stdout, want, r.stderr)
			}
			r = e.run("", "run", "--net", "host", "--", "ls", "/sys/class/net")
			if got := strings.Fields(r.stdout); r.code != 0 || strings.Join(got, " ") != strings.Join(hostIfs, " ") {
				t.Errorf("--net host: exit %d, interfaces %q, want the host's %q; stderr %s", r.code, got, hostIfs, r.stderr)
			}
			r = e.run("", "run", "--net", "none", "--publish", "8080:80", "--", "true")
			oneLine(t, r, "need a net server")
		})
	}
}

// DNS: 10.0.2.3 forwards to the host's resolver. The test's resolver is
// a tiny one on 127.0.0.1 (given to herd-net with nat:FLAGS), so nothing
// beyond loopback is asked.
func TestNetDNS(t *testing.T) {
	needProgs(t, "busybox", "getent")
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go answerDNS(pc, "herd-test.internal.", [4]byte{10, 0, 2, 2})
	e := newEnv(t, false)
	r := e.run("", "run", "--net", "nat:--resolver "+pc.LocalAddr().String(), "--", "sh", "-c",
		"getent hosts herd-test.internal; getent hosts localhost | head -1")
	if r.code != 0 {
		t.Fatalf("exit %d, stderr: %s", r.code, r.stderr)
	}
	if f := strings.Fields(r.stdout); len(f) < 3 || f[0] != "10.0.2.2" || f[1] != "herd-test.internal" {
		t.Errorf("getent inside: %q, want herd-test.internal resolved to 10.0.2.2 through 10.0.2.3", r.stdout)
	}
}

// answerDNS answers A queries for name with addr, and anything else with
// NXDOMAIN, until pc is closed.
func answerDNS(pc net.PacketConn, name string, addr [4]byte) {
	buf := make([]byte, 1500)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		q := buf[:n]
		if len(q) < 12 {
			continue
		}
		// The question: labels up to the root, then type and class.
		i, labels := 12, []string{}
		for i < len(q) && q[i] != 0 {
			l := int(q[i])
			if i+1+l > len(q) {
				break
			}
			labels = append(labels, string(q[i+1:i+1+l]))
			i += 1 + l
		}
		if i+5 > len(q) {
			continue
		}
		qtype := binary.BigEndian.Uint16(q[i+1:])
		question := q[12 : i+5]
		resp := append([]byte{}, q[:2]...)
		got := strings.ToLower(strings.Join(labels, ".") + ".")
		match := got == name && qtype == 1
		flags := uint16(0x8180) // response, RD, RA
		if got != name {
			flags |= 3 // NXDOMAIN
		}
		an := uint16(0)
		if match {
			an = 1
		}
		resp = binary.BigEndian.AppendUint16(resp, flags)
		resp = binary.BigEndian.AppendUint16(resp, 1)
		resp = binary.BigEndian.AppendUint16(resp, an)
		resp = append(resp, 0, 0, 0, 0)
		resp = append(resp, question...)
		if match {
			resp = append(resp, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4)
			resp = append(resp, addr[:]...)
		}
		pc.WriteTo(resp, from)
	}
}

// Killing the net server mid-run: the program loses eth0 (ENETUNREACH),
// subenv says "net server died" and exits non-zero.
func TestNetServerKilled(t *testing.T) {
	needProgs(t, "curl")
	port := serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "up\n") }))
	e := newEnv(t, false)
	b := e.start("run", "-v", "--", "sh", "-c", fmt.Sprintf(
		`curl -sS http://10.0.2.2:%d/ || exit 1; `+
			`while [ -e /sys/class/net/eth0 ]; do sleep 0.05; done; echo eth0 gone; `+
			`curl -sS -m 10 http://10.0.2.2:%d/ 2>&1; echo curl=$?`, port, port))
	if l := b.line(); l != "up\n" {
		t.Fatalf("first fetch: %q; stderr %s", l, b.stderr.String())
	}
	m := regexp.MustCompile(`net server herd-net: pid ([0-9]+), control socket (\S+)`).FindStringSubmatch(b.stderr.String())
	if m == nil {
		t.Fatalf("-v did not say where the net server runs: %s", b.stderr.String())
	}
	pid, _ := strconv.Atoi(m[1])
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(b.stdout)
	<-b.done
	err := b.err
	if !strings.HasPrefix(string(rest), "eth0 gone\n") || !strings.Contains(string(rest), "curl=7") {
		t.Errorf("after the kill the program saw %q, want eth0 gone and curl failing to connect", rest)
	}
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() == 0 {
		t.Errorf("subenv exited %v, want non-zero", err)
	}
	if !strings.Contains(b.stderr.String(), "subenv: net server died: ") {
		t.Errorf("stderr does not say the net server died: %s", b.stderr.String())
	}
}

// Without a usable /dev/net/tun (here: an unreadable file bound over it,
// in a mount namespace of the run's own), plain `subenv run` warns in one
// line and runs with loopback only; an explicit --net nat fails, saying why.
func TestNetNoTUN(t *testing.T) {
	needProgs(t, "unshare")
	e := newEnv(t, true)
	blocker := filepath.Join(e.base, "notun")
	if err := os.WriteFile(blocker, nil, 0); err != nil {
		t.Fatal(err)
	}
	wrap := func(args ...string) result {
		// unshare runs as root, the bind is its own; subenv as the user.
		script := fmt.Sprintf(`mount --bind %s /dev/net/tun && exec setpriv --reuid=%d --regid=%d --clear-groups "$@"`,
			blocker, e.cred.Uid, e.cred.Gid)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := e.command(ctx, args...)
		cmd.SysProcAttr = nil
		cmd.Args = append([]string{"unshare", "-m", "sh", "-c", script, "sh", subenvBin}, args...)
		cmd.Path, _ = exec.LookPath("unshare")
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		r := result{stdout: out.String(), stderr: errb.String()}
		if ee, ok := err.(*exec.ExitError); ok {
			r.code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return r
	}
	r := wrap("run", "--", "ls", "/sys/class/net")
	if r.code != 0 || r.stdout != "lo\n" || strings.Count(r.stderr, "\n") != 1 ||
		!strings.Contains(r.stderr, "/dev/net/tun") || !strings.Contains(r.stderr, "--net none") {
		t.Errorf("default net without TUN: exit %d, stdout %q, stderr %q; want lo only and a one-line warning", r.code, r.stdout, r.stderr)
	}
	r = wrap("run", "--net", "nat", "--", "true")
	oneLine(t, r, "cannot open /dev/net/tun")
}

// TestNetSelfServer: with no herd-net program next to subenv or on $PATH,
// the default network still works: subenv runs the net server from its own
// binary (`subenv herd-net`), as it does the fs server, so one copied
// binary is enough.
func TestNetSelfServer(t *testing.T) {
	needProgs(t, "curl")
	port := serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "page from the host\n") }))
	dir, err := os.MkdirTemp("", "subenv-alone-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	alone := filepath.Join(dir, "subenv")
	data, err := os.ReadFile(subenvBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(alone, data, 0o755); err != nil {
		t.Fatal(err)
	}
	const path = "/usr/sbin:/usr/bin:/sbin:/bin"
	for _, d := range filepath.SplitList(path) {
		if _, err := os.Stat(filepath.Join(d, "herd-net")); err == nil {
			t.Fatalf("%s/herd-net exists: this test needs a machine without one on %s", d, path)
		}
	}
	for _, asUser := range []bool{false, true} {
		t.Run(fmt.Sprintf("user=%v", asUser), func(t *testing.T) {
			e := newEnv(t, asUser)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			cmd := e.command(ctx, "run", "--", "curl", "-sS", fmt.Sprintf("http://10.0.2.2:%d/", port))
			cmd.Path, cmd.Args[0] = alone, alone
			cmd.Env = append(withoutEnv(cmd.Env, "PATH"), "PATH="+path)
			var out, errb bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errb
			if err := cmd.Run(); err != nil {
				t.Fatalf("subenv alone: %v, stderr: %s", err, errb.String())
			}
			if out.String() != "page from the host\n" {
				t.Errorf("stdout %q, stderr %q", out.String(), errb.String())
			}
		})
	}
}
