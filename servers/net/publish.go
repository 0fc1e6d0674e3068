package net

import (
	"context"
	"errors"
	"fmt"
	stdnet "net"
	"net/netip"
	"sort"
	"sync"
	"time"
)

// publisher is one --publish: a host listener whose connections (or UDP
// peers) are forwarded through the stack to a member.
type publisher struct {
	s    *Server
	p    Publish
	ln   stdnet.Listener
	pc   stdnet.PacketConn
	wg   sync.WaitGroup
	once sync.Once
}

func (s *Server) startPublish(p Publish) (*publisher, error) {
	pb := &publisher{s: s, p: p}
	addr := fmt.Sprintf("127.0.0.1:%d", p.HostPort)
	var err error
	if p.UDP {
		pb.pc, err = stdnet.ListenPacket("udp", addr)
	} else {
		pb.ln, err = stdnet.Listen("tcp", addr)
	}
	if err != nil {
		return nil, fmt.Errorf("publish %s: %v", p, err)
	}
	pb.wg.Add(1)
	if p.UDP {
		go pb.serveUDP()
	} else {
		go pb.serveTCP()
	}
	return pb, nil
}

func (pb *publisher) close() {
	pb.once.Do(func() {
		if pb.ln != nil {
			pb.ln.Close()
		}
		if pb.pc != nil {
			pb.pc.Close()
		}
	})
	pb.wg.Wait()
}

// target is the member the port is forwarded to.
func (pb *publisher) target() netip.AddrPort {
	a := pb.p.Addr
	if !a.IsValid() {
		a = GuestAddr
		if pb.s.opts.LAN {
			a = pb.s.firstMember()
		}
	}
	return netip.AddrPortFrom(a, pb.p.Port)
}

func (s *Server) firstMember() netip.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.firstMemberLocked()
}

func (s *Server) firstMemberLocked() netip.Addr {
	var best netip.Addr
	for a := range s.members {
		if !best.IsValid() || a.Less(best) {
			best = a
		}
	}
	return best
}

func (pb *publisher) serveTCP() {
	defer pb.wg.Done()
	var conns sync.WaitGroup
	defer conns.Wait()
	for {
		hc, err := pb.ln.Accept()
		if err != nil {
			var ne stdnet.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		conns.Add(1)
		go func() {
			defer conns.Done()
			dst := pb.target()
			f := Flow{Network: "tcp", Src: netip.MustParseAddrPort(hc.RemoteAddr().String()), Dst: dst, Target: "published"}
			ctx, cancel := context.WithTimeout(pb.s.ctx, dialTimeout)
			gc, err := pb.s.dialGuestTCP(ctx, dst)
			cancel()
			if err != nil {
				hc.Close()
				return
			}
			pb.s.stats.published.Add(1)
			c := pb.s.track(f, gc, hc)
			defer pb.s.untrack(c)
			// Out is what the member sends, as for NAT connections.
			spliceTCP(gc, hc, &c.Out, &c.In)
		}()
	}
}

func (pb *publisher) serveUDP() {
	defer pb.wg.Done()
	var mu sync.Mutex
	flows := map[string]stdnet.Conn{}
	var wg sync.WaitGroup
	defer func() {
		mu.Lock()
		for _, c := range flows {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}()
	b := make([]byte, 65536)
	for {
		n, from, err := pb.pc.ReadFrom(b)
		if err != nil {
			return
		}
		key := from.String()
		mu.Lock()
		gc := flows[key]
		mu.Unlock()
		if gc == nil {
			gc, err = pb.s.dialGuest(pb.s.ctx, "udp", pb.target())
			if err != nil {
				continue
			}
			mu.Lock()
			flows[key] = gc
			mu.Unlock()
			pb.s.stats.published.Add(1)
			wg.Add(1)
			go func(gc stdnet.Conn, from stdnet.Addr) {
				defer wg.Done()
				rb := make([]byte, 65536)
				for {
					gc.SetReadDeadline(time.Now().Add(udpIdle))
					k, err := gc.Read(rb)
					if err != nil {
						break
					}
					pb.pc.WriteTo(rb[:k], from)
				}
				mu.Lock()
				delete(flows, from.String())
				mu.Unlock()
				gc.Close()
			}(gc, from)
		}
		gc.Write(b[:n])
	}
}

// SetPolicy replaces the allow/deny lists and published ports. New
// listeners are opened before anything changes, so a port that cannot be
// published leaves the old policy in force. Allow and deny apply to
// connections made from now on.
func (s *Server) SetPolicy(p Policy) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errors.New("net: server closed")
	}
	old := s.pubs
	s.mu.Unlock()
	want := map[string]Publish{}
	for _, x := range p.Publish {
		want[x.text] = x
	}
	started := map[string]*publisher{}
	for k, x := range want {
		if old[k] != nil {
			continue
		}
		pb, err := s.startPublish(x)
		if err != nil {
			for _, q := range started {
				q.close()
			}
			return err
		}
		started[k] = pb
	}
	s.mu.Lock()
	next := map[string]*publisher{}
	var stop []*publisher
	for k, pb := range s.pubs {
		if _, ok := want[k]; ok {
			next[k] = pb
		} else {
			stop = append(stop, pb)
		}
	}
	for k, pb := range started {
		next[k] = pb
	}
	s.pubs = next
	s.policy = p
	s.mu.Unlock()
	for _, pb := range stop {
		pb.close()
	}
	return nil
}

// Policy returns the policy in force.
func (s *Server) Policy() Policy {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.policy
}

func sortConns(c []*Conn) {
	sort.Slice(c, func(i, j int) bool { return c[i].ID < c[j].ID })
}
