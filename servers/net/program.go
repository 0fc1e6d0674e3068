package net

import (
	"errors"
	"fmt"
	"io"
	stdnet "net"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"herd/proto"
)

const usage = `herd-net: a subenvironment's network, as a user-space TCP/IP stack.

Usage:
  herd-net [--mode nat|none] [--allow CIDR[:PORT]]... [--deny ...]... [--publish HOSTPORT:PORT[/udp]]...
           [--forward PORT[:HOSTPORT]]... [--socket PATH] [--tun-fd N]
  herd-net --lan NAME [--nat] --socket PATH [--join PATH]

The subenvironment's TUN (raw IP packets) is the descriptor --tun-fd (default
$HERD_TUN_FD, as subenv passes it: 4). The control socket is fd 3 when
LISTEN_FDS=1, else --socket; it speaks proto (fs, io, fsys, net): fsysopts
changes --allow/--deny/--publish at run time, /connections and /stats tell
what is going on. When the descriptor $HERD_NET_READY_FD is set, "ok" is
written to it once the server is up.

Addresses (nat): the subenvironment is 10.0.2.15/24 (fd00::100/64), the
gateway 10.0.2.2 (fd00::2) is the host's loopback (10.0.2.2:P = 127.0.0.1:P),
10.0.2.3 (fd00::3) forwards DNS to the host's resolver. With --forward P,
127.0.0.1:P inside is also the host's 127.0.0.1:P, spliced: no stack in the
way, up to twice the gateway's bulk rate (bench/net.sh).

With --lan NAME the server is a lan keeper: members join on the --join socket
(default: --socket with .join for .sock), get 10.0.3.15, .16, ... and reach
each other; with --nat they also reach the host as in nat mode. The keeper
exits when its last member leaves.

Flags:
`

// Main is the herd-net program: parse args, attach the TUN, serve the
// control socket, and run until the TUN dies or a signal comes. base
// supplies what a wrapping program sets (Dial, Logf); flags fill the rest.
// It returns the exit status.
func Main(args []string, base Options) int {
	fs := pflag.NewFlagSet("herd-net", pflag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(os.Stderr, usage)
		fs.PrintDefaults()
	}
	mode := fs.String("mode", "nat", "nat (connections go out through the host) or none (the stack only)")
	mtu := fs.Int("mtu", DefaultMTU, "link MTU")
	socket := fs.String("socket", "", "control socket path (when not given as fd 3 with LISTEN_FDS=1)")
	tunFD := fs.Int("tun-fd", envInt("HERD_TUN_FD", -1), "descriptor of the TUN (raw IP, IFF_NO_PI)")
	lan := fs.String("lan", "", "be the keeper of lan NAME")
	lanNAT := fs.Bool("nat", false, "with --lan: NAT the members to the host")
	join := fs.String("join", "", "with --lan: the join socket (default: --socket with .join)")
	resolver := fs.String("resolver", "", "host DNS server HOST:PORT (default: first nameserver in /etc/resolv.conf)")
	verbose := fs.BoolP("verbose", "v", false, "log refused connections and failures to stderr")
	forwardSpecs := fs.StringArray("forward", nil, "inside, 127.0.0.1:PORT is the host's 127.0.0.1:HOSTPORT, two sockets spliced with no user-space stack (faster than 10.0.2.2; TCP): PORT[:HOSTPORT] (repeatable; the listeners, made inside by subenv run, are the descriptors in $HERD_FORWARD_FDS)")
	var pf PolicyFlags
	pf.Register(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(os.Stderr, "herd-net:", err)
		return 2
	}
	policy, err := pf.Policy()
	if err != nil {
		fmt.Fprintln(os.Stderr, "herd-net:", err)
		return 2
	}
	var forwards []Forward
	for _, spec := range *forwardSpecs {
		f, err := ParseForward(spec)
		if err != nil {
			fmt.Fprintln(os.Stderr, "herd-net:", err)
			return 2
		}
		forwards = append(forwards, f)
	}
	if len(forwards) > 0 && (*lan != "" || *mode != "nat") {
		fmt.Fprintln(os.Stderr, "herd-net: --forward reaches the host: it is for --mode nat, not a lan or --mode none")
		return 2
	}
	opts := base
	opts.Policy = policy
	opts.MTU = *mtu
	opts.Resolver = *resolver
	if *verbose && opts.Logf == nil {
		opts.Logf = func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }
	}
	extra := []string{}
	switch {
	case *lan != "":
		opts.LAN, opts.NAT = true, *lanNAT
		extra = append(extra, "--lan="+*lan)
		if *lanNAT {
			extra = append(extra, "--nat")
		}
	case *mode == "nat":
		opts.NAT = true
	case *mode == "none":
	default:
		fmt.Fprintf(os.Stderr, "herd-net: unknown --mode %q (nat or none)\n", *mode)
		return 2
	}
	if *lan == "" {
		extra = append(extra, "--mode="+*mode)
	}
	extra = append(extra, "--mtu="+strconv.Itoa(*mtu))
	for _, f := range forwards {
		extra = append(extra, "--forward="+f.String())
	}

	ready := envInt("HERD_NET_READY_FD", -1)
	forwardFDs := os.Getenv("HERD_FORWARD_FDS")
	os.Unsetenv("HERD_NET_READY_FD")
	os.Unsetenv("HERD_TUN_FD")
	os.Unsetenv("HERD_FORWARD_FDS")
	fail := func(format string, a ...any) int {
		msg := fmt.Sprintf(format, a...)
		fmt.Fprintln(os.Stderr, "herd-net:", msg)
		if ready >= 0 {
			unix.Write(ready, []byte("error "+msg+"\n"))
			unix.Close(ready)
		}
		return 1
	}

	setProcs()
	if p := os.Getenv("HERD_NET_CPUPROFILE"); p != "" {
		// For measuring: bench/net.sh and people chasing a slowdown.
		if f, err := os.Create(p); err == nil {
			pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
	}
	srv, err := New(opts)
	if err != nil {
		return fail("%v", err)
	}
	defer srv.Close()

	// The end: the single member's TUN died (its namespace is gone), the
	// last lan member left, or a signal.
	stop := make(chan string, 4)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	go func() { s := <-sigs; stop <- s.String() }()

	l, err := proto.Listen(*socket)
	if err != nil {
		return fail("%v", err)
	}
	ctl := &Control{S: srv, Extra: extra}
	ps := proto.NewServer(ctl, proto.ServerOptions{Name: "herd-net", Interfaces: Interfaces, Logf: opts.Logf})
	go ps.Serve(l)
	defer ps.Close()

	if *lan != "" {
		jp := *join
		if jp == "" {
			if *socket == "" {
				return fail("--lan needs --join or --socket")
			}
			jp = strings.TrimSuffix(*socket, ".sock") + ".join"
		}
		os.Remove(jp)
		jl, err := stdnet.ListenUnix("unix", &stdnet.UnixAddr{Name: jp, Net: "unix"})
		if err != nil {
			return fail("join socket: %v", err)
		}
		os.Chmod(jp, 0o600)
		defer os.Remove(jp)
		lock := jp + ".lock"
		var once sync.Once
		var leaving atomic.Bool
		empty := func() {
			if leaving.Load() {
				return // would make the lock file again
			}
			// Under the join lock, so a member that is about to join
			// either finds us still here or starts a new keeper. If the
			// lock cannot be had (its directory is gone), nobody can
			// join through it either: go.
			unlock, err := flock(lock)
			if err == nil && srv.Members() != 0 {
				unlock()
				return
			}
			once.Do(func() {
				leaving.Store(true)
				jl.Close()
				os.Remove(jp)
				// Nothing of the lan stays behind: its lock (joiners that
				// waited on this one see it is gone and take the new
				// one, see netattach.lockFile) and the log launchers made.
				os.Remove(lock)
				os.Remove(strings.TrimSuffix(jp, ".join") + ".log")
				stop <- "last member left"
			})
			// Keep the lock until exit.
		}
		go srv.ServeJoin(jl, empty)
		// A keeper whose first member never came (its launcher died
		// between starting it and joining), or whose last leave was
		// missed, does not stay forever.
		go func() {
			for {
				time.Sleep(30 * time.Second)
				if srv.Members() == 0 {
					empty()
				}
			}
		}()
		defer jl.Close()
	} else {
		if *tunFD < 0 {
			return fail("no TUN: give --tun-fd (or HERD_TUN_FD)")
		}
		m, err := srv.AddMember(*tunFD)
		if err != nil {
			return fail("%v", err)
		}
		go func() { <-m.Done(); stop <- "the subenvironment's link is gone" }()
		if err := startForwards(srv, forwards, forwardFDs); err != nil {
			return fail("%v", err)
		}
	}
	if ready >= 0 {
		unix.Write(ready, []byte("ok\n"))
		unix.Close(ready)
	}
	why := <-stop
	if opts.Logf != nil {
		opts.Logf("herd-net: exiting: %s", why)
	}
	return 0
}

