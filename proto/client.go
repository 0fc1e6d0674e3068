package proto

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/yamux"
)

// cancelPoll is how often a caller that can be interrupted looks at its
// context while it reads a blocking lane for its reply: how late an
// interruption may be noticed.
const cancelPoll = 5 * time.Millisecond

// DefaultTimeout is the deadline of a call whose context has none.
const DefaultTimeout = 5 * time.Second

// ClientOptions configure a Client.
type ClientOptions struct {
	Timeout  time.Duration // per-call deadline; 0 = DefaultTimeout. Expiry → ETIMEDOUT.
	Notifier Notifier      // receives the server's invalidations (may be nil)

	// calls chooses how calls travel; the zero value picks the fastest the
	// transport allows. Only tests and benchmarks set it.
	calls callMode
}

type callMode int

const (
	callsAuto      callMode = iota
	callsStream             // one long-lived yamux stream, tagged frames
	callsPerStream          // a new yamux stream per call (measured, not used)
)

// Client is the client stub of a server: it implements FileSystem and
// DirPlusReader by sending each call over the connection.
type Client struct {
	opts    ClientOptions
	timeout time.Duration

	conn  net.Conn
	ysess *yamux.Session

	name       string
	interfaces []string

	// calls is the lane or the long-lived call stream; nil in
	// callsPerStream mode.
	calls     *frameWriter
	callsConn net.Conn
	// callsDone closes when reading the call lane or stream has failed:
	// after every reply that reached us was delivered, so a reply that
	// raced with the connection's end still gets through.
	callsDone chan struct{}

	// Replies are read by whoever holds the reader role (see lead): a
	// caller waiting for its own reply, or, while callers that cannot
	// read wait, a reader goroutine. fr and rdl belong to the holder.
	fr  *frameReader
	rdl time.Time // the call stream's read deadline as last set

	mu      sync.Mutex
	pending map[uint32]*waiter
	nextTag uint32
	reading bool  // someone holds the reader role
	rerr    error // reading failed: the call stream is dead
	// One timer for the deadlines of all callers that wait on their
	// channels, set to the earliest (zero: not armed): a timer per call
	// would cost more than the call (arming one wakes an idle thread of
	// the runtime to watch it).
	sweeper  *time.Timer
	sweepsAt time.Time

	done     chan struct{}
	err      error
	failOnce sync.Once
}

var (
	_ FileSystem    = (*Client)(nil)
	_ DirPlusReader = (*Client)(nil)
)

// Dial connects to the server listening on the unix socket at socketPath.
func Dial(socketPath string, opts ClientOptions) (*Client, error) {
	c, err := dialUnix(socketPath, opts.Timeout)
	if err != nil {
		return nil, fmt.Errorf("proto: %w", err)
	}
	cl, err := newClient(c, opts, func() (net.Conn, error) { return dialUnix(socketPath, opts.Timeout) })
	if err != nil {
		return nil, fmt.Errorf("%w (server at %s)", err, socketPath)
	}
	return cl, nil
}

// NewClient runs the handshake on conn and returns a client that owns it.
// On a unix socket whose peer address is known, calls go over a second
// connection to the same address (a call lane), which also carries file
// descriptors; elsewhere they go over a yamux stream and OpenResult.File is
// nil.
func NewClient(conn net.Conn, opts ClientOptions) (*Client, error) {
	var dialLane func() (net.Conn, error)
	if uc, ok := conn.(*net.UnixConn); ok {
		if a, ok := uc.RemoteAddr().(*net.UnixAddr); ok && a != nil && a.Name != "" && a.Name != "@" {
			dialLane = func() (net.Conn, error) { return dialUnix(a.Name, opts.Timeout) }
		}
	}
	return newClient(conn, opts, dialLane)
}

// dialUnix connects with a deadline: a listener whose backlog is full
// would otherwise keep connect waiting.
func dialUnix(path string, timeout time.Duration) (net.Conn, error) {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	d := net.Dialer{Timeout: timeout}
	return d.Dial("unix", path)
}

