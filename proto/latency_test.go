package proto

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestHungHandlerDoesNotBlockOthers: while one handler hangs (the server
// runs quick requests on the goroutine that read them, so this is the case
// where the watchdog must hand the reading to another goroutine), 8
// concurrent callers on the same client keep getting answers, and the hung
// call still gets its own answer once the handler returns.
func TestHungHandlerDoesNotBlockOthers(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			fs := newTestFS(t)
			c, _ := tr.connect(t, fs, ClientOptions{Timeout: 2 * time.Minute})
			ctx := context.Background()
			hung := make(chan error, 1)
			go func() {
				_, err := c.GetAttr(ctx, hangNode)
				hung <- err
			}()
			select {
			case <-fs.entered:
			case <-time.After(time.Minute):
				t.Fatal("the hanging call never reached the server")
			}
			var wg sync.WaitGroup
			for g := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range 200 {
						name := fmt.Sprintf("c%d-%d", g, i)
						e, err := c.Lookup(ctx, rootNode, name)
						if err != nil {
							t.Errorf("caller %d, call %d, beside a hung handler: %v", g, i, err)
							return
						}
						if e != entryFor(name) {
							t.Errorf("lookup %s got the entry of another call", name)
							return
						}
					}
				}()
			}
			wg.Wait()
			select {
			case err := <-hung:
				t.Fatalf("the hung call returned before its handler did: %v", err)
			default:
			}
			fs.unhang()
			select {
			case err := <-hung:
				noErr(t, "the hung call, once its handler returned", err)
			case <-time.After(time.Minute):
				t.Fatal("the hung call got no answer after its handler returned")
			}
		})
	}
}

// TestHungHandlersEveryCaller: every one of 8 callers hangs once, one after
// another, with calls in between, and each still gets its answer; no
// caller waits for another's handler.
func TestHungHandlersEveryCaller(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			fs := newTestFS(t)
			c, _ := tr.connect(t, fs, ClientOptions{Timeout: 2 * time.Minute})
			ctx := context.Background()
			hung := make(chan error, 8)
			for range 8 {
				go func() {
					_, err := c.GetAttr(ctx, hangNode)
					hung <- err
				}()
				select {
				case <-fs.entered:
				case <-time.After(time.Minute):
					t.Fatal("a hanging call never reached the server")
				}
				if _, err := c.GetAttr(ctx, rootNode); err != nil {
					t.Fatalf("a call beside hung handlers: %v", err)
				}
			}
			fs.unhang()
			for range 8 {
				select {
				case err := <-hung:
					noErr(t, "a hung call, once its handler returned", err)
				case <-time.After(time.Minute):
					t.Fatal("a hung call got no answer after its handler returned")
				}
			}
		})
	}
}

// TestDeadlineWhileOthersWait: callers that wait while another reads the
// socket for them (the reader role) still time out on their own deadline,
// and the reader's timing out hands the reading on to those still waiting.
func TestDeadlineWhileOthersWait(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			fs := newTestFS(t)
			c, _ := tr.connect(t, fs, ClientOptions{Timeout: time.Minute})
			var wg sync.WaitGroup
			errs := make(chan error, 4)
			for i := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					// Different deadlines, so readers and waiters time
					// out in turns.
					d := time.Duration(100*(i+1)) * time.Millisecond
					ctx := context.Background()
					if i%2 == 1 {
						var cancel context.CancelFunc
						ctx, cancel = context.WithTimeout(ctx, d)
						defer cancel()
						_, err := c.GetAttr(ctx, hangNode)
						errs <- err
						return
					}
					// A deadline but no Done: a caller that reads the
					// socket itself.
					_, err := c.GetAttr(deadlineOnly{ctx, time.Now().Add(d)}, hangNode)
					errs <- err
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if !errors.Is(err, syscall.ETIMEDOUT) {
					t.Errorf("call on a hung handler: %v, want ETIMEDOUT", err)
				}
			}
			fs.unhang()
			for range 3 {
				if _, err := c.GetAttr(context.Background(), rootNode); err != nil {
					t.Fatalf("after the timeouts: %v", err)
				}
			}
		})
	}
}

// deadlineOnly is a context with a deadline and no Done channel.
type deadlineOnly struct {
	context.Context
	d time.Time
}

func (x deadlineOnly) Deadline() (time.Time, bool) { return x.d, true }

