package net

import "sync"

// Goroutines are reused for the work of a connection (the forwarder's
// handler, the splice's two directions): a new goroutine starts with a
// small stack and grew it several times, copying it each time, on its way
// down gVisor's deep call chains (perf: morestack/copystack 7% of
// herd-net's CPU on short connections). A worker that is done waits for
// the next job, up to maxIdleWorkers of them.
const maxIdleWorkers = 32

var workers struct {
	mu   sync.Mutex
	idle []chan func()
}

// goWork runs f on an idle worker, or on a new goroutine that becomes one.
func goWork(f func()) {
	workers.mu.Lock()
	if n := len(workers.idle); n > 0 {
		ch := workers.idle[n-1]
		workers.idle[n-1] = nil
		workers.idle = workers.idle[:n-1]
		workers.mu.Unlock()
		ch <- f
		return
	}
	workers.mu.Unlock()
	go worker(f)
}

func worker(f func()) {
	ch := make(chan func())
	for {
		f()
		f = nil
		workers.mu.Lock()
		if len(workers.idle) >= maxIdleWorkers {
			workers.mu.Unlock()
			return
		}
		workers.idle = append(workers.idle, ch)
		workers.mu.Unlock()
		f = <-ch
	}
}

// idleWorkers is how many workers wait (for leak tests).
func idleWorkers() int {
	workers.mu.Lock()
	defer workers.mu.Unlock()
	return len(workers.idle)
}