func newClient(conn net.Conn, opts ClientOptions, dialLane func() (net.Conn, error)) (*Client, error) {
	c := &Client{
		opts:      opts,
		timeout:   opts.Timeout,
		conn:      conn,
		pending:   make(map[uint32]*waiter),
		done:      make(chan struct{}),
		callsDone: make(chan struct{}),
	}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	ys, err := yamux.Client(conn, yamuxConfig())
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("proto: %w", err)
	}
	c.ysess = ys
	deadline := time.Now().Add(c.timeout)
	hs, hello, err := c.handshake(deadline)
	if err != nil {
		ys.Close()
		conn.Close()
		return nil, err
	}
	c.name, c.interfaces = hello.name, hello.interfaces

	mode := opts.calls
	if mode == callsAuto {
		mode = callsStream
		if dialLane != nil && hello.flags&helloLanes != 0 && len(hello.cookie) == cookieSize {
			// Without a lane, calls still work over yamux; they just
			// cost more and carry no descriptors.
			if lane, err := dialLane(); err == nil {
				uc, ok := lane.(*net.UnixConn)
				if ok && attachLane(lane, hello.cookie, deadline) == nil {
					c.useLane(uc)
					mode = callsAuto
				} else {
					lane.Close()
				}
			}
		}
	}
	switch mode {
	case callsStream:
		st, err := ys.OpenStream()
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("proto: opening the call stream: %w", err)
		}
		c.calls = newFrameWriter(st, false)
		c.callsConn = st
		c.fr = newFrameReader(st)
	case callsPerStream:
		close(c.callsDone)
	}
	go c.readNotifications(hs)
	go func() {
		select {
		case <-ys.CloseChan():
			c.fail(errors.New("connection closed"))
		case <-c.done:
		}
	}()
	return c, nil
}

func (c *Client) useLane(lane *net.UnixConn) {
	// A blocking lane to another process when it can be had (see
	// blockConn), else a plain one.
	if !otherProcess(lane) {
	} else if bc, err := toBlocking(lane); err == nil {
		c.calls = newFrameWriter(bc, true)
		c.callsConn = bc
		c.fr = newFrameReader(&fdReader{bc: bc, oob: make([]byte, fdOOBSize)})
		return
	}
	c.calls = newFrameWriter(lane, true)
	c.callsConn = lane
	c.fr = newFrameReader(newFDReader(lane))
}

func yamuxConfig() *yamux.Config {
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = io.Discard
	// Bigger windows let a 128 KiB read or write go without waiting for a
	// window update.
	cfg.MaxStreamWindowSize = 1 << 20
	return cfg
}

// handshake opens the first stream, sends the magic and version and reads
// the server's hello. The stream then carries notifications.
func (c *Client) handshake(deadline time.Time) (net.Conn, *helloReply, error) {
	st, err := c.ysess.OpenStream()
	if err != nil {
		return nil, nil, fmt.Errorf("proto: handshake: %w", err)
	}
	st.SetDeadline(deadline)
	var hb [8]byte
	copy(hb[:], "HERD")
	binary.LittleEndian.PutUint16(hb[4:], Version)
	// A write error is not the end: yamux may report a shutdown for a
	// frame it did send, and a refusing server answers and hangs up at
	// once. The hello it sent is what matters.
	_, werr := st.Write(hb[:])
	fr := newFrameReader(st)
	m, err := fr.read()
	if err != nil {
		if errors.Is(err, errProtocol) {
			return nil, nil, fmt.Errorf("proto: handshake: the peer does not speak herd's protocol (%v)", err)
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, nil, &Error{syscall.ETIMEDOUT, "proto: handshake: server did not answer in time"}
		}
		if werr != nil {
			err = werr
		}
		return nil, nil, fmt.Errorf("proto: handshake failed (not a herd server, or it closed the connection): %w", err)
	}
	if m.kind != kindHello {
		return nil, nil, fmt.Errorf("proto: handshake: expected hello, got frame kind %d", m.kind)
	}
	h, err := decodeHello(m.body)
	if err != nil {
		return nil, nil, fmt.Errorf("proto: handshake: %w", err)
	}
	if h.errno != 0 {
		msg := h.msg
		if msg == "" {
			msg = "proto: server refused the session: " + syscall.Errno(h.errno).Error()
		}
		return nil, nil, &Error{syscall.Errno(h.errno), msg}
	}
	if h.version != Version {
		return nil, nil, fmt.Errorf("proto: server speaks version %d, this client %d", h.version, Version)
	}
	st.SetDeadline(time.Time{})
	return &readerConn{Conn: st, fr: fr}, h, nil
}

// readerConn keeps a stream together with the frame reader that already
// buffered from it.
type readerConn struct {
	net.Conn
	fr *frameReader
}

