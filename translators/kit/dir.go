package kit

import (
	"context"
	"sort"
	"syscall"

	"herd/proto"
)

// DirNode is a fixed directory: names given when it is made. Translators
// whose tree is known up front (a JSON document, a test) build it from
// DirNodes and leaves.
type DirNode struct {
	// Mode is the permission bits (default 0555).
	Mode  uint32
	names map[string]Node
}

// Dir returns a directory holding entries.
func Dir(entries map[string]Node) *DirNode {
	d := &DirNode{names: map[string]Node{}}
	for k, v := range entries {
		d.names[k] = v
	}
	return d
}

var (
	_ Lookuper  = (*DirNode)(nil)
	_ Readdirer = (*DirNode)(nil)
)

func (d *DirNode) Getattr(ctx context.Context, out *proto.Attr) syscall.Errno {
	mode := d.Mode & 07777
	if mode == 0 {
		mode = 0o555
	}
	out.Mode = syscall.S_IFDIR | mode
	out.Nlink = 2
	for _, n := range d.names {
		if _, ok := n.(Lookuper); ok {
			out.Nlink++
		}
	}
	return 0
}

func (d *DirNode) Lookup(ctx context.Context, name string) (Node, syscall.Errno) {
	if n, ok := d.names[name]; ok {
		return n, 0
	}
	return nil, syscall.ENOENT
}

func (d *DirNode) Readdir(ctx context.Context) ([]proto.DirEntry, syscall.Errno) {
	out := make([]proto.DirEntry, 0, len(d.names))
	for name, n := range d.names {
		var a proto.Attr
		if errno := n.Getattr(ctx, &a); errno != 0 {
			return nil, errno
		}
		fixMode(&a, n)
		out = append(out, proto.DirEntry{Name: name, Mode: a.Mode & syscall.S_IFMT})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, 0
}
