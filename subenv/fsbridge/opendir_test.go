package fsbridge

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestNoOpenDir: directories open with no round trip (the bridge answers
// one OPENDIR with ENOSYS, the kernel sends no more), a second walk asks
// the server for nothing (the kernel keeps the listings), a listing read
// only in part gives its lookups back, and a translator's directory, whose
// server does not notify, is listed anew for each reader that starts over.
func TestNoOpenDir(t *testing.T) {
	t.Cleanup(func() { noHerdMounts(t) })
	const dirs, files = 10, 300
	m := newMemFS()
	for i := 0; i < dirs; i++ {
		d := m.add(1, fmt.Sprintf("d%d", i), syscall.S_IFDIR|0o755, "")
		for j := 0; j < files; j++ {
			m.add(d, fmt.Sprintf("f%d", j), syscall.S_IFREG|0o644, "x")
		}
	}
	big := m.add(1, "big", syscall.S_IFDIR|0o755, "")
	for j := 0; j < files; j++ {
		m.add(big, fmt.Sprintf("f%d", j), syscall.S_IFREG|0o644, "x")
	}
	// A translator on "trans": its listings may change without a word.
	tm := newMemFS()
	tm.add(1, "a", syscall.S_IFREG|0o644, "a")
	sock := filepath.Join(t.TempDir(), "trans.sock")
	serveOn(t, tm, sock)
	m.add(1, "trans", syscall.S_IFREG|0o644, "")
	m.redirect["trans"] = sock

	b, dir := mount(t, memPlus{m}, Options{})
	listings := func() int {
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.listings
	}
	walk := func() {
		for i := 0; i < dirs; i++ {
			ents, err := os.ReadDir(filepath.Join(dir, fmt.Sprintf("d%d", i)))
			if err != nil || len(ents) != files {
				t.Fatalf("ls d%d: %d entries, %v", i, len(ents), err)
			}
		}
	}
	walk()
	before := listings()
	walk()
	if got := listings() - before; got != 0 {
		t.Errorf("a second walk of %d directories asked the server for %d listings, want 0", dirs, got)
	}
	if n := b.dirOpens.Load(); n > 1 {
		t.Errorf("the kernel sent %d OPENDIRs, want at most 1 (answered ENOSYS)", n)
	}

	// A listing read in part: the kernel got some entries, the bridge
	// holds the server's lookups of the rest.
	f, err := os.Open(filepath.Join(dir, "big"))
	if err != nil {
		t.Fatal(err)
	}
	if ents, err := f.ReadDir(1); err != nil || len(ents) != 1 {
		t.Fatalf("reading one entry of big: %v %v", ents, err)
	}
	f.Close()

	names := func() string {
		ents, err := os.ReadDir(filepath.Join(dir, "trans"))
		if err != nil {
			t.Fatalf("ls trans: %v", err)
		}
		var out []string
		for _, e := range ents {
			out = append(out, e.Name())
		}
		return strings.Join(out, " ")
	}
	if got := names(); got != "a" {
		t.Fatalf("ls trans = %q, want \"a\"", got)
	}
	tm.add(1, "b", syscall.S_IFREG|0o644, "b")
	waitFor(t, "a name the translator added (without notifying) shows in the next listing", func() bool {
		return names() == "a b"
	})

	if err := b.Unmount(); err != nil {
		t.Fatal(err)
	}
	b.Wait()
	waitFor(t, "after unmount the server counts no lookups (the partly read listing's too)", func() bool {
		l, h := m.held()
		return len(l) == 0 && h == 0
	})
}
