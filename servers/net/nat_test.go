package net

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	stdnet "net"
	"net/http"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"herd/subenv/netattach"
	"herd/subenv/netattach/nstest"
)

// blob is a deterministic pseudo-random stream of n bytes.
type blob struct{ n, off int64 }

func (b *blob) Read(p []byte) (int, error) {
	if b.off >= b.n {
		return 0, io.EOF
	}
	if int64(len(p)) > b.n-b.off {
		p = p[:b.n-b.off]
	}
	for i := range p {
		x := uint64(b.off + int64(i))
		x ^= x >> 7
		x *= 0x9E3779B97F4A7C15
		p[i] = byte(x >> 56)
	}
	b.off += int64(len(p))
	return len(p), nil
}

func blobSum(n int64) string {
	h := sha256.New()
	io.Copy(h, &blob{n: n})
	return hex.EncodeToString(h.Sum(nil))
}

// hostHTTP starts an HTTP server on the host's 127.0.0.1 serving /page,
// /blob/N (N pseudo-random bytes) and /sum (the SHA-256 of what is
// posted).
func hostHTTP(t *testing.T) (port int) {
	t.Helper()
	ln, err := stdnet.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/page", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from the host, %s\n", r.RemoteAddr)
	})
	mux.HandleFunc("/sum", func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		io.Copy(h, r.Body)
		fmt.Fprintln(w, hex.EncodeToString(h.Sum(nil)))
	})
	mux.HandleFunc("/blob/{n}", func(w http.ResponseWriter, r *http.Request) {
		var n int64
		fmt.Sscan(r.PathValue("n"), &n)
		w.Header().Set("Content-Length", fmt.Sprint(n))
		io.Copy(w, &blob{n: n})
	})
	hs := &http.Server{Handler: mux}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return ln.Addr().(*stdnet.TCPAddr).Port
}

func need(t *testing.T, prog string) string {
	t.Helper()
	p, err := exec.LookPath(prog)
	if err != nil {
		t.Fatalf("%s is required (Debian package %s): %v", prog, prog, err)
	}
	return p
}

// natNS starts a namespace with a nat-mode TUN (with the virtio-net
// header, as netattach makes it for herd-net) attached to a new in-process
// server.
func natNS(t *testing.T, opts Options, mtu int) (*Server, *nstest.NS) {
	t.Helper()
	return natNSWith(t, opts, netattach.ServerConfig("eth0", mtu))
}

// natNSWith is natNS with the TUN made as cfg says.
func natNSWith(t *testing.T, opts Options, cfg netattach.TUNConfig) (*Server, *nstest.NS) {
	t.Helper()
	mtu := cfg.MTU
	ns, err := nstest.Start(nstest.Options{TUN: &cfg})
	if err != nil {
		t.Fatal(err)
	}
	opts.MTU = mtu
	srv, err := New(opts)
	if err != nil {
		ns.Close()
		t.Fatal(err)
	}
	if _, err := srv.AddMemberFile(ns.TUN); err != nil {
		t.Fatal(err)
	}
	ns.TUN = nil
	t.Cleanup(func() {
		ns.Close()
		srv.Close()
	})
	return srv, ns
}

// TestNATFetch: a page and 200 MB from the host and the same 200 MB back
// (the host checks what arrives), over a TUN with the offloads (checksums
// left undone, TCP super-packets both ways: at MTU 1500 every data packet
// is one) and over a plain one (as a --net PROG gets).
func TestNATFetch(t *testing.T) {
	curl := need(t, "curl")
	port := hostHTTP(t)
	for _, c := range []struct {
		name string
		cfg  netattach.TUNConfig
	}{
		{"offloads", netattach.ServerConfig("eth0", DefaultMTU)},
		{"offloads-mtu1500", netattach.ServerConfig("eth0", 1500)},
		{"plain", netattach.NATConfig("eth0", DefaultMTU)},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv, ns := natNSWith(t, Options{NAT: true}, c.cfg)
			if link := srv.firstLink(); link == nil || link.vnet != c.cfg.VNetHdr || link.gsoRX != c.cfg.VNetHdr {
				t.Fatalf("link offloads: %+v, want vnet and TSO %v", link, c.cfg.VNetHdr)
			}
			out, code, err := ns.Run(time.Minute, curl, "-sS", fmt.Sprintf("http://10.0.2.2:%d/page", port))
			if err != nil || code != 0 {
				t.Fatalf("curl: %v (exit %d): %s", err, code, out)
			}
			if !strings.HasPrefix(out, "hello from the host") {
				t.Fatalf("page: %q", out)
			}
			const size = 200 << 20
			want := blobSum(size)
			out, code, err = ns.Run(5*time.Minute, "sh", "-c", fmt.Sprintf("%[1]s -sS http://10.0.2.2:%[2]d/blob/%[3]d | sha256sum; %[1]s -sS http://10.0.2.2:%[2]d/blob/%[3]d | %[1]s -sS -T - http://10.0.2.2:%[2]d/sum", curl, port, size))
			if err != nil || code != 0 {
				t.Fatalf("curl blob: %v (exit %d): %s", err, code, out)
			}
			f := strings.Fields(out)
			if len(f) < 3 || f[0] != want || f[2] != want {
				t.Fatalf("200 MB down and up: got %q, want %s twice", out, want)
			}
		})
	}
}

