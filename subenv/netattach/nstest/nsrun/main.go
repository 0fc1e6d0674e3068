// Command nsrun runs a command in a fresh user+network namespace attached
// to a net server through netattach, as `subenv run --net MODE` will, but
// without the rest of a subenvironment (for benchmarks and experiments):
//
//	nsrun [--net MODE] [--mtu N] [--herd-net PATH] -- CMD [ARG...]
//	nsrun get URL N    # N sequential HTTP GETs, one connection each; prints the rate
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/spf13/pflag"

	"herd/subenv/netattach"
	"herd/subenv/netattach/nstest"
)

func main() {
	nstest.Main()
	if len(os.Args) > 1 && os.Args[1] == "get" {
		os.Exit(get(os.Args[2:]))
	}
	fs := pflag.NewFlagSet("nsrun", pflag.ContinueOnError)
	mode := fs.String("net", "nat", "nat, none, lan:NAME[,nat], or a net server program")
	mtu := fs.Int("mtu", netattach.DefaultMTU, "TUN MTU")
	bin := fs.String("herd-net", "", "herd-net binary (default: next to nsrun, or $PATH)")
	var args []string
	fs.StringArrayVar(&args, "arg", nil, "extra flag for the net server (repeatable)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "nsrun: no command")
		os.Exit(2)
	}
	m, err := netattach.ParseMode(*mode)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nsrun:", err)
		os.Exit(2)
	}
	rt, err := os.MkdirTemp("", "nsrun-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "nsrun:", err)
		os.Exit(1)
	}
	// (No defer: os.Exit skips it. exit removes the runtime dir.)
	exit := func(code int) { os.RemoveAll(rt); os.Exit(code) }
	plan, err := netattach.Prepare(m, rt, netattach.Options{Binary: *bin, MTU: *mtu, Args: args})
	if err != nil {
		fmt.Fprintln(os.Stderr, "nsrun:", err)
		exit(1)
	}
	ns, err := nstest.Start(nstest.Options{TUN: plan.TUN()})
	if err != nil {
		plan.Abort()
		fmt.Fprintln(os.Stderr, "nsrun:", err)
		exit(1)
	}
	n, err := plan.Start(ns.TUN)
	ns.TUN = nil
	if err != nil {
		ns.Close()
		fmt.Fprintln(os.Stderr, "nsrun:", err)
		exit(1)
	}
	out, code, err := ns.Run(24*time.Hour, fs.Args()...)
	os.Stdout.WriteString(out)
	ns.Close()
	n.Close()
	if err != nil {
		fmt.Fprintln(os.Stderr, "nsrun:", err)
		exit(1)
	}
	exit(code)
}

func get(args []string) int {
	if len(args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: nsrun get URL N")
		return 2
	}
	n, _ := strconv.Atoi(args[1])
	cl := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}
	start := time.Now()
	for i := 0; i < n; i++ {
		r, err := cl.Get(args[0])
		if err != nil {
			fmt.Fprintln(os.Stderr, "nsrun get:", err)
			return 1
		}
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
	}
	d := time.Since(start)
	fmt.Printf("%d requests in %.3f s: %.0f/s\n", n, d.Seconds(), float64(n)/d.Seconds())
	return 0
}