// Interfaces returns the interfaces the server announced.
func (c *Client) Interfaces() []string { return append([]string(nil), c.interfaces...) }

// FilePassing reports whether calls travel on a call lane, so that Open
// and Create can return the backing file's descriptor.
func (c *Client) FilePassing() bool { return c.calls != nil && c.calls.fds() }

// ServerName returns the name the server announced.
func (c *Client) ServerName() string { return c.name }

// Done is closed when the connection is lost or closed.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err tells why Done closed (nil before).
func (c *Client) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

// Close ends the session; the server then forgets and releases whatever
// this client still held.
func (c *Client) Close() error {
	c.fail(errClosed)
	return nil
}

var errClosed = errors.New("proto: client closed")

// fail ends the client for good: every pending and later call returns EIO.
func (c *Client) fail(err error) {
	c.failOnce.Do(func() {
		if err != errClosed {
			err = fmt.Errorf("proto: connection to server %q lost: %w", c.name, err)
		}
		c.err = err
		close(c.done)
		if c.callsConn != nil {
			if c.calls.fds() && err != errClosed {
				// A lost session: let the lane's reader take what
				// the server sent before it went, then stop.
				time.AfterFunc(time.Second, func() { c.callsConn.Close() })
			} else {
				c.callsConn.Close()
			}
		}
		c.ysess.Close()
		c.conn.Close()
	})
}

func (c *Client) readNotifications(hs net.Conn) {
	rc := hs.(*readerConn)
	for {
		m, err := rc.fr.read()
		if err != nil {
			c.fail(err)
			return
		}
		if m.kind != kindNotify {
			c.fail(fmt.Errorf("%w: frame kind %d on the notification stream", errProtocol, m.kind))
			return
		}
		n, err := decodeNotify(m.op, m.body)
		if err != nil {
			if m.op != notifyInvalNode && m.op != notifyInvalEntry {
				continue // a newer server's notification: ignore
			}
			c.fail(err)
			return
		}
		if c.opts.Notifier == nil {
			continue
		}
		switch n.typ {
		case notifyInvalNode:
			c.opts.Notifier.InvalNode(n.node, n.off, n.length)
		case notifyInvalEntry:
			c.opts.Notifier.InvalEntry(n.node, n.name)
		}
	}
}

// The reader role. Replies on the call stream are read by one goroutine at
// a time. When nobody reads, a caller whose context cannot be cancelled (the
// fs bridge's never are) takes the role after sending its request and reads
// the socket itself: its reply wakes it directly from the network poller,
// with no hand-off from a reader goroutine, which costs a goroutine switch
// and, on a busy machine, a thread wake-up per call. Replies for other
// callers that it reads on the way go to their channels. When it has its
// reply it lets the role go; if others still wait, a reader goroutine takes
// over (readFor) and keeps it until nobody waits.

// lead reads replies until the one for tag comes, the deadline passes or
// the stream fails. The caller holds the reader role.
func (c *Client) lead(ctx context.Context, op uint16, tag uint32, deadline time.Time, dst []byte) (*reply, *os.File, error) {
	// A Read reply may go straight into the caller's buffer; detach
	// (before the role goes to anyone else) makes sure nothing more goes
	// there once we leave.
	c.fr.into, c.fr.intoTag = dst, tag
	// A caller that can be interrupted looks at its context every
	// cancelPoll (blocking lanes only, see callInto).
	poll := ctx.Done() != nil
	for {
		dl := deadline
		if poll {
			if p := time.Now().Add(cancelPoll); p.Before(dl) {
				dl = p
			}
		}
		// Coarse read deadline, as in frameWriter: only moved earlier,
		// and moved to ours when an earlier one runs out.
		if c.rdl.IsZero() || dl.Before(c.rdl) {
			c.setReadDeadline(dl)
		}
		m, err := c.fr.read()
		if err != nil {
			if isTimeout(err) {
				var gone error
				switch {
				case poll && ctx.Err() != nil:
					gone = ctxErr(op, ctx.Err())
				case time.Now().Before(deadline):
					c.rdl = time.Time{} // ran out: set afresh above
					continue
				default:
					gone = &Error{syscall.ETIMEDOUT, fmt.Sprintf("proto: %s: server did not answer in time", opName(op))}
				}
				c.fr.detach()
				c.mu.Lock()
				delete(c.pending, tag)
				c.releaseLocked()
				c.mu.Unlock()
				c.cancelCall(tag, op)
				return nil, nil, gone
			}
			c.fr.detach()
			c.readFailed(err)
			return nil, nil, c.lostErr(op)
		}
		if m.kind != kindReply {
			m.closeFile()
			c.fr.detach()
			c.readFailed(fmt.Errorf("%w: frame kind %d on the call stream", errProtocol, m.kind))
			return nil, nil, c.lostErr(op)
		}
		if m.tag == tag {
			c.fr.detach()
		}
		c.mu.Lock()
		if m.tag == tag {
			delete(c.pending, tag)
			c.releaseLocked()
			c.mu.Unlock()
			return c.finish(op, m)
		}
		woke := c.deliverLocked(m)
		c.mu.Unlock()
		if woke {
			yieldBeforeBlocking()
		}
	}
}

