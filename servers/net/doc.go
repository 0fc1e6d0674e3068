// Package net is herd's net server: a user-space TCP/IP stack (gVisor's
// netstack, as the Hurd's pfinet) fed with a subenvironment's packets from
// a TUN device, with policies a user can change at run time.
//
// Data flow: a member's TUN -> tunLink (checks every frame; counts and
// drops bad ones; switches frames between members of a lan) -> the stack ->
// the TCP/UDP forwarders, which make the connection on the host on the
// member's behalf (NAT) and splice the two. Connections to the gateway
// (10.0.2.2, fd00::2) go to the host's loopback; 10.0.2.3:53 is a DNS
// forwarder to the host's resolver that drops (and counts) replies that do
// not parse. Published ports go the other way: a host listener on
// 127.0.0.1, dialed into the stack. Forwards (--forward, forward.go) skip
// the stack: a listener made inside the namespace, each connection
// spliced socket to socket to the host's 127.0.0.1 (socksplice.go).
//
// Modes: NAT (the default), none (the stack answers, nothing leaves: every
// connection is refused), and lan (several members, one NIC each, who see
// each other at 10.0.3.15, .16, ... and fd00:0:0:3::15, ::16, ...; with or
// without NAT, whose gateways are 10.0.3.2 and fd00:0:0:3::2).
//
// Policy: --deny rules refuse; when --allow rules exist only what they
// match passes. Refused TCP gets a RST (ECONNREFUSED), refused UDP an ICMP
// port unreachable. Rules match the destination the program asked for.
// The DNS forwarder is not subject to them.
//
// ICMP echo: the stack itself answers pings to the gateway (and, since the
// NICs are promiscuous, to any address: it does not forward them with
// ping sockets yet, so a ping says nothing about a host's reachability).
//
// Links: a member's TUN may carry the virtio-net header (netattach makes
// herd-net's that way); then neither side computes or checks TCP
// checksums, and TCP segments travel as 64 KiB super-packets whatever the
// MTU (see tunLink). Packets to a member leave through a FIFO queue and a
// writer goroutine (see Member.Attach), and TCP data moves between the
// stack and host sockets without an intermediate buffer (splice.go).
//
// Invariants: the stack's NICs are promiscuous, so every connection attempt
// reaches a forwarder, which either answers it or refuses it; nothing is
// silently dropped except by counted checks. A member may only send from
// its own address (spoofed frames are dropped). Every live connection is in
// Server.conns until both of its sides are closed.
//
// Lock order: Server.mu, then tunLink.mu.
package net
