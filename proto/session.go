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

// callStream is one stream of calls (a lane or a yamux stream): its reader
// and writer and the cancel functions of its running requests.
type callStream struct {
	se *session
	fw *frameWriter
	c  net.Conn

	mu      sync.Mutex
	running map[uint32]context.CancelFunc
}

// serveCalls reads requests from one stream and runs each in its own
// goroutine. Any malformed frame ends the whole session.
func (se *session) serveCalls(fr *frameReader, fw *frameWriter, c net.Conn) {
	cs := &callStream{se: se, fw: fw, c: c, running: make(map[uint32]context.CancelFunc)}
	defer c.Close()
	for {
		m, err := fr.read()
		if err != nil {
			// A yamux stream that breaks or that the client closes
			// (per-call streams) ends only itself; garbage ends the
			// session, and so does the loss of a lane.
			if _, ok := c.(*yamux.Stream); ok && !errors.Is(err, errProtocol) {
				return
			}
			se.end(err)
			return
		}
		switch m.kind {
		case kindRequest:
			if err := cs.start(m); err != nil {
				se.end(err)
				return
			}
		case kindCancel:
			cs.mu.Lock()
			cancel := cs.running[m.tag]
			cs.mu.Unlock()
			if cancel != nil {
				cancel()
			}
		default:
			se.end(fmt.Errorf("%w: frame kind %d from a client", errProtocol, m.kind))
			return
		}
	}
}

func (cs *callStream) start(m *message) error {
	se := cs.se
	req, err := decodeRequest(m.op, m.flags, m.body)
	var unknown errUnknownOp
	if errors.As(err, &unknown) {
		if m.flags&flagNoReply == 0 {
			go cs.reply(m.tag, m.op, nil, &Error{syscall.ENOSYS, fmt.Sprintf("proto: server %q does not know op %d", se.srv.opts.Name, m.op)})
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w: %v", errProtocol, err)
	}
	if req.op == opForget {
		// Inline, so a Forget is applied before the calls sent after it.
		if n := se.takeLookups(req.node, req.nlookup); n > 0 {
			se.dispatch(se.ctx, &request{op: opForget, node: req.node, nlookup: n})
		}
		if m.flags&flagNoReply == 0 {
			go cs.reply(m.tag, m.op, &reply{}, nil)
		}
		return nil
	}
	var ctx context.Context
	var cancel context.CancelFunc
	if m.status != 0 {
		ctx, cancel = context.WithTimeout(se.ctx, time.Duration(m.status)*time.Millisecond)
	} else {
		ctx, cancel = context.WithCancel(se.ctx)
	}
	if req.hasCaller {
		ctx = WithCaller(ctx, req.caller)
	}
	noReply := m.flags&flagNoReply != 0
	if !noReply {
		cs.mu.Lock()
		cs.running[m.tag] = cancel
		cs.mu.Unlock()
	}
	select {
	case se.sem <- struct{}{}:
	case <-se.ctx.Done():
		cancel()
		return nil
	}
	se.inflight.Add(1)
	go func() {
		defer func() { <-se.sem; se.inflight.Add(-1) }()
		rep, err := se.dispatch(ctx, req)
		if noReply {
			cancel()
			if rep != nil && rep.open.File != nil {
				rep.open.File.Close()
			}
			return
		}
		cs.mu.Lock()
		delete(cs.running, m.tag)
		cs.mu.Unlock()
		cancel()
		cs.reply(m.tag, m.op, rep, err)
	}()
	return nil
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
		e = newEnc(len(err.Error()) + 4)
		e.str(err.Error())
	} else {
		file = rep.open.File
		if file != nil && cs.fw.uc == nil {
			file.Close()
			file = nil
		}
		e = newEnc(64)
		encodeReply(e, op, rep)
	}
	_, werr := cs.fw.write(h, e, file, time.Now().Add(writeTimeout))
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
