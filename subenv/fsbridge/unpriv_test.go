package fsbridge

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"herd/proto"
)

// The plain user's case: the launcher mounts FUSE inside a user namespace
// and the bridge serves the fd there. The kernel refuses passthrough (it
// needs CAP_SYS_ADMIN in the initial namespace), so the bridge must notice
// and read and write the backing descriptors itself.

const (
	testUser    = "herdbridge"
	childEnv    = "HERD_FSBRIDGE_USERNS_CHILD"
	childDirEnv = "HERD_FSBRIDGE_USERNS_DIR"
)

func lookupTestUser(t *testing.T) (uid, gid int) {
	t.Helper()
	u, err := user.Lookup(testUser)
	if err != nil {
		if out, err := exec.Command("useradd", "-M", "-s", "/bin/sh", testUser).CombinedOutput(); err != nil {
			// A concurrent test binary may have created it meanwhile.
			if u2, err2 := user.Lookup(testUser); err2 == nil {
				u = u2
			} else {
				t.Fatalf("useradd %s: %v: %s", testUser, err, out)
			}
		}
		if u == nil {
			if u, err = user.Lookup(testUser); err != nil {
				t.Fatal(err)
			}
		}
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return uid, gid
}

func TestUnprivilegedServe(t *testing.T) {
	if os.Getenv(childEnv) == "1" {
		unprivilegedServeChild(t)
		return
	}
	runAsTestUser(t, "TestUnprivilegedServe", true)
}

// TestUnprivilegedMount: a plain user mounts with Mount (fusermount3), no
// namespace: the host-side mount of settrans -a.
func TestUnprivilegedMount(t *testing.T) {
	if os.Getenv(childEnv) == "1" {
		unprivilegedMountChild(t)
		return
	}
	runAsTestUser(t, "TestUnprivilegedMount", false)
}

// runAsTestUser runs the test named name again as the test user (in a user
// namespace of theirs when userns), over a work directory they own with a
// random 8 MiB file in its lower layer, and checks what the child wrote.
func runAsTestUser(t *testing.T, name string, userns bool) {
	if os.Geteuid() != 0 {
		t.Skip("creating the test user needs root (CI runs as root)")
	}
	t.Cleanup(func() { noHerdMounts(t) })
	uid, gid := lookupTestUser(t)
	if err := os.Chmod("/dev/fuse", 0o666); err != nil {
		t.Fatal(err)
	}

	// A world-searchable directory the user owns, with the test binary in
	// it (go test's build directory is root's alone).
	top := t.TempDir()
	for _, d := range []string{filepath.Dir(top), top} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	work := filepath.Join(top, "work")
	for _, d := range []string{work, filepath.Join(work, "lower"), filepath.Join(work, "upper"), filepath.Join(work, "mnt")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	data := make([]byte, 8<<20+17)
	rand.Read(data)
	big := filepath.Join(work, "lower", "big")
	if err := os.WriteFile(big, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(big, uid, gid); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(top, "fsbridge.test")
	copyFile(t, self, bin)

	cmd := exec.Command(bin, "-test.run=^"+name+"$", "-test.v")
	cmd.Env = append(os.Environ(), childEnv+"=1", childDirEnv+"="+work, "PATH=/usr/bin:/bin:/usr/sbin:/sbin")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)},
		Pdeathsig:  syscall.SIGKILL,
	}
	if userns {
		cmd.SysProcAttr.Cloneflags = syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS
		cmd.SysProcAttr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: uid, Size: 1}}
		cmd.SysProcAttr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: gid, Size: 1}}
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: 0, Gid: 0}
	}
	if err := cmd.Run(); err != nil {
		t.Fatalf("the bridge as %s: %v\n%s", testUser, err, out.String())
	}
	if !strings.Contains(out.String(), "PASS") {
		t.Fatalf("child did not pass:\n%s", out.String())
	}
	t.Logf("child:\n%s", out.String())
	got, err := os.ReadFile(filepath.Join(work, "upper", "written"))
	if err != nil || string(got) != "written by the user" {
		t.Errorf("write through the bridge did not reach the upper layer: %q %v", got, err)
	}
	if fi, err := os.Stat(filepath.Join(work, "upper", "written")); err == nil {
		if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != uid {
			t.Errorf("file written as the user is owned by host uid %d, want %d", st.Uid, uid)
		}
	}
	if mounted(t, filepath.Join(work, "mnt")) {
		t.Errorf("%s left mounted", filepath.Join(work, "mnt"))
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

// unprivilegedServeChild runs as the test user, root of its own user
// namespace: it mounts FUSE there and serves the fd, as the launcher does.
func unprivilegedServeChild(t *testing.T) {
	work := os.Getenv(childDirEnv)
	lower, upper, mnt := filepath.Join(work, "lower"), filepath.Join(work, "upper"), filepath.Join(work, "mnt")
	srv, err := newFSServer(lower, upper)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	c, n, _ := pipe(t, srv, proto.ClientOptions{})

	dev, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	opts := fmt.Sprintf("fd=%d,rootmode=40000,user_id=0,group_id=0,default_permissions", dev.Fd())
	if err := syscall.Mount("herd", mnt, "fuse.herd", syscall.MS_NOSUID|syscall.MS_NODEV, opts); err != nil {
		t.Fatalf("mount fuse in the user namespace: %v", err)
	}
	defer syscall.Unmount(mnt, syscall.MNT_DETACH)
	// The server runs in this namespace too, so the ids it reports are
	// already the namespace's: identity. (TestServe covers the map.)
	b, err := Serve(dev, c, Options{Notifier: n, Passthrough: true, IDMap: IDMap{Identity: true}})
	dev.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := PollHack(mnt); err != nil {
		t.Fatal(err)
	}
	userChecks(t, b, lower, mnt)
	if err := syscall.Unmount(mnt, 0); err != nil {
		t.Fatalf("unmount: %v", err)
	}
	b.Wait()
}

// unprivilegedMountChild runs as the test user, in the host's namespaces.
func unprivilegedMountChild(t *testing.T) {
	work := os.Getenv(childDirEnv)
	lower, upper, mnt := filepath.Join(work, "lower"), filepath.Join(work, "upper"), filepath.Join(work, "mnt")
	srv, err := newFSServer(lower, upper)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	c, n, _ := pipe(t, srv, proto.ClientOptions{})
	b, err := Mount(mnt, c, Options{Notifier: n, Passthrough: true})
	if err != nil {
		t.Fatalf("Mount as a plain user: %v", err)
	}
	userChecks(t, b, lower, mnt)
	if err := b.Unmount(); err != nil {
		t.Fatalf("Unmount as a plain user: %v", err)
	}
	b.Wait()
}

// userChecks: the user's file reads back whole through the bridge's own
// reads (the kernel refuses passthrough to a plain user), shows as theirs,
// and a write lands in the upper layer.
func userChecks(t *testing.T, b *Bridge, lower, mnt string) {
	t.Helper()
	want, err := os.ReadFile(filepath.Join(lower, "big"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(mnt, "big"))
	if err != nil {
		t.Fatalf("read through the bridge: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes through the bridge, content differs from the %d-byte file", len(got), len(want))
	}
	if b.opensPassthrough.Load() != 0 || !b.noPassthrough.Load() {
		t.Errorf("passthrough as a plain user: %d opens used it, refusal noticed: %v", b.opensPassthrough.Load(), b.noPassthrough.Load())
	}
	if b.opensFD.Load() == 0 {
		t.Errorf("the bridge did not read the backing descriptor itself (protocol opens: %d)", b.opensProto.Load())
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(mnt, "big"), &st); err != nil {
		t.Fatal(err)
	}
	if int(st.Uid) != os.Getuid() {
		t.Errorf("the user's file shows as uid %d, want %d", st.Uid, os.Getuid())
	}
	if err := os.WriteFile(filepath.Join(mnt, "written"), []byte("written by the user"), 0o644); err != nil {
		t.Fatalf("write through the bridge: %v", err)
	}
}
