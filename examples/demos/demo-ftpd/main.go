// Command demo-ftpd is a small FTP server for the demos: the live ISO's
// busybox has no FTP server, and the hostmux demo needs one to point ftpfs at.
// It serves one directory to anonymous users on a loopback address, passive
// mode only, read-write unless --readonly. It is not meant for the Internet.
package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
)

const usage = `Usage: demo-ftpd [--listen ADDR] [--readonly] DIR
Serves DIR by FTP to anonymous users (any user name and password), passive
mode only, until killed. For the demos; not for the Internet.

Options:
`

func main() {
	fl := pflag.NewFlagSet("demo-ftpd", pflag.ContinueOnError)
	fl.Usage = func() { fmt.Fprint(os.Stderr, usage); fl.PrintDefaults() }
	listen := fl.String("listen", "127.0.0.1:2121", "address to listen on")
	readonly := fl.Bool("readonly", false, "refuse every change")
	ready := fl.String("ready-file", "", "write the listening address to `FILE` once listening")
	if err := fl.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "demo-ftpd: %v (see demo-ftpd --help)\n", err)
		os.Exit(2)
	}
	if fl.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "demo-ftpd: give the directory to serve (see demo-ftpd --help)")
		os.Exit(2)
	}
	root, err := filepath.Abs(fl.Arg(0))
	if err == nil {
		var st os.FileInfo
		if st, err = os.Stat(root); err == nil && !st.IsDir() {
			err = fmt.Errorf("%s is not a directory", root)
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "demo-ftpd: %v\n", err)
		os.Exit(1)
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "demo-ftpd: %v\n", err)
		os.Exit(1)
	}
	if *ready != "" {
		if err := os.WriteFile(*ready, []byte(l.Addr().String()+"\n"), 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "demo-ftpd: %v\n", err)
			os.Exit(1)
		}
	}
	if err := serve(l, root, *readonly); err != nil {
		fmt.Fprintf(os.Stderr, "demo-ftpd: %v\n", err)
		os.Exit(1)
	}
}

// serve answers FTP sessions on l until it is closed.
func serve(l net.Listener, root string, readonly bool) error {
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		s := &session{c: c, r: bufio.NewReader(c), root: root, cwd: "/", readonly: readonly}
		go s.serve()
	}
}

type session struct {
	c        net.Conn
	r        *bufio.Reader
	root     string
	cwd      string // FTP path, always absolute and clean
	readonly bool
	pasv     net.Listener
	rnfr     string
	rest     int64
}

func (s *session) reply(code int, msg string) {
	fmt.Fprintf(s.c, "%d %s\r\n", code, msg)
}

// local maps an FTP path to a host path inside root; ".." cannot leave it
// (paths are cleaned as absolute FTP paths first).
func (s *session) local(p string) (string, string) {
	if !strings.HasPrefix(p, "/") {
		p = path.Join(s.cwd, p)
	}
	p = path.Clean("/" + p)
	return filepath.Join(s.root, filepath.FromSlash(p)), p
}

