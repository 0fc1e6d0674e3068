package net

import (
	"context"
	"errors"
	"fmt"
	"io"
	stdnet "net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// udpIdle is how long a UDP flow lives without traffic.
const udpIdle = 60 * time.Second

// dialTimeout bounds a host-side connect, so a request never hangs the
// forwarder's in-flight slot forever.
const dialTimeout = 20 * time.Second

// counters are the server's own statistics (the stack keeps more).
type counters struct {
	malformed, oversized, spoofed, txErrors atomic.Uint64
	refused, dialFailed                     atomic.Uint64
	tcpConns, udpFlows                      atomic.Uint64
	dnsQueries, dnsBadReplies               atomic.Uint64
	published                               atomic.Uint64
}

// Conn is one live connection or flow, for /connections.
type Conn struct {
	ID      uint64
	Flow    Flow
	Start   time.Time
	In, Out atomic.Uint64 // bytes to the member, bytes from the member
	closers []io.Closer
	once    sync.Once
}

func (c *Conn) close() {
	c.once.Do(func() {
		for _, x := range c.closers {
			x.Close()
		}
	})
}

func (s *Server) track(f Flow, closers ...io.Closer) *Conn {
	c := &Conn{ID: s.connSeq.Add(1), Flow: f, Start: time.Now(), closers: closers}
	s.conns.Store(c.ID, c)
	return c
}

func (s *Server) untrack(c *Conn) {
	s.conns.Delete(c.ID)
	c.close()
}

// Connections returns the live connections, oldest first.
func (s *Server) Connections() []*Conn {
	var out []*Conn
	s.conns.Range(func(_, v any) bool {
		out = append(out, v.(*Conn))
		return true
	})
	sortConns(out)
	return out
}

func addrOf(a tcpip.Address) netip.Addr {
	ip, _ := netip.AddrFromSlice(a.AsSlice())
	return ip
}

// translate maps a destination a member asked for to the host address the
// server connects to. ok is false for destinations that must not leave
// (the members' own subnet, other than the gateway).
func (s *Server) translate(dst netip.AddrPort) (target string, ok bool) {
	gw, _ := s.Gateway()
	gw6, _ := s.Gateway6()
	a := dst.Addr()
	switch {
	case a == gw:
		return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), dst.Port()).String(), true
	case a == gw6:
		return netip.AddrPortFrom(netip.IPv6Loopback(), dst.Port()).String(), true
	case s.Prefix().Contains(a), s.Prefix6().Contains(a), Subnet6.Contains(a):
		return "", false
	case a.IsLoopback(), a.IsUnspecified(), a.IsMulticast():
		return "", false
	}
	return dst.String(), true
}

// permit applies the policy; refusals are counted and logged.
func (s *Server) permit(f Flow) bool {
	s.mu.Lock()
	ok := s.policy.Permit(f.Dst.Addr(), f.Dst.Port())
	s.mu.Unlock()
	if !ok {
		s.stats.refused.Add(1)
		s.opts.Logf("herd-net: refused %s %s -> %s (policy)", f.Network, f.Src, f.Dst)
	}
	return ok
}

func (s *Server) dial(f Flow) (stdnet.Conn, error) {
	ctx, cancel := context.WithTimeout(s.ctx, dialTimeout)
	defer cancel()
	if s.opts.Dial != nil {
		return s.opts.Dial(ctx, f)
	}
	if f.Network == "tcp" {
		return dialHostTCP(ctx, f.Target)
	}
	var d stdnet.Dialer
	return d.DialContext(ctx, f.Network, f.Target)
}

// isDNS: the forwarder answers at the DNS address, in NAT mode only (it
// asks the host's resolver, which is going out).
func (s *Server) isDNS(a netip.Addr, port uint16) bool {
	_, dns := s.Gateway()
	_, dns6 := s.Gateway6()
	return s.opts.NAT && port == 53 && (a == dns || a == dns6)
}

