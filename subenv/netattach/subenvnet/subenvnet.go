// Package subenvnet registers the net issue's --net modes with the
// launcher (herd/subenv): importing it for its side effect gives
// `subenv run --net` these modes:
//
//	nat[:FLAGS]         herd-net: NAT to the host, 10.0.2.2 = host loopback,
//	                    DNS at 10.0.2.3; FLAGS are herd-net flags separated
//	                    by spaces, e.g. "nat:--publish 8080:80 --allow 10.0.2.2"
//	lan:NAME[,nat]      a private lan shared by subenvironments (10.0.3.15, ...)
//	prog:PATH[ FLAGS]   a net server program of the user's choice (fd 3
//	                    control socket, fd 4 TUN; see herd/subenv/netattach)
//
// cmd/subenv imports it:
//
//	import _ "herd/subenv/netattach/subenvnet"
package subenvnet

import (
	"fmt"
	"os"
	"strings"
	"sync/atomic"

	"herd/subenv"
	"herd/subenv/netattach"
)

func init() {
	subenv.RegisterNet("nat", func() subenv.NetSetup { return tunSetup{kind: netattach.KindNAT} })
	subenv.RegisterNet("prog", func() subenv.NetSetup { return tunSetup{kind: netattach.KindProg} })
	subenv.RegisterNet("lan", func() subenv.NetSetup { return lanSetup{} })
}

// tunSetup is nat and prog: a TUN with the fixed nat addresses, and a
// server started by netattach.
type tunSetup struct{ kind netattach.Kind }

func (s tunSetup) InitNet(ctx subenv.InitNetContext) ([]*os.File, error) {
	tun, err := netattach.CreateTUN("eth0", netattach.DefaultMTU)
	if err != nil {
		return nil, err
	}
	return []*os.File{tun}, nil
}

func (s tunSetup) HostNet(ctx subenv.HostNetContext, files []*os.File) (func(), error) {
	if len(files) != 1 {
		return nil, fmt.Errorf("expected the TUN from the init, got %d descriptors", len(files))
	}
	m := netattach.Mode{Kind: s.kind}
	var opts netattach.Options
	args := strings.Fields(ctx.Arg)
	if s.kind == netattach.KindProg {
		if len(args) == 0 {
			return nil, fmt.Errorf("--net prog:PATH: no program")
		}
		m.Prog, m.Args = args[0], args[1:]
	} else {
		opts.Args = args
	}
	p, err := netattach.Prepare(m, ctx.RuntimeDir, opts)
	if err != nil {
		return nil, err
	}
	n, err := p.Start(files[0])
	if err != nil {
		return nil, err
	}
	if ctx.Verbose != nil {
		ctx.Verbose("net: server pid %d, control socket %s", n.Pid(), n.Socket)
	}
	return watch(n), nil
}

// lanSetup is lan:NAME[,nat]: the init joins the keeper (or claims the
// first address of a new one) and the launcher attaches.
type lanSetup struct{}

func (lanSetup) mode(arg string) (netattach.Mode, error) {
	return netattach.ParseMode("lan:" + arg)
}

func (l lanSetup) InitNet(ctx subenv.InitNetContext) ([]*os.File, error) {
	m, err := l.mode(ctx.Arg)
	if err != nil {
		return nil, err
	}
	return netattach.InitJoinLAN(m, "eth0", netattach.DefaultMTU)
}

func (l lanSetup) HostNet(ctx subenv.HostNetContext, files []*os.File) (func(), error) {
	m, err := l.mode(ctx.Arg)
	if err != nil {
		return nil, err
	}
	n, err := netattach.HostAttachLAN(m, files, netattach.Options{})
	if err != nil {
		return nil, err
	}
	if ctx.Verbose != nil {
		ctx.Verbose("net: member of lan %s (keeper socket %s)", m.LAN, n.Socket)
	}
	return watch(n), nil
}

// watch says on stderr when the net server dies under a running
// subenvironment, and returns the stop function.
func watch(n *netattach.Net) func() {
	var stopping atomic.Bool
	go func() {
		<-n.Done()
		if !stopping.Load() {
			fmt.Fprintf(os.Stderr, "subenv: the network is gone (programs get ENETUNREACH): %v\n", n.Err())
		}
	}()
	return func() {
		stopping.Store(true)
		n.Close()
	}
}
