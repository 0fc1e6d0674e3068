package netattach

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// firstLANAddr and firstLANAddr6 are what a fresh keeper gives its first
// member (see servers/net's LANSubnet and LANSubnet6).
var (
	firstLANAddr  = netip.MustParsePrefix("10.0.3.15/24")
	firstLANAddr6 = netip.MustParsePrefix("fd00:0:0:3::15/64")
	firstLANGw6   = netip.MustParseAddr("fd00:0:0:3::2")
)

// InitJoinLAN joins lan m from inside the new network namespace (the
// init, before pivot_root: the keeper's join socket is a path on the
// host's file system, reachable from any network namespace). It takes the
// lan's lock, reserves an address from the running keeper (or, when there
// is none, claims the address a fresh keeper gives first), and creates the
// TUN with it. It returns the descriptors HostAttachLAN needs: the TUN,
// the lock (still held), and the member's connection when a keeper runs.
// This is for launchers whose host side cannot run before the init (see
// Prepare for the other order).
func InitJoinLAN(m Mode, ifname string, mtu int) ([]*os.File, error) {
	if m.Kind != KindLAN {
		return nil, errors.New("netattach: InitJoinLAN: not a lan mode")
	}
	if mtu == 0 {
		mtu = DefaultMTU
	}
	dir := lanDirFor(hostUID())
	if err := makeLANDir(dir); err != nil {
		return nil, err
	}
	join := filepath.Join(dir, m.LAN+".join")
	lock, err := lockFile(join + ".lock")
	if err != nil {
		return nil, fmt.Errorf("netattach: lan %s: lock: %v", m.LAN, err)
	}
	fail := func(err error) ([]*os.File, error) {
		unix.Flock(int(lock.Fd()), unix.LOCK_UN)
		lock.Close()
		return nil, err
	}
	r := lanAddrs{addr: firstLANAddr, gw: netip.MustParseAddr("10.0.3.2"), addr6: firstLANAddr6, gw6: firstLANGw6}
	var connFile *os.File
	if c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: join, Net: "unix"}); err == nil {
		r, err = reserve(c, m)
		if err != nil {
			c.Close()
			return fail(err)
		}
		connFile, err = c.File()
		c.Close()
		if err != nil {
			return fail(err)
		}
	}
	cfg := r.tunConfig(ifname, mtu, m.NAT)
	tun, err := CreateTUNWith(cfg)
	if err != nil {
		if connFile != nil {
			connFile.Close()
		}
		return fail(err)
	}
	files := []*os.File{tun, lock}
	if connFile != nil {
		files = append(files, connFile)
	}
	return files, nil
}

// HostAttachLAN is the host half of InitJoinLAN: with the descriptors the
// init passed out, it starts the keeper if none ran (and checks it gave the
// claimed address), attaches the TUN and releases the lan's lock.
func HostAttachLAN(m Mode, files []*os.File, opts Options) (*Net, error) {
	if len(files) < 2 {
		return nil, errors.New("netattach: lan: expected the TUN and the lock from the init")
	}
	lock := files[1]
	defer func() {
		// LOCK_UN releases the lock for every holder of the description
		// (the init has a copy too).
		unix.Flock(int(lock.Fd()), unix.LOCK_UN)
		lock.Close()
	}()
	p := &Plan{mode: m, opts: opts}
	p.fill()
	if len(files) > 2 {
		c, err := net.FileConn(files[2])
		files[2].Close()
		if err != nil {
			return nil, err
		}
		p.lanConn = c.(*net.UnixConn)
	} else {
		dir := LANDir()
		if err := makeLANDir(dir); err != nil {
			return nil, err
		}
		sock := filepath.Join(dir, m.LAN+".sock")
		join := filepath.Join(dir, m.LAN+".join")
		if err := p.startKeeper(sock, join); err != nil {
			return nil, err
		}
		c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: join, Net: "unix"})
		if err != nil {
			return nil, fmt.Errorf("netattach: lan %s: keeper started but its join socket refuses: %v", m.LAN, err)
		}
		r, err := reserve(c, m)
		if err != nil {
			c.Close()
			return nil, err
		}
		if r.addr != firstLANAddr || r.addr6.IsValid() && r.addr6 != firstLANAddr6 {
			c.Close()
			return nil, fmt.Errorf("netattach: lan %s: a new keeper gave %s %s, not %s %s", m.LAN, r.addr, r.addr6, firstLANAddr, firstLANAddr6)
		}
		p.lanConn = c
	}
	return p.attachLAN(files[0])
}

