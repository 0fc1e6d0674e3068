package redirect

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"

	"herd/proto"
	fsrv "herd/servers/fs"
	"herd/subenv/fsbridge"
)

// cowSetup is servers/fs in copy-on-write mode (a subenvironment's
// default) over a lower tree of dirs×files small files, reached over
// proto through a counting client and mounted through the bridge.
func cowSetup(tb testing.TB, dirs, files int) (mnt string, root *Counting, paths []string) {
	tb.Helper()
	tmp := tb.TempDir()
	lower, upper := filepath.Join(tmp, "lower"), filepath.Join(tmp, "upper")
	for _, d := range []string{lower, upper} {
		if err := os.Mkdir(d, 0o755); err != nil {
			tb.Fatal(err)
		}
	}
	for d := 0; d < dirs; d++ {
		dir := filepath.Join(lower, fmt.Sprintf("d%d", d))
		if err := os.Mkdir(dir, 0o755); err != nil {
			tb.Fatal(err)
		}
		for f := 0; f < files; f++ {
			rel := filepath.Join(fmt.Sprintf("d%d", d), fmt.Sprintf("f%d", f))
			if err := os.WriteFile(filepath.Join(lower, rel), make([]byte, 1+(d*files+f)%4096), 0o644); err != nil {
				tb.Fatal(err)
			}
			paths = append(paths, rel)
		}
	}
	srv, err := fsrv.New(fsrv.Options{Root: lower, Upper: upper})
	if err != nil {
		tb.Fatal(err)
	}
	n := fsbridge.NewNotifier()
	c, stop, err := proto.Pipe(srv, proto.ServerOptions{Name: "fs"}, proto.ClientOptions{Timeout: time.Minute, Notifier: n})
	if err != nil {
		tb.Fatal(err)
	}
	root = &Counting{Client: c}
	mnt = filepath.Join(tmp, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		tb.Fatal(err)
	}
	b, err := fsbridge.Mount(mnt, root, fsbridge.Options{
		IDMap:       fsbridge.IDMap{Identity: true},
		Passthrough: os.Geteuid() == 0, // as subenv run does
		Notifier:    n,
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		b.Unmount()
		stop()
		srv.Close()
		if mounted(mnt) {
			tb.Errorf("%s still mounted", mnt)
		}
	})
	return mnt, root, paths
}

func openClose(tb testing.TB, p string) {
	f, err := os.Open(p)
	if err != nil {
		tb.Fatal(err)
	}
	f.Close()
}

// openCloseAsTar opens with the flags GNU tar uses for each file.
func openCloseAsTar(tb testing.TB, p string) {
	fd, err := syscall.Open(p, syscall.O_RDONLY|syscall.O_NOCTTY|syscall.O_NONBLOCK|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		tb.Fatal(err)
	}
	syscall.Close(fd)
}

// TestDirectOpenRoundTrips: with directory capabilities, a warm
// open+close of a lower-layer file costs no round trip, and the first
// opens of a directory's files cost one (the capability), not one each.
// More files than the bridge keeps spare opens for, so spares cannot be
// what serves them.
func TestDirectOpenRoundTrips(t *testing.T) {
	const dirs, files = 3, 500 // 1500 files > maxSpares (1024)
	mnt, root, paths := cowSetup(t, dirs, files)
	for _, p := range paths {
		lstat(t, filepath.Join(mnt, p)) // the kernel's lookups
	}
	// Open and Release are what an open+close costs; lookups are the
	// kernel's path walk (and come again only if it dropped its entries,
	// as it may under memory pressure).
	openRelease := func() int64 { o := root.ByOp(); return o["Open"] + o["Release"] }
	b0 := root.ByOp()
	c0 := openRelease()
	for _, p := range paths {
		openClose(t, filepath.Join(mnt, p))
	}
	first := openRelease() - c0
	t.Logf("first open+close of %d files in %d directories: %d Open+Release (%v before, %v after)", len(paths), dirs, first, b0, root.ByOp())
	if first > dirs {
		t.Errorf("first open+close pass: %d Open+Release round trips, want at most %d (one capability per directory)", first, dirs)
	}
	c1 := openRelease()
	for pass := 0; pass < 2; pass++ {
		for _, p := range paths {
			openClose(t, filepath.Join(mnt, p))
			openCloseAsTar(t, filepath.Join(mnt, p))
		}
	}
	if warm := openRelease() - c1; warm != 0 {
		t.Errorf("warm open+close of %d lower-layer files: %d Open+Release round trips, want 0 (%v)", 4*len(paths), warm, root.ByOp())
	}
	// A write copies one file up: the directory's capability goes, and
	// the new contents are read.
	p := filepath.Join(mnt, paths[0])
	if err := os.WriteFile(p, []byte("changed"), 0o644); err != nil {
		t.Fatal(err)
	}
	if d, err := os.ReadFile(p); err != nil || string(d) != "changed" {
		t.Errorf("after the write: %q, %v", d, err)
	}
}

