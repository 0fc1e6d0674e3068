package fsbridge

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"herd/proto"
)

// TestListPrefetch: a cold walk gets listings asked for ahead of it and
// sees every name; a listing asked for ahead and then changed by another
// client is not used: the walker sees the change.
func TestListPrefetch(t *testing.T) {
	t.Cleanup(func() { noHerdMounts(t) })
	srv, lower, _ := cowServer(t)
	const dirs, files = 6, 5
	var want []string
	for d := 0; d < dirs; d++ {
		for f := 0; f < files; f++ {
			rel := fmt.Sprintf("d%d/s/f%d", d, f)
			if f%2 == 0 {
				rel = fmt.Sprintf("d%d/f%d", d, f)
			}
			p := filepath.Join(lower, rel)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(rel), 0o644); err != nil {
				t.Fatal(err)
			}
			want = append(want, rel)
		}
	}
	slices.Sort(want)
	c, n, _ := pipe(t, srv, proto.ClientOptions{})
	b, dir := mount(t, c, Options{Notifier: n})
	walk := func() []string {
		var got []string
		err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if _, err := d.Info(); err != nil {
				return err
			}
			if d.Type().IsRegular() {
				rel, _ := filepath.Rel(dir, p)
				got = append(got, rel)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(got)
		return got
	}
	if got := walk(); !slices.Equal(got, want) {
		t.Fatalf("walk found %v, want %v", got, want)
	}
	if b.prefetch.used.Load() == 0 {
		t.Fatalf("no listing asked for ahead was used (asked %d)", b.prefetch.asked.Load())
	}

	// A fresh kernel view: listing the root asks for d0's listing ahead.
	b.refresh(b.root)
	asked := b.prefetch.asked.Load()
	if _, err := os.ReadDir(dir); err != nil {
		t.Fatal(err)
	}
	if b.prefetch.asked.Load() == asked {
		t.Fatal("listing the root asked for no subdirectory's listing")
	}
	// Wait for the listings on their way, then change d0 through another
	// client (the server itself, as another session would).
	b.prefetch.mu.Lock()
	var pending []*prefetched
	for _, p := range b.prefetch.m {
		pending = append(pending, p)
	}
	b.prefetch.mu.Unlock()
	for _, p := range pending {
		<-p.done
	}
	ctx := context.Background()
	r, _ := srv.Root(ctx)
	d0, err := srv.Lookup(ctx, r.Node, "d0")
	if err != nil {
		t.Fatal(err)
	}
	gen := b.attrGen.Load()
	_, o, err := srv.Create(ctx, d0.Node, "new", syscall.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	o.File.Close()
	srv.Release(ctx, o.Handle)
	waitFor(t, "the server's notification", func() bool { return b.attrGen.Load() != gen })
	ents, err := os.ReadDir(filepath.Join(dir, "d0"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(ents, func(e os.DirEntry) bool { return e.Name() == "new" }) {
		t.Fatalf("d0 listed without the name created after its listing was asked for ahead: %v", ents)
	}
}
