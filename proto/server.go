package proto

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/yamux"
)

// ServerOptions configure a Server.
type ServerOptions struct {
	Name       string                           // for logs and the handshake
	Interfaces []string                         // default: fs, io, fsys
	AllowUids  []uint32                         // peers allowed besides the server's own euid and root (SO_PEERCRED)
	Logf       func(format string, args ...any) // nil = quiet
}

// handshakeTimeout bounds how long a new connection may take to say what it
// is, so a silent peer cannot hold a goroutine forever.
const handshakeTimeout = 10 * time.Second

// writeTimeout bounds a reply or notification write: a client that stops
// reading for that long loses its session.
const writeTimeout = 30 * time.Second

// Server serves one FileSystem to any number of sessions.
//
// Lock order: Server.mu, then session.mu.
type Server struct {
	fs   FileSystem
	opts ServerOptions
	euid uint32
	// hsTimeout is handshakeTimeout; tests shorten it.
	hsTimeout time.Duration

	mu        sync.Mutex
	closed    bool
	listeners map[net.Listener]struct{}
	sessions  map[*session]struct{}
	byCookie  map[[cookieSize]byte]*session
	conns     map[net.Conn]struct{} // connections not yet in a session
}

// NewServer returns a server of fs. If fs has a SetNotifier method, it gets
// a Notifier that broadcasts to every live session.
func NewServer(fs FileSystem, opts ServerOptions) *Server {
	if len(opts.Interfaces) == 0 {
		opts.Interfaces = []string{InterfaceFS, InterfaceIO, InterfaceFsys}
	}
	s := &Server{
		fs:        fs,
		opts:      opts,
		euid:      uint32(os.Geteuid()),
		hsTimeout: handshakeTimeout,
		listeners: make(map[net.Listener]struct{}),
		sessions:  make(map[*session]struct{}),
		byCookie:  make(map[[cookieSize]byte]*session),
		conns:     make(map[net.Conn]struct{}),
	}
	if ns, ok := fs.(NotifierSetter); ok {
		ns.SetNotifier(broadcaster{s})
	}
	return s
}

func (s *Server) logf(format string, args ...any) {
	if s.opts.Logf != nil {
		s.opts.Logf(format, args...)
	}
}

// Serve accepts connections on l until Close (then it returns nil) or an
// accept error.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		l.Close()
		return nil
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
	}()
	var backoff time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return nil
			}
			// Out of descriptors and the like: wait and retry, as
			// net/http does.
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ECONNABORTED) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		go s.ServeConn(c)
	}
}

// closeGrace is how long Close lets running requests finish and answer.
const closeGrace = time.Second

// Close stops listening, lets the requests already running finish and
// answer for up to a second (so the reply to a Goaway that made the
// program exit still leaves), then ends every session.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	ls := make([]net.Listener, 0, len(s.listeners))
	for l := range s.listeners {
		ls = append(ls, l)
	}
	ss := make([]*session, 0, len(s.sessions))
	for se := range s.sessions {
		ss = append(ss, se)
	}
	s.mu.Unlock()
	for _, l := range ls {
		l.Close()
	}
	for deadline := time.Now().Add(closeGrace); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		busy := false
		for _, se := range ss {
			busy = busy || se.inflight.Load() > 0
		}
		if !busy {
			break
		}
	}
	for _, se := range ss {
		se.end(errors.New("server closed"))
	}
	// And the connections still in their handshake.
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	return nil
}

func (s *Server) trackConn(c net.Conn, on bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if on {
		if s.closed {
			return false
		}
		s.conns[c] = struct{}{}
	} else {
		delete(s.conns, c)
	}
	return true
}

// ServeConn serves one connection: a session (yamux) or a call lane of a
// session; it returns when that ends.
func (s *Server) ServeConn(c net.Conn) {
	// Tracked until it ends, so Close reaches connections still in their
	// handshake too.
	if !s.trackConn(c, true) {
		c.Close()
		return
	}
	defer s.trackConn(c, false)
	refusal := s.checkPeer(c)
	c.SetReadDeadline(time.Now().Add(s.hsTimeout))
	br := bufio.NewReaderSize(c, 64<<10)
	magic, err := br.Peek(len(laneMagic))
	if err != nil {
		c.Close()
		return
	}
	if string(magic) == laneMagic {
		if refusal != "" {
			s.logf("proto: %s: lane refused: %s", s.opts.Name, refusal)
			c.Close()
			return
		}
		s.serveLane(c, br)
		return
	}
	s.serveSession(c, br, refusal)
}

// checkPeer applies the SO_PEERCRED rule on unix connections: the server's
// own euid, root, and AllowUids may connect. It returns why a peer is
// refused, or "".
func (s *Server) checkPeer(c net.Conn) string {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return ""
	}
	uid, err := peerUid(uc)
	if err != nil {
		return fmt.Sprintf("proto: server cannot tell the peer's uid: %v", err)
	}
	if uid == s.euid || uid == 0 || slices.Contains(s.opts.AllowUids, uid) {
		return ""
	}
	return fmt.Sprintf("proto: server refuses uid %d", uid)
}

func peerUid(uc *net.UnixConn) (uint32, error) {
	rc, err := uc.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *syscall.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if cerr != nil {
		return 0, cerr
	}
	return cred.Uid, nil
}

// bufferedConn reads through the bufio.Reader that peeked at the start.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }

