package net

import (
	"fmt"
	"strings"
	"time"
)

// Stats are the server's counters, as /stats shows them.
type Stats struct {
	Members int
	// Frames the link dropped: not IP, cut short or lying about their
	// length (Malformed), longer than the MTU (Oversized), or sent from an
	// address that is not the member's (Spoofed).
	Malformed, Oversized, Spoofed uint64
	// Packets the IP and transport layers dropped as malformed (bad
	// header, checksum, length).
	StackMalformed uint64
	// Refused: connections refused by policy or because their destination
	// may not leave; DialFailed: the host connect failed.
	Refused, DialFailed                 uint64
	TCPConnections, UDPFlows, Published uint64
	DNSQueries, DNSBadReplies           uint64
	TxErrors                            uint64
	RxPackets, TxPackets                uint64
	LiveConnections                     int
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	st := Stats{
		Malformed:      s.stats.malformed.Load(),
		Oversized:      s.stats.oversized.Load(),
		Spoofed:        s.stats.spoofed.Load(),
		Refused:        s.stats.refused.Load(),
		DialFailed:     s.stats.dialFailed.Load(),
		TCPConnections: s.stats.tcpConns.Load(),
		UDPFlows:       s.stats.udpFlows.Load(),
		Published:      s.stats.published.Load(),
		DNSQueries:     s.stats.dnsQueries.Load(),
		DNSBadReplies:  s.stats.dnsBadReplies.Load(),
		TxErrors:       s.stats.txErrors.Load(),
	}
	ss := s.stack.Stats()
	st.StackMalformed = ss.IP.MalformedPacketsReceived.Value() +
		ss.IP.MalformedFragmentsReceived.Value() +
		ss.TCP.ChecksumErrors.Value() +
		ss.TCP.InvalidSegmentsReceived.Value() +
		ss.UDP.ChecksumErrors.Value() +
		ss.UDP.MalformedPacketsReceived.Value() +
		ss.ICMP.V4.PacketsReceived.Invalid.Value() +
		ss.ICMP.V6.PacketsReceived.Invalid.Value()
	s.mu.Lock()
	st.Members = len(s.members)
	for _, m := range s.members {
		if m.link == nil {
			continue
		}
		st.RxPackets += m.link.rxPackets.Load()
		st.TxPackets += m.link.txPackets.Load()
	}
	s.mu.Unlock()
	s.conns.Range(func(_, _ any) bool { st.LiveConnections++; return true })
	return st
}

// Text renders the counters as "name value" lines.
func (st Stats) Text() string {
	var b strings.Builder
	p := func(k string, v any) { fmt.Fprintf(&b, "%s %v\n", k, v) }
	p("members", st.Members)
	p("rx_packets", st.RxPackets)
	p("tx_packets", st.TxPackets)
	p("dropped_malformed", st.Malformed)
	p("dropped_oversized", st.Oversized)
	p("dropped_spoofed", st.Spoofed)
	p("dropped_stack_malformed", st.StackMalformed)
	p("refused", st.Refused)
	p("dial_failed", st.DialFailed)
	p("tcp_connections", st.TCPConnections)
	p("udp_flows", st.UDPFlows)
	p("published_connections", st.Published)
	p("dns_queries", st.DNSQueries)
	p("dns_bad_replies", st.DNSBadReplies)
	p("tx_errors", st.TxErrors)
	p("live_connections", st.LiveConnections)
	return b.String()
}

// ConnectionsText renders the live connections, one a line:
// ID PROTO SRC DST TARGET AGE BYTES_IN BYTES_OUT.
func (s *Server) ConnectionsText() string {
	var b strings.Builder
	now := time.Now()
	for _, c := range s.Connections() {
		fmt.Fprintf(&b, "%d %s %s %s %s %ds in=%d out=%d\n", c.ID, c.Flow.Network, c.Flow.Src, c.Flow.Dst,
			c.Flow.Target, int(now.Sub(c.Start).Seconds()), c.In.Load(), c.Out.Load())
	}
	return b.String()
}