func (s *session) serve() {
	defer s.c.Close()
	defer func() {
		if s.pasv != nil {
			s.pasv.Close()
		}
	}()
	s.reply(220, "demo-ftpd ready")
	for {
		s.c.SetReadDeadline(time.Now().Add(5 * time.Minute))
		line, err := s.r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		cmd, arg, _ := strings.Cut(line, " ")
		cmd = strings.ToUpper(cmd)
		if s.readonly && strings.Contains(" STOR APPE DELE MKD XMKD RMD XRMD RNFR RNTO ", " "+cmd+" ") {
			s.reply(550, "read-only server")
			continue
		}
		if cmd != "REST" && cmd != "RETR" && cmd != "STOR" {
			s.rest = 0
		}
		switch cmd {
		case "USER":
			s.reply(331, "any password will do")
		case "PASS":
			s.reply(230, "logged in")
		case "SYST":
			s.reply(215, "UNIX Type: L8")
		case "FEAT":
			fmt.Fprint(s.c, "211-Features:\r\n EPSV\r\n MDTM\r\n MLST type*;size*;modify*;perm*;\r\n PASV\r\n REST STREAM\r\n SIZE\r\n UTF8\r\n211 End\r\n")
		case "OPTS":
			s.reply(200, "ok")
		case "TYPE", "MODE", "STRU", "ALLO":
			s.reply(200, "ok")
		case "NOOP":
			s.reply(200, "ok")
		case "PWD", "XPWD":
			s.reply(257, strconv.Quote(s.cwd)+" is the current directory")
		case "CWD", "XCWD", "CDUP":
			if cmd == "CDUP" {
				arg = ".."
			}
			lp, fp := s.local(arg)
			if st, err := os.Stat(lp); err != nil || !st.IsDir() {
				s.reply(550, "no such directory")
				continue
			}
			s.cwd = fp
			s.reply(250, "ok")
		case "PASV", "EPSV":
			s.passive(cmd)
		case "PORT", "EPRT":
			s.reply(502, "passive mode only")
		case "LIST", "NLST", "MLSD":
			s.list(cmd, arg)
		case "MLST":
			lp, fp := s.local(arg)
			st, err := os.Stat(lp)
			if err != nil {
				s.reply(550, "no such file")
				continue
			}
			fmt.Fprintf(s.c, "250-Listing %s\r\n %s %s\r\n250 End\r\n", fp, facts(st), fp)
		case "SIZE":
			lp, _ := s.local(arg)
			st, err := os.Stat(lp)
			if err != nil || !st.Mode().IsRegular() {
				s.reply(550, "no such file")
				continue
			}
			s.reply(213, strconv.FormatInt(st.Size(), 10))
		case "MDTM":
			lp, _ := s.local(arg)
			st, err := os.Stat(lp)
			if err != nil {
				s.reply(550, "no such file")
				continue
			}
			s.reply(213, st.ModTime().UTC().Format("20060102150405"))
		case "REST":
			n, err := strconv.ParseInt(arg, 10, 64)
			if err != nil || n < 0 {
				s.reply(501, "bad offset")
				continue
			}
			s.rest = n
			s.reply(350, "restarting at "+arg)
		case "RETR":
			s.retr(arg)
		case "STOR", "APPE":
			s.stor(cmd, arg)
		case "DELE":
			lp, _ := s.local(arg)
			s.result(os.Remove(lp), 250)
		case "MKD", "XMKD":
			lp, fp := s.local(arg)
			if err := os.Mkdir(lp, 0o755); err != nil {
				s.reply(550, errText(err))
				continue
			}
			s.reply(257, strconv.Quote(fp)+" created")
		case "RMD", "XRMD":
			lp, _ := s.local(arg)
			s.result(syscall.Rmdir(lp), 250)
		case "RNFR":
			lp, _ := s.local(arg)
			if _, err := os.Lstat(lp); err != nil {
				s.reply(550, "no such file")
				continue
			}
			s.rnfr = lp
			s.reply(350, "ready for RNTO")
		case "RNTO":
			if s.rnfr == "" {
				s.reply(503, "RNFR first")
				continue
			}
			lp, _ := s.local(arg)
			err := os.Rename(s.rnfr, lp)
			s.rnfr = ""
			s.result(err, 250)
		case "QUIT":
			s.reply(221, "bye")
			return
		default:
			s.reply(502, "not implemented")
		}
	}
}

func (s *session) result(err error, ok int) {
	if err != nil {
		s.reply(550, errText(err))
		return
	}
	s.reply(ok, "ok")
}

func errText(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

func (s *session) passive(cmd string) {
	if s.pasv != nil {
		s.pasv.Close()
	}
	host, _, _ := net.SplitHostPort(s.c.LocalAddr().String())
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		s.reply(425, "cannot listen")
		return
	}
	s.pasv = l
	port := l.Addr().(*net.TCPAddr).Port
	if cmd == "EPSV" {
		s.reply(229, fmt.Sprintf("Entering Extended Passive Mode (|||%d|)", port))
		return
	}
	ip := net.ParseIP(host).To4()
	if ip == nil {
		s.reply(425, "PASV needs IPv4; use EPSV")
		return
	}
	s.reply(227, fmt.Sprintf("Entering Passive Mode (%d,%d,%d,%d,%d,%d)", ip[0], ip[1], ip[2], ip[3], port>>8, port&0xff))
}