func (s *Server) serveSession(c net.Conn, br *bufio.Reader, refusal string) {
	ys, err := yamux.Server(&bufferedConn{Conn: c, r: br}, yamuxConfig())
	if err != nil {
		c.Close()
		return
	}
	defer ys.Close()
	hs, err := acceptWithTimeout(ys, s.hsTimeout)
	if err != nil {
		s.logf("proto: %s: no handshake: %v", s.opts.Name, err)
		return
	}
	hs.SetDeadline(time.Now().Add(s.hsTimeout))
	var hb [8]byte
	if _, err := io.ReadFull(hs, hb[:]); err != nil {
		s.logf("proto: %s: handshake: %v", s.opts.Name, err)
		return
	}
	// The session's own deadline rules from here on, not the handshake's.
	c.SetReadDeadline(time.Time{})
	reply := &helloReply{version: Version, name: s.opts.Name}
	clientVersion := binary.LittleEndian.Uint16(hb[4:])
	switch {
	case !bytes.Equal(hb[:4], []byte("HERD")):
		s.logf("proto: %s: a peer that does not speak herd's protocol", s.opts.Name)
		return
	case refusal != "":
		reply.errno, reply.msg = uint32(syscall.EACCES), refusal
	case clientVersion != Version:
		reply.errno = uint32(syscall.EPROTONOSUPPORT)
		reply.msg = fmt.Sprintf("proto: server %q speaks version %d, client %d", s.opts.Name, Version, clientVersion)
	}
	if reply.errno != 0 {
		s.logf("%s", reply.msg)
		writeHello(hs, reply)
		return
	}

	se := s.newSession(ys, hs)
	if se == nil {
		return // server closed
	}
	reply.interfaces = s.opts.Interfaces
	reply.cookie = se.cookie[:]
	if _, ok := c.(*net.UnixConn); ok {
		reply.flags |= helloLanes
	}
	if err := writeHello(hs, reply); err != nil {
		se.end(err)
		return
	}
	hs.SetDeadline(time.Time{})
	go se.writeNotifications()
	go func() {
		for {
			st, err := ys.AcceptStream()
			if err != nil {
				se.end(err)
				return
			}
			go se.serveCalls(newFrameReader(st), newFrameWriter(st, false), st)
		}
	}()
	// The handshake stream carries notifications only; a client that
	// writes there, or closes it, is done.
	go func() {
		var b [1]byte
		_, err := hs.Read(b[:])
		if err == nil {
			err = fmt.Errorf("%w: data on the notification stream", errProtocol)
		}
		se.end(err)
	}()
	select {
	case <-ys.CloseChan():
		se.end(errors.New("connection closed"))
	case <-se.ctx.Done():
	}
}

func writeHello(w net.Conn, h *helloReply) error {
	e := newEnc(128)
	encodeHello(e, h)
	hd := header{kind: kindHello, size: uint32(len(e.body()))}
	hd.put(e.b)
	_, err := w.Write(e.b)
	return err
}

func acceptWithTimeout(ys *yamux.Session, d time.Duration) (*yamux.Stream, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return ys.AcceptStreamWithContext(ctx)
}

// serveLane attaches a call lane to its session and serves calls on it.
func (s *Server) serveLane(c net.Conn, br *bufio.Reader) {
	var hello [laneHelloSize]byte
	if _, err := io.ReadFull(br, hello[:]); err != nil {
		c.Close()
		return
	}
	c.SetReadDeadline(time.Time{})
	var cookie [cookieSize]byte
	copy(cookie[:], hello[len(laneMagic)+2:])
	version := binary.LittleEndian.Uint16(hello[len(laneMagic):])
	s.mu.Lock()
	se := s.byCookie[cookie]
	s.mu.Unlock()
	var verdict [4]byte
	if se == nil || version != Version {
		binary.LittleEndian.PutUint32(verdict[:], uint32(syscall.ENOENT))
		c.Write(verdict[:])
		c.Close()
		return
	}
	// A blocking lane to another process when it can be had (see
	// blockConn).
	var r io.Reader = br
	if uc, ok := c.(*net.UnixConn); ok && otherProcess(uc) {
		if bc, err := toBlocking(uc); err == nil {
			// What br holds already comes first.
			early, _ := br.Peek(br.Buffered())
			r = io.MultiReader(bytes.NewReader(bytes.Clone(early)), bc)
			c = bc
		}
	}
	if !se.addLane(c) {
		c.Close()
		return
	}
	if _, err := c.Write(verdict[:]); err != nil {
		se.end(err)
		return
	}
	// r may hold the first calls already: read through it, and receive
	// no descriptors (clients send none; the kernel closes any that come).
	se.serveCalls(newFrameReader(r), newFrameWriter(c, true), c)
}

// broadcaster is the Notifier given to the FileSystem.
type broadcaster struct{ s *Server }

func (b broadcaster) InvalNode(node NodeID, off, length int64) {
	b.s.broadcast(&notification{typ: notifyInvalNode, node: node, off: off, length: length})
}

func (b broadcaster) InvalEntry(parent NodeID, name string) {
	b.s.broadcast(&notification{typ: notifyInvalEntry, node: parent, name: name})
}

func (s *Server) broadcast(n *notification) {
	s.mu.Lock()
	ss := make([]*session, 0, len(s.sessions))
	for se := range s.sessions {
		ss = append(ss, se)
	}
	s.mu.Unlock()
	for _, se := range ss {
		se.queueNotification(n)
	}
}

func newCookie() [cookieSize]byte {
	var c [cookieSize]byte
	if _, err := rand.Read(c[:]); err != nil {
		panic("proto: no randomness for a session cookie: " + err.Error())
	}
	return c
}
