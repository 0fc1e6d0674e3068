// Package nstest gives tests a network namespace of their own: a child
// process (the test binary re-executed) in new user, network and pid
// namespaces, which creates a TUN with netattach.CreateTUNWith, passes its
// descriptor out with SCM_RIGHTS, as the launcher's init does, and then
// runs commands inside on request. Everything it started dies with it (it
// is pid 1 of its pid namespace).
//
// A test binary that uses it calls nstest.Main() first in TestMain.
package nstest

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"herd/subenv/netattach"
)

const roleEnv = "HERD_NSTEST_ROLE"

// Main runs the holder when this process was started as one, and returns
// otherwise.
func Main() {
	switch os.Getenv(roleEnv) {
	case "holder":
		os.Exit(holderMain())
	case "dial":
		os.Exit(dialMain(os.Args[1:]))
	case "echo":
		os.Exit(echoMain(os.Args[1:]))
	case "sendraw":
		os.Exit(sendrawMain(os.Args[1:]))
	case "redial":
		os.Exit(redialMain(os.Args[1:]))
	}
}

// Options say what namespace to make.
type Options struct {
	// TUN: the TUN to create inside; nil for none (lo only).
	TUN *netattach.TUNConfig
	// Uid, Gid: when the caller is root and Uid is not 0, the holder is
	// that user on the host (root in its own user namespace), as an
	// unprivileged user's subenvironment is.
	Uid, Gid int
	// Stderr receives the holder's diagnostics (nil: os.Stderr).
	Stderr *os.File
}

// NS is a running namespace holder.
type NS struct {
	cmd  *exec.Cmd
	conn *net.UnixConn
	TUN  *os.File // the TUN's descriptor, received from inside (nil without TUN)
	Pid  int

	mu  sync.Mutex
	enc *json.Encoder
	dec *json.Decoder
}

type request struct {
	Op      string   `json:"op"` // run, start, kill
	Argv    []string `json:"argv,omitempty"`
	Env     []string `json:"env,omitempty"`
	Timeout float64  `json:"timeout,omitempty"`
	ID      int      `json:"id,omitempty"`
	Wait    bool     `json:"wait,omitempty"` // start: wait for a line on stdout
}

type reply struct {
	Out  string `json:"out"`
	Code int    `json:"code"`
	ID   int    `json:"id"`
	Err  string `json:"err,omitempty"`
}

// Start starts a holder.
func Start(opts Options) (*NS, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	ours := os.NewFile(uintptr(fds[0]), "nstest-ctl")
	theirs := os.NewFile(uintptr(fds[1]), "nstest-ctl")
	defer theirs.Close()

	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), roleEnv+"=holder")
	if opts.TUN != nil {
		cmd.Env = append(cmd.Env, "HERD_NSTEST_TUN="+opts.TUN.String())
	}
	cmd.ExtraFiles = []*os.File{theirs}
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	if opts.Stderr != nil {
		cmd.Stdout, cmd.Stderr = opts.Stderr, opts.Stderr
	}
	uid, gid := os.Getuid(), os.Getgid()
	if os.Getuid() == 0 && opts.Uid != 0 {
		uid, gid = opts.Uid, opts.Gid
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:                 syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET | syscall.CLONE_NEWPID,
		UidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: uid, Size: 1}},
		GidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: gid, Size: 1}},
		GidMappingsEnableSetgroups: false,
		Pdeathsig:                  syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		ours.Close()
		return nil, fmt.Errorf("nstest: start holder: %v", err)
	}
	c, err := net.FileConn(ours)
	ours.Close()
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, err
	}
	ns := &NS{cmd: cmd, conn: c.(*net.UnixConn), Pid: cmd.Process.Pid}
	// The first message is one byte, with the TUN descriptor attached.
	ns.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	b := make([]byte, 1)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := ns.conn.ReadMsgUnix(b, oob)
	ns.conn.SetReadDeadline(time.Time{})
	if err != nil || n != 1 {
		ns.Close()
		return nil, fmt.Errorf("nstest: holder did not start: %v", err)
	}
	if b[0] == 'E' {
		ns.Close()
		return nil, errors.New("nstest: holder failed to set up the namespace (see its stderr)")
	}
	if b[0] == 'T' {
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil || len(msgs) != 1 {
			ns.Close()
			return nil, fmt.Errorf("nstest: no TUN descriptor: %v", err)
		}
		fds, err := unix.ParseUnixRights(&msgs[0])
		if err != nil || len(fds) != 1 {
			ns.Close()
			return nil, fmt.Errorf("nstest: no TUN descriptor: %v", err)
		}
		unix.CloseOnExec(fds[0])
		ns.TUN = os.NewFile(uintptr(fds[0]), "tun")
	}
	ns.enc = json.NewEncoder(ns.conn)
	ns.dec = json.NewDecoder(ns.conn)
	return ns, nil
}

