package proto

// Per-operation bodies. A request and a reply are each one flat struct whose
// fields an operation uses some of; encodeRequest/decodeRequest and
// encodeReply/decodeReply switch on the op and write or read exactly the
// fields PROTOCOL.md lists for it, in that order.

import (
	"fmt"
)

// Operation codes.
const (
	opRoot        = 1
	opGetOptions  = 2
	opSetOptions  = 3
	opGoaway      = 4
	opLookup      = 10
	opForget      = 11
	opGetAttr     = 12
	opSetAttr     = 13
	opReadDir     = 14
	opReadDirPlus = 15
	opMkdir       = 16
	opMknod       = 17
	opCreate      = 18
	opUnlink      = 19
	opRmdir       = 20
	opRename      = 21
	opLink        = 22
	opSymlink     = 23
	opReadlink    = 24
	opGetXattr    = 25
	opListXattr   = 26
	opSetXattr    = 27
	opRemoveXattr = 28
	opStatFS      = 29
	opOpen        = 40
	opRead        = 41
	opWrite       = 42
	opFsync       = 43
	opFallocate   = 44
	opLseek       = 45
	opRelease     = 46
)

var opNames = map[uint16]string{
	opRoot: "root", opGetOptions: "getoptions", opSetOptions: "setoptions", opGoaway: "goaway",
	opLookup: "lookup", opForget: "forget", opGetAttr: "getattr", opSetAttr: "setattr",
	opReadDir: "readdir", opReadDirPlus: "readdirplus", opMkdir: "mkdir", opMknod: "mknod",
	opCreate: "create", opUnlink: "unlink", opRmdir: "rmdir", opRename: "rename", opLink: "link",
	opSymlink: "symlink", opReadlink: "readlink", opGetXattr: "getxattr", opListXattr: "listxattr",
	opSetXattr: "setxattr", opRemoveXattr: "removexattr", opStatFS: "statfs", opOpen: "open",
	opRead: "read", opWrite: "write", opFsync: "fsync", opFallocate: "fallocate", opLseek: "lseek",
	opRelease: "release",
}

func opName(op uint16) string {
	if n, ok := opNames[op]; ok {
		return n
	}
	return fmt.Sprintf("op%d", op)
}

// Notification types (the op field of a notify frame).
const (
	notifyInvalNode  = 1
	notifyInvalEntry = 2
)

// request holds the arguments of any operation.
type request struct {
	op        uint16
	hasCaller bool
	caller    Caller

	node    NodeID // node, parent, dir, oldParent
	node2   NodeID // newParent
	name    string // name, oldName
	name2   string // newName, symlink target
	handle  HandleID
	flags   uint32 // open/create/rename/setxattr/goaway flags, fallocate mode, lseek whence
	mode    uint32
	rdev    uint64
	nlookup uint64
	off     int64
	length  int64 // fallocate length
	size    uint32
	sync    bool
	data    []byte
	strs    []string
	setattr SetAttrIn
}

// reply holds the results of any operation.
type reply struct {
	entry  Entry
	attr   Attr
	open   OpenResult
	dir    []DirEntry
	dirp   []DirEntryPlus
	strs   []string
	str    string
	data   []byte
	n      uint32
	off    int64
	statfs StatFS
}

