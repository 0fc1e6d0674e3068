package proto

import (
	"context"
	"sync"
	"time"
)

// callCtx is the context a request's implementation runs in: the session's
// context, the caller's deadline and identity. It is what
// context.WithTimeout(WithCaller(...)) would give, without the per-call
// runtime timer and the registration with the parent: those are made only
// if someone asks for Done. Implementations that never select on Done (the
// fs server does not) thus cost no timer per call; arming a timer wakes an
// idle thread of the runtime to watch it, which on a busy machine costs
// more than the call.
type callCtx struct {
	parent    context.Context // the session's; cancelled when it ends
	deadline  time.Time       // zero: none
	caller    Caller
	hasCaller bool

	mu         sync.Mutex
	done       chan struct{} // made by Done
	err        error
	timer      *time.Timer
	stopParent func() bool
}

func newCallCtx(parent context.Context, deadline time.Time, caller Caller, hasCaller bool) *callCtx {
	return &callCtx{parent: parent, deadline: deadline, caller: caller, hasCaller: hasCaller}
}

func (c *callCtx) Deadline() (time.Time, bool) { return c.deadline, !c.deadline.IsZero() }

func (c *callCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done != nil {
		return c.done
	}
	c.done = make(chan struct{})
	if c.err == nil {
		c.err = c.expiredLocked()
	}
	if c.err != nil {
		close(c.done)
		return c.done
	}
	c.stopParent = context.AfterFunc(c.parent, func() { c.cancel(context.Canceled) })
	if !c.deadline.IsZero() {
		c.timer = time.AfterFunc(time.Until(c.deadline), func() { c.cancel(context.DeadlineExceeded) })
	}
	return c.done
}

// expiredLocked tells whether the parent or the deadline has ended the
// call, for a context whose Done nobody watches.
func (c *callCtx) expiredLocked() error {
	if c.parent.Err() != nil {
		return context.Canceled
	}
	if !c.deadline.IsZero() && !time.Now().Before(c.deadline) {
		return context.DeadlineExceeded
	}
	return nil
}

func (c *callCtx) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		if c.err = c.expiredLocked(); c.err != nil && c.done != nil {
			close(c.done)
		}
	}
	return c.err
}

func (c *callCtx) Value(key any) any {
	if _, ok := key.(callerKey); ok && c.hasCaller {
		return c.caller
	}
	return c.parent.Value(key)
}

// cancel ends the call (the client gave up, the session ended, the
// deadline passed).
func (c *callCtx) cancel(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		c.err = err
		if c.done != nil {
			close(c.done)
		}
	}
}

// release ends the context when the call has finished (as the cancel of
// a context.WithTimeout would) and frees what Done armed.
func (c *callCtx) release() {
	c.mu.Lock()
	timer, stop := c.timer, c.stopParent
	c.timer, c.stopParent = nil, nil
	if c.err == nil {
		c.err = context.Canceled
		if c.done != nil {
			close(c.done)
		}
	}
	c.mu.Unlock()
	if timer != nil {
		timer.Stop()
	}
	if stop != nil {
		stop()
	}
}

// String is what fmt prints for the context.
func (c *callCtx) String() string { return "proto.callCtx" }