func (ns *NS) call(req request) (reply, error) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if err := ns.enc.Encode(req); err != nil {
		return reply{}, err
	}
	var r reply
	if err := ns.dec.Decode(&r); err != nil {
		return reply{}, fmt.Errorf("nstest: holder gone: %v", err)
	}
	if r.Err != "" {
		return r, errors.New(r.Err)
	}
	return r, nil
}

// Run runs argv inside and returns its combined output and exit status
// (-1 when killed at the timeout).
func (ns *NS) Run(timeout time.Duration, argv ...string) (string, int, error) {
	r, err := ns.call(request{Op: "run", Argv: argv, Timeout: timeout.Seconds()})
	return r.Out, r.Code, err
}

// Dial connects from inside to network!addr (tcp or udp) n times, each
// time writing "ping\n" and reading the answer up to a newline (when echo is
// set) before closing. It returns "ok" or the first error, as its errno
// name when there is one (ECONNREFUSED, ENETUNREACH, ...).
func (ns *NS) Dial(timeout time.Duration, network, addr string, n int, echo bool) (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	r, err := ns.call(request{Op: "run", Argv: []string{self, network, addr, fmt.Sprint(n), fmt.Sprint(echo)},
		Env: []string{roleEnv + "=dial"}, Timeout: timeout.Seconds()})
	return strings.TrimSpace(r.Out), err
}

func dialMain(args []string) int {
	if len(args) != 4 {
		fmt.Println("usage: network addr n echo")
		return 2
	}
	n, _ := strconv.Atoi(args[2])
	echo := args[3] == "true"
	buf := make([]byte, 64)
	for i := 0; i < n; i++ {
		c, err := net.DialTimeout(args[0], args[1], 30*time.Second)
		if err != nil {
			var errno syscall.Errno
			if errors.As(err, &errno) {
				fmt.Println(unix.ErrnoName(errno))
			} else {
				fmt.Println(err)
			}
			return 1
		}
		if echo {
			c.SetDeadline(time.Now().Add(30 * time.Second))
			if _, err := c.Write([]byte("ping\n")); err != nil {
				fmt.Println("write:", err)
				return 1
			}
			if _, err := c.Read(buf); err != nil {
				fmt.Println("read:", err)
				return 1
			}
		}
		c.Close()
	}
	fmt.Println("ok")
	return 0
}

// Redial connects inside to the TCP server at addr, reads until the
// server closes, closes, and connects again at once from the same local
// port. It returns "ok N", N being the SYN retransmissions the second
// connect needed (its socket's tcpi_total_retrans), or an error.
func (ns *NS) Redial(timeout time.Duration, addr string) (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	r, err := ns.call(request{Op: "run", Argv: []string{self, addr}, Env: []string{roleEnv + "=redial"}, Timeout: timeout.Seconds()})
	return strings.TrimSpace(r.Out), err
}

