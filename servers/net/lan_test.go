package net

import (
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"herd/subenv/netattach"
	"herd/subenv/netattach/nstest"
)

// lanNS adds a member with a TUN of its own (with or without the
// virtio-net header) to a lan server.
func lanNS(t *testing.T, srv *Server, vnet bool) (*nstest.NS, netip.Addr, netip.Addr) {
	t.Helper()
	m, err := srv.Reserve()
	if err != nil {
		t.Fatal(err)
	}
	cfg := netattach.TUNConfig{Name: "eth0", MTU: DefaultMTU, VNetHdr: vnet,
		Addr:  netip.PrefixFrom(m.Addr, LANSubnet.Bits()),
		Addr6: netip.PrefixFrom(m.addr6, LANSubnet6.Bits())}
	ns, err := nstest.Start(nstest.Options{TUN: &cfg})
	if err != nil {
		m.Leave()
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	raw, err := ns.TUN.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd := -1
	raw.Control(func(x uintptr) { fd, err = dupCloexec(int(x)) })
	ns.TUN.Close()
	ns.TUN = nil
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Attach(fd); err != nil {
		t.Fatal(err)
	}
	return ns, m.Addr, m.addr6
}

// TestLANMixed: the lan's switch passes frames between a member whose TUN
// has the virtio-net header (the kernel leaves checksums to be completed)
// and one whose TUN has not (it needs them whole), both ways, over IPv4
// and IPv6.
func TestLANMixed(t *testing.T) {
	srv, err := New(Options{LAN: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	nsV, aV, aV6 := lanNS(t, srv, true)
	nsP, aP, aP6 := lanNS(t, srv, false)
	for _, ns := range []*nstest.NS{nsV, nsP} {
		if _, err := ns.Echo("tcp", ":7000"); err != nil {
			t.Fatal(err)
		}
	}
	// A fresh link's IPv6 address may take a moment: wait until the
	// stack's refusal at the lan's IPv6 gateway comes back (no nat).
	for _, ns := range []*nstest.NS{nsV, nsP} {
		var got string
		for i := 0; i < 200 && got != "ECONNREFUSED"; i++ {
			got, _ = ns.Dial(time.Minute, "tcp", "[fd00:0:0:3::2]:1", 1, false)
			time.Sleep(20 * time.Millisecond)
		}
		if got != "ECONNREFUSED" {
			t.Fatalf("IPv6 not up: %s", got)
		}
	}
	for _, c := range []struct {
		name string
		from *nstest.NS
		to   netip.Addr
	}{
		{"offloads -> plain", nsV, aP},
		{"plain -> offloads", nsP, aV},
		{"offloads -> plain, IPv6", nsV, aP6},
		{"plain -> offloads, IPv6", nsP, aV6},
	} {
		if got, _ := c.from.Dial(30*time.Second, "tcp", netip.AddrPortFrom(c.to, 7000).String(), 20, true); got != "ok" {
			t.Fatalf("%s (%s): %s\n%s", c.name, c.to, got, srv.Stats().Text())
		}
	}
}

func dupCloexec(fd int) (int, error) { return unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0) }
