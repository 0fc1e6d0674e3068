package net

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
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

	// vnet: every frame on the TUN carries a virtio-net header (the TUN
	// was made with IFF_VNET_HDR, see netattach.TUNConfig.VNetHdr), and
	// the checksum offload is on: the namespace's kernel neither computes
	// the checksums of what it sends us nor checks those of what we send
	// it (the data never leaves the machine's memory), and the stack does
	// neither either. gsoRX: the kernel may also hand us TCP super-packets
	// of up to 64 KiB (TSO), whatever the MTU.
	vnet, gsoRX bool
	// rxCsumOK says whether the frame being delivered (by readLoop, the
	// only deliverer) had its checksums vouched for by the kernel; the
	// stack asks Capabilities once per frame, so frames without (injected
	// raw, e.g. by a packet socket) are still checked.
	rxCsumOK atomic.Bool

	// poll lets readLoop busy-wait for the next frame instead of parking
	// (nil: it always parks). See frameReader.
	poll *pollYield
}

// spinFor is how long readLoop busy-waits for a frame before it parks,
// when the last frame came sooner than that after the TUN ran dry. A
// parked reader is woken by the namespace's kernel through the poller:
// a thread wake-up on one side and a context switch on the other, per
// frame of a bulk upload (about 17,000 a second here). iperf3 namespace
// -> host, 3 s runs, with this machine's BBR: 0 µs 14.0-15.2 Gbit/s,
// 50 µs 15.1-16.0, 100 µs 14.9-15.4 (and 5% more connections a second),
// 200 µs 15.7; in alternating 5 s runs 100 µs gave 15.1 against 14.3.
// With cubic (no pacing) it makes no difference.
const spinFor = 100 * time.Microsecond

var _ stack.LinkEndpoint = (*tunLink)(nil)

// newTunLink takes ownership of fd.
func newTunLink(srv *Server, fd int, mtu uint32, addr, addr6 netip.Addr) (*tunLink, error) {
	// A nonblocking descriptor lets the runtime poller park the reader, so
	// closing the file ends the read loop.
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	l := &tunLink{srv: srv, mtu: mtu, addr: addr, addr6: addr6, down: make(chan struct{})}
	if y, err := newPollYield(); err == nil {
		l.poll = y // (without one the link only parks: slower, not wrong)
	}
	l.vnet, l.gsoRX = setOffloads(fd, !srv.opts.LAN)
	nf := os.NewFile(uintptr(fd), "tun")
	raw, err := nf.SyscallConn()
	if err != nil {
		nf.Close()
		if l.poll != nil {
			l.poll.Close()
		}
		return nil, err
	}
	l.f, l.raw = nf, raw
	return l, nil
}

// setOffloads turns on the offloads of a TUN made with IFF_VNET_HDR and
// reports whether it has the header and whether TSO is on. The segment
// offload is asked for only when tso is set (not in a lan, whose switch
// forwards frames between members as they come, and a member without the
// header could not take a super-packet). A descriptor that is no TUN, or
// a TUN without the header, is plain IP.
func setOffloads(fd int, tso bool) (vnet, gso bool) {
	ifr, err := unix.NewIfreq("")
	if err != nil || unix.IoctlIfreq(fd, unix.TUNGETIFF, ifr) != nil || ifr.Uint16()&unix.IFF_VNET_HDR == 0 {
		return false, false
	}
	// The header is the 10-byte virtio_net_hdr (not the 12-byte one with
	// num_buffers): say so, in case the creator changed it.
	if unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, vnetHdrLen) != nil {
		return false, false // cannot happen on a TUN with the header; be plain
	}
	if tso && unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, unix.TUN_F_CSUM|unix.TUN_F_TSO4|unix.TUN_F_TSO6) == nil {
		return true, true
	}
	// Without the offload the kernel sends complete checksums and no
	// super-packets, still after a header: handled the same way.
	unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, unix.TUN_F_CSUM)
	return true, false
}

