package proto

// A session is one client connection and everything it holds. The server
// counts every lookup an Entry gives the client and every handle an Open or
// Create gives it; Forget and Release give them back. When the session ends
// (the client closed, died, or spoke garbage), the server forgets and
// releases the rest: Mach's no-senders notification, done by the runtime so
// FileSystem implementations need no per-client bookkeeping.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/yamux"
)

// maxInflight bounds the requests one session may have running at once;
// beyond it the session's readers stop reading (backpressure).
const maxInflight = 1024

// maxQueuedNotifications: a client that lets this many pile up is not
// reading, and loses its session.
const maxQueuedNotifications = 1 << 16

type session struct {
	srv    *Server
	fs     FileSystem
	ysess  *yamux.Session
	hs     net.Conn // handshake stream, then notifications
	cookie [cookieSize]byte
	ctx    context.Context // cancelled when the session ends
	cancel context.CancelFunc
	sem    chan struct{}
	// inflight counts requests from their start to their reply's write,
	// so Server.Close can let answers (Goaway's above all) leave first.
	inflight atomic.Int64

	mu      sync.Mutex
	closed  bool
	lookups map[NodeID]uint64
	handles map[HandleID]struct{}
	lanes   []net.Conn
	notes   []*notification
	wake    chan struct{}
}

func (s *Server) newSession(ys *yamux.Session, hs net.Conn) *session {
	ctx, cancel := context.WithCancel(context.Background())
	se := &session{
		srv:     s,
		fs:      s.fs,
		ysess:   ys,
		hs:      hs,
		ctx:     ctx,
		cancel:  cancel,
		sem:     make(chan struct{}, maxInflight),
		lookups: make(map[NodeID]uint64),
		handles: make(map[HandleID]struct{}),
		wake:    make(chan struct{}, 1),
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		cancel()
		return nil
	}
	for {
		se.cookie = newCookie()
		if _, dup := s.byCookie[se.cookie]; !dup {
			break
		}
	}
	s.sessions[se] = struct{}{}
	s.byCookie[se.cookie] = se
	return se
}

func (se *session) addLane(c net.Conn) bool {
	se.mu.Lock()
	defer se.mu.Unlock()
	if se.closed {
		return false
	}
	se.lanes = append(se.lanes, c)
	return true
}

// end closes the session and gives back what the client still held.
func (se *session) end(why error) {
	s := se.srv
	s.mu.Lock()
	delete(s.sessions, se)
	delete(s.byCookie, se.cookie)
	s.mu.Unlock()

	se.mu.Lock()
	if se.closed {
		se.mu.Unlock()
		return
	}
	se.closed = true
	lookups, handles, lanes := se.lookups, se.handles, se.lanes
	se.lookups, se.handles, se.lanes, se.notes = nil, nil, nil, nil
	se.mu.Unlock()

	if why != nil && !errors.Is(why, io.EOF) && !errors.Is(why, net.ErrClosed) && !errors.Is(why, yamux.ErrSessionShutdown) {
		s.logf("proto: %s: session ended: %v", s.opts.Name, why)
	}
	se.cancel()
	for _, l := range lanes {
		l.Close()
	}
	se.ysess.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for h := range handles {
		se.safely("release", func() { se.fs.Release(ctx, h) })
	}
	for n, count := range lookups {
		se.safely("forget", func() { se.fs.Forget(ctx, n, count) })
	}
}

// safely runs f, turning a panic of the FileSystem into a log line.
func (se *session) safely(what string, f func()) {
	defer func() {
		if p := recover(); p != nil {
			se.srv.logf("proto: %s: panic in %s: %v\n%s", se.srv.opts.Name, what, p, debug.Stack())
		}
	}()
	f()
}

// addLookups records Entries handed out. If the session has ended while
// the call ran, nobody will ever forget them: do it now.
func (se *session) addLookups(nodes ...NodeID) {
	se.mu.Lock()
	if !se.closed {
		for _, n := range nodes {
			se.lookups[n]++
		}
		se.mu.Unlock()
		return
	}
	se.mu.Unlock()
	for _, n := range nodes {
		se.safely("forget", func() { se.fs.Forget(context.Background(), n, 1) })
	}
}

