package net

import (
	"context"
	"errors"
	"fmt"
	stdnet "net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// qdiscLen bounds the packets waiting for a member's TUN (a full queue
// drops, and TCP sends again): at 64 KiB a packet, enough to keep several
// fast connections' windows in flight.
const qdiscLen = 1024

// Options configure a Server.
type Options struct {
	// NAT: outbound connections are made on the host on the members'
	// behalf. Without it the stack answers only for its own addresses
	// (the gateway), and the members of a lan reach each other.
	NAT bool
	// LAN: members get addresses on LANSubnet (10.0.3.15, .16, ...) and
	// see each other; otherwise there is one member, 10.0.2.15.
	LAN bool
	// MTU of the members' links (DefaultMTU when 0).
	MTU int
	// Policy: allow/deny lists and published ports.
	Policy Policy
	// Resolver is the host DNS server (host:port) the forwarder asks;
	// "" means the first nameserver in /etc/resolv.conf.
	Resolver string
	// Dial makes the host-side connection for a subenvironment's
	// connection (network "tcp" or "udp", address already translated:
	// 10.0.2.2:P is 127.0.0.1:P). nil means a net.Dialer. A wrapping
	// server can log, refuse (return an error: the program sees
	// ECONNREFUSED) or redirect here.
	Dial func(ctx context.Context, f Flow) (stdnet.Conn, error)
	// Logf receives one line per notable event (refused connections).
	Logf func(format string, args ...any)
}

// Flow describes a connection or UDP flow a member opened.
type Flow struct {
	Network string         // "tcp" or "udp"
	Src     netip.AddrPort // the member's side
	Dst     netip.AddrPort // what the member asked for
	Target  string         // host address it is sent to (translated Dst)
}

// Server is a user-space TCP/IP stack serving one subenvironment, or the
// members of one lan. It is safe for concurrent use.
//
// Lock order: Server.mu, then tunLink.mu.
type Server struct {
	opts     Options
	stack    *stack.Stack
	resolver string

	mu       sync.Mutex
	policy   Policy
	pubs     map[string]*publisher // by Publish.text
	forwards []*stdnet.TCPListener // --forward listeners (StartForward)
	members  map[netip.Addr]*Member
	nextNIC  tcpip.NICID
	closed   bool

	// peers is a copy-on-write map of the lan's members by address, read
	// on every packet without a lock.
	peers atomic.Pointer[map[netip.Addr]*tunLink]

	conns   sync.Map // uint64 -> *Conn
	connSeq atomic.Uint64
	stats   counters
	wg      sync.WaitGroup
	ctx     context.Context
	cancel  context.CancelFunc
}

// New creates the stack. Members (TUN devices) are added with AddMember.
func New(opts Options) (*Server, error) {
	if opts.MTU == 0 {
		opts.MTU = DefaultMTU
	}
	if opts.MTU < 1280 || opts.MTU > 65535 {
		return nil, fmt.Errorf("net: MTU %d out of range 1280-65535", opts.MTU)
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	res := opts.Resolver
	if res == "" {
		res = hostResolver("/etc/resolv.conf")
	}
	s := &Server{
		opts:     opts,
		resolver: res,
		pubs:     map[string]*publisher{},
		members:  map[netip.Addr]*Member{},
		nextNIC:  1,
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	empty := map[netip.Addr]*tunLink{}
	s.peers.Store(&empty)

	s.stack = stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
	})
	sack := tcpip.TCPSACKEnabled(true)
	s.stack.SetTransportProtocolOption(tcp.ProtocolNumber, &sack)
	// No TIME_WAIT: the stack's side of a connection is a proxy on a link
	// that loses nothing, and gVisor's TIME_WAIT hands a new SYN for the
	// same addresses only to a listener, never to the forwarder: the
	// program's next connection from a port it used within the wait lost
	// its SYN and waited a second for the retransmission
	// (TestReuseAfterClose; one short connection in 20,000-30,000 in the
	// benchmark, when the program's kernel came back to recent ports).
	tw := tcpip.TCPTimeWaitTimeoutOption(0)
	s.stack.SetTransportProtocolOption(tcp.ProtocolNumber, &tw)
	rcv := tcpip.TCPReceiveBufferSizeRangeOption{Min: 4 << 10, Default: 4 << 20, Max: 16 << 20}
	s.stack.SetTransportProtocolOption(tcp.ProtocolNumber, &rcv)
	snd := tcpip.TCPSendBufferSizeRangeOption{Min: 4 << 10, Default: 8 << 20, Max: 32 << 20}
	s.stack.SetTransportProtocolOption(tcp.ProtocolNumber, &snd)
	mod := tcpip.TCPModerateReceiveBufferOption(true)
	s.stack.SetTransportProtocolOption(tcp.ProtocolNumber, &mod)

	// The forwarders see every connection addressed anywhere but the
	// stack's own listeners (the members' NICs are promiscuous under NAT);
	// without NAT they still serve DNS and refuse the rest.
	// The forwarder starts a goroutine per SYN; the work is done on a
	// reused one (see goWork).
	tf := tcp.NewForwarder(s.stack, 0, 1024, func(r *tcp.ForwarderRequest) { goWork(func() { s.handleTCP(r) }) })
	s.stack.SetTransportProtocolHandler(tcp.ProtocolNumber, tf.HandlePacket)
	uf := udp.NewForwarder(s.stack, s.handleUDP)
	s.stack.SetTransportProtocolHandler(udp.ProtocolNumber, uf.HandlePacket)

	if err := s.SetPolicy(opts.Policy); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Gateway returns the gateway and DNS addresses members see.
func (s *Server) Gateway() (gw, dns netip.Addr) {
	if s.opts.LAN {
		return LANGateway, LANDNS
	}
	return GatewayAddr, DNSAddr
}

// Prefix is the members' subnet.
func (s *Server) Prefix() netip.Prefix {
	if s.opts.LAN {
		return LANSubnet
	}
	return Subnet
}

// Gateway6 and Prefix6 are Gateway and Prefix for IPv6.
func (s *Server) Gateway6() (gw, dns netip.Addr) {
	if s.opts.LAN {
		return LANGateway6, LANDNS6
	}
	return GatewayAddr6, DNSAddr6
}

func (s *Server) Prefix6() netip.Prefix {
	if s.opts.LAN {
		return LANSubnet6
	}
	return Subnet6
}

// Member is one TUN attached to the server.
type Member struct {
	s        *Server
	nic      tcpip.NICID
	Addr     netip.Addr
	addr6    netip.Addr
	link     *tunLink // nil until Attach
	once     sync.Once
	down     chan struct{}
	downOnce sync.Once
}

// Done is closed when the member's TUN stops working (its namespace is
// gone) or Leave was called.
func (m *Member) Done() <-chan struct{} { return m.down }

func (m *Member) closeDown() { m.downOnce.Do(func() { close(m.down) }) }

// Leave detaches the member and closes its TUN.
func (m *Member) Leave() {
	m.once.Do(func() { m.s.removeMember(m) })
}

// AddMember attaches the TUN device whose descriptor is fd (the server
// takes ownership of it). Outside a lan there is one member, 10.0.2.15;
// in a lan it gets the next free address, which the TUN must already carry
// (use Reserve first, configure the TUN with the address, then Attach).
func (s *Server) AddMember(fd int) (*Member, error) {
	m, err := s.Reserve()
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	if err := m.Attach(fd); err != nil {
		m.Leave()
		return nil, err
	}
	return m, nil
}

// Reserve allocates a member's address (a lan's next free one) without a
// link yet. The member holds the address until Leave.
func (s *Server) Reserve() (*Member, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("net: server closed")
	}
	var addr, addr6 netip.Addr
	if s.opts.LAN {
		addr = s.freeAddrLocked()
		if !addr.IsValid() {
			return nil, errors.New("net: lan is full")
		}
		addr6 = LANAddr6(addr)
	} else {
		if len(s.members) > 0 {
			return nil, errors.New("net: a non-lan server has one member")
		}
		addr, addr6 = GuestAddr, GuestAddr6
	}
	m := &Member{s: s, Addr: addr, addr6: addr6, down: make(chan struct{})}
	s.members[addr] = m
	return m, nil
}

// Attach gives a reserved member its TUN (fd, which the server takes).
func (m *Member) Attach(fd int) error {
	s := m.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.members[m.Addr] != m || m.link != nil {
		unix.Close(fd)
		return errors.New("net: member gone or already attached")
	}
	link, err := newTunLink(s, fd, uint32(s.opts.MTU), m.Addr, m.addr6)
	if err != nil {
		return fmt.Errorf("net: tun: %v", err)
	}
	nic := s.nextNIC
	s.nextNIC++
	// Packets go out through a queue and a writer goroutine, except
	// small ones our splice sends from its own calls (see txQueue).
	qd := newTxQueue(link, qdiscLen)
	if terr := s.stack.CreateNICWithOptions(nic, link, stack.NICOptions{Name: fmt.Sprintf("m%d", nic), QDisc: qd}); terr != nil {
		link.shutdown()
		return fmt.Errorf("net: create NIC: %v", terr)
	}
	// Promiscuous always: the forwarders then see every connection
	// attempt and answer each one (NAT it, or refuse it with a RST, so
	// programs get ECONNREFUSED at once instead of a timeout).
	s.stack.SetPromiscuousMode(nic, true)
	s.stack.SetSpoofing(nic, true)
	gw, dns := s.Gateway()
	plen := s.Prefix().Bits()
	for _, a := range []netip.Addr{gw, dns} {
		s.stack.AddProtocolAddress(nic, tcpip.ProtocolAddress{
			Protocol:          ipv4.ProtocolNumber,
			AddressWithPrefix: tcpip.AddressWithPrefix{Address: tcpip.AddrFrom4(a.As4()), PrefixLen: plen},
		}, stack.AddressProperties{})
	}
	if m.addr6.IsValid() {
		gw6, dns6 := s.Gateway6()
		for _, a := range []netip.Addr{gw6, dns6} {
			s.stack.AddProtocolAddress(nic, tcpip.ProtocolAddress{
				Protocol:          ipv6.ProtocolNumber,
				AddressWithPrefix: tcpip.AddressWithPrefix{Address: tcpip.AddrFrom16(a.As16()), PrefixLen: 64},
			}, stack.AddressProperties{})
		}
	}
	m.nic, m.link = nic, link
	go func() {
		<-link.down
		m.closeDown()
	}()
	s.rebuildLocked()
	return nil
}

func (s *Server) freeAddrLocked() netip.Addr {
	b := LANSubnet.Addr().As4()
	for i := 15; i < 255; i++ {
		b[3] = byte(i)
		a := netip.AddrFrom4(b)
		if s.members[a] == nil {
			return a
		}
	}
	return netip.Addr{}
}

func (s *Server) removeMember(m *Member) {
	s.mu.Lock()
	if s.members[m.Addr] == m {
		delete(s.members, m.Addr)
		s.rebuildLocked()
	}
	link := m.link
	s.mu.Unlock()
	// RemoveNIC detaches the link, which closes the TUN and waits for
	// its reader.
	if link != nil {
		s.stack.RemoveNIC(m.nic)
	}
	m.closeDown()
}

// rebuildLocked recomputes the routes (one per member) and the switch's
// table.
func (s *Server) rebuildLocked() {
	var routes []tcpip.Route
	peers := map[netip.Addr]*tunLink{}
	for a, m := range s.members {
		if m.link == nil {
			continue
		}
		routes = append(routes, tcpip.Route{
			Destination: tcpip.AddressWithPrefix{Address: tcpip.AddrFrom4(a.As4()), PrefixLen: 32}.Subnet(),
			NIC:         m.nic,
		})
		if m.link.addr6.IsValid() {
			routes = append(routes, tcpip.Route{
				Destination: tcpip.AddressWithPrefix{Address: tcpip.AddrFrom16(m.link.addr6.As16()), PrefixLen: 128}.Subnet(),
				NIC:         m.nic,
			})
			peers[m.link.addr6] = m.link
		}
		peers[a] = m.link
	}
	s.stack.SetRouteTable(routes)
	if !s.opts.LAN {
		peers = map[netip.Addr]*tunLink{}
	}
	s.peers.Store(&peers)
}

// lanPeer returns the member dst belongs to when it is another member than
// from (the switch's forwarding decision), else nil.
func (s *Server) lanPeer(dst netip.Addr, from *tunLink) *tunLink {
	peers := *s.peers.Load()
	if len(peers) == 0 {
		return nil
	}
	if p := peers[dst]; p != nil && p != from {
		return p
	}
	return nil
}

// Members returns the number of attached members.
func (s *Server) Members() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.members)
}

