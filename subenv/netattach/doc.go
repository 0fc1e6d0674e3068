// Package netattach connects a subenvironment's network namespace to its
// net server: a TUN device created inside, its descriptor passed out, and a
// net server (herd-net, a lan keeper, or the user's --net PROG) fed with it.
//
// # How the launcher uses it
//
// The launcher (herd/subenv) has a plug-in point for --net modes
// (subenv.RegisterNet with InitNet/HostNet halves); subenv fills it itself
// with nat (the default), lan:NAME[,nat], prog:PATH (subenv/netmodes.go)
// and none and host. The init joins a lan itself (InitJoinLAN), as its first
// step, before it mounts anything (so the keeper's join socket is reachable
// wherever it is), and the launcher finishes (HostAttachLAN) while the init
// builds the root. The keeper removes its sockets, lock and log when its
// last member leaves (joiners re-check the lock file, see lockFile).
//
// A launcher whose host side can run first uses the Plan API instead:
//
// 1. On the host, before the namespaces exist:
//
//	mode, err := netattach.ParseMode(netFlag)       // "nat" (default), "none", "host", "lan:NAME[,nat]", "./prog"
//	plan, err := netattach.Prepare(mode, runtimeDir, netattach.Options{Args: netServerFlags})
//	// netServerFlags: --allow/--deny/--publish/-v given to subenv run, passed on.
//	// Clone with CLONE_NEWNET only if mode.NewNetNS() (false for host).
//	// Give the init plan.TUN().String() (nil TUN: ""), e.g. in its environment.
//	// If plan.ResolvConf() != "", write it to a file the init binds over
//	// /etc/resolv.conf inside.
//	// On failure before Start: plan.Abort().
//
// For lan mode, Prepare joins the lan's keeper (starting one if none runs)
// and reserves the member's address, so it must run before the init
// configures the TUN.
//
// 2. In the init, inside the new user and network namespaces (root there),
// while /dev/net/tun is still reachable, before exec'ing the program:
//
//	if spec != "" {
//		cfg, err := netattach.ParseTUNConfig(spec)
//		tun, err := netattach.CreateTUNWith(cfg) // eth0: address, MTU, up; lo up; default route
//		fwd, err := netattach.ForwardListeners(netServerFlags) // --forward: listeners on 127.0.0.1 inside
//		// pass it out (and fwd after it) on the init's unix socket to the
//		// launcher, which gives fwd to plan.Start after the TUN; close them:
//		err = unix.Sendmsg(sock, []byte("tun"), unix.UnixRights(int(tun.Fd())), nil, 0)
//		tun.Close()
//	} else if newNetNS {
//		err = netattach.LoopbackUp() // mode none: lo only
//	}
//
// 3. On the host, once the descriptor arrived (receive it with
// unix.ParseUnixRights; nil for none and host):
//
//	n, err := plan.Start(tun, fwd...) // takes them; starts herd-net (fd 3 socket, fd 4 TUN, 6.. fwd) and waits for it
//	defer n.Close()           // at the end of the subenvironment: stops the server / leaves the lan
//	go func() { <-n.Done(); warn("subenv: net server gone: %v", n.Err()) }()
//	// n.Socket is the control socket for fsysopts (runtimeDir/net.sock).
//
// Note: the TUN's descriptor keeps the network namespace alive, so the
// server does not notice by itself that the subenvironment ended: the
// launcher must Close the Net. (The server also gets SIGTERM if the
// launcher dies.) When the server dies, the TUN and with it eth0 and its
// routes vanish, so programs inside get ENETUNREACH.
//
// CreateTUN(name, mtu) and Start(mode, tun, runtimeDir, opts) are shortcuts
// for the fixed-address modes (nat, a program, none, host). CreateTUN makes
// a plain TUN (a program's); herd-net's (Plan.TUN for nat and lan, or
// ServerConfig) carry the virtio-net header, for the checksum and
// segmentation offloads (see TUNConfig.VNetHdr).
//
// A lan's members get 10.0.3.15, .16, ... and fd00:0:0:3::15, ::16, ...;
// with nat, default routes via 10.0.3.2 and fd00:0:0:3::2 (the host's
// loopback, as in nat mode).
//
// # A net server program (--net PROG)
//
// It is started with its proto control socket as fd 3 (LISTEN_FDS=1), the
// TUN as fd 4 (HERD_TUN_FD=4; raw IPv4/IPv6 packets, no packet information
// header), and a pipe as fd 5 (HERD_NET_READY_FD=5) on which it writes
// "ok\n" once it serves (or "error WHY\n"). With --forward flags, the
// listeners the init made on the namespace's 127.0.0.1 (ForwardListeners,
// given to Plan.Start after the TUN) follow as fds 6 and up, one per flag in
// order, named in HERD_FORWARD_FDS (e.g. "6,7"). The subenvironment is
// 10.0.2.15/24 and fd00::100/64, with default routes via 10.0.2.2 and
// fd00::2; resolv.conf names 10.0.2.3. examples/netlog is such a program.
package netattach
