package fs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"herd/proto"
)

// Translator records and control xattrs.
const (
	xattrTranslator = "user.herd.translator" // passive record: argv joined with NUL
	xattrActive     = "user.herd.active"     // start now / show running argv
	xattrGoaway     = "user.herd.goaway"     // stop the running translator
	xattrOptions    = "user.herd.options"    // relay Get/SetOptions
	// transTable is the side table of passive records in a directory whose
	// filesystem refuses user xattrs (or for nodes that cannot carry them).
	transTable = ".herd-translators"
)

// translator is a translator attached to a node, from its start until its
// process exits.
type translator struct {
	argv    []string
	passive bool
	socket  string
	ready   chan struct{} // closed when started (err says whether it worked)
	err     error
	cmd     *exec.Cmd
	client  *proto.Client
	exited  chan struct{} // closed when the process exited
	root    proto.Attr
}

// sideTable reads the side table of the directory dirfd.
func readSideTable(dirfd int) map[string]string {
	fd, err := unix.Openat(dirfd, transTable, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil
	}
	f := os.NewFile(uintptr(fd), transTable)
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil {
		return nil
	}
	return parseSideTable(b)
}

// parseSideTable decodes a side table: a JSON object from names to
// NUL-joined argvs. Anything else (a corrupt file) counts as empty.
func parseSideTable(b []byte) map[string]string {
	var m map[string]string
	if json.Unmarshal(b, &m) != nil {
		return nil
	}
	return m
}

func writeSideTable(dirfd int, m map[string]string) error {
	if len(m) == 0 {
		err := unix.Unlinkat(dirfd, transTable, 0)
		if err == unix.ENOENT {
			err = nil
		}
		return err
	}
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	tmp := transTable + ".new"
	fd, err := createAt(dirfd, tmp, unix.O_CREAT|unix.O_TRUNC|unix.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	_, err = unix.Write(fd, b)
	unix.Close(fd)
	if err != nil {
		return err
	}
	return unix.Renameat(dirfd, tmp, dirfd, transTable)
}

func (s *Server) sideTableGet(dirfd int, name string) ([]byte, bool) {
	if name == "" {
		return nil, false
	}
	m := readSideTable(dirfd)
	v, ok := m[name]
	if !ok {
		return nil, false
	}
	return []byte(v), true
}

// dropTransRecord forgets a side-table record for name (the name is going away).
func (s *Server) dropTransRecord(dirfd int, name string) {
	m := readSideTable(dirfd)
	if _, ok := m[name]; ok {
		delete(m, name)
		writeSideTable(dirfd, m)
	}
}

// moveTransRecord carries side-table records along with a rename (both
// ways for an exchange).
func (s *Server) moveTransRecord(ofd int, oldName string, nfd int, newName string, exchange bool) {
	om := readSideTable(ofd)
	ov, ook := om[oldName]
	var nv string
	var nok bool
	if exchange {
		nm := readSideTable(nfd)
		nv, nok = nm[newName]
	}
	if !ook && !nok {
		return
	}
	om = readSideTable(ofd)
	delete(om, oldName)
	if nok {
		om[oldName] = nv
	}
	writeSideTable(ofd, om)
	nm := readSideTable(nfd)
	if nm == nil {
		nm = map[string]string{}
	}
	delete(nm, newName)
	if ook {
		nm[newName] = ov
	}
	writeSideTable(nfd, nm)
}

// copyTransRecord copies a side-table record along with a copy-up.
func copyTransRecord(lpfd int, name string, upfd int, newName string) {
	v, ok := readSideTable(lpfd)[name]
	if !ok {
		return
	}
	m := readSideTable(upfd)
	if m == nil {
		m = map[string]string{}
	}
	m[newName] = v
	writeSideTable(upfd, m)
}

// mayTranslate: only the node's owner or root may attach a translator.
func (s *Server) mayTranslate(ctx context.Context, dirfd int, name string) error {
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, atFlags(name)); err != nil {
		return err
	}
	uid := uint32(s.euid)
	if c, ok := callerOf(ctx); ok {
		uid = c.Uid
	}
	if uid != 0 && uid != st.Uid {
		return syscall.EPERM
	}
	return nil
}

