package control_test

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"herd/proto"
)

// TestFsysoptsOnSocket: fsysopts takes a server's socket as well as a node,
// which is how a subenvironment's net server is reconfigured at run time.
// hello listening on a plain socket stands in for any such server.
func TestFsysoptsOnSocket(t *testing.T) {
	e := newEnv(t, "root")
	sock := filepath.Join(e.runtime, "hello.sock")
	srv := exec.Command(filepath.Join(binDir, "hello"), "--socket", sock, "--contents", "before")
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := proto.Dial(sock, proto.ClientOptions{})
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("hello never listened on %s: %v", sock, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if out := e.ok("fsysopts", sock); !strings.Contains(out, "--contents=before") {
		t.Fatalf("fsysopts %s = %q, want the contents option", sock, out)
	}
	e.ok("fsysopts", sock, "--contents=after")
	if out := e.ok("fsysopts", sock); !strings.Contains(out, "--contents=after") {
		t.Fatalf("after the change fsysopts shows %q", out)
	}
	c, err := proto.Dial(sock, proto.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	root, err := c.Root(ctx)
	if err != nil {
		t.Fatal(err)
	}
	h, err := c.Open(ctx, root.Node, 0)
	if err != nil {
		t.Fatal(err)
	}
	if h.File != nil {
		h.File.Close()
	}
	b, err := c.Read(ctx, h.Handle, 0, 100)
	if err != nil || string(b) != "after" {
		t.Fatalf("contents after fsysopts: %q %v", b, err)
	}
	e.fails("invalid", "fsysopts", sock, "--no-such-option")
}
