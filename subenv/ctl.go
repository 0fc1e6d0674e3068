package subenv

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// The launcher and the init talk over a SOCK_SEQPACKET socketpair (the
// init's fd 3): one message per datagram, the first byte says what it is,
// descriptors travel with SCM_RIGHTS.
const (
	msgFuse  = 'F' // init -> launcher: the /dev/fuse fd of the mounted root
	msgNet   = 'N' // init -> launcher: descriptors of the net mode (may be none)
	msgError = 'E' // init -> launcher: [code byte] one-line message; the init then exits
	msgReady = 'R' // launcher -> init: the root is served and the net is up; run the program
	msgMaps  = 'M' // launcher -> init: your uid/gid maps are written (newuidmap case)

	// Job control, when the program has the terminal:
	msgStopped  = 'T' // init -> launcher: the program stopped (^Z); stop subenv
	msgContinue = 'C' // launcher -> init: subenv was continued; [1 byte: in the foreground]
)

type ctlMsg struct {
	kind  byte
	data  []byte
	files []*os.File
}

func socketpair() (mine, theirs *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socketpair: %v", err)
	}
	return os.NewFile(uintptr(fds[0]), "ctl"), os.NewFile(uintptr(fds[1]), "ctl"), nil
}

func sendMsg(f *os.File, kind byte, data []byte, files ...*os.File) error {
	var oob []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for i, x := range files {
			fds[i] = int(x.Fd())
		}
		oob = unix.UnixRights(fds...)
	}
	return unix.Sendmsg(int(f.Fd()), append([]byte{kind}, data...), oob, nil, 0)
}

// recvMsg blocks until a message arrives; io errors and EOF (the peer is
// gone) are returned as errors.
func recvMsg(f *os.File) (ctlMsg, error) {
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(8*4))
	for {
		n, oobn, _, _, err := unix.Recvmsg(int(f.Fd()), buf, oob, unix.MSG_CMSG_CLOEXEC)
		// ECONNRESET: the peer closed with our message unread in its
		// queue. The kernel reports that before the messages still
		// queued for us (the init's last word), and only once.
		if err == unix.EINTR || err == unix.ECONNRESET {
			continue
		}
		if err != nil {
			return ctlMsg{}, err
		}
		if n == 0 {
			return ctlMsg{}, fmt.Errorf("EOF")
		}
		m := ctlMsg{kind: buf[0], data: append([]byte(nil), buf[1:n]...)}
		if oobn > 0 {
			cms, err := unix.ParseSocketControlMessage(oob[:oobn])
			if err != nil {
				return ctlMsg{}, err
			}
			for _, cm := range cms {
				fds, err := unix.ParseUnixRights(&cm)
				if err != nil {
					continue
				}
				for _, fd := range fds {
					m.files = append(m.files, os.NewFile(uintptr(fd), "passed"))
				}
			}
		}
		return m, nil
	}
}
