package net

import (
	"os"
	"runtime"
	"sync/atomic"
	"testing"
)

// A goroutine that busy-waits with yield must not hide other goroutines'
// descriptors from the poller: with one P, a goroutine waiting on a pipe
// runs within a few yields of the pipe becoming readable. (With
// runtime.Gosched in yield's place it waits for sysmon's poll, 10 ms,
// thousands of iterations later: tried.)
func TestPollYieldLetsThePollerRun(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	y, err := newPollYield()
	if err != nil {
		t.Fatal(err)
	}
	defer y.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	var woke atomic.Bool
	go func() {
		var b [1]byte
		r.Read(b[:])
		woke.Store(true)
	}()
	for i := 0; i < 10; i++ { // let the reader park in the poller
		y.yield()
	}
	if woke.Load() {
		t.Fatal("the reader woke before the pipe was written")
	}
	if _, err := w.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	yields := 0
	for !woke.Load() && yields < 1000 {
		y.yield()
		yields++
	}
	if !woke.Load() {
		t.Fatalf("the reader of a ready pipe did not run in %d yields", yields)
	}
	if yields > 3 {
		t.Errorf("the reader of a ready pipe ran only after %d yields, want at most 3", yields)
	}
}
