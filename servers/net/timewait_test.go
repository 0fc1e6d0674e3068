package net

import (
	stdnet "net"
	"strings"
	"testing"
	"time"
)

// TestReuseAfterClose: when the host closed first, the stack's side of the
// connection is the one that waits (TIME_WAIT), and gVisor's TIME_WAIT
// passes a new SYN for the same addresses only to a listener, which the
// forwarder is not: the program's next connection from the same port lost
// its SYN and waited a second for the retransmission (one short connection
// in 20,000-30,000 in a benchmark, whenever the program's kernel picked a
// port it had used within the last second). It must get through at once.
func TestReuseAfterClose(t *testing.T) {
	ln, err := stdnet.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hi\n"))
			c.Close()
		}
	}()
	_, ns := natNS(t, Options{NAT: true}, DefaultMTU)
	addr := "10.0.2.2:" + strings.TrimPrefix(ln.Addr().String(), "127.0.0.1:")
	out, err := ns.Redial(2*time.Minute, addr)
	if err != nil {
		t.Fatal(err)
	}
	if out != "ok 0" {
		t.Fatalf("second connect from the same port: %q, want \"ok 0\" (no SYN retransmission)", out)
	}
}
