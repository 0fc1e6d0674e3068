package subenv

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"

	"github.com/spf13/pflag"

	"herd/servers/fs"
	hnet "herd/servers/net"
)

const mainUsage = `subenv: run programs in a subenvironment, a world of their own whose file
tree and network (and, later, identity) are served by user programs.

Usage:
  subenv run [flags] [--] PROG [ARGS...]   run PROG in a new subenvironment
  subenv herd-fs [flags]                   the fs server subenv run starts by
                                           default, the same program as herd-fs
                                           (subenv herd-fs --help)
  subenv herd-net [flags]                  the net server, the same program as
                                           herd-net, which subenv run starts when
                                           no herd-net is installed next to subenv
                                           or on $PATH (subenv herd-net --help)
  subenv help [run]                        this text, or run's

'subenv run --help' lists run's flags.
`

const runUsage = `Usage: subenv run [flags] [--] PROG [ARGS...]

Runs PROG in new user, mount, pid, uts, ipc and net namespaces whose root
file tree is served by an fs server over herd's protocol, through FUSE, and
whose network is served by a net server (herd-net, see --net; this subenv
binary runs it itself when no herd-net program is installed).
By default the fs server is herd-fs (which this subenv binary runs as its own
process, as it would any --fs program): the host's / read-only underneath,
your writes in a copy-on-write layer that is thrown away at the end, and an
empty /tmp. Inside you are root; outside nothing changes. PROG is
looked up on PATH inside; the environment, the working directory and the
terminal pass through. subenv exits with PROG's status (128+N if a signal N
killed it; 127 if PROG is not found).

Flags:
  --fs 'PROG [ARGS]'  use PROG as the root fs server: any program speaking herd's
                      protocol on fd 3 (LISTEN_FDS=1). The string is split on
                      spaces; for arguments with spaces use --fs-arg. The server
                      gets HERD_RUNTIME_DIR, HERD_UPPER (its copy-on-write dir,
                      empty with --rw) and HERD_ROOT (with --root) in its env.
  --fs-arg ARG        one more argument for the --fs program (repeatable)
  --fs-socket PATH    use an fs server already listening on PATH (must be yours)
  --root DIR          serve DIR as / instead of the host's /
  --rw                write through to the served tree instead of copy-on-write
  --keep NAME         keep the copy-on-write layer in
                      $XDG_DATA_HOME/herd/keep/NAME (~/.local/share/herd/keep/NAME),
                      so a later run with --keep NAME sees earlier writes
  --net MODE          the network (default nat):
                        nat        herd-net, a user-space TCP/IP stack: programs
                                   inside are 10.0.2.15 on eth0 and reach the
                                   host's network through it; 10.0.2.2:PORT is the
                                   host's 127.0.0.1:PORT; DNS at 10.0.2.3 (bound
                                   over /etc/resolv.conf). Needs /dev/net/tun
                                   usable by you (Debian ships it 0666); without
                                   it, and no --net given, subenv warns in one line
                                   and runs with loopback only.
                        none       loopback only
                        host       the host's network namespace, shared
                        lan:NAME[,nat]  a private lan (10.0.3.0/24) shared by every
                                   subenvironment run with the same NAME; with
                                   ,nat it reaches the host as nat does
                        PROG       a net server of your own: a value with a "/"
                                   or an executable on PATH (or prog:PATH ARGS);
                                   it gets its control socket as fd 3 and the TUN
                                   as fd 4 (see herd/subenv/netattach)
                      e.g. --net none, --net lan:work, --net ./mynet
  --publish HOSTPORT:PORT[/udp]
                      make PORT inside reachable at the host's
                      127.0.0.1:HOSTPORT (repeatable), e.g. --publish 8080:80
  --forward PORT[:HOSTPORT]
                      make the host's 127.0.0.1:HOSTPORT (default PORT)
                      reachable inside at 127.0.0.1:PORT as well, by splicing
                      two sockets: no user-space stack in the way, up to
                      twice the bulk rate of 10.0.2.2 (TCP, IPv4; nat and
                      PROG modes; repeatable), e.g. --forward 5432
  --allow CIDR[:PORT[-PORT]]
                      allow connections to these only (repeatable; any --allow
                      makes an allowlist), e.g. --allow 10.0.2.2:8000
  --deny CIDR[:PORT[-PORT]]
                      refuse connections there (repeatable; wins over --allow),
                      e.g. --deny 10.0.2.2/32. Refused connections get
                      ECONNREFUSED. With lan:NAME these three apply when the
                      lan starts (its first member); a later member giving
                      them is refused.
                      At run time, change them with fsysopts on the net
                      server's control socket (-v prints it), e.g.
                      fsysopts $XDG_RUNTIME_DIR/herd/ID/net.sock --allow=10.0.2.2:80
                      (fsysopts SOCKET alone shows them); its /connections and
                      /stats nodes list live connections.
  --subuid=false, --no-subuid
                      as a plain user, map only yourself (to root). By default
                      the ranges /etc/subuid and /etc/subgid grant you are
                      mapped too, as uids and gids 1.. inside (via newuidmap
                      and newgidmap, when installed), so programs inside can
                      switch users (su, setpriv, apt, daemons) and chown works;
                      owners the fs server cannot set on the host are kept in
                      an xattr (user.herd.owner) of the copy-on-write layer.
                      -v says what was mapped. As root the whole range is
                      always mapped, unchanged.
  -v, --verbose       say which servers started where (on stderr)
  -h, --help          this text

Environment: HERD_TRACE=1 prints the start-up steps with their timings.

Examples:
  subenv run -- sh
  subenv run --keep work -- sh -c 'echo hi > /tmp/x'
  subenv run --fs './myfs --log' -- make
  subenv run -- curl http://10.0.2.2:8000/     # a server on the host's 127.0.0.1:8000
  subenv run --publish 8080:80 -- busybox httpd -f -p 80
  subenv run --forward 5432 -- psql -h 127.0.0.1   # the host's PostgreSQL
  subenv run --net lan:work -- sh              # and another with lan:work
  subenv run --allow 10.0.2.2:8000 -- sh       # only the host's port 8000
`