func (se *session) addHandle(h HandleID) {
	se.mu.Lock()
	if !se.closed {
		se.handles[h] = struct{}{}
		se.mu.Unlock()
		return
	}
	se.mu.Unlock()
	se.safely("release", func() { se.fs.Release(context.Background(), h) })
}

func (se *session) ownsHandle(h HandleID) bool {
	se.mu.Lock()
	_, ok := se.handles[h]
	se.mu.Unlock()
	return ok
}

func (se *session) takeHandle(h HandleID) bool {
	se.mu.Lock()
	_, ok := se.handles[h]
	delete(se.handles, h)
	se.mu.Unlock()
	return ok
}

// takeLookups clamps a Forget to what this session holds, so one client
// cannot drop another's lookups.
func (se *session) takeLookups(n NodeID, count uint64) uint64 {
	se.mu.Lock()
	defer se.mu.Unlock()
	have := se.lookups[n]
	count = min(count, have)
	if have-count == 0 {
		delete(se.lookups, n)
	} else {
		se.lookups[n] = have - count
	}
	return count
}

// inlineBudget bounds how long the goroutine reading a call stream may
// spend on one request (the call and its reply's write) before another
// goroutine takes over reading the stream.
var inlineBudget = time.Millisecond

// callStream is one stream of calls (a lane or a yamux stream): its reader
// and writer and the contexts of its running requests.
//
// The goroutine that reads a request runs it and writes the reply itself,
// then reads on: no goroutine is started and none woken for a quick call,
// which is what most calls are (a hand-off per call costs a goroutine
// switch and, on a busy machine, a thread wake-up, several times the work
// of a stat). A slow call must not hold up the others, so a watchdog timer
// checks the request being run this way; once it has run inlineBudget, the
// watchdog's own goroutine becomes the stream's reader and the old one
// finishes its request alone. Requests that arrive together (more bytes
// already buffered behind one) get a goroutine each, as before, so
// concurrent callers still run concurrently.
type callStream struct {
	se *session
	fr *frameReader
	fw *frameWriter
	c  net.Conn

	mu sync.Mutex
	// running: requests not run by the reader, by tag, for Cancel.
	running map[uint32]*callCtx
	// The request the reader runs itself (nil: none), for the watchdog.
	cur      *callCtx
	curTag   uint32
	curReply bool
	since    time.Time
	watch    *time.Timer
	armed    bool // watch is set to fire

	spawned bool // the reader started goroutines since it last read (reader's)
}

// serveCalls reads requests from one stream and runs them. Any malformed
// frame ends the whole session.
func (se *session) serveCalls(fr *frameReader, fw *frameWriter, c net.Conn) {
	cs := &callStream{se: se, fr: fr, fw: fw, c: c, running: make(map[uint32]*callCtx)}
	cs.readLoop()
}

// readLoop reads the stream until it ends or this goroutine is relieved
// of reading (its request ran too long).
func (cs *callStream) readLoop() {
	se := cs.se
	for {
		if cs.spawned && cs.fr.r.Buffered() == 0 {
			// About to block in a read: let the requests just
			// started run first (see yieldBeforeBlocking).
			cs.spawned = false
			yieldBeforeBlocking()
		}
		m, err := cs.fr.read()
		if err != nil {
			cs.c.Close()
			// A yamux stream that breaks or that the client closes
			// (per-call streams) ends only itself; garbage ends the
			// session, and so does the loss of a lane.
			if _, ok := cs.c.(*yamux.Stream); ok && !errors.Is(err, errProtocol) {
				return
			}
			se.end(err)
			return
		}
		switch m.kind {
		case kindRequest:
			relieved, err := cs.start(m)
			if err != nil {
				cs.c.Close()
				se.end(err)
				return
			}
			if relieved {
				return
			}
		case kindCancel:
			cs.mu.Lock()
			ctx := cs.running[m.tag]
			cs.mu.Unlock()
			if ctx != nil {
				ctx.cancel(context.Canceled)
			}
		default:
			cs.c.Close()
			se.end(fmt.Errorf("%w: frame kind %d from a client", errProtocol, m.kind))
			return
		}
	}
}