// TestFrameReaderResumes: a read that times out in the middle of a frame
// resumes there on the next read; the message comes out whole.
func TestFrameReaderResumes(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	fr := newFrameReader(a)
	body := bytes.Repeat([]byte("x"), 3*MaxFrame/2) // two frames
	e := newEnc(0)
	e.b = append(e.b, body...)
	go newFrameWriter(b, false).write(header{tag: 7, op: opRead, kind: kindReply}, e, nil, time.Time{})
	for cut := 0; ; cut++ {
		a.SetReadDeadline(time.Now().Add(time.Duration(cut%3) * time.Microsecond))
		m, err := fr.read()
		if err == nil {
			if m.tag != 7 || m.op != opRead || m.kind != kindReply || !bytes.Equal(m.body, body) || m.flags != 0 {
				t.Fatalf("message after %d timeouts: tag %d op %d kind %d flags %d, %d body bytes", cut, m.tag, m.op, m.kind, m.flags, len(m.body))
			}
			return
		}
		if !isTimeout(err) {
			t.Fatalf("read: %v", err)
		}
		if cut > 1e6 {
			t.Fatal("no message after a million reads")
		}
	}
}

// TestCloseWakesWaiters: Close while one caller blocks reading the socket
// for its reply (the reader role) and others wait for theirs ends every
// call at once with EIO, and later calls too.
func TestCloseWakesWaiters(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			fs := newTestFS(t)
			c, _ := tr.connect(t, fs, ClientOptions{Timeout: time.Hour})
			errs := make(chan error, 4)
			for i := range 4 {
				go func() {
					ctx := context.Background()
					if i%2 == 1 { // a caller that cannot read itself
						var cancel context.CancelFunc
						ctx, cancel = context.WithTimeout(ctx, time.Hour)
						defer cancel()
					}
					_, err := c.GetAttr(ctx, hangNode)
					errs <- err
				}()
				select {
				case <-fs.entered:
				case <-time.After(time.Minute):
					t.Fatal("a hanging call never reached the server")
				}
			}
			c.Close()
			for range 4 {
				select {
				case err := <-errs:
					if !errors.Is(err, syscall.EIO) {
						t.Errorf("a waiting call after Close: %v, want EIO", err)
					}
				case <-time.After(time.Minute):
					t.Fatal("a waiting call still waits a minute after Close")
				}
			}
			if _, err := c.GetAttr(context.Background(), rootNode); !errors.Is(err, syscall.EIO) {
				t.Errorf("a call after Close: %v, want EIO", err)
			}
		})
	}
}

// TestReadInto: ReadInto gives what Read gives, whether the reply lands in
// the buffer directly (one caller) or is copied there (callers waiting on
// another, replies of more than one frame), and errors as Read does.
func TestReadInto(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			fs := newTestFS(t)
			c, _ := tr.connect(t, fs, ClientOptions{Timeout: time.Minute})
			ctx := context.Background()
			or, err := c.Open(ctx, 5, 0)
			noErr(t, "open", err)
			if or.File != nil {
				or.File.Close()
			}
			check := func(off int64, size int) {
				buf := bytes.Repeat([]byte{0xee}, size+3)
				n, err := c.ReadInto(ctx, or.Handle, off, buf[:size])
				if err != nil || n != size || !bytes.Equal(buf[:n], payload(off, size)) {
					t.Errorf("ReadInto(%d, %d bytes) = %d, %v, data equal: %v", off, size, n, err, bytes.Equal(buf[:n], payload(off, size)))
				}
				if !bytes.Equal(buf[size:], []byte{0xee, 0xee, 0xee}) {
					t.Errorf("ReadInto(%d, %d bytes) wrote past the end of its buffer", off, size)
				}
			}
			for _, size := range []int{0, 1, 100, 128 << 10, 2<<20 + 5} {
				check(int64(size), size)
			}
			var wg sync.WaitGroup
			for g := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range 50 {
						check(int64(g*1000+i), 4096+g*100+i)
					}
				}()
			}
			wg.Wait()
			if _, err := c.ReadInto(ctx, 999, 0, make([]byte, 10)); !errors.Is(err, syscall.EBADF) {
				t.Errorf("ReadInto on a handle never opened: %v, want EBADF", err)
			}
		})
	}
}

