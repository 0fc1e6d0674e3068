package net

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	stdnet "net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"herd/subenv/netattach"
	"herd/subenv/netattach/nstest"
)

// hostEcho starts a TCP echo server on the host's 127.0.0.1.
func hostEcho(t *testing.T) int {
	t.Helper()
	return hostEchoWith(t, func(c stdnet.Conn) { io.Copy(c, c) })
}

// hostEchoWith is hostEcho with echo serving each connection.
func hostEchoWith(t *testing.T, echo func(stdnet.Conn)) int {
	t.Helper()
	l, err := stdnet.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				echo(c)
			}()
		}
	}()
	t.Cleanup(func() { l.Close(); <-done })
	return l.Addr().(*stdnet.TCPAddr).Port
}

func TestAllowDeny(t *testing.T) {
	a, b := hostEcho(t), hostEcho(t)
	pol, err := ParsePolicy([]string{fmt.Sprintf("--allow=10.0.2.2:%d", a)})
	if err != nil {
		t.Fatal(err)
	}
	srv, ns := natNS(t, Options{NAT: true, Policy: pol}, DefaultMTU)
	dial := func(port int) string {
		got, err := ns.Dial(time.Minute, "tcp", fmt.Sprintf("10.0.2.2:%d", port), 1, true)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := dial(a); got != "ok" {
		t.Fatalf("allowed port %d: %s", a, got)
	}
	if got := dial(b); got != "ECONNREFUSED" {
		t.Fatalf("port %d not in the allowlist: %s, want ECONNREFUSED", b, got)
	}
	// (At least: under load the program's kernel may resend its SYN
	// before the RST arrives, and each one is refused.)
	if st := srv.Stats(); st.Refused < 1 {
		t.Fatalf("refused = %d, want >= 1", st.Refused)
	}
	// At run time (what fsysopts does): deny a, allow everything else.
	ctl := &Control{S: srv}
	if err := ctl.SetOptions(t.Context(), []string{"--allow=", fmt.Sprintf("--deny=10.0.2.0/24:%d", a)}); err != nil {
		t.Fatal(err)
	}
	if got := dial(a); got != "ECONNREFUSED" {
		t.Fatalf("denied port %d: %s", a, got)
	}
	if got := dial(b); got != "ok" {
		t.Fatalf("port %d after the allowlist was cleared: %s", b, got)
	}
	opts, _ := ctl.GetOptions(t.Context())
	if strings.Join(opts, " ") != fmt.Sprintf("--deny=10.0.2.0/24:%d", a) {
		t.Fatalf("GetOptions = %q", opts)
	}
	// Addresses on the subenvironment's own subnet never leave.
	if got, _ := ns.Dial(time.Minute, "tcp", "10.0.2.77:80", 1, false); got != "ECONNREFUSED" {
		t.Fatalf("10.0.2.77: %s", got)
	}
}

func TestPublish(t *testing.T) {
	tcpPort, udpPort := freeTCP(t), freeUDP(t)
	pol, err := ParsePolicy([]string{fmt.Sprintf("--publish=%d:7000", tcpPort), fmt.Sprintf("--publish=%d:7001/udp", udpPort)})
	if err != nil {
		t.Fatal(err)
	}
	srv, ns := natNS(t, Options{NAT: true, Policy: pol}, DefaultMTU)
	if _, err := ns.Echo("tcp", ":7000"); err != nil {
		t.Fatal(err)
	}
	if _, err := ns.Echo("udp", ":7001"); err != nil {
		t.Fatal(err)
	}
	c, err := stdnet.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", tcpPort))
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(time.Minute))
	fmt.Fprintf(c, "through the stack\n")
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "through the stack\n" {
		t.Fatalf("published tcp echo: %q %v", line, err)
	}
	if conns := srv.ConnectionsText(); !strings.Contains(conns, "10.0.2.15:7000") {
		t.Fatalf("/connections does not list the published connection:\n%s", conns)
	}
	c.Close()

	u, err := stdnet.Dial("udp", fmt.Sprintf("127.0.0.1:%d", udpPort))
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	b := make([]byte, 100)
	got := ""
	for i := 0; i < 50 && got == ""; i++ { // UDP may lose the first datagram while the flow starts
		u.Write([]byte("datagram"))
		u.SetReadDeadline(time.Now().Add(time.Second))
		if n, err := u.Read(b); err == nil {
			got = string(b[:n])
		}
	}
	if got != "datagram" {
		t.Fatalf("published udp echo: %q", got)
	}
	// Unpublish at run time: the port closes.
	if err := (&Control{S: srv}).SetOptions(t.Context(), []string{"--publish="}); err != nil {
		t.Fatal(err)
	}
	if c, err := stdnet.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", tcpPort)); err == nil {
		c.Close()
		t.Fatal("port still published after --publish= cleared it")
	}
}

func freeTCP(t *testing.T) int {
	l, err := stdnet.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*stdnet.TCPAddr).Port
}

func freeUDP(t *testing.T) int {
	l, err := stdnet.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.LocalAddr().(*stdnet.UDPAddr).Port
}

func rawIPv4(src, dst string, proto byte, payload []byte) []byte {
	b := make([]byte, 20+len(payload))
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	b[8] = 64
	b[9] = proto
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(b[10:], ^uint16(sum))
	copy(b[20:], payload)
	return b
}

