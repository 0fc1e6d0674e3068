package ftpfs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ioTimeout bounds every exchange with the server (a reply, or a pause in
// a transfer): a server that stops answering gives EIO, never a hang.
const ioTimeout = 60 * time.Second

// ftpError is a reply the server refused a command with.
type ftpError struct {
	Code int
	Msg  string
}

func (e *ftpError) Error() string { return fmt.Sprintf("%d %s", e.Code, e.Msg) }

// Errno maps the refusal to what a file system call answers.
func (e *ftpError) Errno() syscall.Errno {
	lower := strings.ToLower(e.Msg)
	switch {
	case e.Code == 530 || e.Code == 532 || strings.Contains(lower, "permission") || strings.Contains(lower, "not allowed"):
		return syscall.EACCES
	case e.Code == 550 && (strings.Contains(lower, "exist") && !strings.Contains(lower, "no such") && !strings.Contains(lower, "not exist")):
		return syscall.EEXIST
	case e.Code == 550 && strings.Contains(lower, "not empty"):
		return syscall.ENOTEMPTY
	case e.Code == 550 && strings.Contains(lower, "directory") && strings.Contains(lower, "is a"):
		return syscall.EISDIR
	case e.Code == 550 || e.Code == 450:
		return syscall.ENOENT
	case e.Code == 552 || e.Code == 452:
		return syscall.ENOSPC
	case e.Code == 553:
		return syscall.EACCES
	case e.Code == 500 || e.Code == 502 || e.Code == 504:
		return syscall.ENOTSUP
	}
	return syscall.EIO
}

// errnoOf is what a failed exchange means to a caller: the refusal's errno,
// else EIO (a dropped or silent server).
func errnoOf(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var fe *ftpError
	if errors.As(err, &fe) {
		return fe.Errno()
	}
	return syscall.EIO // the connection: dropped, refused, silent
}

// conn is one logged-in control connection.
type conn struct {
	nc   net.Conn
	tp   *textproto.Conn
	host string // the control connection's peer: data connections go there too
	mlsd bool   // the server lists with MLSD (FEAT says MLST)
	epsv bool   // EPSV worked (or has not failed yet)
}

// dial connects and logs in.
func dial(addr, user, pass string) (*conn, error) {
	nc, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		return nil, err
	}
	host, _, _ := net.SplitHostPort(nc.RemoteAddr().String())
	c := &conn{nc: nc, tp: textproto.NewConn(nc), host: host, epsv: true}
	if _, _, err := c.reply(220); err != nil {
		nc.Close()
		return nil, fmt.Errorf("greeting: %w", err)
	}
	code, _, err := c.cmd(0, "USER %s", user)
	if err == nil && code == 331 {
		_, _, err = c.cmd(230, "PASS %s", pass)
	} else if err == nil && code != 230 {
		err = &ftpError{code, "unexpected reply to USER"}
	}
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("login as %s refused: %w", user, err)
	}
	if _, msg, err := c.cmd(211, "FEAT"); err == nil {
		for _, l := range strings.Split(msg, "\n") {
			if f := strings.Fields(l); len(f) > 1 && strings.ToUpper(f[0]) == "MLST" {
				c.mlsd = true
				// Ask for the facts we read that the server has but may
				// not send by default (unix.mode).
				var want []string
				for _, fact := range strings.Split(f[1], ";") {
					fact = strings.TrimSuffix(fact, "*")
					switch strings.ToLower(fact) {
					case "type", "size", "modify", "unix.mode":
						want = append(want, fact+";")
					}
				}
				if len(want) > 0 {
					c.cmd(200, "OPTS MLST %s", strings.Join(want, ""))
				}
			}
		}
	}
	if _, _, err := c.cmd(200, "TYPE I"); err != nil {
		nc.Close()
		return nil, fmt.Errorf("TYPE I: %w", err)
	}
	return c, nil
}

func (c *conn) close() {
	c.nc.SetDeadline(time.Now().Add(time.Second))
	c.tp.Cmd("QUIT")
	c.nc.Close()
}

// reply reads a reply; expect 0 takes any code below 400, else the code
// must match (or be in the same hundred when expect is a multiple of 100).
func (c *conn) reply(expect int) (int, string, error) {
	c.nc.SetDeadline(time.Now().Add(ioTimeout))
	code, msg, err := c.tp.ReadResponse(0)
	if err != nil {
		var te *textproto.Error
		if errors.As(err, &te) {
			return code, msg, &ftpError{te.Code, te.Msg}
		}
		return code, msg, err // the connection: EOF, reset, timeout
	}
	switch {
	case expect == 0 && code < 400:
	case code == expect:
	case expect%100 == 0 && code/100 == expect/100:
	default:
		return code, msg, &ftpError{code, msg}
	}
	return code, msg, nil
}

func (c *conn) cmd(expect int, format string, args ...any) (int, string, error) {
	c.nc.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := c.tp.Cmd(format, args...); err != nil {
		return 0, "", err
	}
	return c.reply(expect)
}

// data opens a passive data connection: EPSV, else PASV. The address is
// always the control connection's peer (a PASV answer naming another host
// is not followed).
func (c *conn) data() (net.Conn, error) {
	var port int
	if c.epsv {
		_, msg, err := c.cmd(229, "EPSV")
		if err == nil {
			// "Entering Extended Passive Mode (|||6446|)"
			if i := strings.Index(msg, "(|||"); i >= 0 {
				if j := strings.Index(msg[i+4:], "|"); j >= 0 {
					port, _ = strconv.Atoi(msg[i+4 : i+4+j])
				}
			}
		} else if errnoOf(err) == syscall.EIO && !isRefusal(err) {
			return nil, err
		} else {
			c.epsv = false
		}
	}
	if port == 0 {
		_, msg, err := c.cmd(227, "PASV")
		if err != nil {
			return nil, err
		}
		port, err = parsePASV(msg)
		if err != nil {
			return nil, err
		}
	}
	return net.DialTimeout("tcp", net.JoinHostPort(c.host, strconv.Itoa(port)), ioTimeout)
}

