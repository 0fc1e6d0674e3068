package proto

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
)

// rawSession does the handshake by hand and attaches a lane, so a test can
// then write anything it likes on the lane.
func rawSession(t *testing.T, sock string) (*yamux.Session, net.Conn) {
	t.Helper()
	conn, err := net.Dial("unix", sock)
	noErr(t, "dial", err)
	ys, err := yamux.Client(conn, yamuxConfig())
	noErr(t, "yamux", err)
	t.Cleanup(func() { ys.Close() })
	hs, err := ys.OpenStream()
	noErr(t, "open stream", err)
	hb := []byte("HERD\x01\x00\x00\x00")
	_, err = hs.Write(hb)
	noErr(t, "hello", err)
	m, err := newFrameReader(hs).read()
	noErr(t, "hello reply", err)
	h, err := decodeHello(m.body)
	noErr(t, "decode hello", err)
	if h.errno != 0 || h.flags&helloLanes == 0 {
		t.Fatalf("hello: %+v", h)
	}
	lane, err := net.Dial("unix", sock)
	noErr(t, "dial lane", err)
	t.Cleanup(func() { lane.Close() })
	noErr(t, "attach lane", attachLane(lane, h.cookie, time.Now().Add(time.Minute)))
	return ys, lane
}

// expectClosed waits until the server closes c (reads see EOF or reset).
func expectClosed(t *testing.T, what string, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(time.Minute))
	_, err := io.Copy(io.Discard, c)
	if errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET) {
		err = nil
	}
	if err != nil {
		t.Errorf("%s: the server did not close the connection: %v", what, err)
	}
}

func frame(h header, body []byte) []byte {
	b := make([]byte, headerSize, headerSize+len(body))
	h.size = uint32(len(body))
	h.put(b)
	return append(b, body...)
}

// TestMalformedInput: garbage ends the session that sent it, never the
// server, and never another session.
func TestMalformedInput(t *testing.T) {
	fs := newTestFS(t)
	srv := NewServer(fs, ServerOptions{Name: "victim"})
	srv.hsTimeout = time.Second // for the peer that never says hello
	_, sock := serveUnixWith(t, srv)
	good, err := Dial(sock, ClientOptions{})
	noErr(t, "dial", err)
	defer good.Close()
	check := func(what string) {
		t.Helper()
		if _, err := good.GetAttr(context.Background(), 1); err != nil {
			t.Fatalf("after %s, the good client fails: %v", what, err)
		}
	}

	// Not our protocol at all.
	for _, junk := range [][]byte{
		[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		bytes.Repeat([]byte{0}, 100),
		[]byte("HERDFD\x01\x00 a wrong cookie......."),
		[]byte("HERDF"),
	} {
		c, err := net.Dial("unix", sock)
		noErr(t, "dial", err)
		c.Write(junk)
		if len(junk) < 6 {
			c.(*net.UnixConn).CloseWrite()
		}
		expectClosed(t, "junk "+string(junk), c)
		c.Close()
		check("junk")
	}

	// A session that speaks well first, then sends bad frames on its lane.
	lookup := newEnc(32)
	encodeRequest(lookup, &request{op: opLookup, node: 1, name: "x"})
	bad := map[string][]byte{
		"bad kind":        frame(header{tag: 1, op: opLookup, kind: 9}, lookup.body()),
		"unknown flags":   frame(header{tag: 1, op: opLookup, kind: kindRequest, flags: 0x80}, lookup.body()),
		"reply kind":      frame(header{tag: 1, op: opLookup, kind: kindReply}, nil),
		"truncated body":  frame(header{tag: 1, op: opLookup, kind: kindRequest}, lookup.body()[:10]),
		"trailing bytes":  frame(header{tag: 1, op: opLookup, kind: kindRequest}, append(lookup.body(), 1)),
		"string too long": frame(header{tag: 1, op: opLookup, kind: kindRequest}, []byte{1, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f}),
		"fd flag":         frame(header{tag: 1, op: opLookup, kind: kindRequest, flags: flagFD}, lookup.body()),
		"oversized": func() []byte {
			b := make([]byte, headerSize)
			(&header{size: MaxFrame + 1, tag: 1, op: opWrite, kind: kindRequest}).put(b)
			return b
		}(),
		"bad continuation": append(frame(header{tag: 1, op: opLookup, kind: kindRequest, flags: flagMore}, lookup.body()[:8]),
			frame(header{tag: 2, op: opLookup, kind: kindRequest}, lookup.body()[8:])...),
	}
	for what, b := range bad {
		ys, lane := rawSession(t, sock)
		if _, err := lane.Write(b); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		expectClosed(t, what, lane)
		select {
		case <-ys.CloseChan():
		case <-time.After(time.Minute):
			t.Errorf("%s: the session's connection stayed open", what)
		}
		check(what)
	}

	// An op this server does not know is answered ENOSYS; the session
	// stays.
	_, lane := rawSession(t, sock)
	lane.Write(frame(header{tag: 7, op: 999, kind: kindRequest}, []byte("future")))
	lane.Write(frame(header{tag: 8, op: opGetAttr, kind: kindRequest}, binary.LittleEndian.AppendUint64(nil, 3)))
	fr := newFrameReader(lane)
	lane.SetReadDeadline(time.Now().Add(time.Minute))
	seen := map[uint32]uint32{}
	for range 2 {
		m, err := fr.read()
		noErr(t, "reply", err)
		seen[m.tag] = m.status
	}
	if seen[7] != uint32(syscall.ENOSYS) || seen[8] != 0 {
		t.Errorf("replies: %v", seen)
	}
	check("unknown op")
}

// TestVersionMismatch: a client of another version gets a clear refusal.
func TestVersionMismatch(t *testing.T) {
	_, sock := serveUnix(t, newTestFS(t), ServerOptions{Name: "v1"})
	conn, err := net.Dial("unix", sock)
	noErr(t, "dial", err)
	ys, err := yamux.Client(conn, yamuxConfig())
	noErr(t, "yamux", err)
	defer ys.Close()
	hs, err := ys.OpenStream()
	noErr(t, "open stream", err)
	// The refusing server answers and hangs up at once, so yamux may report
	// its shutdown for the hello it did send (Client.handshake allows for
	// it too): the reply is what counts.
	if _, err = hs.Write([]byte("HERD\x07\x00\x00\x00")); err != nil && !errors.Is(err, yamux.ErrSessionShutdown) {
		t.Fatalf("hello: %v", err)
	}
	m, err := newFrameReader(hs).read()
	noErr(t, "hello reply", err)
	h, err := decodeHello(m.body)
	noErr(t, "decode hello", err)
	if h.errno != uint32(syscall.EPROTONOSUPPORT) || h.msg != `proto: server "v1" speaks version 1, client 7` {
		t.Errorf("hello: %+v", h)
	}
}

// TestClientRejectsGarbage: a "server" that answers nonsense gives a clear
// error, not a hang or a panic.
func TestClientRejectsGarbage(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "liar.sock")
	l, err := net.Listen("unix", sock)
	noErr(t, "listen", err)
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.Write([]byte("SSH-2.0-OpenSSH_9.2\r\n"))
				io.Copy(io.Discard, c)
			}()
		}
	}()
	_, err = Dial(sock, ClientOptions{Timeout: 10 * time.Second})
	if err == nil {
		t.Fatal("Dial of a non-herd server succeeded")
	}
	t.Logf("error: %v", err)
}
