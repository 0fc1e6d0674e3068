package net

import (
	"context"
	"errors"
	"fmt"
	"io"
	stdnet "net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Forward is one --forward PORT[:HOSTPORT]: inside, the subenvironment's
// own 127.0.0.1:Port reaches the host's 127.0.0.1:HostPort (HostPort
// defaults to Port) through two sockets spliced together, as pasta's -T
// does: the data moves with splice(2), through no TCP/IP stack of ours and
// no user-space copy, which the gateway path (10.0.2.2) cannot avoid. TCP
// only. The listener is made inside the namespace by whoever made the TUN
// (subenv run) and handed to the server, which never enters the namespace.
type Forward struct {
	Port, HostPort uint16
	text           string
}

func (f Forward) String() string { return f.text }

// ParseForward parses PORT or PORT:HOSTPORT.
func ParseForward(s string) (Forward, error) {
	f := Forward{text: s}
	in, host, two := strings.Cut(s, ":")
	p, err1 := strconv.ParseUint(in, 10, 16)
	h, err2 := p, error(nil)
	if two {
		h, err2 = strconv.ParseUint(host, 10, 16)
	}
	if err1 != nil || err2 != nil || p == 0 || h == 0 {
		return f, fmt.Errorf("forward %q: want PORT[:HOSTPORT], ports 1-65535", s)
	}
	f.Port, f.HostPort = uint16(p), uint16(h)
	return f, nil
}

// StartForward serves f on ln, a listener made inside the subenvironment:
// each connection is checked against the policy as one to the gateway's
// HostPort, listed in Connections, and spliced to the host's
// 127.0.0.1:HostPort. It stops when the server closes.
func (s *Server) StartForward(f Forward, ln *stdnet.TCPListener) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return
	}
	s.forwards = append(s.forwards, ln)
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		var conns sync.WaitGroup
		defer conns.Wait()
		for {
			c, err := ln.AcceptTCP()
			if errors.Is(err, stdnet.ErrClosed) {
				return
			}
			if err != nil {
				// Out of descriptors or memory, or an aborted
				// connection: a short pause, then go on serving.
				s.opts.Logf("herd-net: forward %s: %v", f, err)
				time.Sleep(10 * time.Millisecond)
				continue
			}
			conns.Add(1)
			go func() {
				defer conns.Done()
				s.forward(f, c)
			}()
		}
	}()
}

// ForwardListener makes the listener StartForward takes from a descriptor
// passed by the launcher (it takes ownership of fd).
func ForwardListener(fd int) (*stdnet.TCPListener, error) {
	file := os.NewFile(uintptr(fd), "forward")
	defer file.Close()
	l, err := stdnet.FileListener(file)
	if err != nil {
		return nil, err
	}
	tl, ok := l.(*stdnet.TCPListener)
	if !ok {
		l.Close()
		return nil, fmt.Errorf("descriptor %d is not a TCP listener", fd)
	}
	return tl, nil
}

func (s *Server) forward(f Forward, c *stdnet.TCPConn) {
	gw, _ := s.Gateway()
	src, _ := netip.ParseAddrPort(c.RemoteAddr().String())
	flow := Flow{
		Network: "tcp",
		Src:     src,
		Dst:     netip.AddrPortFrom(gw, f.HostPort),
		Target:  netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), f.HostPort).String(),
	}
	// The program's connect has already succeeded (the listener is its own
	// kernel's): a refusal can only reset it.
	if !s.permit(flow) {
		c.SetLinger(0)
		c.Close()
		return
	}
	host, err := s.dialForward(flow)
	if err != nil {
		s.stats.dialFailed.Add(1)
		s.opts.Logf("herd-net: forward %s: %v", f, err)
		c.SetLinger(0)
		c.Close()
		return
	}
	s.stats.tcpConns.Add(1)
	largeSendBuffer(c)
	largeSendBuffer(host)
	conn := s.track(flow, c, host)
	defer s.untrack(conn)
	if s.ctx.Err() != nil {
		return // Close has begun and may have closed the tracked ones before this
	}
	done := make(chan struct{})
	goWork(func() {
		defer close(done)
		pipeHalf(host, c, &conn.Out, conn)
	})
	pipeHalf(c, host, &conn.In, conn)
	<-done
}

// dialForward connects to the host side: a *net.TCPConn, so that the
// copy is a splice, unless a wrapping server dials itself.
func (s *Server) dialForward(f Flow) (stdnet.Conn, error) {
	if s.opts.Dial != nil {
		return s.dial(f)
	}
	ctx, cancel := context.WithTimeout(s.ctx, dialTimeout)
	defer cancel()
	return (&stdnet.Dialer{}).DialContext(ctx, "tcp", f.Target)
}

// largeSendBuffer gives a spliced socket the largest send buffer the host
// allows (twice net.core.wmem_max), as pasta does, where that is more than
// the kernel's autotuning would reach (tcp_wmem's maximum, 4 MiB by
// default): each time the buffer is full the splice sleeps until there is
// room, and is woken again. With cubic, four alternating 3-second runs
// (splicing with Go's ReadFrom then, see socksplice.go): host -> namespace
// 35-43 Gbit/s before, 42-50 after (means 38.6, 44.4); with BBR no change. On a host with the stock wmem_max (208 KiB) a fixed
// size would be smaller than autotuning's, so nothing is set there. The
// receive side is left to autotuning, which reaches more (tcp_rmem's
// maximum); fixing it too was no better.
func largeSendBuffer(c stdnet.Conn) {
	t, ok := c.(*stdnet.TCPConn)
	if !ok {
		return
	}
	if n := sendBufferSize(); n > 0 {
		t.SetWriteBuffer(n)
	}
}

// sendBufferSize is the SO_SNDBUF largeSendBuffer asks for, or 0.
var sendBufferSize = sync.OnceValue(func() int {
	wmemMax, err1 := sysctlInts("/proc/sys/net/core/wmem_max")
	tcpWmem, err2 := sysctlInts("/proc/sys/net/ipv4/tcp_wmem")
	if err1 != nil || err2 != nil || len(wmemMax) != 1 || len(tcpWmem) != 3 || 2*wmemMax[0] <= tcpWmem[2] {
		return 0
	}
	return wmemMax[0] // the kernel doubles it
})

func sysctlInts(path string) ([]int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", path, err)
		}
		out = append(out, n)
	}
	return out, nil
}

// pipeHalf copies src to dst until src's end, which it passes on as a
// half-close; an error ends both directions.
func pipeHalf(dst, src stdnet.Conn, n *atomic.Uint64, c *Conn) {
	err := copyConn(dst, src, n)
	if errors.Is(err, io.EOF) {
		if cw, ok := dst.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
			return
		}
	}
	c.close()
}