// TestBadFrames sends frames no kernel would: they are dropped and
// counted, and the stack keeps working.
func TestBadFrames(t *testing.T) {
	// The TUN allows 9000-byte frames, the server's link only 1500: the
	// big one is oversized for the server. With the virtio-net header the
	// kernel vouches for no checksum of these (they come from a packet
	// socket), so the stack still checks them.
	t.Run("plain", func(t *testing.T) { badFrames(t, netattach.NATConfig("eth0", 9000)) })
	t.Run("offloads", func(t *testing.T) { badFrames(t, netattach.ServerConfig("eth0", 9000)) })
}

func badFrames(t *testing.T, cfg netattach.TUNConfig) {
	port := hostEcho(t)
	ns, err := nstest.Start(nstest.Options{TUN: &cfg})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Options{NAT: true, MTU: 1500})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close(); srv.Close() })
	if _, err := srv.AddMemberFile(ns.TUN); err != nil {
		t.Fatal(err)
	}
	ns.TUN = nil
	good := rawIPv4("10.0.2.15", "10.0.2.2", 17, []byte("12345678"))
	badCsum := append([]byte{}, good...)
	badCsum[10] ^= 0xff
	lying := append([]byte{}, good...)
	binary.BigEndian.PutUint16(lying[2:], 200) // total length beyond the frame
	frames := map[string][]byte{
		"short":     {0x45, 0, 0},
		"version 7": append([]byte{0x75}, good[1:]...),
		"lying":     lying,
		"spoofed":   rawIPv4("10.0.2.99", "10.0.2.2", 17, []byte("12345678")),
		"checksum":  badCsum,
		"oversized": rawIPv4("10.0.2.15", "10.0.2.2", 17, make([]byte, 4000)),
	}
	var list [][]byte
	for _, f := range frames {
		list = append(list, f)
	}
	if err := ns.SendRaw("eth0", list...); err != nil {
		t.Fatal(err)
	}
	want := func(name string, get func(Stats) uint64, n uint64) {
		deadline := time.Now().Add(30 * time.Second)
		for get(srv.Stats()) < n {
			if time.Now().After(deadline) {
				t.Fatalf("%s: counter at %d, want %d\n%s", name, get(srv.Stats()), n, srv.Stats().Text())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	want("malformed", func(s Stats) uint64 { return s.Malformed }, 3)
	want("spoofed", func(s Stats) uint64 { return s.Spoofed }, 1)
	want("oversized", func(s Stats) uint64 { return s.Oversized }, 1)
	want("stack malformed", func(s Stats) uint64 { return s.StackMalformed }, 1)
	if got, _ := ns.Dial(time.Minute, "tcp", fmt.Sprintf("10.0.2.2:%d", port), 3, true); got != "ok" {
		t.Fatalf("after bad frames: %s", got)
	}
}

func openFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestNoLeaks: 10,000 short connections leave no goroutine and no
// descriptor behind (host sockets are closed a moment late, in batches).
func TestNoLeaks(t *testing.T) {
	port := hostEcho(t)
	srv, ns := natNS(t, Options{NAT: true}, DefaultMTU)
	addr := fmt.Sprintf("10.0.2.2:%d", port)
	if got, _ := ns.Dial(time.Minute, "tcp", addr, 10, true); got != "ok" {
		t.Fatalf("warm-up: %s", got)
	}
	settle := func() (int, int) {
		// Connections end asynchronously; wait until none is live.
		for i := 0; i < 3000 && srv.Stats().LiveConnections > 0; i++ {
			time.Sleep(10 * time.Millisecond)
		}
		// (Host sockets made ahead wait in a pool, goroutines done with
		// a connection wait for the next: not leaks.)
		return runtime.NumGoroutine() - idleWorkers(), openFDs(t) - pooledSockets()
	}
	g0, f0 := settle()
	if got, _ := ns.Dial(10*time.Minute, "tcp", addr, 10000, true); got != "ok" {
		t.Fatalf("10,000 connections: %s", got)
	}
	if n := srv.Stats().TCPConnections; n < 10010 {
		t.Fatalf("tcp_connections = %d, want >= 10010", n)
	}
	var g, f int
	for i := 0; i < 600; i++ {
		g, f = settle()
		if g <= g0+5 && f <= f0+2 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("after 10,000 connections: goroutines %d (before %d), fds %d (before %d), live %d",
		g, g0, f, f0, srv.Stats().LiveConnections)
}

// TestModeNone: without NAT nothing leaves; connections are refused at once.
func TestModeNone(t *testing.T) {
	port := hostEcho(t)
	srv, ns := natNS(t, Options{}, DefaultMTU)
	if got, _ := ns.Dial(time.Minute, "tcp", fmt.Sprintf("10.0.2.2:%d", port), 1, false); got != "ECONNREFUSED" {
		t.Fatalf("mode none, dial the host: %s, want ECONNREFUSED", got)
	}
	if st := srv.Stats(); st.TCPConnections != 0 || st.Refused == 0 {
		t.Fatalf("mode none: %d connections made, %d refused", st.TCPConnections, st.Refused)
	}
}