// yieldBeforeBlocking lets the goroutines just made runnable (callers
// handed their replies) run before this one blocks its thread in a read
// again: a blocked system call keeps its P, and they would otherwise wait
// for the runtime's monitor to take it back (20 µs to 10 ms).
func yieldBeforeBlocking() { runtime.Gosched() }

func (c *Client) setReadDeadline(t time.Time) {
	c.rdl = t
	c.callsConn.SetReadDeadline(t)
}

// deliverLocked hands m to the caller waiting for it (its channel has room
// for one message, and a tag gets one reply), or drops a late reply.
func (c *Client) deliverLocked(m *message) bool {
	w := c.pending[m.tag]
	if w == nil {
		m.closeFile() // the caller gave up: a late reply
		return false
	}
	delete(c.pending, m.tag)
	w.ch <- m
	return true
}

// waiter is a call waiting for its reply.
type waiter struct {
	ch       chan *message // room for one: the reply, or timedOut
	deadline time.Time
	reads    bool // it holds the reader role: it keeps its own deadline
}

// timedOut is what the sweeper sends a waiter whose deadline passed.
var timedOut = &message{}

// watchLocked makes the sweeper fire by w's deadline.
func (c *Client) watchLocked(w *waiter) {
	if !c.sweepsAt.IsZero() && !w.deadline.Before(c.sweepsAt) {
		return
	}
	c.sweepsAt = w.deadline
	if c.sweeper == nil {
		c.sweeper = time.AfterFunc(time.Until(w.deadline), c.sweep)
	} else {
		c.sweeper.Reset(time.Until(w.deadline))
	}
}

// sweep times out the waiters whose deadline passed and sets the timer
// for the next.
func (c *Client) sweep() {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	var next time.Time
	for tag, w := range c.pending {
		switch {
		case w.reads:
		case !now.Before(w.deadline):
			delete(c.pending, tag)
			w.ch <- timedOut
		case next.IsZero() || w.deadline.Before(next):
			next = w.deadline
		}
	}
	c.sweepsAt = next
	if !next.IsZero() {
		c.sweeper.Reset(time.Until(next))
	}
}

// releaseLocked lets the reader role go: to a reader goroutine if callers
// still wait.
func (c *Client) releaseLocked() {
	if len(c.pending) > 0 && c.rerr == nil {
		go c.readFor()
		return
	}
	c.reading = false
}

