package net

import (
	"encoding/binary"
	"io"
	stdnet "net"
	"sync"
	"time"
)

// validDNS reports whether b parses as a DNS message: a header and every
// question and resource record it announces, each within bounds. It does
// not follow compression pointers (only checks they point inside b).
func validDNS(b []byte) bool {
	if len(b) < 12 {
		return false
	}
	counts := [4]int{
		int(binary.BigEndian.Uint16(b[4:])),
		int(binary.BigEndian.Uint16(b[6:])),
		int(binary.BigEndian.Uint16(b[8:])),
		int(binary.BigEndian.Uint16(b[10:])),
	}
	off := 12
	for sec, n := range counts {
		for i := 0; i < n; i++ {
			var ok bool
			off, ok = skipName(b, off)
			if !ok {
				return false
			}
			fixed := 4
			if sec > 0 {
				fixed = 10
			}
			if off+fixed > len(b) {
				return false
			}
			if sec > 0 {
				rdlen := int(binary.BigEndian.Uint16(b[off+8:]))
				off += fixed + rdlen
				if off > len(b) {
					return false
				}
			} else {
				off += fixed
			}
		}
	}
	return true
}

func skipName(b []byte, off int) (int, bool) {
	total := 0
	for {
		if off >= len(b) {
			return 0, false
		}
		l := int(b[off])
		switch {
		case l == 0:
			return off + 1, true
		case l&0xc0 == 0xc0:
			if off+1 >= len(b) {
				return 0, false
			}
			ptr := int(binary.BigEndian.Uint16(b[off:]) & 0x3fff)
			if ptr >= len(b) {
				return 0, false
			}
			return off + 2, true
		case l&0xc0 != 0:
			return 0, false // reserved label types
		}
		total += l + 1
		if total > 255 {
			return 0, false
		}
		off += 1 + l
	}
}

// newDNSFilter returns the filter of one DNS flow: queries are counted and
// their IDs remembered; a reply must parse and answer a query we sent.
func (s *Server) newDNSFilter() func(b []byte, toHost bool) bool {
	var mu sync.Mutex
	pending := map[uint16]time.Time{}
	return func(b []byte, toHost bool) bool {
		if toHost {
			if len(b) < 12 {
				return false
			}
			s.stats.dnsQueries.Add(1)
			mu.Lock()
			pending[binary.BigEndian.Uint16(b)] = time.Now()
			mu.Unlock()
			return true
		}
		if !validDNS(b) || b[2]&0x80 == 0 {
			s.stats.dnsBadReplies.Add(1)
			return false
		}
		id := binary.BigEndian.Uint16(b)
		mu.Lock()
		_, ok := pending[id]
		delete(pending, id)
		mu.Unlock()
		if !ok {
			s.stats.dnsBadReplies.Add(1)
		}
		return ok
	}
}

// relayDNSTCP relays DNS over TCP message by message (two-byte length
// prefix), so replies can be checked like UDP ones.
func (s *Server) relayDNSTCP(guest, host stdnet.Conn, c *Conn) {
	filter := s.newDNSFilter()
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer guest.Close()
		for {
			m, err := readDNSTCP(host)
			if err != nil {
				return
			}
			if !filter(m, false) {
				continue
			}
			if writeDNSTCP(guest, m) != nil {
				return
			}
			c.In.Add(uint64(len(m) + 2))
		}
	}()
	for {
		guest.SetReadDeadline(time.Now().Add(udpIdle))
		m, err := readDNSTCP(guest)
		if err != nil || !filter(m, true) {
			break
		}
		if writeDNSTCP(host, m) != nil {
			break
		}
		c.Out.Add(uint64(len(m) + 2))
	}
	host.Close()
	<-done
}

func readDNSTCP(r io.Reader) ([]byte, error) {
	var l [2]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return nil, err
	}
	m := make([]byte, binary.BigEndian.Uint16(l[:]))
	_, err := io.ReadFull(r, m)
	return m, err
}

func writeDNSTCP(w io.Writer, m []byte) error {
	b := make([]byte, 2+len(m))
	binary.BigEndian.PutUint16(b, uint16(len(m)))
	copy(b[2:], m)
	_, err := w.Write(b)
	return err
}
