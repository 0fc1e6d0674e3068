package proto

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
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
	case "lane-proc", "stream-proc", "perstream-proc":
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
	case "perstream", "perstream-proc":
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

var benchModes = []string{"lane", "stream", "perstream", "tcp", "lane-proc", "stream-proc", "perstream-proc"}

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
	// Callers whose context can be cancelled (a timeout per call, as the
	// control tools give), which the bridge's never are.
	for _, mode := range []string{"lane", "lane-proc"} {
		b.Run(mode+"-ctxtimeout", func(b *testing.B) {
			c := benchClient(b, mode)
			b.ResetTimer()
			for b.Loop() {
				tctx, cancel := context.WithTimeout(ctx, time.Minute)
				_, err := c.GetAttr(tctx, 1)
				cancel()
				if err != nil {
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
	// ReadInto: the reply's data straight into the caller's buffer.
	for _, mode := range []string{"lane", "lane-proc"} {
		b.Run(mode+"-into", func(b *testing.B) {
			c := benchClient(b, mode)
			or, err := c.Open(ctx, 5, syscall.O_RDONLY)
			if err != nil {
				b.Fatal(err)
			}
			if or.File != nil {
				or.File.Close()
			}
			buf := make([]byte, size)
			b.SetBytes(size)
			b.ResetTimer()
			for b.Loop() {
				n, err := c.ReadInto(ctx, or.Handle, 0, buf)
				if err != nil || n != size {
					b.Fatal(err, n)
				}
			}
		})
	}
}

// BenchmarkRawSocket: the floor. A goroutine answers length-prefixed
// requests on a unix socket with a reply of the asked size; "-proc": in
// another process.
func BenchmarkRawSocket(b *testing.B) {
	for _, tc := range []struct {
		name  string
		reply int
	}{{"small", 88}, {"128K", 128 << 10}, {"small-proc", 88}, {"128K-proc", 128 << 10}} {
		b.Run(tc.name, func(b *testing.B) {
			var cc net.Conn
			if strings.HasSuffix(tc.name, "-proc") {
				sock := filepath.Join(b.TempDir(), "raw.sock")
				startHelper(b, "rawecho", sock, nil)
				c, err := net.Dial("unix", sock)
				if err != nil {
					b.Fatal(err)
				}
				cc = c
			} else {
				c, sc, err := socketpair()
				if err != nil {
					b.Fatal(err)
				}
				cc = c
				go rawEcho(sc)
			}
			defer cc.Close()
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

// BenchmarkInterleaved measures every call path in interleaved rounds
// (the machines are shared and noisy: only ratios from one run mean
// anything) and reports the median per path: µs per small round trip and
// MB/s for 128 KiB reads. It is the source of PROTOCOL.md's table.
func BenchmarkInterleaved(b *testing.B) {
	ctx := context.Background()
	const size = 128 << 10
	type path struct {
		name  string
		small func() error
		big   func() error
	}
	var paths []path
	for _, mode := range benchModes {
		c := benchClient(b, mode)
		or, err := c.Open(ctx, 5, syscall.O_RDONLY)
		if err != nil {
			b.Fatal(err)
		}
		if or.File != nil {
			or.File.Close()
		}
		paths = append(paths, path{
			name:  mode,
			small: func() error { _, err := c.GetAttr(ctx, 1); return err },
			big:   func() error { _, err := c.Read(ctx, or.Handle, 0, size); return err },
		})
	}
	// The raw floor, in process.
	cc, sc, err := socketpair()
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Close()
	go rawEcho(sc)
	resp := make([]byte, 4+size)
	raw := func(n int, cc net.Conn) func() error {
		var req [8]byte
		binary.LittleEndian.PutUint32(req[4:], uint32(n))
		return func() error {
			if _, err := cc.Write(req[:]); err != nil {
				return err
			}
			_, err := io.ReadFull(cc, resp[:4+n])
			return err
		}
	}
	paths = append(paths, path{name: "raw", small: raw(88, cc), big: raw(size, cc)})
	rsock := filepath.Join(b.TempDir(), "raw.sock")
	startHelper(b, "rawecho", rsock, nil)
	pc, err := net.Dial("unix", rsock)
	if err != nil {
		b.Fatal(err)
	}
	defer pc.Close()
	paths = append(paths, path{name: "raw-proc", small: raw(88, pc), big: raw(size, pc)})

	const rounds, smallN, bigN = 15, 300, 60
	smallT := map[string][]float64{}
	bigT := map[string][]float64{}
	for b.Loop() {
		for range rounds {
			for _, p := range paths {
				t0 := time.Now()
				for range smallN {
					if err := p.small(); err != nil {
						b.Fatal(p.name, err)
					}
				}
				smallT[p.name] = append(smallT[p.name], float64(time.Since(t0).Microseconds())/smallN)
				t0 = time.Now()
				for range bigN {
					if err := p.big(); err != nil {
						b.Fatal(p.name, err)
					}
				}
				bigT[p.name] = append(bigT[p.name], float64(size*bigN)/time.Since(t0).Seconds()/1e6)
			}
		}
	}
	for _, p := range paths {
		b.ReportMetric(median(smallT[p.name]), p.name+"-µs/call")
		b.ReportMetric(median(bigT[p.name]), p.name+"-128K-MB/s")
	}
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

func rawEcho(sc net.Conn) {
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
}