// readFor holds the reader role for callers that wait on their channels,
// until none does.
func (c *Client) readFor() {
	for {
		if !c.rdl.IsZero() {
			c.setReadDeadline(time.Time{})
		}
		m, err := c.fr.read()
		if err != nil {
			if isTimeout(err) {
				continue // a leader's deadline, now cleared
			}
			c.readFailed(err)
			return
		}
		if m.kind != kindReply {
			m.closeFile()
			c.readFailed(fmt.Errorf("%w: frame kind %d on the call stream", errProtocol, m.kind))
			return
		}
		c.mu.Lock()
		woke := c.deliverLocked(m)
		if len(c.pending) == 0 {
			c.reading = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		if woke {
			yieldBeforeBlocking()
		}
	}
}

// readFailed ends the call stream: waiting callers get EIO (after the
// replies read before), and so does every later call.
func (c *Client) readFailed(err error) {
	c.mu.Lock()
	first := c.rerr == nil
	if first {
		c.rerr = err
		c.reading = false
	}
	c.mu.Unlock()
	c.fail(err)
	if !first {
		return
	}
	c.callsConn.Close()
	if c.fr.fds != nil {
		c.fr.fds.closeAll()
	}
	c.fr.abort()
	close(c.callsDone)
}

func (c *Client) lostErr(op uint16) error {
	if c.Err() == nil { // not yet told why: the reader is ending
		return &Error{syscall.EIO, fmt.Sprintf("proto: %s: connection to server %q lost", opName(op), c.name)}
	}
	return &Error{syscall.EIO, fmt.Sprintf("proto: %s: %s", opName(op), strings.TrimPrefix(c.err.Error(), "proto: "))}
}

// call sends r and waits for its reply (or the deadline, or the loss of
// the connection). On success it returns the decoded reply and the
// descriptor that came with it.
func (c *Client) call(ctx context.Context, r *request) (*reply, *os.File, error) {
	return c.callInto(ctx, r, nil)
}

// callInto is call; a successful Read reply may land in dst (see ReadInto).
func (c *Client) callInto(ctx context.Context, r *request, dst []byte) (*reply, *os.File, error) {
	select {
	case <-c.done:
		return nil, nil, c.lostErr(r.op)
	default:
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, ctxErr(r.op, err)
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(c.timeout)
	}
	if caller, ok := CallerFrom(ctx); ok {
		r.hasCaller, r.caller = true, caller
	}
	e := getEnc()
	defer putEnc(e)
	encodeRequest(e, r)
	h := header{op: r.op, kind: kindRequest, status: msOf(time.Until(deadline).Milliseconds())}
	if r.hasCaller {
		h.flags |= flagCaller
	}
	if c.calls == nil {
		return c.callOnNewStream(ctx, h, e, deadline)
	}
	if r.op == opForget {
		h.flags |= flagNoReply
		c.send(h, e, deadline)
		return nil, nil, nil
	}

	w := &waiter{ch: make(chan *message, 1), deadline: deadline}
	c.mu.Lock()
	if c.rerr != nil {
		c.mu.Unlock()
		return nil, nil, c.lostErr(r.op)
	}
	c.nextTag++
	if c.nextTag == 0 {
		c.nextTag = 1
	}
	h.tag = c.nextTag
	c.pending[h.tag] = w
	c.mu.Unlock()

	if err := c.send(h, e, deadline); err != nil {
		c.mu.Lock()
		delete(c.pending, h.tag)
		c.mu.Unlock()
		return nil, nil, err
	}
	// (A write that failed with the connection still counts as sent: yamux
	// may report a shutdown for a frame it did send, and the reply may be
	// on its way. The reader's end settles it.)

	// Only now take the reader role if it is free: a caller that is still
	// writing a long request must not be the only one who could read the
	// replies the server is writing meanwhile.
	c.mu.Lock()
	lead := false
	// (Its reply may be in ch already, delivered by the last holder.)
	if !c.reading && c.rerr == nil && len(w.ch) == 0 {
		c.reading = true
		// A caller whose context can be cancelled cannot be woken
		// from a read on the poller without a timer armed per call;
		// on a blocking lane it reads anyway, looking at its context
		// every cancelPoll.
		_, blocking := c.callsConn.(*blockConn)
		if ctx.Done() == nil || blocking {
			lead = true
			w.reads = true
		} else {
			// This caller can be interrupted, which a goroutine
			// blocked in a read cannot: read for it.
			go c.readFor()
		}
	}
	if !lead && len(w.ch) == 0 && c.pending[h.tag] == w {
		c.watchLocked(w)
	}
	c.mu.Unlock()
	if lead {
		return c.lead(ctx, r.op, h.tag, deadline, dst)
	}
	select {
	case m := <-w.ch:
		return c.finishWait(r.op, h, m)
	case <-c.callsDone:
		select {
		case m := <-w.ch:
			return c.finishWait(r.op, h, m)
		default:
		}
		return nil, nil, c.lostErr(r.op)
	case <-ctx.Done():
		c.abandon(h, w)
		return nil, nil, ctxErr(r.op, ctx.Err())
	}
}

func (c *Client) finishWait(op uint16, h header, m *message) (*reply, *os.File, error) {
	if m == timedOut {
		c.cancelCall(h.tag, h.op)
		return nil, nil, &Error{syscall.ETIMEDOUT, fmt.Sprintf("proto: %s: server did not answer in time", opName(op))}
	}
	return c.finish(op, m)
}

func ctxErr(op uint16, err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return &Error{syscall.ETIMEDOUT, fmt.Sprintf("proto: %s: server did not answer in time", opName(op))}
	}
	return &Error{syscall.EINTR, fmt.Sprintf("proto: %s: interrupted", opName(op))}
}

