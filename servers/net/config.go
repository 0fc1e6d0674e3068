package net

import (
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
)

// Addresses of the subenvironment's link. They follow slirp4netns, so that
// programs and people who know it find the gateway where they expect it.
var (
	// Subnet is the single subenvironment's IPv4 subnet (nat and none modes).
	Subnet = netip.MustParsePrefix("10.0.2.0/24")
	// GuestAddr is the subenvironment's own address on eth0.
	GuestAddr = netip.MustParseAddr("10.0.2.15")
	// GatewayAddr is the default route; connections to it reach the host's
	// loopback (10.0.2.2:P is 127.0.0.1:P on the host).
	GatewayAddr = netip.MustParseAddr("10.0.2.2")
	// DNSAddr is the DNS forwarder (UDP and TCP port 53).
	DNSAddr = netip.MustParseAddr("10.0.2.3")

	// Subnet6, GuestAddr6, GatewayAddr6 (host ::1) and DNSAddr6 are the IPv6
	// counterparts.
	Subnet6      = netip.MustParsePrefix("fd00::/64")
	GuestAddr6   = netip.MustParseAddr("fd00::100")
	GatewayAddr6 = netip.MustParseAddr("fd00::2")
	DNSAddr6     = netip.MustParseAddr("fd00::3")

	// LANSubnet is the private subnet of a lan; its members get
	// LANSubnet's .15, .16, ... in the order they join. The gateway (.2)
	// and DNS forwarder (.3) work as in nat mode.
	LANSubnet  = netip.MustParsePrefix("10.0.3.0/24")
	LANGateway = netip.MustParseAddr("10.0.3.2")
	LANDNS     = netip.MustParseAddr("10.0.3.3")

	// LANSubnet6, LANGateway6 (host ::1 with nat) and LANDNS6 are a lan's
	// IPv6 counterparts. The member 10.0.3.N is fd00:0:0:3::N (N written
	// in decimal digits: 10.0.3.15 is fd00:0:0:3::15).
	LANSubnet6  = netip.MustParsePrefix("fd00:0:0:3::/64")
	LANGateway6 = netip.MustParseAddr("fd00:0:0:3::2")
	LANDNS6     = netip.MustParseAddr("fd00:0:0:3::3")
)

// LANAddr6 is the IPv6 address of the lan member whose IPv4 address is a.
func LANAddr6(a netip.Addr) netip.Addr {
	return netip.MustParseAddr(fmt.Sprintf("fd00:0:0:3::%d", a.As4()[3]))
}

// DefaultMTU is the link MTU: 65520 (the TUN maximum that keeps a 64 KiB
// segment in one packet) moves bulk data about eight times faster than 1500
// here, since the cost is per packet (see bench/net.sh).
const DefaultMTU = 65520

// Rule is one --allow or --deny: a prefix and an optional port range, matched
// against the destination the subenvironment asked for (10.0.2.2:80, not
// the host's 127.0.0.1:80).
type Rule struct {
	Prefix         netip.Prefix
	PortLo, PortHi uint16 // 0, 0: any port
	text           string
}

func (r Rule) String() string { return r.text }

// Match reports whether addr:port falls under the rule.
func (r Rule) Match(addr netip.Addr, port uint16) bool {
	if !r.Prefix.Contains(addr.Unmap()) {
		return false
	}
	return r.PortLo == 0 && r.PortHi == 0 || port >= r.PortLo && port <= r.PortHi
}

// ParseRule parses CIDR[:PORT[-PORT]]. An address without a length is a
// single host. IPv6 with a port is written [fd00::2]/128:80 or [fd00::2]:80.
func ParseRule(s string) (Rule, error) {
	r := Rule{text: s}
	addr, port := s, ""
	switch {
	case strings.HasPrefix(s, "["):
		end := strings.Index(s, "]")
		if end < 0 {
			return r, fmt.Errorf("rule %q: missing ]", s)
		}
		addr = s[1:end]
		rest := s[end+1:]
		if strings.HasPrefix(rest, "/") {
			i := strings.Index(rest, ":")
			if i < 0 {
				addr += rest
				rest = ""
			} else {
				addr += rest[:i]
				rest = rest[i:]
			}
		}
		if rest != "" {
			if !strings.HasPrefix(rest, ":") {
				return r, fmt.Errorf("rule %q: junk after address", s)
			}
			port = rest[1:]
		}
	case strings.Count(s, ":") == 1:
		i := strings.Index(s, ":")
		addr, port = s[:i], s[i+1:]
	}
	var err error
	if strings.Contains(addr, "/") {
		r.Prefix, err = netip.ParsePrefix(addr)
	} else {
		var a netip.Addr
		a, err = netip.ParseAddr(addr)
		if err == nil {
			r.Prefix = netip.PrefixFrom(a, a.BitLen())
		}
	}
	if err != nil {
		return r, fmt.Errorf("rule %q: %v", s, err)
	}
	r.Prefix = r.Prefix.Masked()
	if port != "" {
		lo, hi, ok := strings.Cut(port, "-")
		if !ok {
			hi = lo
		}
		l, err1 := strconv.ParseUint(lo, 10, 16)
		h, err2 := strconv.ParseUint(hi, 10, 16)
		if err1 != nil || err2 != nil || l == 0 || h < l {
			return r, fmt.Errorf("rule %q: bad port %q", s, port)
		}
		r.PortLo, r.PortHi = uint16(l), uint16(h)
	}
	return r, nil
}

