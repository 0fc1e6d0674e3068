package net

import (
	"fmt"
	stdnet "net"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// The lan join protocol, spoken on a lan keeper's join socket (a unix
// stream socket) by subenv/netattach. One connection is one member; it
// leaves when the connection closes.
//
//	client: RESERVE nat=0|1\n           server: ADDR 10.0.3.15/24 10.0.3.2 10.0.3.3 fd00:0:0:3::15/64 fd00:0:0:3::2\n | ERR why\n
//	(the client configures its TUN with those addresses: IPv4 address,
//	gateway, DNS, then IPv6 address and gateway; a client that knows only
//	the first three ignores the rest)
//	client: ATTACH\n + SCM_RIGHTS(tun)  server: OK\n | ERR why\n
//
// A member whose namespace is gone (its TUN stops) is dropped and its
// connection closed, so the other side sees it too.

// ServeJoin accepts members on l until it is closed. empty is called (in
// its own goroutine) each time the last member leaves.
func (s *Server) ServeJoin(l *stdnet.UnixListener, empty func()) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serveMember(c, empty)
		}()
	}
}

func (s *Server) serveMember(c *stdnet.UnixConn, empty func()) {
	defer c.Close()
	buf := make([]byte, 256)
	oob := make([]byte, unix.CmsgSpace(4*4))
	read := func() (string, []int, error) {
		n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
		if err != nil {
			return "", nil, err
		}
		var fds []int
		if oobn > 0 {
			msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
			for i := range msgs {
				f, _ := unix.ParseUnixRights(&msgs[i])
				fds = append(fds, f...)
			}
		}
		return strings.TrimSpace(string(buf[:n])), fds, nil
	}
	closeAll := func(fds []int) {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
	line, fds, err := read()
	closeAll(fds)
	if err != nil {
		return
	}
	want := strings.TrimPrefix(line, "RESERVE ")
	if want == line {
		fmt.Fprintf(c, "ERR expected RESERVE\n")
		return
	}
	if nat := want == "nat=1"; nat != s.opts.NAT {
		fmt.Fprintf(c, "ERR this lan has nat=%v; a member asked for nat=%v\n", s.opts.NAT, nat)
		return
	}
	m, err := s.Reserve()
	if err != nil {
		fmt.Fprintf(c, "ERR %v\n", err)
		return
	}
	defer func() {
		m.Leave()
		if s.Members() == 0 && empty != nil {
			go empty()
		}
	}()
	gw, dns := s.Gateway()
	gw6, _ := s.Gateway6()
	fmt.Fprintf(c, "ADDR %s/%d %s %s %s/%d %s\n", m.Addr, s.Prefix().Bits(), gw, dns, m.addr6, s.Prefix6().Bits(), gw6)
	line, fds, err = read()
	if err != nil {
		closeAll(fds)
		return
	}
	if line != "ATTACH" || len(fds) != 1 {
		closeAll(fds)
		fmt.Fprintf(c, "ERR expected ATTACH with one descriptor\n")
		return
	}
	if err := m.Attach(fds[0]); err != nil {
		fmt.Fprintf(c, "ERR %v\n", err)
		return
	}
	fmt.Fprintf(c, "OK\n")
	// Leave when the member hangs up or its link dies.
	gone := make(chan struct{})
	go func() {
		b := make([]byte, 1)
		for {
			if _, err := c.Read(b); err != nil {
				close(gone)
				return
			}
		}
	}()
	select {
	case <-gone:
	case <-m.Done():
	}
}