// send writes a request. A write that times out before any byte went out
// leaves the stream intact; a partial one breaks it.
func (c *Client) send(h header, e *enc, deadline time.Time) error {
	written, err := c.calls.write(h, e, nil, deadline)
	if err == nil {
		return nil
	}
	if !written && errors.Is(err, os.ErrDeadlineExceeded) {
		return &Error{syscall.ETIMEDOUT, fmt.Sprintf("proto: %s: server did not take the call in time", opName(h.op))}
	}
	c.fail(err)
	return nil
}

// abandon gives up on a call: a late reply is dropped, and the server is
// told so it can cancel the work.
func (c *Client) abandon(h header, w *waiter) {
	c.mu.Lock()
	if c.pending[h.tag] == w {
		delete(c.pending, h.tag)
	}
	c.mu.Unlock()
	// Replies are delivered under c.mu: one that came just now is here.
	select {
	case m := <-w.ch:
		m.closeFile()
	default:
	}
	c.cancelCall(h.tag, h.op)
}

// cancelCall tells the server a call is abandoned; not waited for.
func (c *Client) cancelCall(tag uint32, op uint16) {
	go func() {
		c.calls.write(header{tag: tag, op: op, kind: kindCancel}, newEnc(0), nil, time.Now().Add(c.timeout))
	}()
}

func (c *Client) finish(op uint16, m *message) (*reply, *os.File, error) {
	if m.data != nil { // a Read reply received in place
		if n := binary.LittleEndian.Uint32(m.pre[:]); int(n) != len(m.data) {
			c.fail(fmt.Errorf("%w: read reply of %d bytes says %d", errProtocol, len(m.data), n))
			return nil, nil, c.lostErr(op)
		}
		return &reply{data: m.data}, nil, nil
	}
	if m.status != 0 {
		m.closeFile()
		d := &dec{b: m.body}
		msg := d.str()
		if err := d.end(); err != nil {
			c.fail(fmt.Errorf("%w: %s error reply: %v", errProtocol, opName(op), err))
			return nil, nil, c.lostErr(op)
		}
		return nil, nil, &Error{syscall.Errno(m.status), msg}
	}
	r, err := decodeReply(op, m.body)
	if err != nil {
		m.closeFile()
		c.fail(fmt.Errorf("%w: %v", errProtocol, err))
		return nil, nil, c.lostErr(op)
	}
	return r, m.file, nil
}

// callOnNewStream is the per-call-stream mode: kept only so the benchmarks
// can measure it against tagged frames on a long-lived stream.
func (c *Client) callOnNewStream(ctx context.Context, h header, e *enc, deadline time.Time) (*reply, *os.File, error) {
	st, err := c.ysess.OpenStream()
	if err != nil {
		c.fail(err)
		return nil, nil, c.lostErr(h.op)
	}
	defer st.Close()
	st.SetDeadline(deadline)
	h.tag = 1
	if h.op == opForget {
		h.flags |= flagNoReply
	}
	fw := newFrameWriter(st, false)
	if _, err := fw.write(h, e, nil, time.Time{}); err != nil {
		return nil, nil, &Error{syscall.EIO, err.Error()}
	}
	if h.op == opForget {
		return nil, nil, nil
	}
	stop := context.AfterFunc(ctx, func() { st.Close() })
	defer stop()
	m, err := newFrameReader(st).read()
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, yamux.ErrTimeout) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, nil, &Error{syscall.ETIMEDOUT, fmt.Sprintf("proto: %s: server did not answer in time", opName(h.op))}
		}
		if ctx.Err() != nil {
			return nil, nil, &Error{syscall.EINTR, fmt.Sprintf("proto: %s: interrupted", opName(h.op))}
		}
		return nil, nil, &Error{syscall.EIO, fmt.Sprintf("proto: %s: %v", opName(h.op), err)}
	}
	return c.finish(h.op, m)
}

// The FileSystem methods.

func (c *Client) entryCall(ctx context.Context, r *request) (Entry, error) {
	rep, _, err := c.call(ctx, r)
	if err != nil {
		return Entry{}, err
	}
	return rep.entry, nil
}

func (c *Client) errCall(ctx context.Context, r *request) error {
	_, _, err := c.call(ctx, r)
	return err
}

