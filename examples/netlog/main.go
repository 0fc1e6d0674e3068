// Command netlog is a net server written the way a user would write one: it
// is herd's default server (herd/servers/net) with a hook that logs every
// new connection a subenvironment makes, and can refuse the ones to hosts
// it was told to block.
//
//	subenv run --net ./netlog -- curl http://10.0.2.2:8000/
//
// It takes herd-net's flags. The log goes to $NETLOG_FILE (default stderr);
// $NETLOG_BLOCK is a comma-separated list of addresses to refuse (the
// program sees ECONNREFUSED).
package main

import (
	"context"
	"fmt"
	"log"
	stdnet "net"
	"os"
	"strings"
	"syscall"

	"herd/servers/net"
)

func main() {
	out := os.Stderr
	if p := os.Getenv("NETLOG_FILE"); p != "" {
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			fmt.Fprintln(os.Stderr, "netlog:", err)
			os.Exit(1)
		}
		out = f
	}
	logger := log.New(out, "netlog: ", log.LstdFlags|log.Lmicroseconds)
	block := map[string]bool{}
	for _, a := range strings.Split(os.Getenv("NETLOG_BLOCK"), ",") {
		if a != "" {
			block[a] = true
		}
	}
	var d stdnet.Dialer
	dial := func(ctx context.Context, f net.Flow) (stdnet.Conn, error) {
		if block[f.Dst.Addr().String()] {
			logger.Printf("refused %s %s -> %s", f.Network, f.Src, f.Dst)
			return nil, syscall.ECONNREFUSED
		}
		logger.Printf("%s %s -> %s (host %s)", f.Network, f.Src, f.Dst, f.Target)
		return d.DialContext(ctx, f.Network, f.Target)
	}
	os.Exit(net.Main(os.Args[1:], net.Options{Dial: dial}))
}
