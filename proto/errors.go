package proto

import (
	"context"
	"errors"
	"syscall"
)

// Error is what a Client returns when a call fails: the server's errno and
// message, or an errno the client chose itself (ETIMEDOUT when the deadline
// passed, EIO when the connection is lost). errors.Is(err, syscall.ENOENT)
// works through Unwrap.
type Error struct {
	Errno syscall.Errno
	Msg   string
}

func (e *Error) Error() string {
	if e.Msg == "" {
		return e.Errno.Error()
	}
	return e.Msg
}

func (e *Error) Unwrap() error { return e.Errno }

// ToErrno returns the errno err carries: 0 for nil, ETIMEDOUT for an expired
// context, EINTR for a cancelled one, EIO when err carries none.
func ToErrno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		if errno == 0 {
			return syscall.EIO
		}
		return errno
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return syscall.ETIMEDOUT
	case errors.Is(err, context.Canceled):
		return syscall.EINTR
	}
	return syscall.EIO
}
