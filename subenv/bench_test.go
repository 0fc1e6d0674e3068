package subenv

import (
	"os/exec"
	"sort"
	"testing"
	"time"

	"herd/internal/testbin"
)

// BenchmarkStartup is `subenv run -- /bin/true`, with the default fs server
// (herd-fs run from the subenv binary) and with herd-fs named as a --fs
// program.
// bench/startup.sh compares it with unshare and bwrap in the same run.
func BenchmarkStartup(b *testing.B) {
	fsBin, err := testbin.Build("herd-fs")
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		args []string
	}{
		{"default", []string{"run", "--", "/bin/true"}},
		{"external", []string{"run", "--fs", fsBin, "--fs-arg=--hide-tmp", "--", "/bin/true"}},
	} {
		b.Run(c.name, func(b *testing.B) {
			times := make([]time.Duration, 0, b.N)
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				cmd := exec.Command(subenvBin, c.args...)
				cmd.Dir = "/"
				if out, err := cmd.CombinedOutput(); err != nil {
					b.Fatalf("%v: %s", err, out)
				}
				times = append(times, time.Since(t0))
			}
			sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
			b.ReportMetric(float64(times[len(times)/2].Microseconds())/1000, "median-ms")
		})
	}
}
