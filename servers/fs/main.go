package fs

import (
	"errors"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"herd/proto"
)

const mainUsage = `Usage: herd-fs [--socket PATH] [--root DIR] [--upper DIR | --rw] [--readonly] [--hide-tmp] [-v]

Serve DIR (default $HERD_ROOT, else /) over herd's protocol on PATH, or on
fd 3 when started with LISTEN_FDS=1. Changes go to the copy-on-write upper
directory (--upper, default $HERD_UPPER), straight to DIR with --rw, or
nowhere (read-only) when neither is given. Translator sockets go under
$HERD_RUNTIME_DIR/trans.

`

// Main is the herd-fs program (cmd/herd-fs, and subenv's default fs server,
// which is the subenv binary re-executed as `subenv herd-fs`): it serves
// until SIGTERM, SIGINT or a goaway, and returns the exit status.
func Main(args []string) int {
	flags := pflag.NewFlagSet("herd-fs", pflag.ContinueOnError)
	flags.Usage = func() {
		fmt.Fprint(os.Stderr, mainUsage)
		flags.PrintDefaults()
	}
	rootDflt := os.Getenv("HERD_ROOT")
	if rootDflt == "" {
		rootDflt = "/"
	}
	socket := flags.String("socket", "", "unix socket to listen on (ignored with LISTEN_FDS=1)")
	root := flags.String("root", rootDflt, "directory to serve")
	upper := flags.String("upper", os.Getenv("HERD_UPPER"), "copy-on-write upper directory")
	rw := flags.Bool("rw", false, "write through to the root directory instead of copy-on-write")
	readonly := flags.Bool("readonly", false, "refuse every change (EROFS)")
	hideTmp := flags.Bool("hide-tmp", false, "/tmp starts empty (needs an upper directory)")
	runtimeDir := flags.String("runtime-dir", os.Getenv("HERD_RUNTIME_DIR"), "where translator sockets go")
	transTimeout := flags.Duration("translator-timeout", 60*time.Second, "how long a translator may take to answer at start")
	verbose := flags.BoolP("verbose", "v", false, "log sessions and translators to stderr")
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		return mainFail(2, "%v", err)
	}
	if flags.NArg() > 0 {
		return mainFail(1, "unexpected argument %q (see --help)", flags.Arg(0))
	}
	if *rw && flags.Changed("upper") {
		return mainFail(1, "--rw and --upper exclude each other")
	}
	if *rw {
		*upper = ""
	}
	if *hideTmp && *upper == "" {
		return mainFail(1, "--hide-tmp needs an upper directory (--upper or $HERD_UPPER)")
	}
	for _, d := range []struct{ what, path string }{{"--root", *root}, {"--upper", *upper}} {
		if d.path == "" {
			continue
		}
		if fi, err := os.Stat(d.path); err != nil {
			return mainFail(1, "%s %s: %v", d.what, d.path, err)
		} else if !fi.IsDir() {
			return mainFail(1, "%s %s: not a directory", d.what, d.path)
		}
	}
	opts := Options{
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
	srv, err := New(opts)
	if err != nil {
		return mainFail(1, "%v", err)
	}
	activated := os.Getenv("LISTEN_FDS") != ""
	l, err := proto.Listen(*socket)
	if err != nil {
		srv.Close()
		return mainFail(1, "%v", err)
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
	return status
}

func mainFail(code int, format string, args ...any) int {
	fmt.Fprintf(os.Stderr, "herd-fs: "+format+"\n", args...)
	return code
}
