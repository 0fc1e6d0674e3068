package control

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/pflag"

	"herd/proto"
)

const fsysoptsDoc = `Usage: fsysopts [OPTION...] NODE [OPTIONS...]
Show (no OPTIONS) or change the options of the translator running on NODE,
as the Hurd's fsysopts: e.g. "fsysopts ~/hello --contents='new text'",
"fsysopts ~/u --readonly". On the host NODE is a mount made by settrans -a;
inside a subenvironment the fs server relays to the translator. NODE may also
be a server's unix socket, e.g. a subenvironment's net server (subenv run -v
prints it): "fsysopts $XDG_RUNTIME_DIR/herd/ID/net.sock --allow=10.0.2.2:80".

Options:
`

// Fsysopts is the fsysopts program.
func Fsysopts(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("fsysopts", pflag.ContinueOnError)
	fs.SetInterspersed(false)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.BoolP("dereference", "L", false, "if NODE is a symbolic link, follow it (always done)")
	fs.BoolP("recursive", "R", false, "pass the options to child translators too (accepted)")
	timeout := fs.DurationP("timeout", "t", 30*time.Second, "how long to wait for the translator")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Fprint(stdout, fsysoptsDoc+fs.FlagUsages())
			return 0
		}
		fmt.Fprintf(stderr, "fsysopts: %v (see fsysopts --help)\n", err)
		return 2
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fmt.Fprintln(stderr, "fsysopts: missing NODE (see fsysopts --help)")
		return 2
	}
	node, opts := rest[0], rest[1:]
	var err error
	if len(opts) == 0 {
		var cur []string
		if cur, err = GetOptions(node, *timeout); err == nil {
			fmt.Fprintln(stdout, ShowArgv(cur))
		}
	} else {
		err = SetOptions(node, opts, *timeout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "fsysopts: %s: %v\n", node, err)
		return 1
	}
	return 0
}

// GetOptions returns the options of the translator running on NODE.
func GetOptions(nodeArg string, timeout time.Duration) ([]string, error) {
	if isSocket(nodeArg) {
		var opts []string
		err := onSocket(nodeArg, timeout, func(ctx context.Context, c *proto.Client) (err error) {
			opts, err = c.GetOptions(ctx)
			return err
		})
		return opts, err
	}
	node, inside, err := locate(nodeArg)
	if err != nil {
		return nil, err
	}
	if inside {
		opts, err := insideGet(node, XattrOptions)
		if err == nil && len(opts) == 0 {
			err = errors.New("no active translator here")
		}
		return opts, controlErr(err)
	}
	act, err := FindActive(node)
	if err != nil {
		return nil, err
	}
	if act == nil {
		return nil, errors.New("no active translator here")
	}
	c, err := DialActive(act, timeout)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return c.GetOptions(ctx)
}

// SetOptions changes the options of the translator running on NODE.
func SetOptions(nodeArg string, opts []string, timeout time.Duration) error {
	if isSocket(nodeArg) {
		return onSocket(nodeArg, timeout, func(ctx context.Context, c *proto.Client) error {
			return c.SetOptions(ctx, opts)
		})
	}
	node, inside, err := locate(nodeArg)
	if err != nil {
		return err
	}
	if inside {
		return insideSetOptions(node, opts)
	}
	act, err := FindActive(node)
	if err != nil {
		return err
	}
	if act == nil {
		return errors.New("no active translator here")
	}
	c, err := DialActive(act, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := c.SetOptions(ctx, opts); err != nil {
		return err
	}
	// The translator tells the mount's bridge that its contents changed,
	// but on its own connection, racing this answer: have the bridge drop
	// its and the kernel's cached copy now, so that what runs next reads
	// the new contents. Best effort: where it fails (a node the caller
	// may not read) the translator's notification does it a moment later.
	getxattr(node, XattrRefresh)
	return nil
}

// isSocket: NODE names a server's unix socket rather than a node.
func isSocket(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode()&os.ModeSocket != 0
}

// onSocket runs one call on the server listening at sock.
func onSocket(sock string, timeout time.Duration, call func(context.Context, *proto.Client) error) error {
	c, err := proto.Dial(sock, proto.ClientOptions{Timeout: timeout})
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return call(ctx, c)
}
