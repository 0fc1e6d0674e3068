package proto

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// message is one reassembled message: the first frame's header (size is the
// whole body) and its body, plus the descriptor that came with it, if any.
type message struct {
	header
	body []byte
	file *os.File
	// data, when not nil: a Read reply's bytes, received straight into
	// the caller's buffer (frameReader.into); body is then pre, the
	// reply's 4-byte length.
	data []byte
	pre  [4]byte
}

// frameReader reads messages from one byte stream. Only one goroutine
// reads at a time, but not always the same one: on the client, the caller
// whose reply is due reads for everybody (see Client.lead). A read that
// fails with a timeout leaves the reader where it stopped, and the next
// read resumes there; any other error is final for the stream.
type frameReader struct {
	r   *bufio.Reader
	fds *fdReader // nil when the transport carries no descriptors
	hdr [headerSize]byte

	hdrN int      // header bytes of the next frame read so far
	m    *message // message being assembled, from its first header on
	got  int      // body bytes of m received so far
	want int      // bytes of the current frame's body still to come

	// into, when not nil, receives the data of the successful one-frame
	// Read reply with tag intoTag (see Client.ReadInto).
	into    []byte
	intoTag uint32
}

// detach stops a message in progress from landing in into (its owner is
// leaving): what came so far, and the rest, go to a buffer of its own.
func (fr *frameReader) detach() {
	fr.into = nil
	if m := fr.m; m != nil && m.data != nil {
		body := make([]byte, 4+len(m.data))
		copy(body, m.pre[:])
		if fr.got > 4 {
			copy(body[4:], m.data[:fr.got-4])
		}
		m.body, m.data = body, nil
	}
}

func newFrameReader(r io.Reader) *frameReader {
	fr := &frameReader{}
	if f, ok := r.(*fdReader); ok {
		fr.fds = f
	}
	fr.r = bufio.NewReaderSize(r, 64<<10)
	return fr
}

var errProtocol = errors.New("protocol error")

// isTimeout reports a deadline expiry, after which a stream is intact.
func isTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// read returns the next message. A malformed header or an oversized
// message means the peer does not speak the protocol, and the caller ends
// the session; a timeout can be retried.
func (fr *frameReader) read() (*message, error) {
	m, err := fr.step()
	if err != nil && !isTimeout(err) {
		fr.abort()
	}
	return m, err
}

func (fr *frameReader) abort() {
	if fr.m != nil {
		fr.m.closeFile()
		fr.m = nil
	}
}

func (fr *frameReader) step() (*message, error) {
	for {
		for fr.want > 0 {
			var n int
			var err error
			switch m := fr.m; {
			case m.data == nil:
				n, err = io.ReadFull(fr.r, m.body[fr.got:fr.got+fr.want])
			case fr.got < len(m.pre):
				n, err = io.ReadFull(fr.r, m.pre[fr.got:])
			default:
				d := fr.got - len(m.pre)
				n, err = io.ReadFull(fr.r, m.data[d:d+fr.want])
			}
			fr.got += n
			fr.want -= n
			if err != nil {
				return nil, unexpectedEOF(err)
			}
		}
		if m := fr.m; m != nil && m.flags&flagMore == 0 {
			fr.m = nil
			if m.data == nil {
				m.body = m.body[:fr.got]
			}
			m.size = uint32(fr.got)
			return m, nil
		}
		h, err := fr.readHeader()
		if err != nil {
			if fr.m != nil && !isTimeout(err) {
				err = unexpectedEOF(err)
			}
			return nil, err
		}
		if fr.m == nil {
			m := &message{header: h}
			if h.flags&flagFD != 0 {
				if fr.fds == nil {
					return nil, fmt.Errorf("%w: descriptor flag on a transport without descriptors", errProtocol)
				}
				// The descriptor travels with the first byte of its
				// frame's header, so it is already queued.
				m.file = fr.fds.pop()
				if m.file == nil {
					return nil, fmt.Errorf("%w: descriptor flag but no descriptor received", errProtocol)
				}
			}
			if fr.into != nil && h.tag == fr.intoTag && h.kind == kindReply && h.status == 0 &&
				h.flags&(flagMore|flagFD) == 0 && h.size >= 4 && int(h.size)-4 <= len(fr.into) {
				m.data = fr.into[:h.size-4]
				m.body = m.pre[:]
			} else {
				m.body = make([]byte, h.size)
			}
			fr.m, fr.got, fr.want = m, 0, int(h.size)
			continue
		}
		m := fr.m
		if h.tag != m.tag || h.kind != m.kind || h.op != m.op || h.flags&flagFD != 0 {
			return nil, fmt.Errorf("%w: continuation frame does not match its message", errProtocol)
		}
		if fr.got+int(h.size) > MaxMessage {
			return nil, fmt.Errorf("%w: message exceeds %d bytes", errProtocol, MaxMessage)
		}
		m.body = append(m.body[:fr.got], make([]byte, h.size)...)
		m.flags = m.flags&^flagMore | h.flags&flagMore
		fr.want = int(h.size)
	}
}

