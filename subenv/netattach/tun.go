package netattach

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TUNConfig is how the init configures the TUN inside the new network
// namespace. Its String form travels from the host to the init (an
// argument or environment variable) and ParseTUNConfig reads it back.
type TUNConfig struct {
	Name     string       // interface name (eth0)
	MTU      int          // link MTU
	Addr     netip.Prefix // the subenvironment's address and subnet
	Gateway  netip.Addr   // default route via; invalid: no default route
	Addr6    netip.Prefix // optional IPv6 address
	Gateway6 netip.Addr   // optional IPv6 default route via
	// VNetHdr: every frame carries a virtio-net header (IFF_VNET_HDR), so
	// that the server and the namespace's kernel can skip computing and
	// checking TCP checksums, and hand each other 64 KiB TCP super-packets
	// (the server turns the offloads on; see servers/net's tunLink). For
	// herd-net only: a --net PROG gets plain IP packets (NATConfig).
	VNetHdr bool
}

// NATConfig is the TUN of nat mode (and of a --net PROG server): 10.0.2.15/24
// via 10.0.2.2, fd00::100/64 via fd00::2.
func NATConfig(name string, mtu int) TUNConfig {
	return TUNConfig{
		Name: name, MTU: mtu,
		Addr:     netip.MustParsePrefix("10.0.2.15/24"),
		Gateway:  netip.MustParseAddr("10.0.2.2"),
		Addr6:    netip.MustParsePrefix("fd00::100/64"),
		Gateway6: netip.MustParseAddr("fd00::2"),
	}
}

// ServerConfig is NATConfig for a TUN that herd-net serves (nat mode):
// with the virtio-net header, for the offloads.
func ServerConfig(name string, mtu int) TUNConfig {
	c := NATConfig(name, mtu)
	c.VNetHdr = true
	return c
}

// String encodes c as space-separated key=value words.
func (c TUNConfig) String() string {
	w := []string{"name=" + c.Name, "mtu=" + strconv.Itoa(c.MTU), "addr=" + c.Addr.String()}
	if c.Gateway.IsValid() {
		w = append(w, "gw="+c.Gateway.String())
	}
	if c.Addr6.IsValid() {
		w = append(w, "addr6="+c.Addr6.String())
	}
	if c.Gateway6.IsValid() {
		w = append(w, "gw6="+c.Gateway6.String())
	}
	if c.VNetHdr {
		w = append(w, "vnet=1")
	}
	return strings.Join(w, " ")
}

// ParseTUNConfig reads what String wrote.
func ParseTUNConfig(s string) (TUNConfig, error) {
	var c TUNConfig
	for _, w := range strings.Fields(s) {
		k, v, _ := strings.Cut(w, "=")
		var err error
		switch k {
		case "name":
			c.Name = v
		case "mtu":
			c.MTU, err = strconv.Atoi(v)
		case "addr":
			c.Addr, err = netip.ParsePrefix(v)
		case "gw":
			c.Gateway, err = netip.ParseAddr(v)
		case "addr6":
			c.Addr6, err = netip.ParsePrefix(v)
		case "gw6":
			c.Gateway6, err = netip.ParseAddr(v)
		case "vnet":
			c.VNetHdr, err = strconv.ParseBool(v)
		default:
			err = errors.New("unknown key")
		}
		if err != nil {
			return c, fmt.Errorf("netattach: tun config %q: %s: %v", s, k, err)
		}
	}
	if c.Name == "" || c.MTU < 1280 || c.MTU > 65535 || !c.Addr.IsValid() {
		return c, fmt.Errorf("netattach: tun config %q: need name, mtu 1280-65535 and addr", s)
	}
	return c, nil
}

// CreateTUN creates the nat-mode TUN (NATConfig): call it in the init,
// inside the new network namespace.
func CreateTUN(name string, mtu int) (*os.File, error) {
	return CreateTUNWith(NATConfig(name, mtu))
}

// CreateTUNWith creates TUN device c.Name (IFF_TUN|IFF_NO_PI: raw IP
// packets, each after a virtio-net header if c.VNetHdr) in the current network namespace, gives it c's addresses and
// MTU, brings it and lo up, and adds the default routes. It needs
// CAP_NET_ADMIN in the namespace (root in a new user namespace has it) and
// /dev/net/tun usable by the caller. The returned file is the device:
// whoever holds it holds the link.
func CreateTUNWith(c TUNConfig) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("netattach: open /dev/net/tun: %v", err)
	}
	ifr, err := unix.NewIfreq(c.Name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netattach: tun name %q: %v", c.Name, err)
	}
	flags := uint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if c.VNetHdr {
		flags |= unix.IFF_VNET_HDR
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netattach: create tun %s: %v", c.Name, err)
	}
	f := os.NewFile(uintptr(fd), "/dev/net/tun:"+c.Name)
	if err := configure(c); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// LoopbackUp brings lo up: all that mode none needs.
func LoopbackUp() error {
	nl, err := openNetlink()
	if err != nil {
		return err
	}
	defer nl.close()
	return nl.linkUp(1, 0)
}

