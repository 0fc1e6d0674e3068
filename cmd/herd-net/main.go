// Command herd-net is the default net server: a user-space TCP/IP stack
// (gVisor's netstack) fed with a subenvironment's packets. See
// herd/servers/net and `herd-net --help`.
package main

import (
	"os"

	"herd/servers/net"
)

func main() { os.Exit(net.Main(os.Args[1:], net.Options{})) }
