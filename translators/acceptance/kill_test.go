package acceptance_test

import (
	"bufio"
	"context"
	"io"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestKilledTranslator: a passive translator inside a subenvironment is
// killed with SIGKILL while a client has a file of it open and reads: the
// read fails with EIO (within a deadline: it does not hang), and the next
// lookup starts a fresh translator whose reads work.
func TestKilledTranslator(t *testing.T) {
	cases := []struct {
		name, who string
		prep      string // makes $N and sets the passive translator
		open      string // the file the client holds open
		after     string // read through a fresh translator
		want      string
	}{
		{"hello", "root", `touch "$N" && settrans -p "$N" hello --contents=alive`, `"$N"`, `cat "$N"`, "alive"},
		{"hello", "user", `touch "$N" && settrans -p "$N" hello --contents=alive`, `"$N"`, `cat "$N"`, "alive"},
		{"tarfs", "root", `cp ` + "FXTAR" + ` "$N" && settrans -p "$N" tarfs`, `"$N/a.txt"`, `cat "$N/sub/b.txt"`, "bbb\n"},
		{"tarfs", "user", `cp ` + "FXTAR" + ` "$N" && settrans -p "$N" tarfs`, `"$N/a.txt"`, `cat "$N/sub/b.txt"`, "bbb\n"},
	}
	for _, c := range cases {
		t.Run(c.name+"/"+c.who, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, c.who)
			prep := strings.ReplaceAll(c.prep, "FXTAR", shq(fx.tar))
			// The client opens the file (no data read yet, so the read
			// after the kill must reach the translator), says ready and
			// waits for the test to kill the translator.
			script := `set -e; N=/tmp/killed; ` + prep + `
exec 3<` + c.open + `
echo ready
read go
set +e
timeout 60 cat <&3 >/dev/null 2>/tmp/err
echo "read: $? $(cat /tmp/err)"
exec 3<&-
set -e
` + c.after
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			cmd := e.command(ctx, "subenv", "run", "--", "sh", "-c", script)
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			waited := false
			defer func() {
				if !waited {
					cmd.Process.Kill()
					cmd.Wait()
				}
			}()
			out := bufio.NewReader(stdout)
			line, err := out.ReadString('\n')
			if line != "ready\n" {
				t.Fatalf("client: %q, %v; stderr: %s", line, err, stderr.String())
			}
			// The translator runs on the host, a child of the fs server
			// in subenv's process tree.
			var victims []int
			for _, p := range descendants(cmd.Process.Pid) {
				if filepath.Base(p.exe) == c.name {
					victims = append(victims, p.pid)
				}
			}
			if len(victims) != 1 {
				t.Fatalf("want one %s process below subenv, found %v", c.name, victims)
			}
			if err := syscall.Kill(victims[0], syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(60 * time.Second)
			for gone := false; !gone; {
				gone = true
				for _, p := range descendants(cmd.Process.Pid) {
					if p.pid == victims[0] {
						gone = false
					}
				}
				if !gone && time.Now().After(deadline) {
					t.Fatalf("translator %d still there after SIGKILL", victims[0])
				}
				time.Sleep(10 * time.Millisecond)
			}
			io.WriteString(stdin, "go\n")
			stdin.Close()
			rest, _ := io.ReadAll(out)
			err = cmd.Wait()
			waited = true
			lines := strings.SplitN(string(rest), "\n", 2)
			if len(lines) != 2 || !strings.HasPrefix(lines[0], "read: ") {
				t.Fatalf("client after the kill: %q, %v; stderr: %s", rest, err, stderr.String())
			}
			if st := strings.TrimPrefix(lines[0], "read: "); st == "0 " || strings.HasPrefix(st, "124") || !strings.Contains(st, "Input/output error") {
				t.Errorf("read from the killed translator: %q; want EIO (124: it hung)", st)
			}
			if err != nil || lines[1] != c.want {
				t.Errorf("read through a fresh translator: %q, %v; want %q; stderr: %s", lines[1], err, c.want, stderr.String())
			}
		})
	}
}