// data accepts the data connection announced by PASV/EPSV.
func (s *session) data() (net.Conn, bool) {
	if s.pasv == nil {
		s.reply(425, "use PASV or EPSV first")
		return nil, false
	}
	l := s.pasv
	s.pasv = nil
	defer l.Close()
	l.(*net.TCPListener).SetDeadline(time.Now().Add(30 * time.Second))
	c, err := l.Accept()
	if err != nil {
		s.reply(425, "no data connection")
		return nil, false
	}
	return c, true
}

func facts(st os.FileInfo) string {
	typ := "file"
	if st.IsDir() {
		typ = "dir"
	}
	return fmt.Sprintf("type=%s;size=%d;modify=%s;", typ, st.Size(), st.ModTime().UTC().Format("20060102150405"))
}

func (s *session) list(cmd, arg string) {
	// Clients pass ls options ("LIST -la"); ignore them.
	for strings.HasPrefix(arg, "-") {
		_, arg, _ = strings.Cut(arg, " ")
	}
	lp, _ := s.local(arg)
	st, err := os.Stat(lp)
	if err != nil {
		s.reply(550, "no such file or directory")
		return
	}
	var infos []os.FileInfo
	if st.IsDir() {
		ents, err := os.ReadDir(lp)
		if err != nil {
			s.reply(550, errText(err))
			return
		}
		for _, e := range ents {
			if fi, err := e.Info(); err == nil {
				infos = append(infos, fi)
			}
		}
	} else {
		infos = []os.FileInfo{st}
	}
	c, ok := s.data()
	if !ok {
		return
	}
	s.reply(150, "listing")
	w := bufio.NewWriter(c)
	for _, fi := range infos {
		switch cmd {
		case "NLST":
			fmt.Fprintf(w, "%s\r\n", fi.Name())
		case "MLSD":
			fmt.Fprintf(w, "%s %s\r\n", facts(fi), fi.Name())
		default:
			fmt.Fprintf(w, "%s 1 ftp ftp %12d %s %s\r\n", fi.Mode().String(), fi.Size(),
				fi.ModTime().UTC().Format("Jan _2 15:04"), fi.Name())
		}
	}
	err = w.Flush()
	c.Close()
	if err != nil {
		s.reply(426, "transfer aborted")
		return
	}
	s.reply(226, "done")
}

func (s *session) retr(arg string) {
	lp, _ := s.local(arg)
	f, err := os.Open(lp)
	if err != nil {
		s.reply(550, errText(err))
		return
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		s.reply(550, "not a plain file")
		return
	}
	if !s.seekRest(f) {
		return
	}
	c, ok := s.data()
	if !ok {
		return
	}
	s.reply(150, "sending")
	_, err = io.Copy(c, f)
	c.Close()
	if err != nil {
		s.reply(426, "transfer aborted")
		return
	}
	s.reply(226, "done")
}

// seekRest moves f to where REST said the transfer starts; false when it
// cannot (the client has been answered).
func (s *session) seekRest(f *os.File) bool {
	if s.rest > 0 {
		if _, err := f.Seek(s.rest, io.SeekStart); err != nil {
			s.reply(550, errText(err))
			return false
		}
		s.rest = 0
	}
	return true
}

func (s *session) stor(cmd, arg string) {
	lp, _ := s.local(arg)
	flags := os.O_WRONLY | os.O_CREATE
	switch {
	case cmd == "APPE":
		flags |= os.O_APPEND
	case s.rest == 0:
		flags |= os.O_TRUNC
	}
	f, err := os.OpenFile(lp, flags, 0o644)
	if err != nil {
		s.reply(550, errText(err))
		return
	}
	defer f.Close()
	if !s.seekRest(f) {
		return
	}
	c, ok := s.data()
	if !ok {
		return
	}
	s.reply(150, "receiving")
	_, err = io.Copy(f, c)
	c.Close()
	if err == nil {
		err = f.Close()
	}
	if err != nil {
		s.reply(426, "transfer aborted")
		return
	}
	s.reply(226, "done")
}