func (s *Server) setTransRecord(ctx context.Context, n *node, dirfd int, name string, value []byte, flags uint32) error {
	if err := s.mayTranslate(ctx, dirfd, name); err != nil {
		return errno(err)
	}
	if len(splitNul(value)) == 0 {
		return syscall.EINVAL
	}
	err := setXattrAt(dirfd, name, xattrTranslator, value, int(flags))
	if err == unix.ENOTSUP || err == unix.EPERM {
		if name == "" {
			return errno(err)
		}
		m := readSideTable(dirfd)
		if m == nil {
			m = map[string]string{}
		}
		m[name] = string(value)
		err = writeSideTable(dirfd, m)
	}
	if err == nil {
		// Clients may cache the name as the plain node: their next lookup
		// must come here again to start the translator.
		s.invalNodeEntry(n)
	}
	return errno(err)
}

func (s *Server) removeTransRecord(ctx context.Context, n *node, dirfd int, name string) error {
	if err := s.mayTranslate(ctx, dirfd, name); err != nil {
		return errno(err)
	}
	err := removeXattrAt(dirfd, name, xattrTranslator)
	if m := readSideTable(dirfd); m != nil {
		if _, ok := m[name]; ok {
			delete(m, name)
			err = writeSideTable(dirfd, m)
		}
	}
	if err == nil {
		s.invalNodeEntry(n)
	}
	return errno(err)
}

var serverSeq atomic.Int64

// socketFor is where node n's translator listens. It is fixed per node, so
// a listing can name it before the translator runs. Each server has its own
// directory: several servers (a translator built on this package, say) may
// share a runtime directory.
func (s *Server) socketFor(n *node) string {
	return filepath.Join(s.transDir, fmt.Sprintf("%d.sock", n.id))
}

// record is a passive translator record with its node's owner.
type record struct {
	argv     []string
	uid, gid uint32
}

// recordAt reads the passive record of name in dirfd (st is its stat):
// the xattr, else the directory's side table. The side table is read only
// where an xattr cannot be (not a regular file or directory, or the
// filesystem refuses user xattrs), so most lookups cost one getxattr.
func (s *Server) recordAt(dirfd int, name string, st *unix.Stat_t) *record {
	v, err := getXattrAt(dirfd, name, xattrTranslator)
	if err != nil {
		t := st.Mode & unix.S_IFMT
		if err == unix.ENODATA && (t == unix.S_IFREG || t == unix.S_IFDIR) {
			return nil
		}
		var ok bool
		if v, ok = s.sideTableGet(dirfd, name); !ok {
			return nil
		}
	}
	argv := splitNul(v)
	if len(argv) == 0 {
		return nil
	}
	return &record{argv: argv, uid: st.Uid, gid: st.Gid}
}

// running returns n's translator if one is running or starting.
func (s *Server) running(n *node) *translator {
	s.mu.Lock()
	defer s.mu.Unlock()
	return n.trans
}

// translate answers a lookup of c: with a redirect when c is translated,
// starting its passive translator if need be.
func (s *Server) translate(ctx context.Context, c *node, e proto.Entry, rec *record) (proto.Entry, error) {
	if s.opts.RuntimeDir == "" {
		return e, nil
	}
	tr := s.running(c)
	if tr == nil {
		if rec == nil {
			return e, nil
		}
		var err error
		tr, err = s.startTranslator(c, rec.argv, rec.uid, rec.gid, true)
		if err != nil {
			s.Forget(ctx, c.id, 1)
			return proto.Entry{}, err
		}
	} else {
		<-tr.ready
		if tr.err != nil {
			s.Forget(ctx, c.id, 1)
			return proto.Entry{}, tr.err
		}
	}
	e.Attr = tr.root
	e.Redirect = &proto.Redirect{Socket: tr.socket}
	return e, nil
}

// plannedRedirect is ReadDirPlus's answer for a translated entry: the
// redirect, without starting a passive translator (a client that follows
// it looks the name up, which starts it).
func (s *Server) plannedRedirect(c *node, rec *record) *proto.Redirect {
	if s.opts.RuntimeDir == "" {
		return nil
	}
	if tr := s.running(c); tr != nil {
		return &proto.Redirect{Socket: tr.socket}
	}
	if rec != nil {
		return &proto.Redirect{Socket: s.socketFor(c)}
	}
	return nil
}

