package net

import (
	"errors"
	"io"
	stdnet "net"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// rawStream is a host connection the splice can use at its descriptor:
// a *net.TCPConn, or a *hostTCP.
type rawStream interface {
	SyscallConn() (syscall.RawConn, error)
	CloseWrite() error
}

// guestTCP is the stack's side of a TCP connection: the endpoint and its
// wait queue, used directly rather than through gonet so that data moves
// between the stack's buffers and the host socket with one copy (the
// kernel's) instead of two, and without gonet's deadline machinery.
type guestTCP struct {
	ep   tcpip.Endpoint
	wq   *waiter.Queue
	done chan struct{} // closed by Close: wakes the splice's waits
	once sync.Once
	// calls owns the endpoint's packets: the member's TUN queue writes
	// those sent from inside our calls at once (see txQueue).
	calls userCalls
}

func newGuestTCP(ep tcpip.Endpoint, wq *waiter.Queue) *guestTCP {
	g := &guestTCP{ep: ep, wq: wq, done: make(chan struct{})}
	// The endpoint is live already (the handshake is done), so its TCP
	// processor may be sending an ACK, and reading the owner, right now.
	// SetOwner takes no lock; the processor reads under the endpoint's.
	// Unlocked, the two-word interface could be read half written: a
	// typed nil *userCalls, which crashed the TUN queue (txQueue) once
	// under load.
	if te, ok := ep.(*tcp.Endpoint); ok {
		te.LockUser()
		ep.SetOwner(&g.calls)
		te.UnlockUser()
	} else {
		ep.SetOwner(&g.calls)
	}
	return g
}

func (g *guestTCP) Close() error {
	g.once.Do(func() {
		close(g.done)
		g.calls.enter()
		g.ep.Close()
		g.calls.leave()
	})
	return nil
}

func (g *guestTCP) read(w io.Writer) (tcpip.ReadResult, tcpip.Error) {
	g.calls.enter()
	defer g.calls.leave()
	return g.ep.Read(w, tcpip.ReadOptions{})
}

func (g *guestTCP) write(p tcpip.Payloader) (int64, tcpip.Error) {
	g.calls.enter()
	defer g.calls.leave()
	return g.ep.Write(p, tcpip.WriteOptions{})
}

func (g *guestTCP) shutdownWrite() tcpip.Error {
	g.calls.enter()
	defer g.calls.leave()
	return g.ep.Shutdown(tcpip.ShutdownWrite)
}

var errGuestClosed = errors.New("connection closed")

// spliceTCP copies both ways between a member's connection and the host's
// until both directions end, passing a half-close on; an error in either
// direction closes both. A host connection that is a plain *net.TCPConn
// or a *hostTCP (what the publisher and the default dial make) is read and written at
// the descriptor; any other (a wrapping server's Dial may return its own
// net.Conn) goes through its Read and Write.
func spliceTCP(g *guestTCP, host stdnet.Conn, fromGuest, toGuest *atomic.Uint64) {
	tc, ok := host.(rawStream)
	if !ok {
		splice(gonet.NewTCPConn(g.wq, g.ep), host, fromGuest, toGuest)
		g.Close()
		return
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		g.Close()
		host.Close()
		return
	}
	end := func(err error, closeWrite func() error) {
		if err == nil && closeWrite() == nil {
			return
		}
		g.Close()
		host.Close()
	}
	// One direction on a worker goroutine, the other in this one (the
	// forwarder's or the publisher's, which has nothing else to do).
	done := make(chan struct{})
	goWork(func() {
		defer close(done)
		end(guestToHost(g, raw, fromGuest), tc.CloseWrite)
	})
	end(hostToGuest(g, raw, toGuest), func() error {
		if e := g.shutdownWrite(); e != nil {
			return errors.New(e.String())
		}
		return nil
	})
	<-done
	g.Close()
	host.Close()
}

// guestToHost moves what the member sends to the host socket until the
// member's end of stream (nil) or an error. The endpoint's Read writes
// its segments' data straight into the socket (fdWriter); when the socket
// is full, Read stops there and the poller waits until it drains.
func guestToHost(g *guestTCP, raw interface {
	Write(func(uintptr) bool) error
}, n *atomic.Uint64) error {
	entry, ch := waiter.NewChannelEntry(waiter.ReadableEvents | waiter.EventHUp | waiter.EventErr)
	g.wq.EventRegister(&entry)
	defer g.wq.EventUnregister(&entry)
	w := &fdWriter{pend: make([]byte, 0, coalesceMax)}
	for {
		var rerr tcpip.Error
		moved := 0
		err := raw.Write(func(fd uintptr) bool {
			w.fd, w.blocked = int(fd), false
			if !w.flush() {
				return !w.blocked
			}
			res, e := g.read(w)
			moved += res.Count
			rerr = e
			if w.blocked {
				return false // the socket is full: wait, then go on
			}
			if w.err == nil && !w.flush() {
				return !w.blocked
			}
			return true
		})
		n.Add(uint64(moved))
		if err != nil {
			return err
		}
		if w.err != nil {
			return w.err
		}
		switch rerr.(type) {
		case nil:
		case *tcpip.ErrWouldBlock:
			select {
			case <-ch:
			case <-g.done:
				return errGuestClosed
			}
		case *tcpip.ErrClosedForReceive:
			return nil
		default:
			return errors.New(rerr.String())
		}
	}
}

// hostToGuest moves what the host sends into the member's connection
// until the host's end of stream (nil) or an error. The endpoint's Write
// reads exactly the bytes the socket holds (SIOCINQ: so the stack's reader
// never waits or comes up short) straight into its own buffers.
func hostToGuest(g *guestTCP, raw interface {
	Read(func(uintptr) bool) error
}, n *atomic.Uint64) error {
	entry, ch := waiter.NewChannelEntry(waiter.WritableEvents | waiter.EventHUp | waiter.EventErr)
	g.wq.EventRegister(&entry)
	defer g.wq.EventUnregister(&entry)
	for {
		var werr tcpip.Error
		var rerr error
		var moved int64
		eof := false
		err := raw.Read(func(fd uintptr) bool {
			avail, e := rawInq(int(fd))
			if e != nil {
				rerr = e
				return true
			}
			if avail == 0 {
				// Nothing queued: the end of the stream, an error, or
				// nothing yet (then the poller waits).
				k, e := rawPeek(int(fd))
				switch {
				case e == unix.EAGAIN:
					return false
				case e == unix.EINTR:
				case e != nil:
					rerr = e
				case k == 0:
					eof = true
				}
				return true // (k > 0: data came after the ioctl; go round)
			}
			p := fdPayload{fd: int(fd), left: avail}
			moved, werr = g.write(&p)
			if p.err != nil {
				rerr = p.err
			}
			return true
		})
		n.Add(uint64(moved))
		switch {
		case err != nil:
			return err
		case rerr != nil:
			return rerr
		case eof:
			return nil
		}
		switch werr.(type) {
		case nil:
		case *tcpip.ErrWouldBlock:
			// The member's window and our send buffer are full.
			select {
			case <-ch:
			case <-g.done:
				return errGuestClosed
			}
		default:
			return errors.New(werr.String())
		}
	}
}

// coalesceMax: pieces smaller than this are gathered and written with the
// next big one (a segment's data comes as a small piece, the rest of the
// link's header chunk, then the big rest: see tunLink.readLoop).
const coalesceMax = 2048

var errWouldBlock = errors.New("would block")

// fdWriter writes to a nonblocking socket for the endpoint's Read; on
// EAGAIN it returns what it took and sets blocked. Small pieces wait in
// pend (they count as taken: the endpoint has let go of them) until the
// next big piece or flush.
type fdWriter struct {
	fd      int
	pend    []byte
	blocked bool
	err     error
}

func (w *fdWriter) Write(b []byte) (int, error) {
	if len(b) < coalesceMax/2 && len(w.pend)+len(b) <= cap(w.pend) {
		w.pend = append(w.pend, b...)
		return len(b), nil
	}
	done := 0
	for {
		var k int
		var err error
		if len(w.pend) > 0 {
			k, err = unix.Writev(w.fd, [][]byte{w.pend, b[done:]})
		} else if len(b)-done <= rawMax {
			k, err = rawWrite(w.fd, b[done:])
		} else {
			k, err = unix.Write(w.fd, b[done:])
		}
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			w.blocked = true
			return done, errWouldBlock
		case err != nil:
			w.err = err
			return done, err
		}
		if k < len(w.pend) {
			w.pend = w.pend[:copy(w.pend, w.pend[k:])]
			continue
		}
		done += k - len(w.pend)
		w.pend = w.pend[:0]
		if done == len(b) {
			return done, nil
		}
	}
}

// flush writes what waits in pend; false when it could not (blocked or
// err set).
func (w *fdWriter) flush() bool {
	for len(w.pend) > 0 {
		k, err := rawWrite(w.fd, w.pend) // (at most coalesceMax)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			w.blocked = true
			return false
		case err != nil:
			w.err = err
			return false
		}
		w.pend = w.pend[:copy(w.pend, w.pend[k:])]
	}
	return true
}

// fdPayload is a tcpip.Payloader reading left bytes, all already queued
// on a nonblocking socket.
type fdPayload struct {
	fd   int
	left int
	err  error
}

func (p *fdPayload) Len() int { return p.left }

func (p *fdPayload) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	if p.left == 0 {
		return 0, io.EOF
	}
	if len(b) > p.left {
		b = b[:p.left]
	}
	for {
		var k int
		var err error
		if len(b) <= rawMax {
			k, err = rawRead(p.fd, b)
		} else {
			k, err = unix.Read(p.fd, b)
		}
		if err == unix.EINTR {
			continue
		}
		if err == nil && k == 0 {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			// The endpoint drops what it read of this call; the
			// connection is reset by the caller.
			p.err = err
			return 0, err
		}
		p.left -= k
		return k, nil
	}
}
