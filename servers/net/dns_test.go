package net

import (
	"encoding/binary"
	"fmt"
	stdnet "net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// fakeResolver answers A queries for good.test with 192.0.2.7 and sends
// garbage for bad.test, on UDP at 127.0.0.1.
func fakeResolver(t *testing.T) string {
	pc, err := stdnet.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		b := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(b)
			if err != nil {
				return
			}
			q := b[:n]
			if n < 12 {
				continue
			}
			end, ok := skipName(q, 12)
			if !ok || end+4 > n {
				continue
			}
			qtype := binary.BigEndian.Uint16(q[end:])
			name := strings.ToLower(string(q[12:end]))
			if strings.Contains(name, "bad") {
				pc.WriteTo([]byte{q[0], q[1], 0x81, 0x80, 0, 5, 0, 9, 0xff}, from)
				continue
			}
			r := append([]byte{}, q[:end+4]...)
			r[2], r[3] = 0x81, 0x80
			binary.BigEndian.PutUint16(r[6:], 0)
			binary.BigEndian.PutUint16(r[8:], 0)
			binary.BigEndian.PutUint16(r[10:], 0)
			if qtype == 1 {
				binary.BigEndian.PutUint16(r[6:], 1)
				r = append(r, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 7)
			}
			pc.WriteTo(r, from)
		}
	}()
	return pc.LocalAddr().String()
}

func TestDNSForwarder(t *testing.T) {
	bb := need(t, "busybox")
	res := fakeResolver(t)
	srv, ns := natNS(t, Options{NAT: true, Resolver: res}, DefaultMTU)
	out, code, err := ns.Run(time.Minute, bb, "nslookup", "good.test", "10.0.2.3")
	if err != nil || code != 0 || !strings.Contains(out, "192.0.2.7") {
		t.Fatalf("nslookup good.test: exit %d %v:\n%s", code, err, out)
	}
	out, code, _ = ns.Run(2*time.Minute, bb, "nslookup", "bad.test", "10.0.2.3")
	if code == 0 {
		t.Fatalf("nslookup bad.test succeeded on a garbage reply:\n%s", out)
	}
	if st := srv.Stats(); st.DNSBadReplies == 0 || st.DNSQueries < 2 {
		t.Fatalf("dns counters: queries %d bad replies %d", st.DNSQueries, st.DNSBadReplies)
	}
}

func TestValidDNS(t *testing.T) {
	good := []byte{0, 1, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0,
		4, 'g', 'o', 'o', 'd', 0, 0, 1, 0, 1,
		0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 1, 2, 3, 4}
	if !validDNS(good) {
		t.Fatal("a good reply does not parse")
	}
	for i := 0; i < len(good); i++ {
		if validDNS(good[:i]) {
			t.Fatalf("reply cut at %d parses", i)
		}
	}
	bad := append([]byte{}, good...)
	bad[23] = 200 // pointer out of the message
	if validDNS(bad) {
		t.Fatal("pointer beyond the message parses")
	}
}

func FuzzValidDNS(f *testing.F) {
	f.Add([]byte{0, 1, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0, 4, 'g', 'o', 'o', 'd', 0, 0, 1, 0, 1, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 1, 2, 3, 4})
	f.Add([]byte{0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) { validDNS(b) })
}

func FuzzParseIP(f *testing.F) {
	f.Add(rawIPv4("10.0.2.15", "10.0.2.2", 17, []byte("x")))
	f.Add([]byte{0x60, 0, 0, 0, 0, 0, 17, 64})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, src, dst, ok := parseIP(b, len(b))
		if ok && (!src.IsValid() || !dst.IsValid()) {
			t.Fatal("ok without addresses")
		}
	})
}

func FuzzParseRule(f *testing.F) {
	for _, s := range []string{"10.0.0.0/8", "10.0.2.2:80", "10.0.2.2/32:8000-8100", "[fd00::2]:80", "[fd00::]/64:53", "fd00::1", "x:y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRule(s)
		if err == nil && !r.Prefix.IsValid() {
			t.Fatalf("%q parsed to an invalid prefix", s)
		}
	})
}

func FuzzParsePublish(f *testing.F) {
	for _, s := range []string{"8080:80", "5353:53/udp", "8080:10.0.3.16:80", "0:1", "a:b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePublish(s)
		if err == nil && (p.HostPort == 0 || p.Port == 0) {
			t.Fatalf("%q parsed to port 0", s)
		}
	})
}

func TestParseRule(t *testing.T) {
	for _, c := range []struct {
		rule, addr string
		port       uint16
		match      bool
	}{
		{"10.0.0.0/8", "10.1.2.3", 99, true},
		{"10.0.0.0/8", "11.1.2.3", 99, false},
		{"10.0.2.2:80", "10.0.2.2", 80, true},
		{"10.0.2.2:80", "10.0.2.2", 81, false},
		{"10.0.2.0/24:8000-8100", "10.0.2.9", 8050, true},
		{"10.0.2.0/24:8000-8100", "10.0.2.9", 8101, false},
		{"[fd00::2]:80", "fd00::2", 80, true},
		{"fd00::/64", "fd00::99", 1, true},
		{"[fd00::]/64:53", "fd00::3", 53, true},
	} {
		r, err := ParseRule(c.rule)
		if err != nil {
			t.Errorf("%s: %v", c.rule, err)
			continue
		}
		a, _ := stdnetParse(c.addr)
		if got := r.Match(a, c.port); got != c.match {
			t.Errorf("%s matches %s:%d = %v", c.rule, c.addr, c.port, got)
		}
	}
	for _, bad := range []string{"", "10.0.0.0/33", "10.0.2.2:0", "10.0.2.2:9-8", "[fd00::2", "host:80"} {
		if _, err := ParseRule(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	for _, bad := range []string{"80", "0:80", "80:0", "x:80", "8080:nothere:80"} {
		if _, err := ParsePublish(bad); err == nil {
			t.Errorf("publish %q parsed", bad)
		}
	}
}

var _ = fmt.Sprint

func stdnetParse(s string) (netip.Addr, error) { return netip.ParseAddr(s) }
