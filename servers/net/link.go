package net

import (
	"errors"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// tunLink is the link endpoint of one member: it reads raw IP packets from
// the member's TUN file, checks them, and either hands them to the stack or,
// when they are addressed to another member of the same lan, writes them
// straight to that member's TUN (the switch). It is written here rather than
// taken from gVisor's fdbased because every frame we drop must be counted,
// and fdbased drops non-IP frames silently.
type tunLink struct {
	srv   *Server
	f     *os.File
	raw   syscall.RawConn
	mtu   uint32
	addr  netip.Addr // the member's IPv4 address: the only source it may use
	addr6 netip.Addr

	mu         sync.RWMutex
	dispatcher stack.NetworkDispatcher

	wg      sync.WaitGroup
	down    chan struct{} // closed when the TUN reads fail (the peer is gone)
	closing atomic.Bool

	rxPackets, txPackets atomic.Uint64
	rxBytes, txBytes     atomic.Uint64
}

var _ stack.LinkEndpoint = (*tunLink)(nil)

// newTunLink takes ownership of fd.
func newTunLink(srv *Server, fd int, mtu uint32, addr, addr6 netip.Addr) (*tunLink, error) {
	// A nonblocking descriptor lets the runtime poller park the reader, so
	// closing the file ends the read loop.
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	nf := os.NewFile(uintptr(fd), "tun")
	raw, err := nf.SyscallConn()
	if err != nil {
		nf.Close()
		return nil, err
	}
	return &tunLink{srv: srv, f: nf, raw: raw, mtu: mtu, addr: addr, addr6: addr6, down: make(chan struct{})}, nil
}

func (l *tunLink) MTU() uint32                                  { return l.mtu }
func (l *tunLink) SetMTU(mtu uint32)                            { l.mtu = mtu }
func (l *tunLink) MaxHeaderLength() uint16                      { return 0 }
func (l *tunLink) LinkAddress() tcpip.LinkAddress               { return "" }
func (l *tunLink) SetLinkAddress(tcpip.LinkAddress)             {}
func (l *tunLink) Capabilities() stack.LinkEndpointCapabilities { return 0 }
func (l *tunLink) ARPHardwareType() header.ARPHardwareType      { return header.ARPHardwareNone }
func (l *tunLink) AddHeader(*stack.PacketBuffer)                {}
func (l *tunLink) ParseHeader(*stack.PacketBuffer) bool         { return true }
func (l *tunLink) Close()                                       {}
func (l *tunLink) SetOnCloseAction(func())                      {}
func (l *tunLink) Wait()                                        { l.wg.Wait() }

func (l *tunLink) IsAttached() bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.dispatcher != nil
}

// Attach starts the read loop; Attach(nil) (the NIC is being removed) stops
// it by closing the TUN file. It must not wait for the loop: the stack
// calls it holding its own lock, which the loop may need to deliver the
// packet in hand (Wait, called later without locks, waits).
func (l *tunLink) Attach(d stack.NetworkDispatcher) {
	l.mu.Lock()
	old := l.dispatcher
	l.dispatcher = d
	l.mu.Unlock()
	if d == nil {
		l.shutdown()
		return
	}
	if old == nil {
		l.wg.Add(1)
		go l.readLoop()
	}
}

func (l *tunLink) shutdown() {
	if l.closing.CompareAndSwap(false, true) {
		l.f.Close()
	}
}