// handleTCP serves one SYN from a member: the host connection is made
// first, so a refusal reaches the program as a RST (ECONNREFUSED).
func (s *Server) handleTCP(r *tcp.ForwarderRequest) {
	id := r.ID()
	f := Flow{
		Network: "tcp",
		Src:     netip.AddrPortFrom(addrOf(id.RemoteAddress), id.RemotePort),
		Dst:     netip.AddrPortFrom(addrOf(id.LocalAddress), id.LocalPort),
	}
	var host stdnet.Conn
	if s.isDNS(f.Dst.Addr(), f.Dst.Port()) {
		f.Target = s.resolver
		c, err := (&stdnet.Dialer{Timeout: dialTimeout}).DialContext(s.ctx, "tcp", s.resolver)
		if err != nil {
			s.stats.dialFailed.Add(1)
			r.Complete(true)
			return
		}
		host = c
	} else {
		target, ok := s.translate(f.Dst)
		f.Target = target
		if !ok || !s.opts.NAT {
			s.stats.refused.Add(1)
			r.Complete(true)
			return
		}
		if !s.permit(f) {
			r.Complete(true)
			return
		}
		c, err := s.dial(f)
		if err != nil {
			s.stats.dialFailed.Add(1)
			s.opts.Logf("herd-net: %s %s -> %s: %v", f.Network, f.Src, f.Dst, err)
			r.Complete(true)
			return
		}
		host = c
	}
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	if terr != nil {
		host.Close()
		r.Complete(true)
		return
	}
	r.Complete(false)
	// The program's kernel and the host's each do their own Nagle; a
	// second one here only adds latency to request/response traffic.
	ep.SocketOptions().SetDelayOption(false)
	s.stats.tcpConns.Add(1)
	if s.isDNS(f.Dst.Addr(), f.Dst.Port()) {
		guest := gonet.NewTCPConn(&wq, ep)
		c := s.track(f, guest, host)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.untrack(c)
			s.relayDNSTCP(guest, host, c)
		}()
		return
	}
	// The forwarder runs each request in a goroutine of its own, which
	// is free now (Complete was called): the splice runs in it.
	g := newGuestTCP(ep, &wq)
	c := s.track(f, g, host)
	s.wg.Add(1)
	defer s.wg.Done()
	defer s.untrack(c)
	spliceTCP(g, host, &c.Out, &c.In)
}

type halfCloser interface {
	stdnet.Conn
	CloseWrite() error
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// splice copies both ways until both directions end, passing a half-close
// on; an error in either direction closes both.
func splice(guest, host stdnet.Conn, fromGuest, toGuest *atomic.Uint64) {
	var wg sync.WaitGroup
	wg.Add(2)
	cp := func(dst, src stdnet.Conn, n *atomic.Uint64) {
		defer wg.Done()
		bp := bufPool.Get().(*[]byte)
		defer bufPool.Put(bp)
		_, err := io.CopyBuffer(countWriter{dst, n}, onlyReader{src}, *bp)
		if hc, ok := dst.(halfCloser); ok && err == nil {
			if hc.CloseWrite() == nil {
				return
			}
		}
		guest.Close()
		host.Close()
	}
	go cp(host, guest, fromGuest)
	go cp(guest, host, toGuest)
	wg.Wait()
	guest.Close()
	host.Close()
}

type countWriter struct {
	w io.Writer
	n *atomic.Uint64
}

func (c countWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n.Add(uint64(n))
	return n, err
}

// onlyReader hides WriterTo, so CopyBuffer uses our large buffer.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(b []byte) (int, error) { return o.r.Read(b) }

// handleUDP serves the first datagram of a flow. It runs in the stack's
// receive path, so it only creates the endpoint; dialing happens in the
// flow's goroutine.
func (s *Server) handleUDP(r *udp.ForwarderRequest) bool {
	id := r.ID()
	f := Flow{
		Network: "udp",
		Src:     netip.AddrPortFrom(addrOf(id.RemoteAddress), id.RemotePort),
		Dst:     netip.AddrPortFrom(addrOf(id.LocalAddress), id.LocalPort),
	}
	dns := s.isDNS(f.Dst.Addr(), f.Dst.Port())
	if dns {
		f.Target = s.resolver
	} else {
		target, ok := s.translate(f.Dst)
		f.Target = target
		if !ok || !s.opts.NAT {
			s.stats.refused.Add(1)
			return false
		}
		if !s.permit(f) {
			return false // the stack answers port unreachable: ECONNREFUSED
		}
	}
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	if terr != nil {
		return false
	}
	guest := gonet.NewUDPConn(&wq, ep)
	s.stats.udpFlows.Add(1)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		var host stdnet.Conn
		var err error
		if dns {
			host, err = stdnet.DialTimeout("udp", s.resolver, dialTimeout)
		} else {
			host, err = s.dial(f)
		}
		if err != nil {
			s.stats.dialFailed.Add(1)
			guest.Close()
			return
		}
		c := s.track(f, guest, host)
		defer s.untrack(c)
		var filter func([]byte, bool) bool
		if dns {
			filter = s.newDNSFilter()
		}
		relayUDP(guest, host, c, filter)
	}()
	return true
}