// Close detaches every member, closes the published ports and live
// connections, and stops the stack.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	var ms []*Member
	for _, m := range s.members {
		ms = append(ms, m)
	}
	pubs := s.pubs
	s.pubs = map[string]*publisher{}
	fwds := s.forwards
	s.forwards = nil
	s.mu.Unlock()
	s.cancel()
	for _, p := range pubs {
		p.close()
	}
	for _, l := range fwds {
		l.Close()
	}
	s.conns.Range(func(_, v any) bool {
		v.(*Conn).close()
		return true
	})
	for _, m := range ms {
		m.Leave()
	}
	s.wg.Wait()
	s.stack.Close()
	s.stack.Wait()
	return nil
}

// hostResolver finds the first nameserver in a resolv.conf file.
func hostResolver(path string) string {
	b, err := os.ReadFile(path)
	if err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) >= 2 && f[0] == "nameserver" {
				if a, err := netip.ParseAddr(f[1]); err == nil {
					return netip.AddrPortFrom(a.WithZone(""), 53).String()
				}
			}
		}
	}
	return "127.0.0.1:53"
}

// AddMemberFile is AddMember for an *os.File; f is closed (the server keeps
// its own descriptor).
func (s *Server) AddMemberFile(f *os.File) (*Member, error) {
	raw, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	fd := -1
	var derr error
	raw.Control(func(x uintptr) { fd, derr = unix.FcntlInt(x, unix.F_DUPFD_CLOEXEC, 0) })
	f.Close()
	if derr != nil {
		return nil, fmt.Errorf("net: dup tun: %v", derr)
	}
	return s.AddMember(fd)
}
