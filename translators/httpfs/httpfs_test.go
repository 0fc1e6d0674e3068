package httpfs_test

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"herd/translators/httpfs"
	"herd/translators/internal/transtest"
	"herd/translators/kit/kittest"
)

var bin string

func TestMain(m *testing.M) { kittest.Main(m, map[string]*string{"httpfs": &bin}) }

// siteDir makes the served tree:
//
//	a.txt, "with space & amp.txt", sub/big.bin (random, 1 MiB), sub/deeper/x, empty/
func siteDir(t *testing.T) (string, []byte) {
	dir := kittest.TempDir(t)
	big := make([]byte, 1<<20)
	rand.Read(big)
	transtest.Must(t, os.MkdirAll(filepath.Join(dir, "sub/deeper"), 0o755))
	transtest.Must(t, os.Mkdir(filepath.Join(dir, "empty"), 0o755))
	transtest.Must(t, os.WriteFile(filepath.Join(dir, "a.txt"), []byte("over http\n"), 0o644))
	transtest.Must(t, os.WriteFile(filepath.Join(dir, "with space & amp.txt"), []byte("odd name\n"), 0o644))
	transtest.Must(t, os.WriteFile(filepath.Join(dir, "sub/big.bin"), big, 0o644))
	transtest.Must(t, os.WriteFile(filepath.Join(dir, "sub/deeper/x"), []byte("x\n"), 0o644))
	return dir, big
}

// pythonServer runs python3 -m http.server on 127.0.0.1 (a port the
// kernel picks) serving dir, until the test ends.
func pythonServer(t *testing.T, dir string) string {
	t.Helper()
	cmd := exec.Command("python3", "-u", "-m", "http.server", "--bind", "127.0.0.1", "--directory", dir, "0")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	transtest.Must(t, err)
	transtest.Must(t, cmd.Start())
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-done })
	port := make(chan string, 1)
	go func() {
		re := regexp.MustCompile(`port (\d+)`)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				port <- m[1]
			}
		}
	}()
	select {
	case p := <-port:
		return "http://127.0.0.1:" + p + "/"
	case <-done:
		t.Fatal("python3 -m http.server exited")
	case <-time.After(60 * time.Second):
		t.Fatal("python3 -m http.server did not start")
	}
	return ""
}

// TestPythonServer: python's http.server (no Range support: whole bodies).
func TestPythonServer(t *testing.T) {
	dir, big := siteDir(t)
	url := pythonServer(t, dir)
	m := kittest.MountTranslator(t, httpfs.Translator(), "--cache-timeout=0", url)
	check(t, m.Dir, dir, big)
}

// TestRanges: Go's file server answers Range requests, and httpfs reads
// only what is asked for.
func TestRanges(t *testing.T) {
	dir, big := siteDir(t)
	var ranged, whole atomic.Int64
	fs := http.FileServer(http.Dir(dir))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, ".bin") {
			if r.Header.Get("Range") != "" {
				ranged.Add(1)
			} else {
				whole.Add(1)
			}
		}
		fs.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	m := kittest.MountTranslator(t, httpfs.Translator(), "--cache-timeout=0", srv.URL+"/")
	check(t, m.Dir, dir, big)
	if ranged.Load() == 0 || whole.Load() != 0 {
		t.Errorf("%d range requests, %d whole-file requests: want ranges only", ranged.Load(), whole.Load())
	}
	// A read in the middle fetches only that part.
	f, err := os.Open(filepath.Join(m.Dir, "sub/big.bin"))
	transtest.Must(t, err)
	defer f.Close()
	buf := make([]byte, 100)
	if _, err := f.ReadAt(buf, 500000); err != nil || !bytes.Equal(buf, big[500000:500100]) {
		t.Errorf("ReadAt: %v", err)
	}
}

