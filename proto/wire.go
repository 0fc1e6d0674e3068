package proto

// Framing and the binary encoder/decoder. PROTOCOL.md is the normative
// description of every byte written here; keep the two in step.
//
// Every message is one or more frames. A frame is a 16-byte little-endian
// header followed by at most MaxFrame body bytes. A message whose body is
// longer than MaxFrame is cut into frames that all but the last carry
// flagMore; a writer holds its stream's lock for the whole message, so the
// frames of one message are never interleaved with another's.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"
)

// Version is the protocol version this runtime speaks.
const Version = 1

const (
	headerSize = 16
	// MaxFrame is the largest body one frame may carry.
	MaxFrame = 1<<20 + 4096
	// MaxMessage is the largest body a message (all its frames) may carry.
	MaxMessage = 64 << 20
)

// Frame kinds.
const (
	kindRequest = 1
	kindReply   = 2
	kindCancel  = 3
	kindNotify  = 4
	kindHello   = 5
)

// Frame flags.
const (
	flagMore    = 1 << 0 // more frames of this message follow
	flagFD      = 1 << 1 // one file descriptor travels with this frame (SCM_RIGHTS)
	flagCaller  = 1 << 2 // request body starts with a 12-byte Caller
	flagNoReply = 1 << 3 // request expects no reply (Forget)
	knownFlags  = flagMore | flagFD | flagCaller | flagNoReply
)

// header is a frame header as it travels:
//
//	0  u32 size    body bytes in this frame
//	4  u32 tag     request tag (0 for notifications and hello)
//	8  u16 op      operation (requests, replies, cancels) or notification type
//	10 u8  kind
//	11 u8  flags
//	12 u32 status  reply: errno (0 = success); request: deadline in ms (0 = none)
type header struct {
	size   uint32
	tag    uint32
	op     uint16
	kind   uint8
	flags  uint8
	status uint32
}

func (h *header) put(b []byte) {
	_ = b[headerSize-1]
	binary.LittleEndian.PutUint32(b[0:], h.size)
	binary.LittleEndian.PutUint32(b[4:], h.tag)
	binary.LittleEndian.PutUint16(b[8:], h.op)
	b[10] = h.kind
	b[11] = h.flags
	binary.LittleEndian.PutUint32(b[12:], h.status)
}

func parseHeader(b []byte) (header, error) {
	h := header{
		size:   binary.LittleEndian.Uint32(b[0:]),
		tag:    binary.LittleEndian.Uint32(b[4:]),
		op:     binary.LittleEndian.Uint16(b[8:]),
		kind:   b[10],
		flags:  b[11],
		status: binary.LittleEndian.Uint32(b[12:]),
	}
	if h.kind < kindRequest || h.kind > kindHello {
		return h, fmt.Errorf("bad frame kind %d", h.kind)
	}
	if h.flags&^knownFlags != 0 {
		return h, fmt.Errorf("unknown frame flags %#x", h.flags)
	}
	if h.size > MaxFrame {
		return h, fmt.Errorf("frame of %d bytes exceeds the maximum %d", h.size, MaxFrame)
	}
	return h, nil
}

// enc appends little-endian values to a buffer that starts with room for a
// frame header, so the finished buffer goes to the socket in one write.
// A large byte string at the very end of a body (Write's data, Read's
// reply) is not copied: it stays in tail and goes out with writev.
type enc struct {
	b    []byte
	tail []byte
}

func newEnc(sizeHint int) *enc {
	b := make([]byte, headerSize, headerSize+sizeHint)
	return &enc{b: b}
}

// encPool keeps encoders of requests and replies between calls: two fewer
// allocations per round trip.
var encPool = sync.Pool{New: func() any { return newEnc(256 - headerSize) }}

// getEnc returns an empty encoder from the pool; putEnc gives it back once
// its message is written.
func getEnc() *enc { return encPool.Get().(*enc) }

func putEnc(e *enc) {
	if cap(e.b) > 64<<10 {
		return // a big listing's: let it go
	}
	e.b = e.b[:headerSize]
	e.tail = nil // the caller's data, not ours to keep
	encPool.Put(e)
}