// lanAddrs is what a lan's keeper gives a member: its addresses and the
// gateways (used with nat).
type lanAddrs struct {
	addr  netip.Prefix
	gw    netip.Addr
	addr6 netip.Prefix // invalid from a keeper that gives none
	gw6   netip.Addr
}

// tunConfig is the member's TUN (with the virtio-net header: the keeper
// is herd-net). Without nat there are no default routes.
func (r lanAddrs) tunConfig(ifname string, mtu int, nat bool) TUNConfig {
	cfg := TUNConfig{Name: ifname, MTU: mtu, Addr: r.addr, Addr6: r.addr6, VNetHdr: true}
	if nat {
		cfg.Gateway, cfg.Gateway6 = r.gw, r.gw6
	}
	return cfg
}

// reserve asks the keeper on c for an address.
func reserve(c *net.UnixConn, m Mode) (lanAddrs, error) {
	nat := "0"
	if m.NAT {
		nat = "1"
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := fmt.Fprintf(c, "RESERVE nat=%s\n", nat); err != nil {
		return lanAddrs{}, fmt.Errorf("netattach: lan %s: %v", m.LAN, err)
	}
	line, err := readConnLine(c)
	if err != nil || !strings.HasPrefix(line, "ADDR ") {
		if err == nil {
			err = errors.New(strings.TrimPrefix(line, "ERR "))
		}
		return lanAddrs{}, fmt.Errorf("netattach: lan %s: %v", m.LAN, err)
	}
	// ADDR v4/len gw dns [v6/len gw6]
	f := strings.Fields(line)
	bad := fmt.Errorf("netattach: lan %s: bad keeper reply %q", m.LAN, line)
	if len(f) < 3 {
		return lanAddrs{}, bad
	}
	var r lanAddrs
	var err1, err2 error
	r.addr, err1 = netip.ParsePrefix(f[1])
	r.gw, err2 = netip.ParseAddr(f[2])
	if err1 != nil || err2 != nil || !r.addr.Addr().Is4() {
		return lanAddrs{}, bad
	}
	if len(f) >= 6 {
		r.addr6, err1 = netip.ParsePrefix(f[4])
		r.gw6, err2 = netip.ParseAddr(f[5])
		if err1 != nil || err2 != nil || !r.addr6.Addr().Is6() {
			return lanAddrs{}, bad
		}
	}
	return r, nil
}

// hostUID is our uid as the host sees it (inside a user namespace, where
// we may be root, it is what uid_map maps us to).
func hostUID() int {
	uid := os.Getuid()
	f, err := os.Open("/proc/self/uid_map")
	if err != nil {
		return uid
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		w := strings.Fields(sc.Text())
		if len(w) != 3 {
			continue
		}
		in, _ := strconv.Atoi(w[0])
		out, _ := strconv.Atoi(w[1])
		n, _ := strconv.Atoi(w[2])
		if uid >= in && uid < in+n {
			return out + uid - in
		}
	}
	return uid
}

// lanDirFor is where lan keepers' sockets live: $XDG_RUNTIME_DIR/herd/lan,
// or /dev/shm/herd-UID/lan. Not under /tmp: the launcher's init, which
// joins the lan, has the subenvironment's root mounted on /tmp (and a
// subenvironment's /tmp is its own).
func lanDirFor(uid int) string {
	if base := os.Getenv("XDG_RUNTIME_DIR"); base != "" && !underTmp(base) {
		return filepath.Join(base, "herd", "lan")
	}
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		return filepath.Join("/dev/shm", fmt.Sprintf("herd-%d", uid), "lan")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("herd-%d", uid), "lan")
}

func underTmp(p string) bool {
	p = filepath.Clean(p)
	return p == "/tmp" || strings.HasPrefix(p, "/tmp/")
}

// makeLANDir creates dir (mode 0700) and refuses one that someone else
// owns (a shared /dev/shm lets others create names first).
func makeLANDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("netattach: lan dir: %v", err)
	}
	for _, d := range []string{dir, filepath.Dir(dir)} {
		var st unix.Stat_t
		if err := unix.Lstat(d, &st); err != nil {
			return fmt.Errorf("netattach: lan dir: %v", err)
		}
		if int(st.Uid) != os.Geteuid() || st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return fmt.Errorf("netattach: lan dir %s is not a directory of ours (owner %d): refusing it", d, st.Uid)
		}
		if d == dir || !strings.HasPrefix(filepath.Base(d), "herd-") {
			continue
		}
		if st.Mode&0o077 != 0 {
			return fmt.Errorf("netattach: %s is open to others (mode %o): refusing it", d, st.Mode&0o777)
		}
	}
	return nil
}