// TestFrameReaderDetach: a Read reply being received into a caller's
// buffer when the caller leaves (its deadline) is finished in a buffer of
// its own; the caller's buffer is not written after detach.
func TestFrameReaderDetach(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	fr := newFrameReader(a)
	data := payload(3, 50000)
	e := newEnc(0)
	e.bytes(data)
	wire := append([]byte(nil), e.b...)
	(&header{size: uint32(len(wire) - headerSize), tag: 9, op: opRead, kind: kindReply}).put(wire)
	dst := make([]byte, len(data))
	fr.into, fr.intoTag = dst, 9
	half := headerSize + 4 + 1000
	go b.Write(wire[:half])
	for {
		a.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		_, err := fr.read()
		if err == nil {
			t.Fatal("a message from half of it")
		}
		if !isTimeout(err) {
			t.Fatalf("read: %v", err)
		}
		if fr.got == half-headerSize {
			break
		}
	}
	if !bytes.Equal(dst[:1000], data[:1000]) {
		t.Fatal("the first part did not land in the caller's buffer")
	}
	fr.detach()
	clear(dst)
	go b.Write(wire[half:])
	a.SetReadDeadline(time.Time{})
	m, err := fr.read()
	noErr(t, "read after detach", err)
	if m.data != nil || !bytes.Equal(m.body, e.b[headerSize:]) {
		t.Errorf("message after detach: %d body bytes, data %v", len(m.body), m.data != nil)
	}
	if !bytes.Equal(dst, make([]byte, len(dst))) {
		t.Error("the caller's buffer was written after detach")
	}
}

