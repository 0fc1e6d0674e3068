package proto

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"path/filepath"
	"syscall"
	"testing"
)

// Benchmarks of the call paths. "lane" is what Dial uses on a unix socket;
// "stream" is tagged frames on one long-lived yamux stream (what TCP gets);
// "perstream" opens a yamux stream per call (the design we measured and
// rejected); "-proc" variants run the server in another process, as in
// real use. BenchmarkRawSocket is the floor: bare length-prefixed frames on
// a unix socket, no runtime at all.

func benchClient(b *testing.B, mode string) *Client {
	b.Helper()
	fs := newTestFS(b)
	fs.fast = make([]byte, 1<<20)
	var sock string
	switch mode {
	case "lane-proc", "stream-proc":
		sock = filepath.Join(b.TempDir(), "b.sock")
		startHelperServer(b, sock, nil)
	case "tcp":
		_, addr := serveTCP(b, fs, ServerOptions{})
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		c, err := NewClient(conn, ClientOptions{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		return c
	default:
		_, sock = serveUnix(b, fs, ServerOptions{})
	}
	var opts ClientOptions
	switch mode {
	case "stream", "stream-proc":
		opts.calls = callsStream
	case "perstream":
		opts.calls = callsPerStream
	}
	conn, err := net.Dial("unix", sock)
	if err != nil {
		b.Fatal(err)
	}
	c, err := NewClient(conn, opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}

var benchModes = []string{"lane", "stream", "perstream", "tcp", "lane-proc", "stream-proc"}

// BenchmarkRoundTripSmall: GetAttr, 16-byte request, 88-byte reply.
func BenchmarkRoundTripSmall(b *testing.B) {
	ctx := context.Background()
	for _, mode := range benchModes {
		b.Run(mode, func(b *testing.B) {
			c := benchClient(b, mode)
			b.ResetTimer()
			for b.Loop() {
				if _, err := c.GetAttr(ctx, 1); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
		})
	}
	for _, mode := range []string{"lane", "stream", "perstream", "lane-proc"} {
		b.Run(mode+"-8clients", func(b *testing.B) {
			c := benchClient(b, mode)
			b.SetParallelism(8)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := c.GetAttr(ctx, 1); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
		})
	}
}

// BenchmarkRead128K: Read of 128 KiB on an open handle.
func BenchmarkRead128K(b *testing.B) {
	ctx := context.Background()
	const size = 128 << 10
	for _, mode := range benchModes {
		b.Run(mode, func(b *testing.B) {
			c := benchClient(b, mode)
			or, err := c.Open(ctx, 5, syscall.O_RDONLY)
			if err != nil {
				b.Fatal(err)
			}
			if or.File != nil {
				or.File.Close()
			}
			b.SetBytes(size)
			b.ResetTimer()
			for b.Loop() {
				data, err := c.Read(ctx, or.Handle, 0, size)
				if err != nil || len(data) != size {
					b.Fatal(err, len(data))
				}
			}
		})
	}
}

// BenchmarkRawSocket: the floor. A goroutine answers length-prefixed
// requests on a unix socket with a reply of the asked size.
func BenchmarkRawSocket(b *testing.B) {
	for _, tc := range []struct {
		name  string
		reply int
	}{{"small", 88}, {"128K", 128 << 10}} {
		b.Run(tc.name, func(b *testing.B) {
			cc, sc, err := socketpair()
			if err != nil {
				b.Fatal(err)
			}
			defer cc.Close()
			go func() {
				defer sc.Close()
				var hdr [8]byte
				buf := make([]byte, 4+(1<<20))
				for {
					if _, err := io.ReadFull(sc, hdr[:]); err != nil {
						return
					}
					n := binary.LittleEndian.Uint32(hdr[4:])
					binary.LittleEndian.PutUint32(buf, n)
					if _, err := sc.Write(buf[:4+n]); err != nil {
						return
					}
				}
			}()
			var req [8]byte
			binary.LittleEndian.PutUint32(req[4:], uint32(tc.reply))
			resp := make([]byte, 4+tc.reply)
			if tc.reply > 1000 {
				b.SetBytes(int64(tc.reply))
			}
			b.ResetTimer()
			for b.Loop() {
				if _, err := cc.Write(req[:]); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(cc, resp); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
		})
	}
}