func check(t *testing.T, mnt, dir string, big []byte) {
	t.Helper()
	if got, want := transtest.Names(t, mnt), "a.txt,empty/,sub/,with space & amp.txt"; got != want {
		t.Errorf("root lists %q, want %q", got, want)
	}
	if got := transtest.Names(t, filepath.Join(mnt, "sub")); got != "big.bin,deeper/" {
		t.Errorf("sub lists %q", got)
	}
	if got := transtest.Names(t, filepath.Join(mnt, "empty")); got != "" {
		t.Errorf("empty lists %q", got)
	}
	fi, err := os.Stat(filepath.Join(mnt, "sub/big.bin"))
	if err != nil || fi.Size() != int64(len(big)) || !fi.Mode().IsRegular() {
		t.Fatalf("stat: %v, %v", fi, err)
	}
	b, err := os.ReadFile(filepath.Join(mnt, "sub/big.bin"))
	if err != nil || sha256.Sum256(b) != sha256.Sum256(big) {
		t.Fatalf("big.bin read back wrong (%d bytes, %v)", len(b), err)
	}
	if b, _ := os.ReadFile(filepath.Join(mnt, "with space & amp.txt")); string(b) != "odd name\n" {
		t.Errorf("odd name reads %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(mnt, "sub/deeper/x")); string(b) != "x\n" {
		t.Errorf("deeper/x reads %q", b)
	}
	if err := os.WriteFile(filepath.Join(mnt, "a.txt"), []byte("no"), 0o644); !errors.Is(err, syscall.EROFS) {
		t.Errorf("write: %v, want EROFS", err)
	}
	if err := os.Mkdir(filepath.Join(mnt, "new"), 0o755); !errors.Is(err, syscall.EROFS) {
		t.Errorf("mkdir: %v, want EROFS", err)
	}
	if _, err := os.Stat(filepath.Join(mnt, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing: %v", err)
	}
	// A file gone from the server (404) is ENOENT.
	transtest.Must(t, os.Remove(filepath.Join(dir, "a.txt")))
	if _, err := os.ReadFile(filepath.Join(mnt, "a.txt")); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("after the server lost a.txt: %v, want ENOENT", err)
	}
}

// TestLinks reads index pages as Apache, nginx and python write them.
func TestLinks(t *testing.T) {
	base := mustURL(t, "http://example.org/pub/")
	apache := `<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 3.2 Final//EN">
<html><head><title>Index of /pub</title></head><body><h1>Index of /pub</h1>
<table><tr><th><a href="?C=N;O=D">Name</a></th><th><a href="?C=M;O=A">Last modified</a></th></tr>
<tr><td><a href="/">Parent Directory</a></td></tr>
<tr><td><a href="file%20one.txt">file one.txt</a></td><td>2024-01-01 10:00</td><td>1.2K</td></tr>
<tr><td><a href="sub/">sub/</a></td></tr>
<!-- <a href="commented">no</a> -->
<tr><td><a HREF='a&amp;b'>a&amp;b</a></td></tr>
</table></body></html>`
	nginx := `<html><head><title>Index of /pub/</title></head><body><h1>Index of /pub/</h1><hr><pre><a href="../">../</a>
<a href="sub/">sub/</a>                                               01-Jan-2024 10:00       -
<a href="/pub/file%20one.txt">file one.txt</a>                        01-Jan-2024 10:00    1234
<a href=a&amp;b>a&amp;b</a>
<a href="http://elsewhere.org/pub/x">x</a><a href="sub/deeper/">deep</a><a href="#top">top</a>
</pre><hr></body></html>`
	for name, page := range map[string]string{"apache": apache, "nginx": nginx} {
		var got []string
		for _, l := range httpfs.Links(base, []byte(page)) {
			got = append(got, fmt.Sprintf("%s %v %s", l.Name, l.Dir, l.URL))
		}
		sort.Strings(got)
		want := "[a&b false http://example.org/pub/a&b file one.txt false http://example.org/pub/file%20one.txt sub true http://example.org/pub/sub/]"
		if fmt.Sprint(got) != want {
			t.Errorf("%s: %q\nwant %s", name, got, want)
		}
	}
}

func FuzzLinks(f *testing.F) {
	f.Add([]byte(`<a href="x">x</a><a href='d/'>d</a><A HREF=y>y</A><!-- <a href="z"> -->`))
	f.Add([]byte(`<a href="../">..</a><a href="/pub/%2e%2e/">x</a><a href="?C=N">n</a>`))
	base, _ := httpfsURL("http://example.org/pub/")
	f.Fuzz(func(t *testing.T, page []byte) {
		for _, l := range httpfs.Links(base, page) {
			if l.Name == "" || l.Name == "." || l.Name == ".." || strings.ContainsAny(l.Name, "/\x00") {
				t.Fatalf("bad name %q", l.Name)
			}
			if l.URL.Host != "example.org" || !strings.HasPrefix(l.URL.Path, "/pub/") {
				t.Fatalf("link outside the directory: %s", l.URL)
			}
		}
	})
}

func TestBadInput(t *testing.T) {
	dir, _ := siteDir(t)
	url := pythonServer(t, dir)
	mnt := kittest.TempDir(t)
	kittest.Refuses(t, bin, "", mnt, []kittest.Refusal{
		{Args: []string{"ftp://example.org/", "--mount", mnt}, Status: 2, Want: "want an http:// or https:// URL"},
		{Args: []string{"/just/a/path", "--mount", mnt}, Status: 2, Want: "want an http:// or https:// URL"},
		{Args: []string{"--mount", mnt}, Status: 2, Want: "want one URL"},
		{Args: []string{"http://127.0.0.1:1/", "--mount", mnt}, Status: 1, Want: "connection refused"},
		{Args: []string{url + "nonexistent/", "--mount", mnt}, Status: 1, Want: "404"},
	})
}

// TestProgram runs cmd/httpfs as settrans -a does on the host.
func TestProgram(t *testing.T) {
	dir, big := siteDir(t)
	url := pythonServer(t, dir)
	mnt := kittest.TempDir(t)
	kittest.RunMount(t, bin, mnt, url)
	if b, err := os.ReadFile(filepath.Join(mnt, "sub/big.bin")); err != nil || !bytes.Equal(b, big) {
		t.Fatalf("read: %v", err)
	}
	// A file URL: the node is that file.
	file := filepath.Join(kittest.TempDir(t), "file")
	transtest.Must(t, os.WriteFile(file, nil, 0o644))
	kittest.RunMount(t, bin, file, url+"a.txt")
	if b, err := os.ReadFile(file); err != nil || string(b) != "over http\n" {
		t.Errorf("file URL reads %q, %v", b, err)
	}
}

// TestProgramUnprivileged: a plain user mounts a web directory in a user
// namespace; the program leaves nothing behind.
func TestProgramUnprivileged(t *testing.T) {
	dir, big := siteDir(t)
	url := pythonServer(t, dir)
	mnt := kittest.TempDir(t)
	uid, gid := transtest.User(t, "herdkit")
	transtest.Must(t, os.Chown(mnt, int(uid), int(gid)))
	out, err := kittest.AsUser(t, "herdkit", true, fmt.Sprintf(`
%[1]s %[3]s --mount %[2]s & pid=$!
waitmount %[2]s
ls %[2]s
sha256sum < %[2]s/sub/big.bin
kill $pid
wait $pid
echo "exit $?"
grep -c " %[2]s " /proc/self/mountinfo || true
`, kittest.Quote(bin), kittest.Quote(mnt), url))
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	want := fmt.Sprintf("a.txt\nempty\nsub\nwith space & amp.txt\n%x  -\nexit 0\n0\n", sha256.Sum256(big))
	if out != want {
		t.Errorf("output %q, want %q", out, want)
	}
}

// TestRedirect: the program serves its socket (as settrans and the fs
// server start it) and a client reaches it through a redirect, as inside
// a subenvironment.
func TestRedirect(t *testing.T) {
	dir, big := siteDir(t)
	url := pythonServer(t, dir)
	sock := filepath.Join(kittest.TempDir(t), "httpfs.sock")
	kittest.RunSocket(t, bin, sock, url)
	m := kittest.Mount(t, kittest.NewRedirector(map[string]string{"web": sock}))
	if b, err := os.ReadFile(filepath.Join(m.Dir, "web/sub/big.bin")); err != nil || !bytes.Equal(b, big) {
		t.Fatalf("read through the redirect: %v", err)
	}
}