// encodeRequest appends r's body for r.op (the caller block included).
func encodeRequest(e *enc, r *request) {
	if r.hasCaller {
		e.u32(r.caller.Uid)
		e.u32(r.caller.Gid)
		e.u32(r.caller.Pid)
	}
	switch r.op {
	case opRoot, opGetOptions:
	case opSetOptions:
		e.strs(r.strs)
	case opGoaway:
		e.u32(r.flags)
	case opLookup, opUnlink, opRmdir, opGetXattr, opRemoveXattr:
		e.u64(uint64(r.node))
		e.str(r.name)
	case opForget:
		e.u64(uint64(r.node))
		e.u64(r.nlookup)
	case opGetAttr, opReadDir, opReadDirPlus, opReadlink, opListXattr, opStatFS:
		e.u64(uint64(r.node))
	case opSetAttr:
		e.u64(uint64(r.node))
		s := &r.setattr
		e.u32(s.Valid)
		e.u32(s.Mode)
		e.u32(s.Uid)
		e.u32(s.Gid)
		e.u64(s.Size)
		e.ts(s.Atime)
		e.ts(s.Mtime)
		e.u64(uint64(s.Handle))
	case opMkdir:
		e.u64(uint64(r.node))
		e.str(r.name)
		e.u32(r.mode)
	case opMknod:
		e.u64(uint64(r.node))
		e.str(r.name)
		e.u32(r.mode)
		e.u64(r.rdev)
	case opCreate:
		e.u64(uint64(r.node))
		e.str(r.name)
		e.u32(r.flags)
		e.u32(r.mode)
	case opRename:
		e.u64(uint64(r.node))
		e.str(r.name)
		e.u64(uint64(r.node2))
		e.str(r.name2)
		e.u32(r.flags)
	case opLink:
		e.u64(uint64(r.node))
		e.u64(uint64(r.node2))
		e.str(r.name)
	case opSymlink:
		e.u64(uint64(r.node))
		e.str(r.name)
		e.str(r.name2)
	case opSetXattr:
		e.u64(uint64(r.node))
		e.str(r.name)
		e.bytes(r.data)
		e.u32(r.flags)
	case opOpen:
		e.u64(uint64(r.node))
		e.u32(r.flags)
	case opRead:
		e.u64(uint64(r.handle))
		e.i64(r.off)
		e.u32(r.size)
	case opWrite:
		e.u64(uint64(r.handle))
		e.i64(r.off)
		e.bytesTail(r.data)
	case opFsync:
		e.u64(uint64(r.handle))
		e.bool(r.sync)
	case opFallocate:
		e.u64(uint64(r.handle))
		e.u32(r.flags)
		e.i64(r.off)
		e.i64(r.length)
	case opLseek:
		e.u64(uint64(r.handle))
		e.i64(r.off)
		e.u32(r.flags)
	case opRelease:
		e.u64(uint64(r.handle))
	default:
		panic(fmt.Sprintf("proto: encodeRequest of unknown op %d", r.op))
	}
}

// errUnknownOp is returned for a well-formed request of an op this runtime
// does not know; the server answers it with ENOSYS instead of dropping the
// session, so newer clients can probe.
type errUnknownOp uint16

func (e errUnknownOp) Error() string { return fmt.Sprintf("unknown op %d", uint16(e)) }

// decodeRequest parses a request body. It never panics; malformed input
// gives an error.
func decodeRequest(op uint16, flags uint8, body []byte) (*request, error) {
	r := &request{op: op}
	d := &dec{b: body}
	if flags&flagCaller != 0 {
		r.hasCaller = true
		r.caller = Caller{Uid: d.u32(), Gid: d.u32(), Pid: d.u32()}
	}
	switch op {
	case opRoot, opGetOptions:
	case opSetOptions:
		r.strs = d.strs()
	case opGoaway:
		r.flags = d.u32()
	case opLookup, opUnlink, opRmdir, opGetXattr, opRemoveXattr:
		r.node = NodeID(d.u64())
		r.name = d.str()
	case opForget:
		r.node = NodeID(d.u64())
		r.nlookup = d.u64()
	case opGetAttr, opReadDir, opReadDirPlus, opReadlink, opListXattr, opStatFS:
		r.node = NodeID(d.u64())
	case opSetAttr:
		r.node = NodeID(d.u64())
		s := &r.setattr
		s.Valid = d.u32()
		s.Mode = d.u32()
		s.Uid = d.u32()
		s.Gid = d.u32()
		s.Size = d.u64()
		s.Atime = d.ts()
		s.Mtime = d.ts()
		s.Handle = HandleID(d.u64())
	case opMkdir:
		r.node = NodeID(d.u64())
		r.name = d.str()
		r.mode = d.u32()
	case opMknod:
		r.node = NodeID(d.u64())
		r.name = d.str()
		r.mode = d.u32()
		r.rdev = d.u64()
	case opCreate:
		r.node = NodeID(d.u64())
		r.name = d.str()
		r.flags = d.u32()
		r.mode = d.u32()
	case opRename:
		r.node = NodeID(d.u64())
		r.name = d.str()
		r.node2 = NodeID(d.u64())
		r.name2 = d.str()
		r.flags = d.u32()
	case opLink:
		r.node = NodeID(d.u64())
		r.node2 = NodeID(d.u64())
		r.name = d.str()
	case opSymlink:
		r.node = NodeID(d.u64())
		r.name = d.str()
		r.name2 = d.str()
	case opSetXattr:
		r.node = NodeID(d.u64())
		r.name = d.str()
		r.data = d.bytes()
		r.flags = d.u32()
	case opOpen:
		r.node = NodeID(d.u64())
		r.flags = d.u32()
	case opRead:
		r.handle = HandleID(d.u64())
		r.off = d.i64()
		r.size = d.u32()
	case opWrite:
		r.handle = HandleID(d.u64())
		r.off = d.i64()
		r.data = d.bytes()
	case opFsync:
		r.handle = HandleID(d.u64())
		r.sync = d.bool()
	case opFallocate:
		r.handle = HandleID(d.u64())
		r.flags = d.u32()
		r.off = d.i64()
		r.length = d.i64()
	case opLseek:
		r.handle = HandleID(d.u64())
		r.off = d.i64()
		r.flags = d.u32()
	case opRelease:
		r.handle = HandleID(d.u64())
	default:
		return r, errUnknownOp(op)
	}
	if err := d.end(); err != nil {
		return nil, fmt.Errorf("%s request: %w", opName(op), err)
	}
	return r, nil
}