// resolveTranslator finds a translator program: a path as given, else the
// directory of the running program (where herd installs its translators),
// else $PATH.
func resolveTranslator(name string) (string, error) {
	if strings.ContainsRune(name, '/') {
		return name, nil
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return exec.LookPath(name)
}

// startTranslator runs argv on node n as uid/gid (when we are root) and
// waits for its handshake. Concurrent lookups wait for the same start.
func (s *Server) startTranslator(n *node, argv []string, uid, gid uint32, passive bool) (*translator, error) {
	s.tmu.Lock()
	closed := s.closed
	s.tmu.Unlock()
	if closed {
		return nil, syscall.ESHUTDOWN
	}
	s.mu.Lock()
	if tr := n.trans; tr != nil {
		s.mu.Unlock()
		<-tr.ready
		if tr.err != nil {
			return nil, tr.err
		}
		if !passive {
			return nil, syscall.EBUSY
		}
		return tr, nil
	}
	tr := &translator{argv: argv, passive: passive, socket: s.socketFor(n),
		ready: make(chan struct{}), exited: make(chan struct{})}
	n.trans = tr
	s.mu.Unlock()

	tr.err = s.runTranslator(n, tr, uid, gid)
	if tr.err != nil {
		// The process is gone (runTranslator waited); its socket goes
		// before the node is free for the next start at the same path.
		os.Remove(tr.socket)
		s.mu.Lock()
		if n.trans == tr {
			n.trans = nil
		}
		s.maybeFreeLocked(n)
		s.mu.Unlock()
		close(tr.ready)
		s.logf("translator %q on node %d: %v", argv, n.id, tr.err)
		return nil, tr.err
	}
	close(tr.ready)
	s.tmu.Lock()
	closed = s.closed
	s.tmu.Unlock()
	if closed {
		// Close ran meanwhile and did not see this one.
		s.stopTranslator(n, true)
		return nil, syscall.ESHUTDOWN
	}
	s.logf("translator %q started on node %d at %s", argv, n.id, tr.socket)
	s.invalNodeEntry(n)
	return tr, nil
}

func (s *Server) logf(format string, args ...any) {
	if s.opts.Logf != nil {
		s.opts.Logf(format, args...)
	}
}

// invalNodeEntry tells clients that n's name changed meaning (a translator
// started or stopped on it).
func (s *Server) invalNodeEntry(n *node) {
	s.mu.Lock()
	p, name := n.parent, n.name
	s.mu.Unlock()
	if p != nil {
		s.invalEntry(p, name)
	}
}

// underlyingFD opens node n for its translator: read-write where allowed
// (the writable layer), else read-only, O_PATH for directories and others.
func (s *Server) underlyingFD(n *node) (*os.File, error) {
	s.treeMu.RLock()
	defer s.treeMu.RUnlock()
	st, inUpper, comps, err := s.locate(n)
	if err != nil {
		return nil, err
	}
	root := s.upper
	if !inUpper {
		root = s.lower
	}
	p := joinPath(comps)
	var fd int
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		fd = -1
		if root == s.upper && !s.isReadOnly() {
			if fd, err = openBeneath(root, p, unix.O_RDWR|unix.O_NOFOLLOW); err != nil {
				fd = -1
			}
		}
		if fd < 0 {
			fd, err = openBeneath(root, p, unix.O_RDONLY|unix.O_NOFOLLOW)
		}
	case unix.S_IFDIR:
		fd, err = openBeneath(root, p, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW)
	default:
		fd, err = openBeneath(root, p, unix.O_PATH|unix.O_NOFOLLOW)
	}
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), p), nil
}