func configure(c TUNConfig) error {
	nl, err := openNetlink()
	if err != nil {
		return err
	}
	defer nl.close()
	ifc, err := ifIndex(c.Name)
	if err != nil {
		return err
	}
	if err := nl.linkUp(1, 0); err != nil {
		return fmt.Errorf("netattach: lo up: %v", err)
	}
	if err := nl.linkUp(ifc, uint32(c.MTU)); err != nil {
		return fmt.Errorf("netattach: %s up (mtu %d): %v", c.Name, c.MTU, err)
	}
	if err := nl.addAddr(ifc, c.Addr); err != nil {
		return fmt.Errorf("netattach: address %s on %s: %v", c.Addr, c.Name, err)
	}
	if c.Gateway.IsValid() {
		if err := nl.addDefaultRoute(ifc, c.Gateway); err != nil {
			return fmt.Errorf("netattach: default route via %s: %v", c.Gateway, err)
		}
	}
	if c.Addr6.IsValid() {
		// IPv6 is best effort: a kernel booted with ipv6.disable=1 (or a
		// namespace with it disabled by sysctl) still gets IPv4.
		if err := nl.addAddr(ifc, c.Addr6); err == nil && c.Gateway6.IsValid() {
			nl.addDefaultRoute(ifc, c.Gateway6)
		}
	}
	return nil
}

func ifIndex(name string) (int32, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return 0, err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, ifr); err != nil {
		return 0, fmt.Errorf("netattach: index of %s: %v", name, err)
	}
	return int32(ifr.Uint32()), nil
}

// netlink is a minimal rtnetlink client: just the four requests we need.
type netlink struct {
	fd  int
	seq uint32
}

func openNetlink() (*netlink, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netattach: netlink socket: %v", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netattach: netlink bind: %v", err)
	}
	return &netlink{fd: fd}, nil
}

func (n *netlink) close() { unix.Close(n.fd) }

type nlmsg struct{ b []byte }

func (m *nlmsg) raw(v []byte) { m.b = append(m.b, v...); m.pad() }
func (m *nlmsg) pad() {
	for len(m.b)%4 != 0 {
		m.b = append(m.b, 0)
	}
}
func (m *nlmsg) attr(typ uint16, v []byte) {
	var h [4]byte
	binary.NativeEndian.PutUint16(h[0:], uint16(4+len(v)))
	binary.NativeEndian.PutUint16(h[2:], typ)
	m.b = append(m.b, h[:]...)
	m.b = append(m.b, v...)
	m.pad()
}
func u32(v uint32) []byte { b := make([]byte, 4); binary.NativeEndian.PutUint32(b, v); return b }

// do sends one request and waits for its acknowledgement.
func (n *netlink) do(typ uint16, flags uint16, body *nlmsg) error {
	n.seq++
	hdr := make([]byte, unix.SizeofNlMsghdr)
	binary.NativeEndian.PutUint32(hdr[0:], uint32(unix.SizeofNlMsghdr+len(body.b)))
	binary.NativeEndian.PutUint16(hdr[4:], typ)
	binary.NativeEndian.PutUint16(hdr[6:], flags|unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	binary.NativeEndian.PutUint32(hdr[8:], n.seq)
	msg := append(hdr, body.b...)
	if err := unix.Sendto(n.fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	buf := make([]byte, 8192)
	for {
		k, _, err := unix.Recvfrom(n.fd, buf, 0)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			return err
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:k])
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if m.Header.Seq != n.seq || m.Header.Type != unix.NLMSG_ERROR {
				continue
			}
			if len(m.Data) < 4 {
				return errors.New("short netlink error")
			}
			if e := int32(binary.NativeEndian.Uint32(m.Data)); e != 0 {
				return syscall.Errno(-e)
			}
			return nil
		}
	}
}

func (n *netlink) linkUp(index int32, mtu uint32) error {
	var m nlmsg
	ifi := unix.IfInfomsg{Family: unix.AF_UNSPEC, Index: index, Flags: unix.IFF_UP, Change: unix.IFF_UP}
	m.raw((*[unix.SizeofIfInfomsg]byte)(unsafe.Pointer(&ifi))[:])
	if mtu != 0 {
		m.attr(unix.IFLA_MTU, u32(mtu))
	}
	return n.do(unix.RTM_NEWLINK, 0, &m)
}

func (n *netlink) addAddr(index int32, p netip.Prefix) error {
	var m nlmsg
	ifa := unix.IfAddrmsg{Family: unix.AF_INET, Prefixlen: uint8(p.Bits()), Index: uint32(index)}
	if p.Addr().Is6() {
		ifa.Family = unix.AF_INET6
		ifa.Flags = unix.IFA_F_NODAD // no duplicate detection on a link we own
	}
	m.raw((*[unix.SizeofIfAddrmsg]byte)(unsafe.Pointer(&ifa))[:])
	a := p.Addr().AsSlice()
	m.attr(unix.IFA_LOCAL, a)
	m.attr(unix.IFA_ADDRESS, a)
	return n.do(unix.RTM_NEWADDR, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, &m)
}

func (n *netlink) addDefaultRoute(index int32, gw netip.Addr) error {
	var m nlmsg
	rt := unix.RtMsg{Family: unix.AF_INET, Table: unix.RT_TABLE_MAIN, Protocol: unix.RTPROT_BOOT,
		Scope: unix.RT_SCOPE_UNIVERSE, Type: unix.RTN_UNICAST}
	if gw.Is6() {
		rt.Family = unix.AF_INET6
	}
	m.raw((*[unix.SizeofRtMsg]byte)(unsafe.Pointer(&rt))[:])
	m.attr(unix.RTA_GATEWAY, gw.AsSlice())
	m.attr(unix.RTA_OIF, u32(uint32(index)))
	return n.do(unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, &m)
}
