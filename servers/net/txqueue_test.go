package net

import (
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// recWriter records the first byte of every packet written, and can hold
// a write until released (to keep txQueue's writer busy).
type recWriter struct {
	mu      sync.Mutex
	got     []byte
	holdOn  byte          // a packet with this tag blocks the write...
	release chan struct{} // ...until this is closed (let)
	held    chan struct{} // closed when the held write started
	let     func()
}

// hold makes the next write of a packet tagged tag wait until let.
func (w *recWriter) hold(tag byte) {
	rel := make(chan struct{})
	var once sync.Once
	w.release, w.held, w.holdOn = rel, make(chan struct{}), tag
	w.let = func() { once.Do(func() { close(rel) }) }
}

func (w *recWriter) WritePackets(l stack.PacketBufferList) (int, tcpip.Error) {
	for _, p := range l.AsSlice() {
		tag := p.ToView().AsSlice()[0]
		if w.release != nil && tag == w.holdOn {
			close(w.held)
			<-w.release
		}
		w.mu.Lock()
		w.got = append(w.got, tag)
		w.mu.Unlock()
	}
	return l.Len(), nil
}

func (w *recWriter) written() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(w.got)
}

func (w *recWriter) waitFor(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for w.written() != want {
		if time.Now().After(deadline) {
			t.Fatalf("written %q, want %q", w.written(), want)
		}
		time.Sleep(time.Millisecond)
	}
}

func testPacket(tag byte, size int, owner tcpip.PacketOwner) *stack.PacketBuffer {
	b := make([]byte, size)
	b[0] = tag
	p := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
	p.Owner = owner
	return p
}

func send(t *testing.T, q *txQueue, p *stack.PacketBuffer) {
	t.Helper()
	if err := q.WritePacket(p); err != nil {
		t.Fatal(err)
	}
	p.DecRef()
}

// TestTxQueueInline: a small packet sent from inside one of our calls on
// its connection is written before WritePacket returns; one sent from
// elsewhere (the stack's own goroutines), or a big one, is queued.
func TestTxQueueInline(t *testing.T) {
	w := &recWriter{}
	q := newTxQueue(w, 16)
	defer q.Close()
	defer func() { // (a failed check must not leave the writer held)
		if w.let != nil {
			w.let()
		}
	}()
	var calls userCalls
	calls.enter()
	send(t, q, testPacket('a', 100, &calls))
	if got := w.written(); got != "a" {
		t.Fatalf("a packet from inside a call: written %q before WritePacket returned, want %q", got, "a")
	}
	calls.leave()

	// Not inside a call: the writer goroutine writes it; held there, so
	// it cannot have been written inline.
	w.hold('b')
	send(t, q, testPacket('b', 100, &calls))
	<-w.held
	if got := w.written(); got != "a" {
		t.Fatalf("written %q while the writer holds b", got)
	}
	// Inside a call, but b is still being written: c must wait behind it
	// (the order of a connection's packets), as must a big packet.
	calls.enter()
	send(t, q, testPacket('c', 100, &calls))
	send(t, q, testPacket('d', inlineMax+1, &calls))
	calls.leave()
	if got := w.written(); got != "a" {
		t.Fatalf("written %q while the writer holds b: c went around it", got)
	}
	w.let()
	w.waitFor(t, "abcd")

	// Once the writer is idle again, a big packet from inside a call is
	// still queued (the writer thread keeps bulk transfers on two CPUs).
	w.let()
	w.hold('e')
	calls.enter()
	done := make(chan struct{})
	go func() {
		send(t, q, testPacket('e', inlineMax+1, &calls))
		close(done)
	}()
	<-w.held
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("WritePacket of a big packet waited for its write")
	}
	calls.leave()
	w.let()
	w.waitFor(t, "abcde")
}

// TestTxQueueFullAndClose: a full queue refuses (the stack counts a drop,
// TCP sends again); Close releases what waits and refuses afterwards.
func TestTxQueueFullAndClose(t *testing.T) {
	w := &recWriter{}
	w.hold('h')
	q := newTxQueue(w, 2)
	send(t, q, testPacket('h', 10, nil))
	<-w.held
	send(t, q, testPacket('x', 10, nil))
	send(t, q, testPacket('y', 10, nil))
	p := testPacket('z', 10, nil)
	if _, ok := q.WritePacket(p).(*tcpip.ErrNoBufferSpace); !ok {
		t.Fatal("a full queue took a packet")
	}
	p.DecRef()
	w.let()
	q.Close()
	p = testPacket('w', 10, nil)
	if _, ok := q.WritePacket(p).(*tcpip.ErrClosedForSend); !ok {
		t.Fatal("a closed queue took a packet")
	}
	p.DecRef()
}
