package subenv

import (
	"fmt"
	"os"
	"time"
)

// tracer prints start-up steps with their time since the launcher started,
// when HERD_TRACE=1. The init gets the launcher's start time in its config, so
// both processes' lines share one clock and can be read as one timeline.
type tracer struct {
	on    bool
	who   string
	start time.Time
	last  time.Time
}

func newTracer(who string, start time.Time) *tracer {
	on := os.Getenv("HERD_TRACE") == "1"
	return &tracer{on: on, who: who, start: start, last: start}
}

// step reports that what happens now is done; the time since the previous
// step is what it cost.
func (t *tracer) step(format string, args ...any) {
	if t == nil || !t.on {
		return
	}
	now := time.Now()
	fmt.Fprintf(os.Stderr, "herd-trace: %8.3fms %+7.3fms %-6s %s\n",
		ms(now.Sub(t.start)), ms(now.Sub(t.last)), t.who, fmt.Sprintf(format, args...))
	t.last = now
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// startFromNanos is the launcher's start time as the init got it, so the
// init's trace lines continue the launcher's timeline.
func startFromNanos(n int64) time.Time {
	if n == 0 {
		return time.Now()
	}
	return time.Unix(0, n)
}