func (s *Server) runTranslator(n *node, tr *translator, uid, gid uint32) error {
	prog, err := resolveTranslator(tr.argv[0])
	if err != nil {
		return fmt.Errorf("translator %s: %w", tr.argv[0], syscall.ENOENT)
	}
	if err := os.MkdirAll(filepath.Dir(tr.socket), 0o700); err != nil {
		return err
	}
	os.Remove(tr.socket)
	l, err := net.Listen("unix", tr.socket)
	if err != nil {
		return err
	}
	ul := l.(*net.UnixListener)
	ul.SetUnlinkOnClose(false)
	lf, err := ul.File()
	l.Close()
	if err != nil {
		os.Remove(tr.socket)
		return err
	}
	defer lf.Close()
	under, err := s.underlyingFD(n)
	if err != nil {
		os.Remove(tr.socket)
		return err
	}
	defer under.Close()

	cmd := exec.Command(prog, tr.argv[1:]...)
	cmd.Args[0] = tr.argv[0]
	env := []string{"LISTEN_FDS=1", "HERD_UNDERLYING=4"}
	for _, kv := range os.Environ() {
		// HERD_UPPER is this server's layer, not the translator's.
		if !strings.HasPrefix(kv, "LISTEN_") && !strings.HasPrefix(kv, "HERD_UNDERLYING=") && !strings.HasPrefix(kv, "HERD_UPPER=") {
			env = append(env, kv)
		}
	}
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.ExtraFiles = []*os.File{lf, under}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if s.euid == 0 && uid != 0 {
		// The Hurd runs a passive translator with its node owner's identity.
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}
		os.Chown(tr.socket, int(uid), int(gid))
	}
	if err := cmd.Start(); err != nil {
		os.Remove(tr.socket)
		return fmt.Errorf("translator %s: %w", prog, errno(err))
	}
	tr.cmd = cmd
	go func() {
		cmd.Wait()
		close(tr.exited)
		s.translatorExited(n, tr)
	}()

	// Wait for the handshake, or for the process to die, or the timeout.
	deadline := time.Now().Add(s.opts.TranslatorTimeout)
	type dialed struct {
		c   *proto.Client
		err error
	}
	ch := make(chan dialed, 1)
	go func() {
		c, err := proto.Dial(tr.socket, proto.ClientOptions{Timeout: time.Until(deadline)})
		ch <- dialed{c, err}
	}()
	fail := func(err error) error {
		cmd.Process.Kill()
		<-tr.exited
		return err
	}
	var c *proto.Client
	select {
	case d := <-ch:
		if d.err != nil {
			select {
			case <-tr.exited:
				return fail(fmt.Errorf("translator %s exited at start: %w", prog, syscall.EIO))
			default:
			}
			if errors.Is(d.err, syscall.ETIMEDOUT) || time.Now().After(deadline) {
				return fail(fmt.Errorf("translator %s did not answer within %v: %w", prog, s.opts.TranslatorTimeout, syscall.ETIMEDOUT))
			}
			return fail(fmt.Errorf("translator %s: %v: %w", prog, d.err, syscall.EIO))
		}
		c = d.c
	case <-tr.exited:
		go func() {
			if d := <-ch; d.c != nil {
				d.c.Close()
			}
		}()
		return fmt.Errorf("translator %s exited at start: %w", prog, syscall.EIO)
	case <-time.After(time.Until(deadline) + time.Second):
		go func() {
			if d := <-ch; d.c != nil {
				d.c.Close()
			}
		}()
		return fail(fmt.Errorf("translator %s did not answer within %v: %w", prog, s.opts.TranslatorTimeout, syscall.ETIMEDOUT))
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline.Add(time.Second))
	defer cancel()
	root, err := c.Root(ctx)
	if err != nil {
		c.Close()
		return fail(fmt.Errorf("translator %s: root: %w", prog, errno(err)))
	}
	c.Forget(ctx, root.Node, 1)
	tr.client, tr.root = c, root.Attr
	return nil
}

// translatorExited cleans up after a translator's process: its socket goes,
// the node forgets it (a passive one starts again on the next lookup).
func (s *Server) translatorExited(n *node, tr *translator) {
	<-tr.ready
	if tr.err != nil {
		return // a failed start: startTranslator cleaned up
	}
	tr.client.Close()
	os.Remove(tr.socket)
	s.mu.Lock()
	mine := n.trans == tr
	if mine {
		n.trans = nil
	}
	s.maybeFreeLocked(n)
	s.mu.Unlock()
	if mine && tr.err == nil {
		s.logf("translator %q on node %d exited (%v)", tr.argv, n.id, tr.cmd.ProcessState)
		s.invalNodeEntry(n)
	}
}