// BenchmarkOpenCloseMany: open+close over more files than spare opens
// cover, with the server across proto (in process, over a socket pair):
// the herd-ext case of bench/files.sh's openclose row.
func BenchmarkOpenCloseMany(b *testing.B) {
	mnt, root, paths := cowSetup(b, 20, 100)
	for _, p := range paths {
		openClose(b, filepath.Join(mnt, p)) // warm
	}
	c0 := root.Calls()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, p := range paths {
			openClose(b, filepath.Join(mnt, p))
		}
	}
	b.StopTimer()
	per := float64(b.N * len(paths))
	b.ReportMetric(float64(root.Calls()-c0)/per, "roundtrips/file")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/per/1000, "µs/file")
}

// BenchmarkCatMany: open+read+close (bench/files.sh's cat row) over more
// files than spare opens cover, the server across proto.
func BenchmarkCatMany(b *testing.B) {
	mnt, root, paths := cowSetup(b, 20, 100)
	for _, p := range paths {
		if _, err := os.ReadFile(filepath.Join(mnt, p)); err != nil { // warm
			b.Fatal(err)
		}
	}
	c0 := root.Calls()
	o0 := root.ByOp()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, p := range paths {
			if _, err := os.ReadFile(filepath.Join(mnt, p)); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	per := float64(b.N * len(paths))
	b.ReportMetric(float64(root.Calls()-c0)/per, "roundtrips/file")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/per/1000, "µs/file")
	o1 := root.ByOp()
	for k, v := range o1 {
		if d := v - o0[k]; d > 0 {
			b.Logf("%s: %.2f per file", k, float64(d)/per)
		}
	}
}

// TestListingRoundTrips: the kernel keeps a directory's listing
// (FOPEN_CACHE_DIR): listing it again costs no round trip.
func TestListingRoundTrips(t *testing.T) {
	mnt, root, _ := cowSetup(t, 2, 50)
	dir := filepath.Join(mnt, "d0")
	if ents, err := os.ReadDir(dir); err != nil || len(ents) != 50 {
		t.Fatalf("listing: %d entries, %v", len(ents), err)
	}
	c0 := root.Calls()
	for i := 0; i < 3; i++ {
		if ents, err := os.ReadDir(dir); err != nil || len(ents) != 50 {
			t.Fatalf("listing: %d entries, %v", len(ents), err)
		}
	}
	if n := root.Calls() - c0; n != 0 {
		t.Errorf("listing a directory again: %d round trips, want 0 (%v)", n, root.ByOp())
	}
}

