// Command confguard is a custom fs server written the way a user would: it
// serves the host tree like herd-fs, but refuses to create, write, truncate
// or rename onto any *.conf file (EACCES), logging each refusal to stderr.
//
//	subenv run --fs ./confguard -- sh
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"herd/proto"
	"herd/servers/fs"
)

// guard is herd's fs server with a few calls overridden.
type guard struct {
	*fs.Server
	log io.Writer
}

func (g *guard) refuse(op, name string) error {
	if !strings.HasSuffix(name, ".conf") {
		return nil
	}
	fmt.Fprintf(g.log, "confguard: refused %s of %s\n", op, name)
	return syscall.EACCES
}

func (g *guard) named(parent proto.NodeID, name string) string {
	p, _ := g.Path(parent)
	return strings.TrimPrefix(p+"/"+name, "/")
}

func (g *guard) Create(ctx context.Context, parent proto.NodeID, name string, flags, mode uint32) (proto.Entry, proto.OpenResult, error) {
	if err := g.refuse("create", g.named(parent, name)); err != nil {
		return proto.Entry{}, proto.OpenResult{}, err
	}
	return g.Server.Create(ctx, parent, name, flags, mode)
}

func (g *guard) Open(ctx context.Context, node proto.NodeID, flags uint32) (proto.OpenResult, error) {
	if flags&unix.O_ACCMODE != unix.O_RDONLY || flags&unix.O_TRUNC != 0 {
		p, _ := g.Path(node)
		if err := g.refuse("write", p); err != nil {
			return proto.OpenResult{}, err
		}
	}
	return g.Server.Open(ctx, node, flags)
}

func (g *guard) SetAttr(ctx context.Context, node proto.NodeID, in proto.SetAttrIn) (proto.Attr, error) {
	if in.Valid&proto.SetAttrSize != 0 {
		p, _ := g.Path(node)
		if err := g.refuse("truncate", p); err != nil {
			return proto.Attr{}, err
		}
	}
	return g.Server.SetAttr(ctx, node, in)
}

func (g *guard) Rename(ctx context.Context, op proto.NodeID, oldName string, np proto.NodeID, newName string, flags uint32) error {
	if err := g.refuse("rename", g.named(np, newName)); err != nil {
		return err
	}
	return g.Server.Rename(ctx, op, oldName, np, newName, flags)
}

func (g *guard) Link(ctx context.Context, node, np proto.NodeID, newName string) (proto.Entry, error) {
	if err := g.refuse("link", g.named(np, newName)); err != nil {
		return proto.Entry{}, err
	}
	return g.Server.Link(ctx, node, np, newName)
}

func main() {
	socket := pflag.String("socket", "", "unix socket to listen on (or fd 3 with LISTEN_FDS=1)")
	root := pflag.String("root", "/", "directory to serve")
	upper := pflag.String("upper", os.Getenv("HERD_UPPER"), "copy-on-write upper directory")
	pflag.Parse()
	srv, err := fs.New(fs.Options{Root: *root, Upper: *upper, ReadOnly: *upper == "",
		HideTmp: *upper != "", RuntimeDir: os.Getenv("HERD_RUNTIME_DIR")})
	if err != nil {
		fmt.Fprintln(os.Stderr, "confguard:", err)
		os.Exit(1)
	}
	l, err := proto.Listen(*socket)
	if err != nil {
		fmt.Fprintln(os.Stderr, "confguard:", err)
		os.Exit(1)
	}
	go func() { <-srv.Done(); os.Exit(0) }()
	proto.NewServer(&guard{srv, os.Stderr}, proto.ServerOptions{Name: "confguard"}).Serve(l)
}
