package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"herd/proto"
	"herd/servers/fs"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestGuard serves a copy-on-write tree through confguard over proto and
// shows writes to *.conf refused while other files work.
func TestGuard(t *testing.T) {
	dir := t.TempDir()
	root, upper := filepath.Join(dir, "root"), filepath.Join(dir, "upper")
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.MkdirAll(upper, 0o755)
	os.WriteFile(filepath.Join(root, "etc/x.conf"), []byte("original"), 0o644)
	os.WriteFile(filepath.Join(root, "etc/notes"), []byte("notes"), 0o644)
	srv, err := fs.New(fs.Options{Root: root, Upper: upper})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	logs := &syncBuf{}
	c, stop, err := proto.Pipe(&guard{srv, logs}, proto.ServerOptions{Name: "confguard"}, proto.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	ctx := context.Background()
	r, _ := c.Root(ctx)
	etc, err := c.Lookup(ctx, r.Node, "etc")
	if err != nil {
		t.Fatal(err)
	}
	conf, err := c.Lookup(ctx, etc.Node, "x.conf")
	if err != nil {
		t.Fatal(err)
	}
	refused := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, syscall.EACCES) {
			t.Fatalf("%s: %v, want EACCES", what, err)
		}
	}
	_, err = c.Open(ctx, conf.Node, unix.O_WRONLY)
	refused("write x.conf", err)
	_, err = c.Open(ctx, conf.Node, unix.O_RDONLY|unix.O_TRUNC)
	refused("truncating open", err)
	_, err = c.SetAttr(ctx, conf.Node, proto.SetAttrIn{Valid: proto.SetAttrSize})
	refused("truncate", err)
	_, _, err = c.Create(ctx, etc.Node, "new.conf", unix.O_WRONLY, 0o644)
	refused("create new.conf", err)
	refused("rename onto x.conf", c.Rename(ctx, etc.Node, "notes", etc.Node, "x.conf", 0))
	// Reading x.conf and writing anything else work.
	o, err := c.Open(ctx, conf.Node, unix.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	if o.File != nil {
		o.File.Close()
	}
	b, err := c.Read(ctx, o.Handle, 0, 100)
	if err != nil || string(b) != "original" {
		t.Fatalf("read x.conf: %q %v", b, err)
	}
	c.Release(ctx, o.Handle)
	_, o, err = c.Create(ctx, etc.Node, "x.txt", unix.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if o.File != nil {
		o.File.Close()
	}
	if _, err := c.Write(ctx, o.Handle, 0, []byte("fine")); err != nil {
		t.Fatal(err)
	}
	c.Release(ctx, o.Handle)
	if b, _ := os.ReadFile(filepath.Join(upper, "etc/x.txt")); string(b) != "fine" {
		t.Fatalf("x.txt in upper: %q", b)
	}
	if err := c.Rename(ctx, etc.Node, "x.txt", etc.Node, "y.txt", 0); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "etc/x.conf")); string(b) != "original" {
		t.Fatalf("x.conf changed: %q", b)
	}
	log := logs.String()
	for _, want := range []string{"refused write of etc/x.conf", "refused create of etc/new.conf", "refused rename of etc/x.conf", "refused truncate of etc/x.conf"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
}