// The virtio-net header (linux/virtio_net.h), little-endian.
const (
	vnetHdrLen    = 10
	vnetNeedsCsum = 1 // flags: the checksum at csum_start+csum_offset is the pseudo-header's only
	vnetDataValid = 2 // flags: the kernel checked the checksums
	vnetGSONone   = 0
	vnetGSOTCPv4  = 1
	vnetGSOTCPv6  = 4
	// vnetGSOMax is the largest TCP super-packet either side makes (the
	// kernel's legacy GSO limit).
	vnetGSOMax = 65536
)

func (l *tunLink) MTU() uint32                             { return l.mtu }
func (l *tunLink) SetMTU(mtu uint32)                       { l.mtu = mtu }
func (l *tunLink) MaxHeaderLength() uint16                 { return 0 }
func (l *tunLink) LinkAddress() tcpip.LinkAddress          { return "" }
func (l *tunLink) SetLinkAddress(tcpip.LinkAddress)        {}
func (l *tunLink) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareNone }
func (l *tunLink) AddHeader(*stack.PacketBuffer)           {}
func (l *tunLink) ParseHeader(*stack.PacketBuffer) bool    { return true }
func (l *tunLink) Close()                                  {}
func (l *tunLink) SetOnCloseAction(func())                 {}
func (l *tunLink) Wait()                                   { l.wg.Wait() }

// Capabilities: the receive checksum "offload" is per frame (see
// rxCsumOK). No transmit checksum offload: with GSO the stack leaves TCP
// checksums to the kernel (NEEDS_CSUM) and still completes those of the
// rest (handshakes, UDP, ICMP), which a kernel forwarding them on needs.
func (l *tunLink) Capabilities() stack.LinkEndpointCapabilities {
	if l.rxCsumOK.Load() {
		return stack.CapabilityRXChecksumOffload
	}
	return 0
}

var _ stack.GSOEndpoint = (*tunLink)(nil)

// GSOMaxSize and SupportedGSO: with the virtio-net header the stack hands
// us TCP segments of up to 64 KiB whatever the MTU, which the namespace's
// kernel takes whole (it would split them only to send them on).
func (l *tunLink) GSOMaxSize() uint32 {
	if l.vnet {
		return vnetGSOMax
	}
	return 0
}