// Main is the subenv program; it returns the exit status.
func Main(args []string) int {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, mainUsage)
		return 2
	}
	switch args[0] {
	case "run":
		return runMain(args[1:])
	case "init":
		return InitMain(args[1:])
	case "herd-fs":
		// The default fs server: `subenv run` re-executes itself so (see
		// defaultFS). Named so in ps and pgrep, not "exe".
		os.WriteFile("/proc/self/comm", []byte("herd-fs"), 0)
		return fs.Main(args[1:])
	case "herd-net":
		// The default net server when no herd-net program is installed
		// next to subenv or on $PATH (netattach.Options.Self).
		os.WriteFile("/proc/self/comm", []byte("herd-net"), 0)
		return hnet.Main(args[1:], hnet.Options{})
	case "help", "-h", "--help":
		if len(args) > 1 && args[1] == "run" {
			fmt.Print(runUsage)
		} else {
			fmt.Print(mainUsage)
		}
		return 0
	default:
		fmt.Fprintf(os.Stderr, "subenv: unknown command %q (see subenv --help)\n", args[0])
		return 2
	}
}

func runMain(args []string) int {
	// The launcher's heap reaches Go's first 4 MB target during start-up
	// (GODEBUG=gctrace=1: 3 MB still live after it), so at the default
	// GOGC=100 a collection runs in the middle of it, about 1 ms of a
	// 17 ms `subenv run --net none -- /bin/true`. A higher target moves it
	// past the program's start. GOGC set by the user wins.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	fl := pflag.NewFlagSet("subenv run", pflag.ContinueOnError)
	fl.SetOutput(io.Discard)
	fl.Usage = func() {}
	// Flags end at PROG: `subenv run sh -c x` passes -c to sh.
	fl.SetInterspersed(false)
	var cfg Config
	var fsCmd string
	var fsArgs []string
	var help bool
	fl.StringVar(&fsCmd, "fs", "", "")
	fl.StringArrayVar(&fsArgs, "fs-arg", nil, "")
	fl.StringVar(&cfg.FSSocket, "fs-socket", "", "")
	fl.StringVar(&cfg.Root, "root", "", "")
	fl.BoolVar(&cfg.RW, "rw", false, "")
	fl.StringVar(&cfg.Keep, "keep", "", "")
	fl.StringVar(&cfg.Net, "net", "", "")
	var publish, forward, allow, deny []string
	fl.StringArrayVar(&publish, "publish", nil, "")
	fl.StringArrayVar(&forward, "forward", nil, "")
	fl.StringArrayVar(&allow, "allow", nil, "")
	fl.StringArrayVar(&deny, "deny", nil, "")
	subuid, noSubuid := true, false
	fl.BoolVar(&subuid, "subuid", true, "")
	fl.BoolVar(&noSubuid, "no-subuid", false, "")
	fl.BoolVarP(&cfg.Verbose, "verbose", "v", false, "")
	fl.BoolVarP(&help, "help", "h", false, "")
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Print(runUsage)
			return 0
		}
		fmt.Fprintf(os.Stderr, "subenv run: %v (see subenv run --help)\n", err)
		return 2
	}
	if help {
		fmt.Print(runUsage)
		return 0
	}
	if fsCmd != "" {
		cfg.FS = append(strings.Fields(fsCmd), fsArgs...)
		if len(cfg.FS) == 0 {
			fmt.Fprintln(os.Stderr, "subenv run: --fs: empty command (see subenv run --help)")
			return 2
		}
	} else if len(fsArgs) > 0 {
		fmt.Fprintln(os.Stderr, "subenv run: --fs-arg without --fs (see subenv run --help)")
		return 2
	}
	if cfg.FS != nil && cfg.FSSocket != "" {
		fmt.Fprintln(os.Stderr, "subenv run: --fs and --fs-socket exclude each other")
		return 2
	}
	if cfg.RW && cfg.Keep != "" {
		fmt.Fprintln(os.Stderr, "subenv run: --rw and --keep exclude each other (--rw has no copy-on-write layer to keep)")
		return 2
	}
	for _, p := range publish {
		cfg.NetArgs = append(cfg.NetArgs, "--publish", p)
	}
	for _, f := range forward {
		if _, err := hnet.ParseForward(f); err != nil {
			fmt.Fprintf(os.Stderr, "subenv run: %v (see subenv run --help)\n", err)
			return 2
		}
		cfg.NetArgs = append(cfg.NetArgs, "--forward", f)
	}
	for _, a := range allow {
		cfg.NetArgs = append(cfg.NetArgs, "--allow", a)
	}
	for _, d := range deny {
		cfg.NetArgs = append(cfg.NetArgs, "--deny", d)
	}
	cfg.NoSubIDs = !subuid || noSubuid
	cfg.Prog = fl.Args()
	if len(cfg.Prog) == 0 {
		fmt.Fprintln(os.Stderr, "subenv run: no program given (usage: subenv run [flags] -- PROG [ARGS...])")
		return 2
	}
	status, err := Run(cfg)
	if err != nil {
		if err.Error() != "" {
			fmt.Fprintf(os.Stderr, "subenv: %v\n", err)
		}
		var ee *ExitError
		if errors.As(err, &ee) && ee.Code != 0 {
			return ee.Code
		}
		return 1
	}
	return status
}