// wrappedConn is a host connection as a wrapping server's Dial may
// return it: not a *net.TCPConn.
type wrappedConn struct{ stdnet.Conn }

// TestNATWrappedDial: a Dial returning its own net.Conn is spliced through
// its Read and Write; 20 MB down and back up arrive whole.
func TestNATWrappedDial(t *testing.T) {
	curl := need(t, "curl")
	port := hostHTTP(t)
	var dials atomic.Int32
	dial := func(ctx context.Context, f Flow) (stdnet.Conn, error) {
		var d stdnet.Dialer
		c, err := d.DialContext(ctx, f.Network, f.Target)
		if err != nil {
			return nil, err
		}
		dials.Add(1)
		return wrappedConn{c}, nil
	}
	_, ns := natNS(t, Options{NAT: true, Dial: dial}, DefaultMTU)
	const size = 20 << 20
	want := blobSum(size)
	out, code, err := ns.Run(5*time.Minute, "sh", "-c", fmt.Sprintf("%[1]s -sS http://10.0.2.2:%[2]d/blob/%[3]d | %[1]s -sS -T - http://10.0.2.2:%[2]d/sum", curl, port, size))
	if err != nil || code != 0 || strings.TrimSpace(out) != want {
		t.Fatalf("20 MB down and up through a wrapped conn: exit %d %v %q, want %s", code, err, out, want)
	}
	if dials.Load() != 2 {
		t.Fatalf("Dial called %d times, want 2", dials.Load())
	}
}

func TestNATIPv6(t *testing.T) {
	curl := need(t, "curl")
	ln, err := stdnet.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Fatalf("the host has no IPv6 loopback: %v", err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "v6 %s\n", r.URL.Path)
	})}
	go hs.Serve(ln)
	defer hs.Close()
	port := ln.Addr().(*stdnet.TCPAddr).Port
	_, ns := natNS(t, Options{NAT: true}, DefaultMTU)
	var out string
	var code int
	// IPv6 on a fresh link may need a moment before the address is usable.
	for i := 0; i < 100; i++ {
		out, code, err = ns.Run(time.Minute, curl, "-sS", "-g", fmt.Sprintf("http://[fd00::2]:%d/six", port))
		if err != nil {
			t.Fatal(err)
		}
		if code == 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code != 0 || out != "v6 /six\n" {
		t.Fatalf("curl over IPv6: exit %d %q", code, out)
	}
}

// TestPingGateway: the gateway answers ICMP echo (IPv4 and IPv6).
func TestPingGateway(t *testing.T) {
	bb := need(t, "busybox")
	_, ns := natNS(t, Options{NAT: true}, DefaultMTU)
	for _, a := range []string{"10.0.2.2", "fd00::2"} {
		out, code, err := ns.Run(time.Minute, bb, "ping", "-c", "1", "-W", "10", a)
		if err != nil || code != 0 {
			t.Fatalf("ping %s: exit %d %v\n%s", a, code, err, out)
		}
	}
}

// firstLink is the link of the lowest member (tests).
func (s *Server) firstLink() *tunLink {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.members[s.firstMemberLocked()]
	if m == nil {
		return nil
	}
	return m.link
}
