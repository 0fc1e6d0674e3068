package subenv

import (
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// NetSetup is how a --net mode gives the subenvironment its network. The
// subenvironment always gets a new network namespace, in which only a down
// loopback exists. A mode has two halves, because the launcher and the init
// are different processes on either side of the namespace boundary:
//
//   - InitNet runs in the init: pid 1, root of the new user and net
//     namespaces, before pivot_root (so the host's /dev, e.g. /dev/net/tun,
//     is still at its usual path). It configures interfaces and returns the
//     descriptors the host side needs, a TUN fd for instance, or none.
//   - HostNet runs in the launcher on the host with those descriptors, before
//     the program starts; it starts whatever serves them (the net server, a
//     bridge) and returns a function that stops it at the end.
//
// The program starts only after both returned; an error from either ends the
// run with that error, nothing left behind.
type NetSetup interface {
	InitNet(ctx InitNetContext) ([]*os.File, error)
	HostNet(ctx HostNetContext, files []*os.File) (stop func(), err error)
}

// InitNetContext is what the init knows when InitNet runs.
type InitNetContext struct {
	Mode string   // the mode's name (e.g. "nat" or "lan")
	Arg  string   // what follows "MODE:" in --net, if anything
	Args []string // net server flags from subenv run (--publish, --allow, --deny)
	// Default: the mode was not asked for (no --net): a mode that cannot
	// work on this machine may fall back to loopback with a warning.
	Default bool
	Trace   func(format string, args ...any)
}

// ResolvConfer is an optional part of a NetSetup: the resolv.conf the
// init binds over /etc/resolv.conf inside ("" leaves the host's). It runs
// in the init after InitNet.
type ResolvConfer interface {
	ResolvConf(ctx InitNetContext) string
}

// HostNetNS is an optional part of a NetSetup: a mode that shares the
// host's network namespace (--net host) says so, and the launcher does not
// create one.
type HostNetNS interface {
	SharesHostNetNS() bool
}

// HostNetContext is what the launcher knows when HostNet runs.
type HostNetContext struct {
	Mode       string
	Arg        string
	RuntimeDir string                           // sockets go here (mode 0700)
	InitPid    int                              // host pid of the init; /proc/PID/ns/net is the subenvironment's net namespace
	Args       []string                         // net server flags from subenv run (--publish, --allow, --deny)
	Default    bool                             // no --net was given
	Verbose    func(format string, args ...any) // -v: say what started where (stderr)
	Trace      func(format string, args ...any)
	// Died is to be called (once, from any goroutine) when the net server
	// dies under the running subenvironment: subenv says so and exits
	// non-zero.
	Died func(err error)
	// Probe, when not nil, is handed a function that says whether the net
	// server is dead or dying: a program inside can notice the death (its
	// link vanishes as the server exits) before Died is called, and the
	// launcher takes a last look when the program ends.
	Probe func(dying func() bool)
}

// netModes maps --net names to their setups: none and host here, nat,
// lan and prog in netmodes.go; others can be added with RegisterNet.
var netModes = map[string]func() NetSetup{
	"none": func() NetSetup { return netNone{} },
	"host": func() NetSetup { return netHost{} },
}

// DefaultNet is the --net mode when none is given.
const DefaultNet = "nat"

// RegisterNet adds a --net mode. Call it from an init function of the
// package that implements the mode, imported by cmd/subenv.
func RegisterNet(name string, f func() NetSetup) { netModes[name] = f }

// resolveNetSpec turns a --net value naming a program (one containing a
// "/", or an executable on PATH that is no mode's name) into
// "prog:PATH", so that the launcher and the init agree on it.
func resolveNetSpec(spec string) string {
	mode, _, _ := strings.Cut(spec, ":")
	if netModes[mode] != nil {
		return spec
	}
	if strings.Contains(spec, "/") {
		return "prog:" + spec
	}
	if p, err := exec.LookPath(spec); err == nil {
		return "prog:" + p
	}
	return spec
}

// netSetupFor splits "MODE[:ARG]" and returns the mode's setup.
func netSetupFor(spec string) (NetSetup, string, string, error) {
	mode, arg, _ := strings.Cut(spec, ":")
	f := netModes[mode]
	if f == nil {
		var names []string
		for n := range netModes {
			names = append(names, n)
		}
		sort.Strings(names)
		return nil, "", "", fmt.Errorf("--net %s: unknown mode (have: %s)", spec, strings.Join(names, ", "))
	}
	return f(), mode, arg, nil
}

func sharesHostNetNS(ns NetSetup) bool {
	h, ok := ns.(HostNetNS)
	return ok && h.SharesHostNetNS()
}

// netNone is --net none: loopback only.
type netNone struct{}

func (netNone) InitNet(ctx InitNetContext) ([]*os.File, error) {
	if len(ctx.Args) > 0 {
		return nil, noServerFlags("none")
	}
	return nil, loopbackUp()
}
func (netNone) HostNet(HostNetContext, []*os.File) (func(), error) {
	return func() {}, nil
}

// netHost is --net host: the host's network namespace, shared.
type netHost struct{}

func (netHost) SharesHostNetNS() bool { return true }
func (netHost) InitNet(ctx InitNetContext) ([]*os.File, error) {
	if len(ctx.Args) > 0 {
		return nil, noServerFlags("host")
	}
	return nil, nil
}
func (netHost) HostNet(HostNetContext, []*os.File) (func(), error) {
	return func() {}, nil
}

func noServerFlags(mode string) error {
	return fmt.Errorf("--publish, --allow and --deny need a net server (--net nat or lan:NAME); --net %s has none", mode)
}

// loopbackUp sets lo up in the current net namespace (the kernel gives it
// 127.0.0.1 and ::1 once it is up).
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("loopback: %v", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return fmt.Errorf("loopback: %v", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("loopback: %v", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("loopback up: %v", err)
	}
	return nil
}