// stopTranslator stops n's translator: goaway, then SIGTERM, then SIGKILL.
// With force the goaway is forced and a refusal does not keep it running.
func (s *Server) stopTranslator(n *node, force bool) error {
	tr := s.running(n)
	if tr == nil {
		return syscall.ENODATA
	}
	<-tr.ready
	if tr.err != nil {
		return syscall.ENODATA
	}
	var flags uint32
	if force {
		flags = proto.GoawayForce
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	err := tr.client.Goaway(ctx, flags)
	cancel()
	if err != nil && !force && errors.Is(err, syscall.EBUSY) {
		return syscall.EBUSY
	}
	for _, sig := range []syscall.Signal{0, syscall.SIGTERM, syscall.SIGKILL} {
		if sig != 0 {
			tr.cmd.Process.Signal(sig)
		}
		select {
		case <-tr.exited:
			s.waitCleanup(n, tr)
			return nil
		case <-time.After(5 * time.Second):
		}
	}
	<-tr.exited
	s.waitCleanup(n, tr)
	return nil
}

// waitCleanup waits until translatorExited has run for tr.
func (s *Server) waitCleanup(n *node, tr *translator) {
	for i := 0; i < 1000; i++ {
		if s.running(n) != tr {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// stopAllTranslators stops every translator (Server.Close).
func (s *Server) stopAllTranslators() {
	s.tmu.Lock()
	s.closed = true
	s.tmu.Unlock()
	s.mu.Lock()
	var nodes []*node
	for _, n := range s.nodes {
		nodes = append(nodes, n)
	}
	s.mu.Unlock()
	done := make(chan struct{}, len(nodes))
	k := 0
	for _, n := range nodes {
		if s.running(n) != nil {
			k++
			go func(n *node) { s.stopTranslator(n, true); done <- struct{}{} }(n)
		}
	}
	for ; k > 0; k-- {
		<-done
	}
}

// transGetXattr answers the control xattrs: user.herd.active (the running
// translator's argv) and user.herd.options (its options).
func (s *Server) transGetXattr(ctx context.Context, n *node, attr string) ([]byte, bool, error) {
	switch attr {
	case xattrActive, xattrOptions:
	default:
		return nil, false, nil
	}
	tr := s.running(n)
	if tr == nil {
		return nil, true, syscall.ENODATA
	}
	<-tr.ready
	if tr.err != nil {
		return nil, true, syscall.ENODATA
	}
	if attr == xattrActive {
		return []byte(strings.Join(tr.argv, "\x00")), true, nil
	}
	opts, err := tr.client.GetOptions(ctx)
	if err != nil {
		return nil, true, errno(err)
	}
	return []byte(strings.Join(opts, "\x00")), true, nil
}

// transSetXattr handles the control xattrs: user.herd.active starts a
// translator now, user.herd.goaway stops it, user.herd.options sets its
// options.
func (s *Server) transSetXattr(ctx context.Context, n *node, attr string, value []byte) (bool, error) {
	switch attr {
	case xattrActive, xattrGoaway, xattrOptions:
	default:
		return false, nil
	}
	s.treeMu.RLock()
	dirfd, name, err := s.anyAt(n)
	var st unix.Stat_t
	if err == nil {
		err = unix.Fstatat(dirfd, name, &st, atFlags(name))
		if err == nil {
			err = s.mayTranslate(ctx, dirfd, name)
		}
		unix.Close(dirfd)
	}
	s.treeMu.RUnlock()
	if err != nil {
		return true, errno(err)
	}
	switch attr {
	case xattrActive:
		if s.opts.RuntimeDir == "" {
			return true, syscall.ENOTSUP
		}
		argv := splitNul(value)
		if len(argv) == 0 {
			return true, syscall.EINVAL
		}
		if n == s.root {
			return true, syscall.EBUSY
		}
		_, err := s.startTranslator(n, argv, st.Uid, st.Gid, false)
		return true, errno(err)
	case xattrGoaway:
		switch string(value) {
		case "", "force":
		default:
			return true, syscall.EINVAL
		}
		return true, s.stopTranslator(n, string(value) == "force")
	default:
		tr := s.running(n)
		if tr == nil {
			return true, syscall.ENODATA
		}
		<-tr.ready
		if tr.err != nil {
			return true, syscall.ENODATA
		}
		return true, errno(tr.client.SetOptions(ctx, splitNul(value)))
	}
}
