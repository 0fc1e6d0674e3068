package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"herd/subenv/netattach"
	"herd/subenv/netattach/nstest"
)

func TestMain(m *testing.M) {
	nstest.Main()
	os.Exit(m.Run())
}

// TestNetlog runs netlog as a subenvironment's --net program: connections
// work and each one is in the log; a blocked address is refused.
func TestNetlog(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Fatal("curl is required (Debian package curl)")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "netlog")
	if out, err := exec.Command("go", "build", "-o", bin, "herd/examples/netlog").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "logged") })}
	go hs.Serve(ln)
	defer hs.Close()
	port := ln.Addr().(*net.TCPAddr).Port

	logFile := filepath.Join(dir, "log")
	t.Setenv("NETLOG_FILE", logFile)
	t.Setenv("NETLOG_BLOCK", "192.0.2.1")
	cfg := netattach.NATConfig("eth0", netattach.DefaultMTU)
	ns, err := nstest.Start(nstest.Options{TUN: &cfg})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	n, err := netattach.Start(bin, ns.TUN, dir, netattach.Options{})
	ns.TUN = nil
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	out, code, err := ns.Run(time.Minute, curl, "-sS", fmt.Sprintf("http://10.0.2.2:%d/", port))
	if err != nil || code != 0 || out != "logged\n" {
		t.Fatalf("curl through netlog: exit %d %v %q", code, err, out)
	}
	if got, _ := ns.Dial(time.Minute, "tcp", "192.0.2.1:80", 1, false); got != "ECONNREFUSED" {
		t.Fatalf("blocked address: %s", got)
	}
	b, _ := os.ReadFile(logFile)
	log := string(b)
	if !strings.Contains(log, "tcp 10.0.2.15:") || !strings.Contains(log, fmt.Sprintf("-> 10.0.2.2:%d (host 127.0.0.1:%d)", port, port)) {
		t.Fatalf("log lacks the connection:\n%s", log)
	}
	if !strings.Contains(log, "refused tcp 10.0.2.15:") || !strings.Contains(log, "-> 192.0.2.1:80") {
		t.Fatalf("log lacks the refusal:\n%s", log)
	}
}
