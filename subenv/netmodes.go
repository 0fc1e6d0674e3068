package subenv

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"herd/subenv/netattach"
)

// The net issue's modes, built in so that subenv's default (nat) works for
// every user of the package, not only for programs that import a plug-in.
func init() {
	RegisterNet("nat", func() NetSetup { return tunSetup{kind: netattach.KindNAT} })
	RegisterNet("prog", func() NetSetup { return tunSetup{kind: netattach.KindProg} })
	RegisterNet("lan", func() NetSetup { return lanSetup{} })
}

// tunSetup is nat and prog: a TUN with the fixed nat addresses, and a
// server (herd-net, or the user's program) started by netattach.
type tunSetup struct{ kind netattach.Kind }

func (s tunSetup) InitNet(ctx InitNetContext) ([]*os.File, error) {
	// The one thing a plain user's machine may lack: a usable TUN device.
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		if ctx.Default {
			// No --net asked: a program that needs no network should still
			// run. Say so in one line, and give it loopback.
			fmt.Fprintf(os.Stderr, "subenv: warning: no network (cannot open /dev/net/tun: %v); running with --net none (loopback only)\n", err)
			return nil, loopbackUp()
		}
		return nil, fmt.Errorf("cannot open /dev/net/tun: %v (use --net none for loopback only, or --net host)", err)
	}
	unix.Close(fd)
	// herd-net gets frames with the virtio-net header (checksum and
	// segmentation offloads); a --net PROG plain IP packets, as documented.
	cfg := netattach.NATConfig("eth0", netattach.DefaultMTU)
	if s.kind == netattach.KindNAT {
		cfg = netattach.ServerConfig("eth0", netattach.DefaultMTU)
	}
	tun, err := netattach.CreateTUNWith(cfg)
	if err != nil {
		return nil, err
	}
	// The --forward listeners, on the loopback CreateTUNWith brought up.
	fwd, err := netattach.ForwardListeners(ctx.Args)
	if err != nil {
		tun.Close()
		return nil, err
	}
	return append([]*os.File{tun}, fwd...), nil
}

func (s tunSetup) ResolvConf(ctx InitNetContext) string { return netattach.ResolvConf }

// selfNetServer runs the net server from the subenv binary itself when no
// herd-net program is found, so that one copied binary works (as for the
// fs server, defaultFS).
var selfNetServer = []string{"/proc/self/exe", "herd-net"}

func (s tunSetup) HostNet(ctx HostNetContext, files []*os.File) (func(), error) {
	if len(files) == 0 && ctx.Default {
		return func() {}, nil // fell back to loopback (the init warned)
	}
	if len(files) == 0 {
		return nil, errors.New("expected the TUN from the init, got no descriptor")
	}
	m := netattach.Mode{Kind: s.kind}
	opts := netattach.Options{Self: selfNetServer}
	args := strings.Fields(ctx.Arg)
	if s.kind == netattach.KindProg {
		if len(args) == 0 {
			return nil, errors.New("--net prog:PATH: no program")
		}
		m.Prog, m.Args = args[0], append(args[1:], ctx.Args...)
	} else {
		opts.Args = append(args, ctx.Args...)
	}
	p, err := netattach.Prepare(m, ctx.RuntimeDir, opts)
	if err != nil {
		return nil, err
	}
	n, err := p.Start(files[0], files[1:]...) // the TUN, then the --forward listeners (InitNet)
	if err != nil {
		return nil, err
	}
	if ctx.Verbose != nil {
		ctx.Verbose("net server %s: pid %d, control socket %s (10.0.2.15 inside, host loopback at 10.0.2.2, DNS 10.0.2.3)", orDefault(m.Prog, "herd-net"), n.Pid(), n.Socket)
	}
	if ctx.Probe != nil {
		ctx.Probe(n.Dying)
	}
	return watch(n, ctx.Died), nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// lanSetup is lan:NAME[,nat]: the init joins the keeper (or claims the
// first address of a new one) and the launcher attaches.
type lanSetup struct{}

func (lanSetup) mode(arg string) (netattach.Mode, error) {
	return netattach.ParseMode("lan:" + arg)
}

func (l lanSetup) InitNet(ctx InitNetContext) ([]*os.File, error) {
	m, err := l.mode(ctx.Arg)
	if err != nil {
		return nil, err
	}
	if slices.ContainsFunc(ctx.Args, func(a string) bool { return a == "--forward" || strings.HasPrefix(a, "--forward=") }) {
		return nil, errors.New("--forward is for nat (and a net program of your own), not a lan")
	}
	return netattach.InitJoinLAN(m, "eth0", netattach.DefaultMTU)
}

func (l lanSetup) ResolvConf(ctx InitNetContext) string {
	if m, err := l.mode(ctx.Arg); err == nil && m.NAT {
		return netattach.LANResolvConf
	}
	return ""
}

func (l lanSetup) HostNet(ctx HostNetContext, files []*os.File) (func(), error) {
	m, err := l.mode(ctx.Arg)
	if err != nil {
		return nil, err
	}
	// The keeper takes its flags when it starts, i.e. from the first
	// member; a member joining a running lan cannot change them.
	joining := len(files) > 2
	if joining && len(ctx.Args) > 0 {
		return nil, fmt.Errorf("lan %s already runs: --publish, --allow and --deny apply only when the lan starts (with its first member)", m.LAN)
	}
	n, err := netattach.HostAttachLAN(m, files, netattach.Options{Args: lanArgs(ctx.Args), Self: selfNetServer})
	if err != nil {
		return nil, err
	}
	if ctx.Verbose != nil {
		ctx.Verbose("net: member of lan %s (keeper control socket %s)", m.LAN, n.Socket)
	}
	if ctx.Probe != nil {
		ctx.Probe(n.Dying)
	}
	return watch(n, ctx.Died), nil
}

// lanArgs makes a --publish without an address point at the first
// member (the one starting the keeper, 10.0.3.15), not at nat's address.
func lanArgs(args []string) []string {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--publish" && i+1 < len(args) {
			out = append(out, a, lanPublish(args[i+1]))
			i++
			continue
		}
		if v, ok := strings.CutPrefix(a, "--publish="); ok {
			a = "--publish=" + lanPublish(v)
		}
		out = append(out, a)
	}
	return out
}

func lanPublish(v string) string {
	spec, proto := v, ""
	if i := strings.LastIndex(v, "/"); i >= 0 {
		spec, proto = v[:i], v[i:]
	}
	if strings.Count(spec, ":") == 1 {
		hp, port, _ := strings.Cut(spec, ":")
		return hp + ":10.0.3.15:" + port + proto
	}
	return v
}

// watch reports the net server's death under a running subenvironment
// to died, and returns the stop function.
func watch(n *netattach.Net, died func(error)) func() {
	var stopping atomic.Bool
	go func() {
		<-n.Done()
		if !stopping.Load() && died != nil {
			died(n.Err())
		}
	}()
	return func() {
		stopping.Store(true)
		n.Close()
	}
}