func (fr *frameReader) readHeader() (header, error) {
	n, err := io.ReadFull(fr.r, fr.hdr[fr.hdrN:])
	fr.hdrN += n
	if err != nil {
		if fr.hdrN > 0 && !isTimeout(err) {
			err = unexpectedEOF(err)
		}
		return header{}, err // io.EOF here is a clean end
	}
	fr.hdrN = 0
	h, err := parseHeader(fr.hdr[:])
	if err != nil {
		return h, fmt.Errorf("%w: %v", errProtocol, err)
	}
	return h, nil
}

func unexpectedEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

func (m *message) closeFile() {
	if m.file != nil {
		m.file.Close()
		m.file = nil
	}
}

// frameWriter writes messages to one byte stream; its lock keeps the frames
// of a message together.
//
// Deadlines are coarse, because a runtime timer armed per call costs more
// than the call (adding one wakes an idle thread to watch it): the
// stream's write deadline is only moved earlier, never later, and a write
// that runs into it while its own deadline is still ahead moves it to its
// own and carries on. So with the usual deadlines (now + a constant) it is
// set once per that constant, not once per message.
type frameWriter struct {
	mu  sync.Mutex
	w   net.Conn
	uc  *net.UnixConn // set when descriptors can be sent (a lane)
	bc  *blockConn    // set on a blocking lane (descriptors too)
	wdl time.Time     // the stream's write deadline as last set (under mu)
	// scratch holds the pieces of a one-frame message, so writing it
	// allocates nothing (under mu).
	scratch [2][]byte
}

func newFrameWriter(w net.Conn, fds bool) *frameWriter {
	fw := &frameWriter{w: w}
	if fds {
		fw.uc, _ = w.(*net.UnixConn)
		fw.bc, _ = w.(*blockConn)
	}
	return fw
}

// fds reports whether descriptors can be sent.
func (fw *frameWriter) fds() bool { return fw.uc != nil || fw.bc != nil }