func (c *Client) Root(ctx context.Context) (Entry, error) {
	return c.entryCall(ctx, &request{op: opRoot})
}

func (c *Client) GetOptions(ctx context.Context) ([]string, error) {
	rep, _, err := c.call(ctx, &request{op: opGetOptions})
	if err != nil {
		return nil, err
	}
	return rep.strs, nil
}

func (c *Client) SetOptions(ctx context.Context, opts []string) error {
	return c.errCall(ctx, &request{op: opSetOptions, strs: opts})
}

func (c *Client) Goaway(ctx context.Context, flags uint32) error {
	return c.errCall(ctx, &request{op: opGoaway, flags: flags})
}

func (c *Client) Lookup(ctx context.Context, parent NodeID, name string) (Entry, error) {
	return c.entryCall(ctx, &request{op: opLookup, node: parent, name: name})
}

// Forget does not wait for an answer; the server gets it in order with the
// calls sent after it. It is sent even if ctx is done: a lost Forget would
// keep the node alive until the session ends.
func (c *Client) Forget(ctx context.Context, node NodeID, nlookup uint64) {
	c.call(context.WithoutCancel(ctx), &request{op: opForget, node: node, nlookup: nlookup})
}

func (c *Client) GetAttr(ctx context.Context, node NodeID) (Attr, error) {
	rep, _, err := c.call(ctx, &request{op: opGetAttr, node: node})
	if err != nil {
		return Attr{}, err
	}
	return rep.attr, nil
}

func (c *Client) SetAttr(ctx context.Context, node NodeID, in SetAttrIn) (Attr, error) {
	rep, _, err := c.call(ctx, &request{op: opSetAttr, node: node, setattr: in})
	if err != nil {
		return Attr{}, err
	}
	return rep.attr, nil
}

func (c *Client) ReadDir(ctx context.Context, dir NodeID) ([]DirEntry, error) {
	rep, _, err := c.call(ctx, &request{op: opReadDir, node: dir})
	if err != nil {
		return nil, err
	}
	return rep.dir, nil
}

func (c *Client) ReadDirPlus(ctx context.Context, dir NodeID) ([]DirEntryPlus, error) {
	rep, _, err := c.call(ctx, &request{op: opReadDirPlus, node: dir})
	if err != nil {
		return nil, err
	}
	return rep.dirp, nil
}

func (c *Client) Mkdir(ctx context.Context, parent NodeID, name string, mode uint32) (Entry, error) {
	return c.entryCall(ctx, &request{op: opMkdir, node: parent, name: name, mode: mode})
}

func (c *Client) Mknod(ctx context.Context, parent NodeID, name string, mode uint32, rdev uint64) (Entry, error) {
	return c.entryCall(ctx, &request{op: opMknod, node: parent, name: name, mode: mode, rdev: rdev})
}

func (c *Client) Create(ctx context.Context, parent NodeID, name string, flags, mode uint32) (Entry, OpenResult, error) {
	rep, f, err := c.call(ctx, &request{op: opCreate, node: parent, name: name, flags: flags, mode: mode})
	if err != nil {
		return Entry{}, OpenResult{}, err
	}
	rep.open.File = f
	return rep.entry, rep.open, nil
}

func (c *Client) Unlink(ctx context.Context, parent NodeID, name string) error {
	return c.errCall(ctx, &request{op: opUnlink, node: parent, name: name})
}

func (c *Client) Rmdir(ctx context.Context, parent NodeID, name string) error {
	return c.errCall(ctx, &request{op: opRmdir, node: parent, name: name})
}

func (c *Client) Rename(ctx context.Context, oldParent NodeID, oldName string, newParent NodeID, newName string, flags uint32) error {
	return c.errCall(ctx, &request{op: opRename, node: oldParent, name: oldName, node2: newParent, name2: newName, flags: flags})
}

func (c *Client) Link(ctx context.Context, node NodeID, newParent NodeID, newName string) (Entry, error) {
	return c.entryCall(ctx, &request{op: opLink, node: node, node2: newParent, name: newName})
}

func (c *Client) Symlink(ctx context.Context, parent NodeID, name, target string) (Entry, error) {
	return c.entryCall(ctx, &request{op: opSymlink, node: parent, name: name, name2: target})
}

