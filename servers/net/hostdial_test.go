package net

import (
	"context"
	"errors"
	"io"
	stdnet "net"
	"syscall"
	"testing"
	"time"
)

// TestDialHostTCP: the host-side dial connects (data both ways, a
// half-close reaches the peer as end of stream), and a port nobody
// listens on is ECONNREFUSED (which the member sees as a refusal).
func TestDialHostTCP(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		network := addr
		ln, err := stdnet.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		c, err := dialHostTCP(ctx, ln.Addr().String())
		if err != nil {
			t.Fatalf("%s: %v", network, err)
		}
		peer, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		if c.RemoteAddr().String() != ln.Addr().String() || c.LocalAddr().String() != peer.RemoteAddr().String() {
			t.Errorf("%s: addresses %v -> %v, the peer sees %v -> %v", network, c.LocalAddr(), c.RemoteAddr(), peer.RemoteAddr(), peer.LocalAddr())
		}
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		if err := c.(rawStream).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(peer)
		if err != nil || string(b) != "ping" {
			t.Fatalf("%s: peer read %q, %v; want ping and end of stream", network, b, err)
		}
		peer.Write([]byte("pong"))
		peer.Close()
		b, err = io.ReadAll(c)
		if err != nil || string(b) != "pong" {
			t.Fatalf("%s: read %q, %v; want pong", network, b, err)
		}
		c.Close()

		// Close ends a read waiting in the poller (the socket is shut
		// down at once, the descriptor closed a moment later with
		// others), and the peer sees the end.
		c, err = dialHostTCP(ctx, ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		peer, err = ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			var b [1]byte
			_, err := c.Read(b[:])
			done <- err
		}()
		time.Sleep(10 * time.Millisecond) // (the read may start waiting first or not: both must end)
		c.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: a read waiting on a closed host connection did not end", network)
		}
		if b, err := io.ReadAll(peer); err != nil || len(b) != 0 {
			t.Fatalf("%s: peer read %q, %v after Close; want end of stream", network, b, err)
		}
		peer.Close()
		// Now nobody listens there.
		addr := ln.Addr().String()
		ln.Close()
		_, err = dialHostTCP(ctx, addr)
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("%s: dial of a closed port: %v, want ECONNREFUSED", network, err)
		}
		cancel()
	}
}