// start runs one request, on this goroutine or a new one. relieved says
// that another goroutine reads the stream now.
func (cs *callStream) start(m *message) (relieved bool, err error) {
	se := cs.se
	req, err := decodeRequest(m.op, m.flags, m.body)
	noReply := m.flags&flagNoReply != 0
	var unknown errUnknownOp
	if errors.As(err, &unknown) {
		if !noReply {
			go cs.reply(m.tag, m.op, nil, &Error{syscall.ENOSYS, fmt.Sprintf("proto: server %q does not know op %d", se.srv.opts.Name, m.op)})
		}
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("%w: %v", errProtocol, err)
	}
	if req.op == opForget {
		// Inline, so a Forget is applied before the calls sent after it.
		if n := se.takeLookups(req.node, req.nlookup); n > 0 {
			se.dispatch(se.ctx, &request{op: opForget, node: req.node, nlookup: n})
		}
		if !noReply {
			go cs.reply(m.tag, m.op, &reply{}, nil)
		}
		return false, nil
	}
	var deadline time.Time
	if m.status != 0 {
		deadline = time.Now().Add(time.Duration(m.status) * time.Millisecond)
	}
	ctx := newCallCtx(se.ctx, deadline, req.caller, req.hasCaller)
	if cs.fr.r.Buffered() == 0 {
		return cs.runInline(m.tag, req, ctx, !noReply), nil
	}
	// More requests wait behind this one: let it run alongside.
	if !noReply {
		cs.mu.Lock()
		cs.running[m.tag] = ctx
		cs.mu.Unlock()
	}
	select {
	case se.sem <- struct{}{}:
	case <-se.ctx.Done():
		return false, nil
	}
	se.inflight.Add(1)
	cs.spawned = true
	go func() {
		defer func() { <-se.sem }()
		cs.run(m.tag, req, ctx, !noReply)
		cs.mu.Lock()
		if cs.running[m.tag] == ctx {
			delete(cs.running, m.tag)
		}
		cs.mu.Unlock()
	}()
	return false, nil
}

// run runs a request and sends its reply.
func (cs *callStream) run(tag uint32, req *request, ctx *callCtx, wantReply bool) {
	se := cs.se
	rep, err := se.dispatch(ctx, req)
	ctx.release()
	if wantReply {
		cs.reply(tag, req.op, rep, err)
	} else if rep != nil && rep.open.File != nil {
		rep.open.File.Close()
	}
	se.inflight.Add(-1)
}

// runInline runs a request on the reading goroutine under the watchdog,
// and reports whether the watchdog gave the reading to another goroutine
// meanwhile.
func (cs *callStream) runInline(tag uint32, req *request, ctx *callCtx, wantReply bool) (relieved bool) {
	cs.se.inflight.Add(1)
	cs.mu.Lock()
	cs.cur, cs.curTag, cs.curReply, cs.since = ctx, tag, wantReply, time.Now()
	if !cs.armed {
		// Armed at most once per inlineBudget while calls come: a timer
		// set per call would cost what this saves.
		cs.armed = true
		if cs.watch == nil {
			cs.watch = time.AfterFunc(inlineBudget, cs.watchdog)
		} else {
			cs.watch.Reset(inlineBudget)
		}
	}
	cs.mu.Unlock()
	cs.run(tag, req, ctx, wantReply)
	cs.mu.Lock()
	if cs.cur == ctx {
		cs.cur = nil
	} else {
		relieved = true
		if cs.running[tag] == ctx {
			delete(cs.running, tag)
		}
	}
	cs.mu.Unlock()
	return relieved
}