// TestMergedDirRoundTrips: a directory the server gives no capability for
// (merged: a file written into a lower directory) is not asked again at
// every read that follows a write in it.
func TestMergedDirRoundTrips(t *testing.T) {
	const n = 20
	mnt, root, _ := cowSetup(t, 1, n)
	dir := filepath.Join(mnt, "d0")
	if err := os.WriteFile(filepath.Join(dir, "out"), []byte("0"), 0o644); err != nil {
		t.Fatal(err) // d0 is merged from now on
	}
	before := root.ByOp()["Open"]
	for i := 0; i < n; i++ {
		if err := os.WriteFile(filepath.Join(dir, "out"), []byte(fmt.Sprint(i)), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("f%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	// Each round: the write's Open and the read's; at most one more for
	// the directory, asked once.
	if opens := root.ByOp()["Open"] - before; opens > 2*n+1 {
		t.Errorf("%d rounds of write+read in a merged directory: %d Opens, want at most %d", n, opens, 2*n+1)
	}
}

// TestCatWalkRoundTrips: a first cat of a tree (listings, then opens)
// asks once per directory for its capability, on the side of the listing
// once files are being opened, and never twice.
func TestCatWalkRoundTrips(t *testing.T) {
	const dirs, files = 6, 30
	mnt, root, _ := cowSetup(t, dirs, files)
	n := 0
	err := filepath.WalkDir(mnt, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		n++
		_, err = os.ReadFile(p)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != dirs*files {
		t.Fatalf("walked %d files, want %d", n, dirs*files)
	}
	ops := root.ByOp()
	if ops["Open"] != dirs {
		t.Errorf("first cat of %d directories: %d Opens, want %d (one capability each) %v", dirs, ops["Open"], dirs, ops)
	}
}

// TestColdStatRoundTrips: a cold walk that lstats every name (find, du,
// bench/files.sh stat) costs one listing per directory: the listing's
// attributes answer the lstats, with no Lookup or GetAttr per file.
func TestColdStatRoundTrips(t *testing.T) {
	const dirs, files = 5, 200
	mnt, root, _ := cowSetup(t, dirs, files)
	n := 0
	err := filepath.WalkDir(mnt, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if _, err := os.Lstat(p); err != nil {
			return err
		}
		n++
		return nil
	})
	if err != nil || n != 1+dirs+dirs*files {
		t.Fatalf("walk: %d names, %v", n, err)
	}
	ops := root.ByOp()
	t.Logf("round trips: %v", ops)
	if ops["Lookup"]+ops["GetAttr"] > dirs {
		t.Errorf("%d lookups and %d getattrs for %d files: the listings' attributes were not used", ops["Lookup"], ops["GetAttr"], dirs*files)
	}
}

// BenchmarkColdWalk: the first walk (lstat of every name) of a fresh mount,
// as bench/files.sh's cold stat row (20 directories of 100 files here):
// servers/fs over proto (in this process) through the bridge, and go-fuse's
// loopback filesystem.
func BenchmarkColdWalk(b *testing.B) {
	const dirs, files = 20, 100
	tmp := b.TempDir()
	lower := filepath.Join(tmp, "lower")
	for d := 0; d < dirs; d++ {
		dir := filepath.Join(lower, fmt.Sprintf("d%d", d))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			b.Fatal(err)
		}
		for f := 0; f < files; f++ {
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%d", f)), make([]byte, 1+(d*files+f)%4096), 0o644); err != nil {
				b.Fatal(err)
			}
		}
	}
	mnt := filepath.Join(tmp, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		b.Fatal(err)
	}
	herd := func() func() {
		upper, err := os.MkdirTemp(tmp, "upper")
		if err != nil {
			b.Fatal(err)
		}
		srv, err := fsrv.New(fsrv.Options{Root: lower, Upper: upper, RuntimeDir: filepath.Join(tmp, "run")})
		if err != nil {
			b.Fatal(err)
		}
		n := fsbridge.NewNotifier()
		c, stop, err := proto.Pipe(srv, proto.ServerOptions{Name: "fs"}, proto.ClientOptions{Timeout: time.Minute, Notifier: n})
		if err != nil {
			b.Fatal(err)
		}
		br, err := fsbridge.Mount(mnt, c, fsbridge.Options{IDMap: fsbridge.IDMap{Identity: true}, Notifier: n})
		if err != nil {
			b.Fatal(err)
		}
		return func() { br.Unmount(); stop(); srv.Close() }
	}
	loopback := func() func() {
		root, err := gofs.NewLoopbackRoot(lower)
		if err != nil {
			b.Fatal(err)
		}
		sec := time.Second // as go-fuse's example/loopback
		srv, err := gofs.Mount(mnt, root, &gofs.Options{EntryTimeout: &sec, AttrTimeout: &sec})
		if err != nil {
			b.Fatal(err)
		}
		return func() { srv.Unmount() }
	}
	for _, m := range []struct {
		name  string
		mount func() func()
	}{{"herd", herd}, {"loopback", loopback}} {
		b.Run(m.name, func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				unmount := m.mount()
				b.StartTimer()
				err := filepath.WalkDir(mnt, func(p string, d os.DirEntry, err error) error {
					if err != nil {
						return err
					}
					_, err = os.Lstat(p)
					return err
				})
				b.StopTimer()
				unmount()
				if err != nil {
					b.Fatal(err)
				}
				if mounted(mnt) {
					b.Fatalf("%s still mounted", mnt)
				}
				b.StartTimer()
			}
		})
	}
}