func redialMain(args []string) int {
	reuse := func(_, _ string, c syscall.RawConn) error {
		var serr error
		c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1) })
		return serr
	}
	var port int
	for i := 0; i < 2; i++ {
		d := net.Dialer{Timeout: 30 * time.Second, Control: reuse}
		if port != 0 {
			d.LocalAddr = &net.TCPAddr{Port: port}
		}
		c, err := d.Dial("tcp", args[0])
		if err != nil {
			fmt.Println("dial:", err)
			return 1
		}
		port = c.LocalAddr().(*net.TCPAddr).Port
		var info *unix.TCPInfo
		raw, _ := c.(*net.TCPConn).SyscallConn()
		raw.Control(func(fd uintptr) { info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) })
		if err != nil {
			fmt.Println("tcp_info:", err)
			return 1
		}
		c.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.Copy(io.Discard, c); err != nil {
			fmt.Println("read:", err)
			return 1
		}
		// The server closed first; once our FIN is acknowledged the
		// socket is CLOSED (it has no TIME_WAIT: the peer has) and its
		// port free for the second connect.
		c.(*net.TCPConn).CloseWrite()
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Millisecond) {
			var st *unix.TCPInfo
			raw.Control(func(fd uintptr) { st, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) })
			if err == nil && st.State == 7 { // TCP_CLOSE
				break
			}
			if time.Now().After(deadline) {
				fmt.Println("our FIN was never acknowledged")
				return 1
			}
		}
		c.Close()
		if i == 1 {
			fmt.Println("ok", info.Total_retrans)
		}
	}
	return 0
}

// Echo starts an echo server inside on network!addr (tcp or udp) in the
// background, and returns when it listens.
func (ns *NS) Echo(network, addr string) (int, error) {
	self, err := os.Executable()
	if err != nil {
		return 0, err
	}
	r, err := ns.call(request{Op: "start", Argv: []string{self, network, addr}, Env: []string{roleEnv + "=echo"}, Wait: true})
	return r.ID, err
}

func echoMain(args []string) int {
	if args[0] == "udp" {
		pc, err := net.ListenPacket("udp", args[1])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		os.Stdout.Write([]byte("ready\n"))
		b := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFrom(b)
			if err != nil {
				return 1
			}
			pc.WriteTo(b[:n], from)
		}
	}
	l, err := net.Listen("tcp", args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	os.Stdout.Write([]byte("ready\n"))
	for {
		c, err := l.Accept()
		if err != nil {
			return 1
		}
		go func() {
			defer c.Close()
			io.Copy(c, c)
		}()
	}
}

// SendRaw sends each frame as is out of interface ifname (AF_PACKET), so
// the net server receives exactly those bytes.
func (ns *NS) SendRaw(ifname string, frames ...[]byte) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	argv := []string{self, ifname}
	for _, f := range frames {
		argv = append(argv, hex.EncodeToString(f))
	}
	r, err := ns.call(request{Op: "run", Argv: argv, Env: []string{roleEnv + "=sendraw"}, Timeout: 30})
	if err == nil && r.Code != 0 {
		err = fmt.Errorf("sendraw: %s", r.Out)
	}
	return err
}

func sendrawMain(args []string) int {
	ifc, err := net.InterfaceByName(args[0])
	if err != nil {
		fmt.Println(err)
		return 1
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM, 0)
	if err != nil {
		fmt.Println("packet socket:", err)
		return 1
	}
	for _, h := range args[1:] {
		b, _ := hex.DecodeString(h)
		proto := uint16(unix.ETH_P_IP)
		if len(b) > 0 && b[0]>>4 == 6 {
			proto = unix.ETH_P_IPV6
		}
		sa := &unix.SockaddrLinklayer{Ifindex: ifc.Index, Protocol: htons(proto)}
		if err := unix.Sendto(fd, b, 0, sa); err != nil {
			fmt.Println("sendto:", err)
			return 1
		}
	}
	return 0
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// StartBG starts argv inside in the background; it is killed by Kill or
// when the holder ends.
func (ns *NS) StartBG(argv ...string) (int, error) {
	r, err := ns.call(request{Op: "start", Argv: argv})
	return r.ID, err
}

// Kill kills a background command.
func (ns *NS) Kill(id int) error {
	_, err := ns.call(request{Op: "kill", ID: id})
	return err
}

// Close ends the holder (and everything running inside) and closes the TUN
// if the caller did not take it.
func (ns *NS) Close() error {
	ns.conn.Close()
	done := make(chan struct{})
	go func() {
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			ns.cmd.Process.Kill()
		}
	}()
	ns.cmd.Wait()
	close(done)
	if ns.TUN != nil {
		ns.TUN.Close()
	}
	return nil
}