// write sends the message e holds. file, if not nil, is sent with the first
// frame (the caller keeps ownership). A zero deadline means none. written
// reports whether any byte reached the stream: after a partial write the
// stream is unusable.
func (fw *frameWriter) write(h header, e *enc, file *os.File, deadline time.Time) (written bool, err error) {
	buf, tail := e.b, e.tail
	total := len(buf) - headerSize + len(tail)
	if total > MaxMessage {
		return false, fmt.Errorf("message of %d bytes exceeds %d", total, MaxMessage)
	}
	if file != nil {
		if !fw.fds() {
			return false, errors.New("transport cannot carry descriptors")
		}
		h.flags |= flagFD
	}
	fw.mu.Lock()
	defer fw.mu.Unlock()
	if !deadline.IsZero() && (fw.wdl.IsZero() || deadline.Before(fw.wdl)) {
		fw.setDeadline(deadline)
	}
	if total <= MaxFrame {
		h.size = uint32(total)
		h.put(buf)
		bufs := append(fw.scratch[:0], buf)
		if len(tail) > 0 {
			bufs = append(bufs, tail)
		}
		written, err = fw.put(bufs, file, deadline)
		fw.scratch = [2][]byte{} // keep no reference to the message
		return written, err
	}
	// More than one frame: cut the body (buf's, then tail) in MaxFrame
	// pieces, each behind its own header.
	segs := [][]byte{buf[headerSize:], tail}
	var hb [headerSize]byte
	for remaining := total; remaining > 0; {
		n := min(remaining, MaxFrame)
		remaining -= n
		h.size = uint32(n)
		h.flags &^= flagMore
		if remaining > 0 {
			h.flags |= flagMore
		}
		h.put(hb[:])
		bufs := [][]byte{hb[:]}
		for need := n; need > 0; {
			for len(segs[0]) == 0 {
				segs = segs[1:]
			}
			k := min(need, len(segs[0]))
			bufs = append(bufs, segs[0][:k])
			segs[0] = segs[0][k:]
			need -= k
		}
		w, err := fw.put(bufs, file, deadline)
		written = written || w
		if err != nil {
			return written, err
		}
		file = nil
		h.flags &^= flagFD
	}
	return true, nil
}

func (fw *frameWriter) setDeadline(t time.Time) {
	fw.wdl = t
	fw.w.SetWriteDeadline(t)
}

// put writes bufs (all of them, in order: one writev, or one sendmsg when
// a descriptor goes with them), riding over expiries of an earlier
// deadline than the caller's own.
func (fw *frameWriter) put(bufs [][]byte, file *os.File, deadline time.Time) (written bool, err error) {
	for len(bufs) > 0 && len(bufs[0]) == 0 {
		bufs = bufs[1:]
	}
	for len(bufs) > 0 {
		var n int
		if fw.bc != nil {
			// sendmsg trims the pieces it sent in place.
			var rights []byte
			if file != nil {
				rights = unixRights(file)
			}
			n, err = fw.bc.sendmsg(bufs, rights)
			written = written || n > 0
			if n > 0 {
				file = nil
			}
			n = 0
		} else if file != nil {
			n, err = fw.sendFD(bufs, file)
			if n > 0 {
				file = nil
			}
		} else if len(bufs) == 1 {
			n, err = fw.w.Write(bufs[0])
		} else {
			// WriteTo consumes nb as it writes.
			nb := net.Buffers(bufs)
			var n64 int64
			n64, err = nb.WriteTo(fw.w)
			written = written || n64 > 0
			bufs = nb
		}
		written = written || n > 0
		// Drop what went out.
		for n > 0 {
			k := min(n, len(bufs[0]))
			bufs[0] = bufs[0][k:]
			n -= k
			if len(bufs[0]) == 0 {
				bufs = bufs[1:]
			}
		}
		for len(bufs) > 0 && len(bufs[0]) == 0 {
			bufs = bufs[1:]
		}
		if err == nil {
			continue
		}
		if len(bufs) == 0 {
			return written, nil
		}
		if !isTimeout(err) {
			return written, err
		}
		now := time.Now()
		if !deadline.IsZero() && !now.Before(deadline) {
			return written, err // the caller's own deadline
		}
		// An earlier deadline than ours ran out: move it to ours.
		fw.setDeadline(deadline)
	}
	return written, nil
}

// sendFD sends the descriptor with the first bytes of bufs in one sendmsg.
func (fw *frameWriter) sendFD(bufs [][]byte, file *os.File) (int, error) {
	b := bufs[0]
	if len(bufs) > 1 {
		// One sendmsg carries the descriptor: join the pieces (the
		// replies that carry one are small).
		for _, x := range bufs[1:] {
			b = append(b[:len(b):len(b)], x...)
		}
	}
	n, _, err := fw.uc.WriteMsgUnix(b, unixRights(file), nil)
	return n, err
}