// watchdog runs on its own goroutine when the watch timer fires. If the
// reader's request has run inlineBudget, this goroutine takes over reading.
func (cs *callStream) watchdog() {
	cs.mu.Lock()
	cs.armed = false
	if cs.cur == nil {
		cs.mu.Unlock()
		return
	}
	if left := inlineBudget - time.Since(cs.since); left > 0 {
		cs.armed = true
		cs.watch.Reset(left)
		cs.mu.Unlock()
		return
	}
	if cs.curReply {
		cs.running[cs.curTag] = cs.cur // the new reader may read its Cancel
	}
	cs.cur = nil
	cs.mu.Unlock()
	cs.readLoop()
}

// reply sends the answer to one request. The runtime owns a returned
// descriptor: it goes to the client on a lane, and is closed here either way.
func (cs *callStream) reply(tag uint32, op uint16, rep *reply, err error) {
	var file *os.File
	var e *enc
	h := header{tag: tag, op: op, kind: kindReply}
	if err != nil {
		if rep != nil && rep.open.File != nil {
			rep.open.File.Close()
		}
		h.status = uint32(ToErrno(err))
		e = getEnc()
		e.str(err.Error())
	} else {
		file = rep.open.File
		if file != nil && !cs.fw.fds() {
			file.Close()
			file = nil
		}
		e = getEnc()
		encodeReply(e, op, rep)
	}
	_, werr := cs.fw.write(h, e, file, time.Now().Add(writeTimeout))
	putEnc(e)
	if file != nil {
		file.Close()
	}
	if werr != nil {
		// A broken stream: its reader notices and ends what must end.
		cs.c.Close()
	}
}

func (se *session) queueNotification(n *notification) {
	se.mu.Lock()
	if se.closed {
		se.mu.Unlock()
		return
	}
	if len(se.notes) >= maxQueuedNotifications {
		se.mu.Unlock()
		// Not here: the FileSystem may hold its locks while it
		// notifies, and ending calls back into it.
		go se.end(errors.New("client does not read its notifications"))
		return
	}
	se.notes = append(se.notes, n)
	se.mu.Unlock()
	select {
	case se.wake <- struct{}{}:
	default:
	}
}

func (se *session) writeNotifications() {
	fw := newFrameWriter(se.hs, false)
	for {
		select {
		case <-se.wake:
		case <-se.ctx.Done():
			return
		}
		se.mu.Lock()
		notes := se.notes
		se.notes = nil
		se.mu.Unlock()
		for _, n := range notes {
			e := newEnc(32 + len(n.name))
			encodeNotify(e, n)
			if _, err := fw.write(header{op: n.typ, kind: kindNotify}, e, nil, time.Now().Add(writeTimeout)); err != nil {
				se.end(err)
				return
			}
		}
	}
}

var errBadHandle = syscall.EBADF

// dispatch runs one request against the FileSystem and keeps the books.
// A panic in the FileSystem fails the call with EIO, like net/http: one bad
// request does not take every client of the server down with it.
func (se *session) dispatch(ctx context.Context, r *request) (rep *reply, err error) {
	defer func() {
		if p := recover(); p != nil {
			se.srv.logf("proto: %s: panic in %s: %v\n%s", se.srv.opts.Name, opName(r.op), p, debug.Stack())
			rep, err = nil, &Error{syscall.EIO, fmt.Sprintf("proto: server %q panicked in %s: %v", se.srv.opts.Name, opName(r.op), p)}
		}
	}()
	return se.run(ctx, r)
}

