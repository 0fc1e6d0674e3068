package main

import (
	"io"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// client is a bare FTP client: enough to check what ftpfs relies on.
type client struct {
	t *testing.T
	c *textproto.Conn
}

func (c *client) cmd(want int, format string, args ...any) string {
	c.t.Helper()
	id, err := c.c.Cmd(format, args...)
	if err != nil {
		c.t.Fatal(err)
	}
	c.c.StartResponse(id)
	defer c.c.EndResponse(id)
	_, msg, err := c.c.ReadResponse(want)
	if err != nil {
		c.t.Fatalf("%s: %v", format, err)
	}
	return msg
}

// data opens a passive data connection (EPSV).
func (c *client) data() net.Conn {
	c.t.Helper()
	msg := c.cmd(229, "EPSV")
	port := strings.Trim(msg[strings.Index(msg, "(|||"):], "(|)")
	if _, err := strconv.Atoi(port); err != nil {
		c.t.Fatalf("EPSV answer %q", msg)
	}
	d, err := net.Dial("tcp", "127.0.0.1:"+port)
	if err != nil {
		c.t.Fatal(err)
	}
	return d
}

func start(t *testing.T, readonly bool) (*client, string) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "pub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "pub", "readme"), []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go serve(l, root, readonly)
	conn, err := textproto.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &client{t: t, c: conn}
	if _, _, err := conn.ReadResponse(220); err != nil {
		t.Fatal(err)
	}
	c.cmd(331, "USER anonymous")
	c.cmd(230, "PASS x")
	return c, root
}

func TestRetrStorList(t *testing.T) {
	c, root := start(t, false)
	c.cmd(250, "CWD pub")
	if msg := c.cmd(257, "PWD"); !strings.HasPrefix(msg, `"/pub"`) {
		t.Errorf("PWD = %q", msg)
	}
	d := c.data()
	id, _ := c.c.Cmd("RETR readme")
	c.c.StartResponse(id)
	if _, _, err := c.c.ReadResponse(150); err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(d)
	d.Close()
	if _, _, err := c.c.ReadResponse(226); err != nil {
		t.Fatal(err)
	}
	c.c.EndResponse(id)
	if string(b) != "hello\n" {
		t.Errorf("RETR gave %q", b)
	}

	d = c.data()
	id, _ = c.c.Cmd("STOR new")
	c.c.StartResponse(id)
	if _, _, err := c.c.ReadResponse(150); err != nil {
		t.Fatal(err)
	}
	io.WriteString(d, "uploaded\n")
	d.Close()
	if _, _, err := c.c.ReadResponse(226); err != nil {
		t.Fatal(err)
	}
	c.c.EndResponse(id)
	if b, err := os.ReadFile(filepath.Join(root, "pub", "new")); err != nil || string(b) != "uploaded\n" {
		t.Errorf("STOR wrote %q, %v", b, err)
	}

	d = c.data()
	id, _ = c.c.Cmd("MLSD")
	c.c.StartResponse(id)
	if _, _, err := c.c.ReadResponse(150); err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(d)
	d.Close()
	if _, _, err := c.c.ReadResponse(226); err != nil {
		t.Fatal(err)
	}
	c.c.EndResponse(id)
	if !strings.Contains(string(b), "type=file;size=6;") || !strings.Contains(string(b), " new\r\n") {
		t.Errorf("MLSD listing:\n%s", b)
	}
	if msg := c.cmd(213, "SIZE readme"); msg != "6" {
		t.Errorf("SIZE = %q", msg)
	}
}

func TestStaysInRoot(t *testing.T) {
	c, _ := start(t, false)
	c.cmd(250, "CWD ../../..")
	if msg := c.cmd(257, "PWD"); !strings.HasPrefix(msg, `"/"`) {
		t.Errorf("PWD after CWD ../../.. = %q", msg)
	}
	c.cmd(550, "SIZE ../../../etc/passwd")
}

func TestReadonly(t *testing.T) {
	c, root := start(t, true)
	c.cmd(550, "MKD x")
	c.cmd(550, "DELE pub/readme")
	if _, err := os.Stat(filepath.Join(root, "pub", "readme")); err != nil {
		t.Error(err)
	}
}