func (l *tunLink) readLoop() {
	defer l.wg.Done()
	defer close(l.down)
	// One byte more than any frame the link may carry, so an oversized one
	// is seen (and dropped) instead of silently cut.
	size := int(l.mtu) + 1
	// The payload view is kept across reads until a frame needs it: a
	// new one is cleared memory (64 KiB at the default MTU), which small
	// frames (ACKs) need not pay for.
	var pv *buffer.View
	defer func() {
		if pv != nil {
			pv.Release()
		}
	}()
	for {
		// Headers and payload in separate chunks: gVisor clones a
		// packet's whole chunk to make its headers writable when the
		// chunk is shared, which for one 64 KiB chunk is a 64 KiB copy
		// per packet; a small header chunk makes that copy small.
		hv := buffer.NewViewSize(hdrChunk)
		if pv == nil {
			pv = buffer.NewViewSize(size - hdrChunk)
		}
		var n int
		var rerr error
		err := l.raw.Read(func(fd uintptr) bool {
			n, rerr = unix.Readv(int(fd), [][]byte{hv.AsSlice(), pv.AsSlice()})
			return rerr != unix.EAGAIN
		})
		if err == nil {
			err = rerr
		}
		if err != nil {
			hv.Release()
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			return
		}
		if n == 0 {
			hv.Release()
			continue
		}
		l.rxPackets.Add(1)
		l.rxBytes.Add(uint64(n))
		if n > int(l.mtu) {
			l.srv.stats.oversized.Add(1)
			hv.Release()
			continue
		}
		var buf buffer.Buffer
		if n <= hdrChunk {
			hv.CapLength(n)
			buf = buffer.MakeWithView(hv)
		} else {
			pv.CapLength(n - hdrChunk)
			buf = buffer.MakeWithView(hv)
			buf.Append(pv)
			pv = nil // the packet owns it now
		}
		var head [header.IPv6MinimumSize]byte
		k, _ := buf.ReadAt(head[:], 0)
		proto, src, dst, ok := parseIP(head[:k], n)
		if !ok {
			l.srv.stats.malformed.Add(1)
			buf.Release()
			continue
		}
		if !l.sourceOK(src) {
			l.srv.stats.spoofed.Add(1)
			buf.Release()
			continue
		}
		if peer := l.srv.lanPeer(dst, l); peer != nil {
			peer.writeRaw(buf.Flatten())
			buf.Release()
			continue
		}
		l.mu.RLock()
		d := l.dispatcher
		l.mu.RUnlock()
		if d == nil {
			buf.Release()
			return
		}
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buf})
		d.DeliverNetworkPacket(proto, pkt)
		pkt.DecRef()
	}
}

// sourceOK: a member may only send as itself (no spoofing another member),
// or from the addresses IPv6 uses before it has one.
func (l *tunLink) sourceOK(src netip.Addr) bool {
	if src == l.addr || src == l.addr6 {
		return true
	}
	return src.Is6() && (src.IsLinkLocalUnicast() || src.IsUnspecified())
}

// hdrChunk is the size of the first chunk a frame is read into: room for
// the IP and TCP headers with options.
const hdrChunk = 128

// parseIP checks that a frame of n bytes starting with b (at least its
// first 40 bytes, or all of it) is a whole IPv4 or IPv6 packet and returns
// its protocol and addresses.
func parseIP(b []byte, n int) (tcpip.NetworkProtocolNumber, netip.Addr, netip.Addr, bool) {
	if len(b) < 1 {
		return 0, netip.Addr{}, netip.Addr{}, false
	}
	switch b[0] >> 4 {
	case 4:
		if len(b) < header.IPv4MinimumSize {
			break
		}
		ihl := int(b[0]&0xf) * 4
		total := int(b[2])<<8 | int(b[3])
		if ihl < header.IPv4MinimumSize || total < ihl || total > n {
			break
		}
		src := netip.AddrFrom4([4]byte(b[12:16]))
		dst := netip.AddrFrom4([4]byte(b[16:20]))
		return header.IPv4ProtocolNumber, src, dst, true
	case 6:
		if len(b) < header.IPv6MinimumSize {
			break
		}
		plen := int(b[4])<<8 | int(b[5])
		if header.IPv6MinimumSize+plen > n {
			break
		}
		src := netip.AddrFrom16([16]byte(b[8:24]))
		dst := netip.AddrFrom16([16]byte(b[24:40]))
		return header.IPv6ProtocolNumber, src, dst, true
	}
	return 0, netip.Addr{}, netip.Addr{}, false
}

// WritePackets writes the stack's packets to the TUN, one writev each.
func (l *tunLink) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	n := 0
	for _, pkt := range pkts.AsSlice() {
		if l.writeSlices(pkt.AsSlices()) {
			n++
		}
	}
	return n, nil
}

func (l *tunLink) writeRaw(b []byte) bool { return l.writeSlices([][]byte{b}) }

func (l *tunLink) writeSlices(s [][]byte) bool {
	if l.closing.Load() {
		return false
	}
	var werr error
	var size int
	err := l.raw.Write(func(fd uintptr) bool {
		size, werr = unix.Writev(int(fd), s)
		// A TUN never pushes back (the kernel queues or drops), so
		// EAGAIN is a drop, not a wait.
		return true
	})
	if err != nil || werr != nil {
		l.srv.stats.txErrors.Add(1)
		return false
	}
	l.txPackets.Add(1)
	l.txBytes.Add(uint64(size))
	return true
}
