// Command herd-fs serves a host directory tree over herd's protocol: by
// default the host root read-only, with a copy-on-write upper directory
// when one is given (--upper or $HERD_UPPER), or writing through (--rw).
package main

import (
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"herd/proto"
	"herd/servers/fs"
)

func main() {
	flags := pflag.NewFlagSet("herd-fs", pflag.ContinueOnError)
	flags.Usage = func() {
		fmt.Fprintf(os.Stderr, `Usage: herd-fs [--socket PATH] [--root DIR] [--upper DIR | --rw] [--readonly] [--hide-tmp] [-v]

Serve DIR (default /) over herd's protocol on PATH, or on fd 3 when started
with LISTEN_FDS=1. Changes go to the copy-on-write upper directory (--upper,
default $HERD_UPPER), straight to DIR with --rw, or nowhere (read-only) when
neither is given. Translator sockets go under $HERD_RUNTIME_DIR/trans.

`)
		flags.PrintDefaults()
	}
	socket := flags.String("socket", "", "unix socket to listen on (ignored with LISTEN_FDS=1)")
	root := flags.String("root", "/", "directory to serve")
	upper := flags.String("upper", os.Getenv("HERD_UPPER"), "copy-on-write upper directory")
	rw := flags.Bool("rw", false, "write through to the root directory instead of copy-on-write")
	readonly := flags.Bool("readonly", false, "refuse every change (EROFS)")
	hideTmp := flags.Bool("hide-tmp", false, "/tmp starts empty (needs an upper directory)")
	runtimeDir := flags.String("runtime-dir", os.Getenv("HERD_RUNTIME_DIR"), "where translator sockets go")
	transTimeout := flags.Duration("translator-timeout", 60*time.Second, "how long a translator may take to answer at start")
	verbose := flags.BoolP("verbose", "v", false, "log sessions and translators to stderr")
	if err := flags.Parse(os.Args[1:]); err != nil {
		if err == pflag.ErrHelp {
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "herd-fs: %v\n", err)
		os.Exit(2)
	}
	if flags.NArg() > 0 {
		fail("unexpected argument %q (see --help)", flags.Arg(0))
	}
	if *rw && flags.Changed("upper") {
		fail("--rw and --upper exclude each other")
	}
	if *rw {
		*upper = ""
	}
	if *hideTmp && *upper == "" {
		fail("--hide-tmp needs an upper directory (--upper or $HERD_UPPER)")
	}
	for _, d := range []struct{ what, path string }{{"--root", *root}, {"--upper", *upper}} {
		if d.path == "" {
			continue
		}
		if fi, err := os.Stat(d.path); err != nil {
			fail("%s %s: %v", d.what, d.path, err)
		} else if !fi.IsDir() {
			fail("%s %s: not a directory", d.what, d.path)
		}
	}
	opts := fs.Options{
		Root:       *root,
		Upper:      *upper,
		ReadOnly:   *readonly || (*upper == "" && !*rw),
		HideTmp:    *hideTmp,
		RuntimeDir: *runtimeDir,

		TranslatorTimeout: *transTimeout,
	}
	logf := func(string, ...any) {}
	if *verbose {
		logf = log.New(os.Stderr, "herd-fs: ", 0).Printf
		opts.Logf = logf
	}
	srv, err := fs.New(opts)
	if err != nil {
		fail("%v", err)
	}
	activated := os.Getenv("LISTEN_FDS") != ""
	l, err := proto.Listen(*socket)
	if err != nil {
		srv.Close()
		fail("%v", err)
	}
	psrv := proto.NewServer(srv, proto.ServerOptions{Name: "herd-fs", Logf: opts.Logf})
	logf("serving %s (upper %q, read-only %v) on %s", opts.Root, opts.Upper, opts.ReadOnly, l.Addr())

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	served := make(chan error, 1)
	go func() { served <- psrv.Serve(l) }()
	status := 0
	select {
	case s := <-sigs:
		logf("%v: exiting", s)
	case <-srv.Done():
		logf("goaway: exiting")
	case err := <-served:
		if err != nil {
			fmt.Fprintf(os.Stderr, "herd-fs: %v\n", err)
			status = 1
		}
	}
	psrv.Close()
	srv.Close()
	if *socket != "" && !activated {
		os.Remove(*socket)
	}
	os.Exit(status)
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "herd-fs: "+format+"\n", args...)
	os.Exit(1)
}