func (l *tunLink) SupportedGSO() stack.SupportedGSO {
	if l.vnet {
		return stack.HostGSOSupported
	}
	return stack.GSONotSupported
}

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
	// is seen (and dropped) instead of silently cut. A super-packet may
	// be bigger than the MTU.
	limit := int(l.mtu)
	if l.gsoRX && limit < vnetGSOMax {
		limit = vnetGSOMax
	}
	size := limit + 1
	var vh [vnetHdrLen]byte
	iov := [][]byte{nil, nil}
	if l.vnet {
		iov = [][]byte{vh[:], nil, nil}
	}
	// The payload view is kept across reads until a frame needs it: a
	// new one is cleared memory (64 KiB at the default MTU), which small
	// frames (ACKs) need not pay for.
	var pv *buffer.View
	defer func() {
		if pv != nil {
			pv.Release()
		}
		if l.poll != nil {
			l.poll.Close()
		}
	}()
	var rd frameReader
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
		iov[len(iov)-2], iov[len(iov)-1] = hv.AsSlice(), pv.AsSlice()
		err := l.raw.Read(func(fd uintptr) bool {
			n, rerr = rd.read(l, int(fd), iov)
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
		csumOK, gso := false, false
		if l.vnet {
			if n < vnetHdrLen {
				l.srv.stats.malformed.Add(1)
				hv.Release()
				continue
			}
			n -= vnetHdrLen
			csumOK = vh[0]&(vnetNeedsCsum|vnetDataValid) != 0
			gso = vh[1] != vnetGSONone
		}
		if n > int(l.mtu) && !(gso && n <= limit) {
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
			peer.forward(l, vh[:], buf.Flatten())
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
		l.rxCsumOK.Store(csumOK)
		d.DeliverNetworkPacket(proto, pkt)
		pkt.DecRef()
	}
}

// frameReader reads one frame from the TUN, busy-waiting for it (up to
// spinFor, giving way to other goroutines and the poller all the while)
// when the frames before came close together, so that a steady stream
// never parks the reader.
type frameReader struct {
	dryAt time.Time // when the TUN last ran dry; zero while frames come
	quick bool      // the last frame came within spinFor of dryAt
}

func (r *frameReader) read(l *tunLink, fd int, iov [][]byte) (int, error) {
	n, err := rawReadv(fd, iov) // (see rawMax: a copy, no work)
	if err == unix.EAGAIN && r.dryAt.IsZero() {
		r.dryAt = time.Now()
		for r.quick && l.poll != nil && !l.closing.Load() && time.Since(r.dryAt) < spinFor {
			l.poll.yield()
			if n, err = rawReadv(fd, iov); err != unix.EAGAIN {
				break
			}
		}
	}
	if err != unix.EAGAIN && !r.dryAt.IsZero() {
		r.quick = time.Since(r.dryAt) < spinFor
		r.dryAt = time.Time{}
	}
	return n, err
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

// WritePackets writes the stack's packets to the TUN, one writev each
// (a TUN takes one packet per write), after a virtio-net header if the
// link has one.
func (l *tunLink) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	n := 0
	var vh [vnetHdrLen]byte
	var iov [][]byte
	for _, pkt := range pkts.AsSlice() {
		iov = iov[:0]
		if l.vnet {
			vnetHeader(&vh, pkt)
			iov = append(iov, vh[:])
		}
		iov = append(iov, pkt.AsSlices()...)
		if l.writeSlices(iov) {
			n++
		}
	}
	return n, nil
}

// vnetHeader describes pkt for the kernel: a TCP segment of an endpoint
// with GSO carries only its pseudo-header checksum (NEEDS_CSUM: the kernel
// completes it if the packet ever leaves the namespace, else nobody does),
// and one bigger than the MSS is a super-packet of MSS-sized segments.
// Everything else is complete.
func vnetHeader(h *[vnetHdrLen]byte, pkt *stack.PacketBuffer) {
	*h = [vnetHdrLen]byte{}
	g := pkt.GSOOptions
	if g.Type == stack.GSONone || !g.NeedsCsum {
		return
	}
	l3 := len(pkt.NetworkHeader().Slice())
	h[0] = vnetNeedsCsum
	binary.LittleEndian.PutUint16(h[2:], uint16(pkt.HeaderSize()))
	binary.LittleEndian.PutUint16(h[6:], uint16(l3))
	binary.LittleEndian.PutUint16(h[8:], g.CsumOffset)
	if g.MSS != 0 && pkt.Data().Size() > int(g.MSS) {
		switch g.Type {
		case stack.GSOTCPv4:
			h[1] = vnetGSOTCPv4
		case stack.GSOTCPv6:
			h[1] = vnetGSOTCPv6
		}
		binary.LittleEndian.PutUint16(h[4:], g.MSS)
	}
}

// forward writes a frame that member from sent to this member (the lan's
// switch), converting between a link with the virtio-net header and one
// without: a frame that goes to a plain link gets its checksum completed
// here; a super-packet cannot go to one (lans do not turn TSO on, so
// none comes).
func (l *tunLink) forward(from *tunLink, vh []byte, b []byte) {
	switch {
	case l.vnet && from.vnet:
		l.writeSlices([][]byte{vh, b})
	case l.vnet:
		var zero [vnetHdrLen]byte
		l.writeSlices([][]byte{zero[:], b})
	case from.vnet:
		if vh[1] != vnetGSONone {
			l.srv.stats.txErrors.Add(1)
			return
		}
		if vh[0]&vnetNeedsCsum != 0 {
			start := int(binary.LittleEndian.Uint16(vh[6:]))
			at := start + int(binary.LittleEndian.Uint16(vh[8:]))
			if at+2 > len(b) {
				l.srv.stats.txErrors.Add(1)
				return
			}
			binary.BigEndian.PutUint16(b[at:], ^checksum.Checksum(b[start:], 0))
		}
		l.writeSlices([][]byte{b})
	default:
		l.writeSlices([][]byte{b})
	}
}

func (l *tunLink) writeSlices(s [][]byte) bool {
	if l.closing.Load() {
		return false
	}
	var werr error
	var size int
	total := 0
	for _, b := range s {
		total += len(b)
	}
	err := l.raw.Write(func(fd uintptr) bool {
		if total <= rawMax {
			size, werr = rawWritev(int(fd), s)
		} else {
			size, werr = unix.Writev(int(fd), s)
		}
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