func (se *session) run(ctx context.Context, r *request) (*reply, error) {
	fs := se.fs
	rep := &reply{}
	var err error
	switch r.op {
	case opRoot:
		rep.entry, err = fs.Root(ctx)
	case opGetOptions:
		rep.strs, err = fs.GetOptions(ctx)
	case opSetOptions:
		err = fs.SetOptions(ctx, r.strs)
	case opGoaway:
		err = fs.Goaway(ctx, r.flags)
	case opLookup:
		rep.entry, err = fs.Lookup(ctx, r.node, r.name)
	case opGetAttr:
		rep.attr, err = fs.GetAttr(ctx, r.node)
	case opSetAttr:
		if r.setattr.Valid&SetAttrHandle != 0 && !se.ownsHandle(r.setattr.Handle) {
			return nil, errBadHandle
		}
		rep.attr, err = fs.SetAttr(ctx, r.node, r.setattr)
	case opReadDir:
		rep.dir, err = fs.ReadDir(ctx, r.node)
	case opReadDirPlus:
		dp, ok := fs.(DirPlusReader)
		if !ok {
			return nil, syscall.ENOSYS
		}
		rep.dirp, err = dp.ReadDirPlus(ctx, r.node)
		if err == nil {
			nodes := make([]NodeID, len(rep.dirp))
			for i := range rep.dirp {
				nodes[i] = rep.dirp[i].Entry.Node
			}
			se.addLookups(nodes...)
		}
		return rep, err
	case opMkdir:
		rep.entry, err = fs.Mkdir(ctx, r.node, r.name, r.mode)
	case opMknod:
		rep.entry, err = fs.Mknod(ctx, r.node, r.name, r.mode, r.rdev)
	case opCreate:
		rep.entry, rep.open, err = fs.Create(ctx, r.node, r.name, r.flags, r.mode)
		if err == nil {
			se.addLookups(rep.entry.Node)
			se.addHandle(rep.open.Handle)
		}
		return rep, err
	case opUnlink:
		err = fs.Unlink(ctx, r.node, r.name)
	case opRmdir:
		err = fs.Rmdir(ctx, r.node, r.name)
	case opRename:
		err = fs.Rename(ctx, r.node, r.name, r.node2, r.name2, r.flags)
	case opLink:
		rep.entry, err = fs.Link(ctx, r.node, r.node2, r.name)
	case opSymlink:
		rep.entry, err = fs.Symlink(ctx, r.node, r.name, r.name2)
	case opReadlink:
		rep.str, err = fs.Readlink(ctx, r.node)
	case opGetXattr:
		rep.data, err = fs.GetXattr(ctx, r.node, r.name)
	case opListXattr:
		rep.strs, err = fs.ListXattr(ctx, r.node)
	case opSetXattr:
		err = fs.SetXattr(ctx, r.node, r.name, r.data, r.flags)
	case opRemoveXattr:
		err = fs.RemoveXattr(ctx, r.node, r.name)
	case opStatFS:
		rep.statfs, err = fs.StatFS(ctx, r.node)
	case opOpen:
		rep.open, err = fs.Open(ctx, r.node, r.flags)
		if err == nil {
			se.addHandle(rep.open.Handle)
		}
		return rep, err
	case opRead:
		if !se.ownsHandle(r.handle) {
			return nil, errBadHandle
		}
		rep.data, err = fs.Read(ctx, r.handle, r.off, int(r.size))
		if err == nil && len(rep.data) > int(r.size) {
			rep.data = rep.data[:r.size]
		}
	case opWrite:
		if !se.ownsHandle(r.handle) {
			return nil, errBadHandle
		}
		var n int
		n, err = fs.Write(ctx, r.handle, r.off, r.data)
		rep.n = uint32(n)
	case opFsync:
		if !se.ownsHandle(r.handle) {
			return nil, errBadHandle
		}
		err = fs.Fsync(ctx, r.handle, r.sync)
	case opFallocate:
		if !se.ownsHandle(r.handle) {
			return nil, errBadHandle
		}
		err = fs.Fallocate(ctx, r.handle, r.flags, r.off, r.length)
	case opLseek:
		if !se.ownsHandle(r.handle) {
			return nil, errBadHandle
		}
		rep.off, err = fs.Lseek(ctx, r.handle, r.off, int(r.flags))
	case opForget: // already clamped by the caller
		fs.Forget(ctx, r.node, r.nlookup)
	case opRelease:
		if !se.takeHandle(r.handle) {
			return nil, errBadHandle
		}
		err = fs.Release(ctx, r.handle)
	default:
		return nil, syscall.ENOSYS
	}
	if err != nil {
		return nil, err
	}
	switch r.op {
	case opRoot, opLookup, opMkdir, opMknod, opLink, opSymlink:
		se.addLookups(rep.entry.Node)
	}
	return rep, nil
}