func holderMain() int {
	// What runs inside must not think it is a holder too.
	os.Unsetenv(roleEnv)
	spec := os.Getenv("HERD_NSTEST_TUN")
	os.Unsetenv("HERD_NSTEST_TUN")
	ctl := os.NewFile(3, "ctl")
	c, err := net.FileConn(ctl)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nstest holder:", err)
		return 2
	}
	ctl.Close()
	uc := c.(*net.UnixConn)
	if spec != "" {
		cfg, err := netattach.ParseTUNConfig(spec)
		var tun *os.File
		if err == nil {
			tun, err = netattach.CreateTUNWith(cfg)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "nstest holder:", err)
			uc.Write([]byte{'E'})
			return 2
		}
		if _, _, err := uc.WriteMsgUnix([]byte{'T'}, unix.UnixRights(int(tun.Fd())), nil); err != nil {
			fmt.Fprintln(os.Stderr, "nstest holder: send tun:", err)
			return 2
		}
		tun.Close()
	} else {
		if err := netattach.LoopbackUp(); err != nil {
			fmt.Fprintln(os.Stderr, "nstest holder:", err)
			uc.Write([]byte{'E'})
			return 2
		}
		uc.Write([]byte{'N'})
	}
	dec := json.NewDecoder(uc)
	enc := json.NewEncoder(uc)
	bg := map[int]*exec.Cmd{}
	next := 1
	for {
		var req request
		if err := dec.Decode(&req); err != nil {
			for _, c := range bg {
				c.Process.Kill()
			}
			return 0
		}
		var r reply
		switch req.Op {
		case "run":
			ctx := context.Background()
			var cancel context.CancelFunc = func() {}
			if req.Timeout > 0 {
				ctx, cancel = context.WithTimeout(ctx, time.Duration(req.Timeout*float64(time.Second)))
			}
			cmd := exec.CommandContext(ctx, req.Argv[0], req.Argv[1:]...)
			if req.Env != nil {
				cmd.Env = append(os.Environ(), req.Env...)
			}
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			cancel()
			r.Out = out.String()
			var ee *exec.ExitError
			switch {
			case errors.As(err, &ee):
				r.Code = ee.ExitCode()
			case err != nil:
				r.Err = err.Error()
			}
		case "start":
			cmd := exec.Command(req.Argv[0], req.Argv[1:]...)
			if req.Env != nil {
				cmd.Env = append(os.Environ(), req.Env...)
			}
			cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
			var pr, pw *os.File
			if req.Wait {
				pr, pw, _ = os.Pipe()
				cmd.Stdout = pw
			}
			err := cmd.Start()
			if pw != nil {
				pw.Close()
			}
			if err != nil {
				if pr != nil {
					pr.Close()
				}
				r.Err = err.Error()
				break
			}
			if pr != nil {
				line := make([]byte, 6)
				if _, err := io.ReadFull(pr, line); err != nil {
					r.Err = "command exited before it was ready"
				}
				pr.Close()
			}
			bg[next] = cmd
			r.ID = next
			next++
			go cmd.Wait()
		case "kill":
			if c := bg[req.ID]; c != nil {
				c.Process.Kill()
				delete(bg, req.ID)
			}
		default:
			r.Err = "unknown op " + req.Op
		}
		if err := enc.Encode(r); err != nil {
			return 0
		}
	}
}