// startForwards serves each --forward on its listener: fds is
// $HERD_FORWARD_FDS, one descriptor per --forward, in order.
func startForwards(srv *Server, forwards []Forward, fds string) error {
	var list []string
	if fds != "" {
		list = strings.Split(fds, ",")
	}
	if len(list) != len(forwards) {
		return fmt.Errorf("--forward: %d given but %d listeners in $HERD_FORWARD_FDS (the listeners are made inside the subenvironment: use subenv run --forward)", len(forwards), len(list))
	}
	for i, f := range forwards {
		fd, err := strconv.Atoi(list[i])
		if err != nil {
			return fmt.Errorf("$HERD_FORWARD_FDS: %q is not a descriptor", list[i])
		}
		ln, err := ForwardListener(fd)
		if err != nil {
			return fmt.Errorf("--forward %s: %v", f, err)
		}
		srv.StartForward(f, ln)
	}
	return nil
}

// flock takes an exclusive lock on path (created if missing).
func flock(path string) (func(), error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return func() { unix.Flock(fd, unix.LOCK_UN); unix.Close(fd) }, nil
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

var _ io.Writer = discard{}

// setProcs runs the server's goroutines on half the CPUs the runtime would
// use (one on a 2-CPU machine), unless $GOMAXPROCS says otherwise. The
// stack hands every packet between goroutines (TUN reader, TCP processor,
// splice, TUN writer); with a P to spare, each hand-off wakes another
// thread (futex, and the runtime's monitor polling every 20 us), which
// cost more than it gained: on 2 CPUs (bench/net.sh's figures, four
// alternating runs) one P gave connection setup 0.49-0.53 of loopback
// against 0.45-0.48, bulk namespace -> host 0.63-0.68 against 0.57-0.60,
// host -> namespace 0.80-0.83 against 0.71-0.76. The other CPUs are the
// programs' and their peers' (a system call still runs beside the P).
func setProcs() {
	if os.Getenv("GOMAXPROCS") != "" {
		return
	}
	runtime.GOMAXPROCS(max(1, runtime.GOMAXPROCS(0)/2))
}