func (c *Client) Readlink(ctx context.Context, node NodeID) (string, error) {
	rep, _, err := c.call(ctx, &request{op: opReadlink, node: node})
	if err != nil {
		return "", err
	}
	return rep.str, nil
}

func (c *Client) GetXattr(ctx context.Context, node NodeID, name string) ([]byte, error) {
	rep, _, err := c.call(ctx, &request{op: opGetXattr, node: node, name: name})
	if err != nil {
		return nil, err
	}
	return rep.data, nil
}

func (c *Client) ListXattr(ctx context.Context, node NodeID) ([]string, error) {
	rep, _, err := c.call(ctx, &request{op: opListXattr, node: node})
	if err != nil {
		return nil, err
	}
	return rep.strs, nil
}

func (c *Client) SetXattr(ctx context.Context, node NodeID, name string, value []byte, flags uint32) error {
	return c.errCall(ctx, &request{op: opSetXattr, node: node, name: name, data: value, flags: flags})
}

func (c *Client) RemoveXattr(ctx context.Context, node NodeID, name string) error {
	return c.errCall(ctx, &request{op: opRemoveXattr, node: node, name: name})
}

func (c *Client) StatFS(ctx context.Context, node NodeID) (StatFS, error) {
	rep, _, err := c.call(ctx, &request{op: opStatFS, node: node})
	if err != nil {
		return StatFS{}, err
	}
	return rep.statfs, nil
}

func (c *Client) Open(ctx context.Context, node NodeID, flags uint32) (OpenResult, error) {
	rep, f, err := c.call(ctx, &request{op: opOpen, node: node, flags: flags})
	if err != nil {
		return OpenResult{}, err
	}
	rep.open.File = f
	return rep.open, nil
}

func (c *Client) Read(ctx context.Context, h HandleID, off int64, size int) ([]byte, error) {
	if size < 0 || size > MaxMessage-64 {
		return nil, &Error{syscall.EINVAL, fmt.Sprintf("proto: read: size %d out of range", size)}
	}
	rep, _, err := c.call(ctx, &request{op: opRead, handle: h, off: off, size: uint32(size)})
	if err != nil {
		return nil, err
	}
	return rep.data, nil
}

// ReadInto is Read into buf: it reads at most len(buf) bytes at off and
// returns how many it read. When the caller reads its own reply off the
// connection (the usual case, one call at a time), the data goes from the
// socket straight into buf: no buffer is allocated for it, which for large
// reads is most of what a Read costs (allocation, zeroing, the garbage
// collector's work). Otherwise it is copied there.
func (c *Client) ReadInto(ctx context.Context, h HandleID, off int64, buf []byte) (int, error) {
	if len(buf) > MaxMessage-64 {
		return 0, &Error{syscall.EINVAL, fmt.Sprintf("proto: read: size %d out of range", len(buf))}
	}
	rep, _, err := c.callInto(ctx, &request{op: opRead, handle: h, off: off, size: uint32(len(buf))}, buf)
	if err != nil {
		return 0, err
	}
	if len(rep.data) > 0 && &rep.data[0] == &buf[0] {
		return len(rep.data), nil
	}
	return copy(buf, rep.data), nil
}

func (c *Client) Write(ctx context.Context, h HandleID, off int64, data []byte) (int, error) {
	if len(data) > MaxMessage-64 {
		return 0, &Error{syscall.EINVAL, fmt.Sprintf("proto: write: %d bytes is too large", len(data))}
	}
	rep, _, err := c.call(ctx, &request{op: opWrite, handle: h, off: off, data: data})
	if err != nil {
		return 0, err
	}
	return int(rep.n), nil
}

func (c *Client) Fsync(ctx context.Context, h HandleID, datasync bool) error {
	return c.errCall(ctx, &request{op: opFsync, handle: h, sync: datasync})
}

func (c *Client) Fallocate(ctx context.Context, h HandleID, mode uint32, off, length int64) error {
	return c.errCall(ctx, &request{op: opFallocate, handle: h, flags: mode, off: off, length: length})
}

func (c *Client) Lseek(ctx context.Context, h HandleID, off int64, whence int) (int64, error) {
	rep, _, err := c.call(ctx, &request{op: opLseek, handle: h, off: off, flags: uint32(whence)})
	if err != nil {
		return 0, err
	}
	return rep.off, nil
}

func (c *Client) Release(ctx context.Context, h HandleID) error {
	return c.errCall(ctx, &request{op: opRelease, handle: h})
}