// TestOtherProcessLane: with the server in another process the lane is a
// blocking socket on both sides (blockConn); everything a lane promises
// holds there: replies, descriptors, ReadInto, deadlines, a hung handler
// beside quick calls, concurrent callers.
func TestOtherProcessLane(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "p.sock")
	startHelperServer(t, sock, nil)
	c, err := Dial(sock, ClientOptions{Timeout: time.Minute})
	noErr(t, "dial", err)
	defer c.Close()
	if _, ok := c.callsConn.(*blockConn); !ok {
		t.Fatalf("the lane to another process is a %T, want a blocking one", c.callsConn)
	}
	ctx := context.Background()
	e, err := c.Lookup(ctx, rootNode, "x")
	noErr(t, "lookup", err)
	eq(t, "entry", e, entryFor("x"))
	or, err := c.Open(ctx, 3, syscall.O_RDONLY)
	noErr(t, "open", err)
	if or.File == nil {
		t.Fatal("no descriptor came with Open from another process")
	}
	b, err := io.ReadAll(or.File)
	or.File.Close()
	noErr(t, "read from the passed descriptor", err)
	eq(t, "content", string(b), "hello through a descriptor\n")
	buf := make([]byte, 1000)
	n, err := c.ReadInto(ctx, or.Handle, 0, buf)
	noErr(t, "readinto", err)
	eq(t, "readinto count", n, len(buf))
	for _, size := range []int{128 << 10, 2<<20 + 5} { // in place; more than one frame
		big := make([]byte, size)
		n, err := c.ReadInto(ctx, or.Handle, 0, big)
		noErr(t, "readinto", err)
		eq(t, "readinto count", n, size)
	}
	// The helper's handlers on hangNode never return: deadlines only.
	if _, err := c.GetAttr(deadlineOnly{ctx, time.Now().Add(200 * time.Millisecond)}, hangNode); !errors.Is(err, syscall.ETIMEDOUT) {
		t.Fatalf("getattr on a hung handler: %v, want ETIMEDOUT", err)
	}
	// A caller interrupted while it reads the lane for its reply.
	ictx, interrupt := context.WithCancel(ctx)
	time.AfterFunc(100*time.Millisecond, interrupt)
	if _, err := c.GetAttr(ictx, hangNode); !errors.Is(err, syscall.EINTR) {
		t.Fatalf("getattr interrupted: %v, want EINTR", err)
	}
	// Callers that read for themselves and callers that wait, timing out
	// in turns while the others wait on.
	var hw sync.WaitGroup
	for i := range 6 {
		hw.Add(1)
		go func() {
			defer hw.Done()
			d := time.Duration(50*(i+1)) * time.Millisecond
			var err error
			if i%2 == 0 {
				_, err = c.GetAttr(deadlineOnly{ctx, time.Now().Add(d)}, hangNode)
			} else {
				tctx, cancel := context.WithTimeout(ctx, d)
				_, err = c.GetAttr(tctx, hangNode)
				cancel()
			}
			if !errors.Is(err, syscall.ETIMEDOUT) {
				t.Errorf("call %d on a hung handler: %v, want ETIMEDOUT", i, err)
			}
		}()
	}
	hw.Wait()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				name := fmt.Sprintf("p%d-%d", g, i)
				e, err := c.Lookup(ctx, rootNode, name)
				if err != nil || e != entryFor(name) {
					t.Errorf("lookup %s beside a hung handler: %v", name, err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// TestFDReaderDeadline: a lane read that ends in a deadline (one that
// passed before the read, or while it waited) delivers no bytes, and the
// stream goes on intact.
func TestFDReaderDeadline(t *testing.T) {
	a, b, err := socketpair()
	noErr(t, "socketpair", err)
	defer a.Close()
	defer b.Close()
	fr := newFrameReader(newFDReader(a.(*net.UnixConn)))
	fw := newFrameWriter(b, false)
	send := func(tag uint32, size int) []byte {
		e := newEnc(0)
		e.b = append(e.b, payload(int64(tag), size)...)
		go fw.write(header{tag: tag, op: opGetAttr, kind: kindReply}, e, nil, time.Time{})
		return e.b[headerSize:]
	}
	expect := func(tag uint32, body []byte) {
		t.Helper()
		m, err := fr.read()
		if err != nil || m.tag != tag || !bytes.Equal(m.body, body) {
			t.Fatalf("message %d: %v, got tag %v", tag, err, m)
		}
	}
	expect(1, send(1, 200000)) // a big read first: a large count to go stale
	for i, d := range []time.Duration{-time.Second, 20 * time.Millisecond} {
		a.SetReadDeadline(time.Now().Add(d))
		if m, err := fr.read(); !isTimeout(err) {
			t.Fatalf("read %d past its deadline: %v, %v", i, m, err)
		}
	}
	a.SetReadDeadline(time.Time{})
	expect(2, send(2, 100))
	expect(3, send(3, 70000))
}

// TestCallContext: the context a request runs in carries the caller and
// the deadline, ends when the client cancels the call or the session
// ends, and is done once the call has returned, as a context.WithTimeout
// whose cancel was called.
func TestCallContext(t *testing.T) {
	parent, cancelParent := context.WithCancel(context.Background())
	defer cancelParent()
	dl := time.Now().Add(time.Hour)
	c := newCallCtx(parent, dl, Caller{Uid: 7, Gid: 8, Pid: 9}, true)
	if got, ok := c.Deadline(); !ok || !got.Equal(dl) {
		t.Errorf("deadline %v %v", got, ok)
	}
	if who, ok := CallerFrom(c); !ok || who.Uid != 7 || who.Pid != 9 {
		t.Errorf("caller %v %v", who, ok)
	}
	if c.Err() != nil {
		t.Fatalf("a fresh call's context has Err %v", c.Err())
	}
	done := c.Done()
	c.cancel(context.Canceled) // the client's Cancel
	<-done
	if !errors.Is(c.Err(), context.Canceled) {
		t.Errorf("after Cancel: %v", c.Err())
	}
	c.release()

	// The session's end reaches a context whose Done is watched, and one
	// whose Done nobody asked for.
	c1 := newCallCtx(parent, time.Time{}, Caller{}, false)
	c2 := newCallCtx(parent, time.Time{}, Caller{}, false)
	done1 := c1.Done()
	cancelParent()
	<-done1
	if c2.Err() == nil {
		t.Error("the session ended but an unwatched call's context did not")
	}
	<-c2.Done()
	c1.release()
	c2.release()

	// The deadline.
	c3 := newCallCtx(context.Background(), time.Now().Add(20*time.Millisecond), Caller{}, false)
	<-c3.Done()
	if !errors.Is(c3.Err(), context.DeadlineExceeded) {
		t.Errorf("after the deadline: %v", c3.Err())
	}
	c3.release()
	c4 := newCallCtx(context.Background(), time.Now().Add(-time.Second), Caller{}, false)
	if !errors.Is(c4.Err(), context.DeadlineExceeded) {
		t.Errorf("past its deadline, unwatched: %v", c4.Err())
	}

	// Done once the call has returned.
	c5 := newCallCtx(context.Background(), time.Time{}, Caller{}, false)
	c5.release()
	<-c5.Done()
	if c5.Err() == nil {
		t.Error("a finished call's context is not done")
	}
}