// Publish is one --publish HOSTPORT:[ADDR:]PORT[/udp]: a listener on the
// host's 127.0.0.1:HostPort forwarded to Addr:Port inside (Addr defaults to
// the subenvironment's address).
type Publish struct {
	HostPort uint16
	Addr     netip.Addr // zero: the guest address
	Port     uint16
	UDP      bool
	text     string
}

func (p Publish) String() string { return p.text }

// ParsePublish parses HOSTPORT:PORT[/udp] or HOSTPORT:ADDR:PORT[/udp].
func ParsePublish(s string) (Publish, error) {
	p := Publish{text: s}
	spec := s
	if rest, ok := strings.CutSuffix(spec, "/udp"); ok {
		p.UDP, spec = true, rest
	} else if rest, ok := strings.CutSuffix(spec, "/tcp"); ok {
		spec = rest
	}
	hp, rest, ok := strings.Cut(spec, ":")
	if !ok {
		return p, fmt.Errorf("publish %q: want HOSTPORT:PORT[/udp]", s)
	}
	if i := strings.LastIndex(rest, ":"); i >= 0 {
		a, err := netip.ParseAddr(strings.Trim(rest[:i], "[]"))
		if err != nil {
			return p, fmt.Errorf("publish %q: %v", s, err)
		}
		p.Addr, rest = a, rest[i+1:]
	}
	h, err1 := strconv.ParseUint(hp, 10, 16)
	g, err2 := strconv.ParseUint(rest, 10, 16)
	if err1 != nil || err2 != nil || h == 0 || g == 0 {
		return p, fmt.Errorf("publish %q: ports must be 1-65535", s)
	}
	p.HostPort, p.Port = uint16(h), uint16(g)
	return p, nil
}

// Policy is what may be changed at run time (fsysopts): the allow and deny
// lists and the published ports.
type Policy struct {
	Allow, Deny []Rule
	Publish     []Publish
}

// Permit reports whether a connection to addr:port may be made: a deny rule
// always refuses; when there are allow rules, one must match.
func (p *Policy) Permit(addr netip.Addr, port uint16) bool {
	for _, r := range p.Deny {
		if r.Match(addr, port) {
			return false
		}
	}
	if len(p.Allow) == 0 {
		return true
	}
	for _, r := range p.Allow {
		if r.Match(addr, port) {
			return true
		}
	}
	return false
}

// Args gives the policy as command-line flags (GetOptions).
func (p *Policy) Args() []string {
	var out []string
	for _, r := range p.Allow {
		out = append(out, "--allow="+r.text)
	}
	for _, r := range p.Deny {
		out = append(out, "--deny="+r.text)
	}
	for _, x := range p.Publish {
		out = append(out, "--publish="+x.text)
	}
	return out
}

// PolicyFlags registers --allow, --deny and --publish on fs; call Policy
// after fs.Parse. One flag set serves the command line and SetOptions, as
// the Hurd's argp serves both.
type PolicyFlags struct {
	allow, deny, publish []string
}

func (pf *PolicyFlags) Register(fs *pflag.FlagSet) {
	fs.StringArrayVar(&pf.allow, "allow", nil, "allow connections to CIDR[:PORT[-PORT]] only (repeatable; any --allow makes an allowlist)")
	fs.StringArrayVar(&pf.deny, "deny", nil, "refuse connections to CIDR[:PORT[-PORT]] (repeatable; wins over --allow)")
	fs.StringArrayVar(&pf.publish, "publish", nil, "forward host 127.0.0.1:HOSTPORT to PORT inside: HOSTPORT:[ADDR:]PORT[/udp] (repeatable)")
}

// Policy builds the parsed policy.
func (pf *PolicyFlags) Policy() (Policy, error) {
	var p Policy
	for _, s := range pf.allow {
		r, err := ParseRule(s)
		if err != nil {
			return p, err
		}
		p.Allow = append(p.Allow, r)
	}
	for _, s := range pf.deny {
		r, err := ParseRule(s)
		if err != nil {
			return p, err
		}
		p.Deny = append(p.Deny, r)
	}
	for _, s := range pf.publish {
		x, err := ParsePublish(s)
		if err != nil {
			return p, err
		}
		p.Publish = append(p.Publish, x)
	}
	return p, nil
}

// ParsePolicy parses policy flags alone (what SetOptions receives). Flags
// it does not know are an error.
func ParsePolicy(args []string) (Policy, error) {
	fs := pflag.NewFlagSet("herd-net", pflag.ContinueOnError)
	fs.SetOutput(discard{})
	var pf PolicyFlags
	pf.Register(fs)
	if err := fs.Parse(args); err != nil {
		return Policy{}, err
	}
	if fs.NArg() > 0 {
		return Policy{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return pf.Policy()
}

type discard struct{}

func (discard) Write(b []byte) (int, error) { return len(b), nil }

func uidSelf() int { return os.Getuid() }
func gidSelf() int { return os.Getgid() }