func isRefusal(err error) bool {
	var fe *ftpError
	return errors.As(err, &fe)
}

// parsePASV reads the port of "Entering Passive Mode (h1,h2,h3,h4,p1,p2)".
func parsePASV(msg string) (int, error) {
	i, j := strings.Index(msg, "("), strings.LastIndex(msg, ")")
	if i < 0 || j < i {
		// Some servers leave out the parentheses.
		i = strings.IndexAny(msg, "0123456789") - 1
		j = len(msg)
		if i < -1 {
			return 0, fmt.Errorf("bad PASV reply %q", msg)
		}
	}
	f := strings.Split(strings.TrimSpace(msg[i+1:j]), ",")
	if len(f) != 6 {
		return 0, fmt.Errorf("bad PASV reply %q", msg)
	}
	p1, err1 := strconv.Atoi(strings.TrimSpace(f[4]))
	p2, err2 := strconv.Atoi(strings.TrimSpace(f[5]))
	if err1 != nil || err2 != nil || p1 < 0 || p1 > 255 || p2 < 0 || p2 > 255 || p1<<8|p2 == 0 {
		return 0, fmt.Errorf("bad PASV reply %q", msg)
	}
	return p1<<8 | p2, nil
}

// deadlineReader refreshes the data connection's deadline at every read,
// so a transfer may be long but not stalled.
type deadlineConn struct{ net.Conn }

func (d deadlineConn) Read(p []byte) (int, error) {
	d.SetDeadline(time.Now().Add(ioTimeout))
	return d.Conn.Read(p)
}

func (d deadlineConn) Write(p []byte) (int, error) {
	d.SetDeadline(time.Now().Add(ioTimeout))
	return d.Conn.Write(p)
}

// retrieve runs a command whose answer comes on a data connection (RETR,
// LIST, MLSD) and returns all of it; the transfer counts only when the
// server confirms it (226/250), so a server that dies midway is an error.
func (c *conn) retrieve(format string, args ...any) ([]byte, error) {
	var buf bytes.Buffer
	err := c.retrieveTo(&buf, format, args...)
	return buf.Bytes(), err
}

// errAborted is returned by a retrieveTo writer that no longer wants the
// data; the connection is dropped rather than resynchronized.
var errAborted = errors.New("transfer no longer wanted")

// retrieveTo is retrieve writing to w as the data arrives.
func (c *conn) retrieveTo(w io.Writer, format string, args ...any) error {
	dc, err := c.data()
	if err != nil {
		return err
	}
	defer dc.Close()
	if _, _, err := c.cmd(100, format, args...); err != nil {
		return err
	}
	_, cerr := io.Copy(w, deadlineConn{dc})
	dc.Close()
	if errors.Is(cerr, errAborted) {
		return cerr
	}
	if _, _, err := c.reply(200); err != nil {
		return err
	}
	return cerr
}

// store sends data with STOR.
func (c *conn) store(path string, data []byte) error {
	dc, err := c.data()
	if err != nil {
		return err
	}
	defer dc.Close()
	if _, _, err := c.cmd(100, "STOR %s", path); err != nil {
		return err
	}
	_, werr := deadlineConn{dc}.Write(data)
	dc.Close()
	if _, _, err := c.reply(200); err != nil {
		return err
	}
	return werr
}

// pool keeps up to max logged-in connections, so a long transfer does not
// hold up listings. A connection that failed is dropped; the next call
// dials again (reconnect on drop).
type pool struct {
	addr, user, pass string
	sem              chan struct{}

	mu   sync.Mutex
	idle []*conn
}

func newPool(addr, user, pass string, max int) *pool {
	return &pool{addr: addr, user: user, pass: pass, sem: make(chan struct{}, max)}
}

// do runs fn on a connection. When fn fails because the connection did
// (not because the server refused), and the connection was an idle one
// the server may have closed meanwhile, it is tried once more on a new one.
func (p *pool) do(fn func(c *conn) error) error {
	p.sem <- struct{}{}
	defer func() { <-p.sem }()
	for attempt := 0; ; attempt++ {
		p.mu.Lock()
		var c *conn
		reused := false
		if n := len(p.idle); n > 0 {
			c, p.idle = p.idle[n-1], p.idle[:n-1]
			reused = true
		}
		p.mu.Unlock()
		if c == nil {
			var err error
			if c, err = dial(p.addr, p.user, p.pass); err != nil {
				return err
			}
		}
		err := fn(c)
		if errors.Is(err, errAborted) {
			c.nc.Close()
			return err
		}
		if err == nil || isRefusal(err) && !isDrop(err) {
			p.mu.Lock()
			p.idle = append(p.idle, c)
			p.mu.Unlock()
			return err
		}
		c.nc.Close()
		if !reused || attempt > 0 {
			return err
		}
	}
}

// isDrop: 421 means the server is closing the connection.
func isDrop(err error) bool {
	var fe *ftpError
	return errors.As(err, &fe) && fe.Code == 421
}

func (p *pool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.idle {
		c.close()
	}
	p.idle = nil
}