// relayUDP copies datagrams both ways until the flow has been idle for
// udpIdle. filter, when set, sees every datagram: queries (toHost true)
// and replies; a reply it rejects is dropped.
func relayUDP(guest, host stdnet.Conn, c *Conn, filter func(b []byte, toHost bool) bool) {
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	var wg sync.WaitGroup
	wg.Add(2)
	cp := func(dst, src stdnet.Conn, n *atomic.Uint64, toHost bool) {
		defer wg.Done()
		defer func() { guest.Close(); host.Close() }()
		b := make([]byte, 65536)
		for {
			src.SetReadDeadline(time.Now().Add(udpIdle))
			k, err := src.Read(b)
			if err != nil {
				var ne stdnet.Error
				if errors.As(err, &ne) && ne.Timeout() && time.Since(time.Unix(0, last.Load())) < udpIdle {
					continue
				}
				if errors.Is(err, syscall.ECONNREFUSED) {
					continue
				}
				return
			}
			last.Store(time.Now().UnixNano())
			if filter != nil && !filter(b[:k], toHost) {
				continue
			}
			if _, err := dst.Write(b[:k]); err == nil {
				n.Add(uint64(k))
			}
		}
	}
	go cp(host, guest, &c.Out, true)
	go cp(guest, host, &c.In, false)
	wg.Wait()
}

// dialGuest connects into the stack to a member (published ports).
func (s *Server) dialGuest(ctx context.Context, network string, dst netip.AddrPort) (stdnet.Conn, error) {
	fa := tcpip.FullAddress{Port: dst.Port()}
	proto := tcpip.NetworkProtocolNumber(0x0800)
	if dst.Addr().Is4() {
		fa.Addr = tcpip.AddrFrom4(dst.Addr().As4())
	} else {
		fa.Addr = tcpip.AddrFrom16(dst.Addr().As16())
		proto = 0x86dd
	}
	if network == "udp" {
		return gonet.DialUDP(s.stack, nil, &fa, proto)
	}
	return gonet.DialContextTCP(ctx, s.stack, fa, proto)
}

// dialGuestTCP connects into the stack to a member (published ports).
func (s *Server) dialGuestTCP(ctx context.Context, dst netip.AddrPort) (*guestTCP, error) {
	fa := tcpip.FullAddress{Port: dst.Port()}
	proto := ipv4.ProtocolNumber
	if dst.Addr().Is4() {
		fa.Addr = tcpip.AddrFrom4(dst.Addr().As4())
	} else {
		fa.Addr = tcpip.AddrFrom16(dst.Addr().As16())
		proto = ipv6.ProtocolNumber
	}
	wq := new(waiter.Queue)
	ep, terr := s.stack.NewEndpoint(tcp.ProtocolNumber, proto, wq)
	if terr != nil {
		return nil, errors.New(terr.String())
	}
	entry, ch := waiter.NewChannelEntry(waiter.WritableEvents)
	wq.EventRegister(&entry)
	defer wq.EventUnregister(&entry)
	terr = ep.Connect(fa)
	if _, ok := terr.(*tcpip.ErrConnectStarted); ok {
		select {
		case <-ctx.Done():
			ep.Close()
			return nil, ctx.Err()
		case <-ch:
		}
		terr = ep.LastError()
	}
	if terr != nil {
		ep.Close()
		return nil, fmt.Errorf("connect %s: %s", dst, terr)
	}
	ep.SocketOptions().SetDelayOption(false)
	return newGuestTCP(ep, wq), nil
}