const attrSize = 88

func encAttr(e *enc, a *Attr) {
	e.u64(a.Ino)
	e.u64(a.Size)
	e.u64(a.Blocks)
	e.u32(a.Mode)
	e.u32(a.Nlink)
	e.u32(a.Uid)
	e.u32(a.Gid)
	e.u64(a.Rdev)
	e.u32(a.Blksize)
	e.ts(a.Atime)
	e.ts(a.Mtime)
	e.ts(a.Ctime)
}

func decAttr(d *dec) Attr {
	return Attr{
		Ino: d.u64(), Size: d.u64(), Blocks: d.u64(),
		Mode: d.u32(), Nlink: d.u32(), Uid: d.u32(), Gid: d.u32(),
		Rdev: d.u64(), Blksize: d.u32(),
		Atime: d.ts(), Mtime: d.ts(), Ctime: d.ts(),
	}
}

func encEntry(e *enc, en *Entry) {
	e.u64(uint64(en.Node))
	encAttr(e, &en.Attr)
	if en.Redirect != nil {
		e.u8(1)
		e.str(en.Redirect.Socket)
	} else {
		e.u8(0)
	}
}

func decEntry(d *dec) Entry {
	en := Entry{Node: NodeID(d.u64()), Attr: decAttr(d)}
	if d.bool() {
		en.Redirect = &Redirect{Socket: d.str()}
	}
	return en
}

func encDirEntry(e *enc, de *DirEntry) {
	e.str(de.Name)
	e.u64(de.Ino)
	e.u32(de.Mode)
}

func decDirEntry(d *dec) DirEntry {
	return DirEntry{Name: d.str(), Ino: d.u64(), Mode: d.u32()}
}

// Minimum encoded sizes, for list-count checks.
const (
	dirEntrySize = 4 + 8 + 4
	entrySize    = 8 + attrSize + 1
)

// encodeReply appends the success body of op.
func encodeReply(e *enc, op uint16, r *reply) {
	switch op {
	case opRoot, opLookup, opMkdir, opMknod, opLink, opSymlink:
		encEntry(e, &r.entry)
	case opGetOptions, opListXattr:
		e.strs(r.strs)
	case opSetOptions, opGoaway, opUnlink, opRmdir, opRename, opSetXattr, opRemoveXattr,
		opFsync, opFallocate, opRelease, opForget:
	case opGetAttr, opSetAttr:
		encAttr(e, &r.attr)
	case opReadDir:
		e.u32(uint32(len(r.dir)))
		for i := range r.dir {
			encDirEntry(e, &r.dir[i])
		}
	case opReadDirPlus:
		e.u32(uint32(len(r.dirp)))
		for i := range r.dirp {
			encDirEntry(e, &r.dirp[i].DirEntry)
			encEntry(e, &r.dirp[i].Entry)
		}
	case opCreate:
		encEntry(e, &r.entry)
		e.u64(uint64(r.open.Handle))
		e.u32(r.open.Flags)
	case opOpen:
		e.u64(uint64(r.open.Handle))
		e.u32(r.open.Flags)
	case opReadlink:
		e.str(r.str)
	case opGetXattr, opRead:
		e.bytesTail(r.data)
	case opStatFS:
		s := &r.statfs
		e.u64(s.Blocks)
		e.u64(s.Bfree)
		e.u64(s.Bavail)
		e.u64(s.Files)
		e.u64(s.Ffree)
		e.u32(s.Bsize)
		e.u32(s.Frsize)
		e.u32(s.NameLen)
	case opWrite:
		e.u32(r.n)
	case opLseek:
		e.i64(r.off)
	default:
		panic(fmt.Sprintf("proto: encodeReply of unknown op %d", op))
	}
}

