package net

import (
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// txQueue is a member's queueing discipline: the stack's outgoing packets
// go to its TUN through a queue and a writer goroutine, except a packet
// sent by one of our own goroutines from inside a call on its connection
// (the splice's Read, Write or Shutdown of a guestTCP), which is written
// at once when it is small and nothing waits before it.
//
// The queue is there because a TUN write runs the namespace's kernel (its
// TCP receive, the program's wake-up) before it returns, and the stack
// sends with the connection's lock held: a handshake's SYN-ACK, the TCP
// processor's ACKs or a timer's retransmission would hold it, not as a
// "user", for that long, while the stack's TCP processor, which retries
// such a holder without sleeping, burns the other CPU (connection setup
// took milliseconds at the 90th percentile on a busy 2-CPU machine).
//
// A call of ours holds the lock as a user, for which the processor does
// not wait (the segments that come meanwhile are handled when the call
// unlocks), so writing in it costs nobody; and it spares a hand-off to the
// writer goroutine (a wake-up of another thread, 15-30 µs on this 2-CPU
// machine) on the way of a response, a FIN or a window update. "Nothing
// waits before it" keeps the order of a connection's packets: while the
// call holds the lock no other packet of its connection can be sent, so
// only packets queued before could go out after it.
type txQueue struct {
	link stack.LinkWriter // the member's tunLink
	max  int

	mu     sync.Mutex
	q      []*stack.PacketBuffer
	busy   bool // the writer holds packets it has not written yet
	closed bool
	wake   chan struct{}
	done   chan struct{}
}

var _ stack.QueueingDiscipline = (*txQueue)(nil)

// inlineMax: bigger packets always go through the queue. A bulk transfer
// into the namespace keeps both CPUs busy only while one thread reads the
// host socket and another writes the TUN (writing its 64 KiB segments
// inline made it 25% slower: 12.6-13.1 Gbit/s against 17.0-17.6).
const inlineMax = 4096

// txBatch is the most packets the writer takes at once.
const txBatch = 64

func newTxQueue(link stack.LinkWriter, max int) *txQueue {
	t := &txQueue{link: link, max: max, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go t.writer()
	return t
}

// userSender is implemented by the owner (tcpip.PacketOwner) of a
// connection's packets when the connection is ours (guestTCP).
type userSender interface{ inUserCall() bool }

func (t *txQueue) WritePacket(pkt *stack.PacketBuffer) tcpip.Error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return &tcpip.ErrClosedForSend{}
	}
	if len(t.q) == 0 && !t.busy && pkt.Size() <= inlineMax {
		if o, ok := pkt.Owner.(userSender); ok && o.inUserCall() {
			t.mu.Unlock()
			var l stack.PacketBufferList
			l.PushBack(pkt) // (the caller keeps its reference: no Reset)
			t.link.WritePackets(l)
			return nil
		}
	}
	if len(t.q) >= t.max {
		t.mu.Unlock()
		return &tcpip.ErrNoBufferSpace{}
	}
	t.q = append(t.q, pkt.IncRef())
	select {
	case t.wake <- struct{}{}:
	default:
	}
	t.mu.Unlock()
	return nil
}

func (t *txQueue) writer() {
	defer close(t.done)
	var batch stack.PacketBufferList
	for range t.wake {
		for {
			t.mu.Lock()
			if t.closed || len(t.q) == 0 {
				t.busy = false
				closed := t.closed
				t.mu.Unlock()
				if closed {
					return
				}
				break
			}
			n := min(len(t.q), txBatch)
			for _, p := range t.q[:n] {
				batch.PushBack(p)
			}
			k := copy(t.q, t.q[n:])
			clear(t.q[k:]) // (no references left behind)
			t.q = t.q[:k]
			t.busy = true
			t.mu.Unlock()
			t.link.WritePackets(batch)
			batch.Reset()
		}
	}
}

// Close drops what waits and stops the writer.
func (t *txQueue) Close() {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	t.closed = true
	q := t.q
	t.q = nil
	close(t.wake)
	t.mu.Unlock()
	for _, p := range q {
		p.DecRef()
	}
	<-t.done
}

// userCalls counts our goroutines inside a call on a connection's
// endpoint (see txQueue).
type userCalls struct{ n atomic.Int32 }

func (u *userCalls) inUserCall() bool { return u != nil && u.n.Load() > 0 }
func (u *userCalls) enter()           { u.n.Add(1) }
func (u *userCalls) leave()           { u.n.Add(-1) }

// KUID and KGID make it a tcpip.PacketOwner (the stack asks only for
// owner matching rules, which we do not have).
func (u *userCalls) KUID() uint32 { return 0 }
func (u *userCalls) KGID() uint32 { return 0 }