func (e *enc) u8(v uint8)   { e.b = append(e.b, v) }
func (e *enc) u16(v uint16) { e.b = binary.LittleEndian.AppendUint16(e.b, v) }
func (e *enc) u32(v uint32) { e.b = binary.LittleEndian.AppendUint32(e.b, v) }
func (e *enc) u64(v uint64) { e.b = binary.LittleEndian.AppendUint64(e.b, v) }
func (e *enc) i64(v int64)  { e.u64(uint64(v)) }
func (e *enc) bool(v bool) {
	if v {
		e.u8(1)
	} else {
		e.u8(0)
	}
}
func (e *enc) str(s string) { e.u32(uint32(len(s))); e.b = append(e.b, s...) }
func (e *enc) bytes(p []byte) {
	e.u32(uint32(len(p)))
	e.b = append(e.b, p...)
}
func (e *enc) strs(l []string) {
	e.u32(uint32(len(l)))
	for _, s := range l {
		e.str(s)
	}
}
func (e *enc) ts(t Timespec) { e.i64(t.Sec); e.u32(t.Nsec) }

// bytesTail encodes p like bytes, without copying it; it must be the last
// value of the body.
func (e *enc) bytesTail(p []byte) {
	e.u32(uint32(len(p)))
	if len(p) < 4096 {
		e.b = append(e.b, p...)
		return
	}
	e.tail = p
}

// body returns the encoded body (without the header room), tail included.
func (e *enc) body() []byte {
	if len(e.tail) == 0 {
		return e.b[headerSize:]
	}
	return append(e.b[headerSize:len(e.b):len(e.b)], e.tail...)
}

var errShort = errors.New("truncated body")

// dec reads little-endian values. After the first error every read returns
// a zero value and err stays set, so decoders check once at the end.
type dec struct {
	b   []byte
	err error
}

func (d *dec) need(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || len(d.b) < n {
		d.err = errShort
		d.b = nil
		return nil
	}
	p := d.b[:n]
	d.b = d.b[n:]
	return p
}

func (d *dec) u8() uint8 {
	if p := d.need(1); p != nil {
		return p[0]
	}
	return 0
}
func (d *dec) u16() uint16 {
	if p := d.need(2); p != nil {
		return binary.LittleEndian.Uint16(p)
	}
	return 0
}
func (d *dec) u32() uint32 {
	if p := d.need(4); p != nil {
		return binary.LittleEndian.Uint32(p)
	}
	return 0
}
func (d *dec) u64() uint64 {
	if p := d.need(8); p != nil {
		return binary.LittleEndian.Uint64(p)
	}
	return 0
}
func (d *dec) i64() int64 { return int64(d.u64()) }
func (d *dec) bool() bool {
	switch d.u8() {
	case 0:
		return false
	case 1:
		return true
	default:
		d.fail("bad boolean")
		return false
	}
}

func (d *dec) fail(msg string) {
	if d.err == nil {
		d.err = errors.New(msg)
		d.b = nil
	}
}

func (d *dec) length() int {
	n := d.u32()
	if d.err == nil && uint64(n) > uint64(len(d.b)) {
		d.fail("length exceeds body")
		return 0
	}
	return int(n)
}

func (d *dec) str() string { return string(d.need(d.length())) }

// bytes returns a slice of the body itself (no copy): bodies are freshly
// allocated per message, so the caller may keep it.
func (d *dec) bytes() []byte {
	n := d.length()
	p := d.need(n)
	if p == nil {
		return nil
	}
	return p[:n:n]
}

// count reads a list length and checks that the rest of the body can hold
// that many elements of at least min bytes, so a forged count cannot make
// the decoder allocate more than the message size.
func (d *dec) count(min int) int {
	n := d.u32()
	if d.err == nil && uint64(n)*uint64(min) > uint64(len(d.b)) {
		d.fail("list count exceeds body")
		return 0
	}
	return int(n)
}

func (d *dec) strs() []string {
	n := d.count(4)
	if n == 0 {
		return nil
	}
	l := make([]string, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		l = append(l, d.str())
	}
	return l
}

func (d *dec) ts() Timespec {
	t := Timespec{Sec: d.i64(), Nsec: d.u32()}
	if d.err == nil && t.Nsec >= 1e9 {
		d.fail("nanoseconds out of range")
	}
	return t
}

// end reports the decoding error, or an error if bytes are left over.
func (d *dec) end() error {
	if d.err != nil {
		return d.err
	}
	if len(d.b) != 0 {
		return fmt.Errorf("%d trailing bytes", len(d.b))
	}
	return nil
}

// msToDeadline clamps a duration in milliseconds to the u32 wire field; 0
// means no deadline, so a positive duration never encodes as 0.
func msOf(ms int64) uint32 {
	switch {
	case ms <= 0:
		return 1
	case ms >= math.MaxUint32:
		return math.MaxUint32
	}
	return uint32(ms)
}