// decodeReply parses the success body of op. It never panics.
func decodeReply(op uint16, body []byte) (*reply, error) {
	r := &reply{}
	d := &dec{b: body}
	switch op {
	case opRoot, opLookup, opMkdir, opMknod, opLink, opSymlink:
		r.entry = decEntry(d)
	case opGetOptions, opListXattr:
		r.strs = d.strs()
	case opSetOptions, opGoaway, opUnlink, opRmdir, opRename, opSetXattr, opRemoveXattr,
		opFsync, opFallocate, opRelease, opForget:
	case opGetAttr, opSetAttr:
		r.attr = decAttr(d)
	case opReadDir:
		n := d.count(dirEntrySize)
		if n > 0 {
			r.dir = make([]DirEntry, 0, n)
		}
		for i := 0; i < n && d.err == nil; i++ {
			r.dir = append(r.dir, decDirEntry(d))
		}
	case opReadDirPlus:
		n := d.count(dirEntrySize + entrySize)
		if n > 0 {
			r.dirp = make([]DirEntryPlus, 0, n)
		}
		for i := 0; i < n && d.err == nil; i++ {
			de := decDirEntry(d)
			r.dirp = append(r.dirp, DirEntryPlus{DirEntry: de, Entry: decEntry(d)})
		}
	case opCreate:
		r.entry = decEntry(d)
		r.open.Handle = HandleID(d.u64())
		r.open.Flags = d.u32()
	case opOpen:
		r.open.Handle = HandleID(d.u64())
		r.open.Flags = d.u32()
	case opReadlink:
		r.str = d.str()
	case opGetXattr, opRead:
		r.data = d.bytes()
	case opStatFS:
		s := &r.statfs
		s.Blocks = d.u64()
		s.Bfree = d.u64()
		s.Bavail = d.u64()
		s.Files = d.u64()
		s.Ffree = d.u64()
		s.Bsize = d.u32()
		s.Frsize = d.u32()
		s.NameLen = d.u32()
	case opWrite:
		r.n = d.u32()
	case opLseek:
		r.off = d.i64()
	default:
		return nil, errUnknownOp(op)
	}
	if err := d.end(); err != nil {
		return nil, fmt.Errorf("%s reply: %w", opName(op), err)
	}
	return r, nil
}

// Notification bodies.

type notification struct {
	typ    uint16
	node   NodeID
	off    int64
	length int64
	name   string
}

func encodeNotify(e *enc, n *notification) {
	switch n.typ {
	case notifyInvalNode:
		e.u64(uint64(n.node))
		e.i64(n.off)
		e.i64(n.length)
	case notifyInvalEntry:
		e.u64(uint64(n.node))
		e.str(n.name)
	default:
		panic("proto: unknown notification")
	}
}

func decodeNotify(typ uint16, body []byte) (*notification, error) {
	n := &notification{typ: typ}
	d := &dec{b: body}
	switch typ {
	case notifyInvalNode:
		n.node = NodeID(d.u64())
		n.off = d.i64()
		n.length = d.i64()
	case notifyInvalEntry:
		n.node = NodeID(d.u64())
		n.name = d.str()
	default:
		return nil, fmt.Errorf("unknown notification type %d", typ)
	}
	if err := d.end(); err != nil {
		return nil, fmt.Errorf("notification: %w", err)
	}
	return n, nil
}

// Handshake bodies.

// helloReply is the server's answer to the client's magic and version.
type helloReply struct {
	version    uint16
	errno      uint32 // 0: accepted; else the session is refused
	msg        string // why refused
	name       string
	interfaces []string
	cookie     []byte // lane cookie, cookieSize bytes
	flags      uint32 // helloLanes
}

const (
	cookieSize = 16
	helloLanes = 1 // the server accepts call lanes on this listener
)

func encodeHello(e *enc, h *helloReply) {
	e.u16(h.version)
	e.u32(h.errno)
	e.str(h.msg)
	e.str(h.name)
	e.strs(h.interfaces)
	e.bytes(h.cookie)
	e.u32(h.flags)
}

func decodeHello(body []byte) (*helloReply, error) {
	d := &dec{b: body}
	h := &helloReply{
		version:    d.u16(),
		errno:      d.u32(),
		msg:        d.str(),
		name:       d.str(),
		interfaces: d.strs(),
		cookie:     d.bytes(),
		flags:      d.u32(),
	}
	if err := d.end(); err != nil {
		return nil, fmt.Errorf("hello: %w", err)
	}
	if h.errno == 0 && len(h.cookie) != cookieSize && len(h.cookie) != 0 {
		return nil, fmt.Errorf("hello: cookie of %d bytes", len(h.cookie))
	}
	return h, nil
}
