package net

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"herd/proto"
)

// Control is the net server's proto face (interfaces fs, io, fsys, net):
// fsys options (GetOptions reports the live flags, SetOptions changes the
// policy: what fsysopts uses) and a small read-only tree:
//
//	/connections  live connections, one a line, with byte counts
//	/stats        counters (dropped frames, refused connections, ...)
//
// Files are snapshots taken at open.
type Control struct {
	proto.Unimplemented
	S *Server
	// Extra is reported by GetOptions before the policy flags (the
	// program's fixed flags: --mode, --mtu, --lan).
	Extra []string

	mu      sync.Mutex
	handles map[proto.HandleID][]byte
	next    proto.HandleID
}

// Interfaces the control announces.
var Interfaces = []string{proto.InterfaceFS, proto.InterfaceIO, proto.InterfaceFsys, proto.InterfaceNet}

const (
	nodeRoot  proto.NodeID = 1
	nodeConns proto.NodeID = 2
	nodeStats proto.NodeID = 3
)

var _ proto.FileSystem = (*Control)(nil)

func (c *Control) attr(n proto.NodeID) proto.Attr {
	now := time.Now()
	ts := proto.Timespec{Sec: now.Unix(), Nsec: uint32(now.Nanosecond())}
	a := proto.Attr{Ino: uint64(n), Nlink: 1, Blksize: 4096, Atime: ts, Mtime: ts, Ctime: ts,
		Uid: uint32(uidSelf()), Gid: uint32(gidSelf())}
	if n == nodeRoot {
		a.Mode = syscall.S_IFDIR | 0o555
		a.Nlink = 2
	} else {
		a.Mode = syscall.S_IFREG | 0o444
		a.Size = uint64(len(c.content(n)))
	}
	return a
}

func (c *Control) content(n proto.NodeID) []byte {
	switch n {
	case nodeConns:
		return []byte(c.S.ConnectionsText())
	case nodeStats:
		return []byte(c.S.Stats().Text())
	}
	return nil
}

func (c *Control) Root(ctx context.Context) (proto.Entry, error) {
	return proto.Entry{Node: nodeRoot, Attr: c.attr(nodeRoot)}, nil
}

func (c *Control) Lookup(ctx context.Context, parent proto.NodeID, name string) (proto.Entry, error) {
	if parent != nodeRoot {
		return proto.Entry{}, syscall.ENOTDIR
	}
	switch name {
	case "connections":
		return proto.Entry{Node: nodeConns, Attr: c.attr(nodeConns)}, nil
	case "stats":
		return proto.Entry{Node: nodeStats, Attr: c.attr(nodeStats)}, nil
	}
	return proto.Entry{}, syscall.ENOENT
}

func (c *Control) GetAttr(ctx context.Context, n proto.NodeID) (proto.Attr, error) {
	if n < nodeRoot || n > nodeStats {
		return proto.Attr{}, syscall.ENOENT
	}
	return c.attr(n), nil
}

func (c *Control) ReadDir(ctx context.Context, dir proto.NodeID) ([]proto.DirEntry, error) {
	if dir != nodeRoot {
		return nil, syscall.ENOTDIR
	}
	return []proto.DirEntry{
		{Name: "connections", Ino: uint64(nodeConns), Mode: syscall.S_IFREG},
		{Name: "stats", Ino: uint64(nodeStats), Mode: syscall.S_IFREG},
	}, nil
}

func (c *Control) Open(ctx context.Context, n proto.NodeID, flags uint32) (proto.OpenResult, error) {
	if n == nodeRoot {
		return proto.OpenResult{}, nil
	}
	if n != nodeConns && n != nodeStats {
		return proto.OpenResult{}, syscall.ENOENT
	}
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		return proto.OpenResult{}, syscall.EROFS
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.handles == nil {
		c.handles = map[proto.HandleID][]byte{}
	}
	c.next++
	c.handles[c.next] = c.content(n)
	return proto.OpenResult{Handle: c.next, Flags: proto.OpenDirectIO}, nil
}

func (c *Control) Read(ctx context.Context, h proto.HandleID, off int64, size int) ([]byte, error) {
	c.mu.Lock()
	b, ok := c.handles[h]
	c.mu.Unlock()
	if !ok {
		return nil, syscall.EBADF
	}
	if off >= int64(len(b)) {
		return nil, nil
	}
	end := min(off+int64(size), int64(len(b)))
	return b[off:end], nil
}

func (c *Control) Release(ctx context.Context, h proto.HandleID) error {
	c.mu.Lock()
	delete(c.handles, h)
	c.mu.Unlock()
	return nil
}

// GetOptions reports the live options as flags.
func (c *Control) GetOptions(ctx context.Context) ([]string, error) {
	p := c.S.Policy()
	return append(append([]string{}, c.Extra...), p.Args()...), nil
}

// SetOptions changes the policy. A list flag that is given replaces that
// list (--allow= with nothing clears it); lists not mentioned stay.
// Flags fixed at start (--mode, --mtu, --lan) are refused with EINVAL.
func (c *Control) SetOptions(ctx context.Context, args []string) error {
	fs := pflag.NewFlagSet("herd-net", pflag.ContinueOnError)
	fs.SetOutput(discard{})
	var pf PolicyFlags
	pf.Register(fs)
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", syscall.EINVAL, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", syscall.EINVAL, fs.Arg(0))
	}
	pf.allow, pf.deny, pf.publish = nonEmpty(pf.allow), nonEmpty(pf.deny), nonEmpty(pf.publish)
	np, err := pf.Policy()
	if err != nil {
		return fmt.Errorf("%w: %v", syscall.EINVAL, err)
	}
	cur := c.S.Policy()
	if fs.Changed("allow") {
		cur.Allow = np.Allow
	}
	if fs.Changed("deny") {
		cur.Deny = np.Deny
	}
	if fs.Changed("publish") {
		cur.Publish = np.Publish
	}
	if err := c.S.SetPolicy(cur); err != nil {
		return fmt.Errorf("%w: %v", syscall.EADDRINUSE, err)
	}
	return nil
}

func nonEmpty(v []string) []string {
	var out []string
	for _, s := range v {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}
