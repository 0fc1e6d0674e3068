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
}

// frameReader reads messages from one byte stream. Only one goroutine reads.
type frameReader struct {
	r   *bufio.Reader
	fds *fdReader // nil when the transport carries no descriptors
	hdr [headerSize]byte
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

// read returns the next message. Every error is final for the stream: a
// malformed header or an oversized message means the peer does not speak
// the protocol, and the caller ends the session.
func (fr *frameReader) read() (*message, error) {
	h, err := fr.readHeader()
	if err != nil {
		return nil, err
	}
	m := &message{header: h}
	if h.flags&flagFD != 0 {
		if fr.fds == nil {
			return nil, fmt.Errorf("%w: descriptor flag on a transport without descriptors", errProtocol)
		}
		// The descriptor travels with the first byte of its frame's
		// header, so it is already queued.
		m.file = fr.fds.pop()
		if m.file == nil {
			return nil, fmt.Errorf("%w: descriptor flag but no descriptor received", errProtocol)
		}
	}
	body := make([]byte, h.size)
	if _, err := io.ReadFull(fr.r, body); err != nil {
		m.closeFile()
		return nil, unexpectedEOF(err)
	}
	for h.flags&flagMore != 0 {
		h, err = fr.readHeader()
		if err != nil {
			m.closeFile()
			return nil, err
		}
		if h.tag != m.tag || h.kind != m.kind || h.op != m.op || h.flags&flagFD != 0 {
			m.closeFile()
			return nil, fmt.Errorf("%w: continuation frame does not match its message", errProtocol)
		}
		if len(body)+int(h.size) > MaxMessage {
			m.closeFile()
			return nil, fmt.Errorf("%w: message exceeds %d bytes", errProtocol, MaxMessage)
		}
		n := len(body)
		body = append(body, make([]byte, h.size)...)
		if _, err := io.ReadFull(fr.r, body[n:]); err != nil {
			m.closeFile()
			return nil, unexpectedEOF(err)
		}
	}
	m.body = body
	m.size = uint32(len(body))
	m.flags &^= flagMore
	return m, nil
}

func (fr *frameReader) readHeader() (header, error) {
	if _, err := io.ReadFull(fr.r, fr.hdr[:]); err != nil {
		return header{}, err // io.EOF here is a clean end
	}
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
type frameWriter struct {
	mu sync.Mutex
	w  net.Conn
	uc *net.UnixConn // set when descriptors can be sent (a lane)
}

func newFrameWriter(w net.Conn, fds bool) *frameWriter {
	fw := &frameWriter{w: w}
	if fds {
		fw.uc, _ = w.(*net.UnixConn)
	}
	return fw
}

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
		if fw.uc == nil {
			return false, errors.New("transport cannot carry descriptors")
		}
		h.flags |= flagFD
		if len(tail) > 0 { // one sendmsg carries the descriptor: no tail
			buf, tail = append(buf, tail...), nil
		}
	}
	fw.mu.Lock()
	defer fw.mu.Unlock()
	if !deadline.IsZero() {
		fw.w.SetWriteDeadline(deadline)
		defer fw.w.SetWriteDeadline(time.Time{})
	}
	if total <= MaxFrame {
		h.size = uint32(total)
		h.put(buf)
		var n int64
		switch {
		case file != nil:
			var m int
			m, err = fw.writeFirst(buf, file)
			n = int64(m)
		case len(tail) == 0:
			var m int
			m, err = fw.w.Write(buf)
			n = int64(m)
		default:
			bufs := net.Buffers{buf, tail}
			n, err = bufs.WriteTo(fw.w)
		}
		return n > 0, err
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
		bufs := net.Buffers{hb[:]}
		for need := n; need > 0; {
			for len(segs[0]) == 0 {
				segs = segs[1:]
			}
			k := min(need, len(segs[0]))
			bufs = append(bufs, segs[0][:k])
			segs[0] = segs[0][k:]
			need -= k
		}
		if h.flags&flagFD != 0 {
			var one []byte
			for _, b := range bufs {
				one = append(one, b...)
			}
			m, err := fw.writeFirst(one, file)
			if err != nil {
				return written || m > 0, err
			}
			h.flags &^= flagFD
		} else if m, err := bufs.WriteTo(fw.w); err != nil {
			return written || m > 0, err
		}
		written = true
	}
	return true, nil
}

func (fw *frameWriter) writeFirst(b []byte, file *os.File) (int, error) {
	if file == nil {
		return fw.w.Write(b)
	}
	n, _, err := fw.uc.WriteMsgUnix(b, unixRights(file), nil)
	if err != nil {
		return n, err
	}
	if n < len(b) {
		m, err := fw.w.Write(b[n:])
		return n + m, err
	}
	return n, nil
}
