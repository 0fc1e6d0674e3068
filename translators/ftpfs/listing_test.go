package ftpfs

import (
	"fmt"
	"syscall"
	"testing"
	"time"
)

func TestParseMLSD(t *testing.T) {
	in := "type=cdir;modify=20240102030405; .\r\n" +
		"type=pdir;modify=20240102030405; ..\r\n" +
		"type=file;size=1234;modify=20240102030405.123;unix.mode=0640;perm=r; a file\r\n" +
		"type=dir;modify=20240102030405;unix.mode=0o700; sub\r\n" +
		"type=OS.unix=symlink;size=3; link\r\n" +
		"garbage\r\n"
	got := parseMLSD([]byte(in))
	want := []entry{
		{name: "a file", mode: syscall.S_IFREG | 0o640, size: 1234, mtime: time.Date(2024, 1, 2, 3, 4, 5, 123e6, time.UTC)},
		{name: "sub", mode: syscall.S_IFDIR | 0o700, mtime: time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)},
		{name: "link", mode: syscall.S_IFLNK | 0o777, size: 3},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got  %v\nwant %v", got, want)
	}
}

func TestParseLIST(t *testing.T) {
	now := time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC)
	in := "total 12\r\n" +
		"-rw-r--r--   1 owner group      1234 Jan 02 15:04 name with  spaces\r\n" +
		"drwxr-x---   2 owner group      4096 Dec 31  2019 dir\r\n" +
		"lrwxrwxrwx   1 owner group         4 Jul 02 15:04 link -> target\r\n" +
		"crw-rw-rw-   1 root  root    1,   3 Jan 02 15:04 null\r\n" +
		"-rwsr-xr-x 1 0 0 5 Feb 29 00:00 setuid\r\n"
	got := parseLIST([]byte(in), now)
	want := []entry{
		{name: "name with  spaces", mode: syscall.S_IFREG | 0o644, size: 1234, mtime: time.Date(2024, 1, 2, 15, 4, 0, 0, time.UTC)},
		{name: "dir", mode: syscall.S_IFDIR | 0o750, size: 4096, mtime: time.Date(2019, 12, 31, 0, 0, 0, 0, time.UTC)},
		{name: "link", mode: syscall.S_IFLNK | 0o777, size: 4, mtime: time.Date(2023, 7, 2, 15, 4, 0, 0, time.UTC), target: "target"},
		{name: "setuid", mode: syscall.S_IFREG | 0o755, size: 5, mtime: time.Date(2024, 2, 29, 0, 0, 0, 0, time.UTC)},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got  %v\nwant %v", got, want)
	}
}

func TestParsePASV(t *testing.T) {
	for in, want := range map[string]int{
		"Entering Passive Mode (127,0,0,1,4,1).":  1025,
		"Entering Passive Mode 127,0,0,1,200,10":  200*256 + 10,
		"Entering Passive Mode (127,0,0,1,999,1)": 0,
		"nothing": 0,
	} {
		got, err := parsePASV(in)
		if got != want || (want == 0) != (err != nil) {
			t.Errorf("%q: %d, %v; want %d", in, got, err, want)
		}
	}
}

func TestParseTarget(t *testing.T) {
	for in, want := range map[string]string{
		"localhost":                 "[anonymous herd@ localhost:21 ]",
		"ftp://127.0.0.1:2121/pub/": "[anonymous herd@ 127.0.0.1:2121 /pub]",
		"me:p@ss@host/a/../b":       "[me p@ss host:21 /b]",
		"[::1]:21/x":                "[anonymous herd@ [::1]:21 /x]",
	} {
		got, err := ParseTarget(in)
		if err != nil || fmt.Sprint([]string{got.User, got.Password, got.Addr, got.Path}) != want {
			t.Errorf("%q: %v, %v; want %s", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "/path", "http://x", "@host"} {
		if _, err := ParseTarget(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// Fuzz the decoders of what a server sends: no input may crash them, and
// every name they return is one path element.
func FuzzParseMLSD(f *testing.F) {
	f.Add([]byte("type=file;size=1;modify=20240102030405.1; a\r\ntype=dir; b\r\n"))
	f.Add([]byte("type=OS.unix=slink:/x;unix.mode=0777; l\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, e := range parseMLSD(data) {
			if !validName(e.name) || e.size < 0 {
				t.Fatalf("bad entry %+v", e)
			}
		}
	})
}

func FuzzParseLIST(f *testing.F) {
	f.Add([]byte("-rw-r--r--   1 owner group      1234 Jan 02 15:04 name\r\n"))
	f.Add([]byte("lrwxrwxrwx 1 o g 4 Jul 02 2020 link -> ../x\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, e := range parseLIST(data, time.Now()) {
			if !validName(e.name) || e.size < 0 {
				t.Fatalf("bad entry %+v", e)
			}
		}
	})
}
