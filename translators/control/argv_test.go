package control

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestArgv(t *testing.T) {
	for _, argv := range [][]string{{"hello"}, {"hello", "--contents", "a b"}, {"x", "", "y"}} {
		if got := DecodeArgv(EncodeArgv(argv)); !reflect.DeepEqual(got, argv) {
			t.Errorf("round trip %q = %q", argv, got)
		}
	}
	if got := DecodeArgv([]byte("a\x00b\x00")); !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Errorf("trailing NUL: %q", got)
	}
	if DecodeArgv(nil) != nil {
		t.Error("empty record is not nil")
	}
	cases := map[string][]string{
		"hello --contents 'a b'": {"hello", "--contents", "a b"},
		`hello $'x\n' 'it'\''s'`: {"hello", "x\n", "it's"},
		"ftpfs '' /":             {"ftpfs", "", "/"},
		`t $'a\'b\\c\x01'`:       {"t", "a'b\\c\x01"},
	}
	for want, argv := range cases {
		if got := ShowArgv(argv); got != want {
			t.Errorf("ShowArgv(%q) = %s; want %s", argv, got, want)
		}
	}
}

func TestParseMountLine(t *testing.T) {
	m, err := parseMountLine(`89 69 0:42 / /tmp/a\040b rw,nosuid shared:1 - fuse.herd-translator herd:hello\040x rw,user_id=0`)
	if err != nil {
		t.Fatal(err)
	}
	if m.ID != 89 || m.Parent != 69 || m.MountPoint != "/tmp/a b" || m.Source != "herd:hello x" || !m.IsTranslator() || m.IsSubenv() {
		t.Fatalf("%+v", m)
	}
	m, _ = parseMountLine(`1 0 0:1 / / rw - fuse.herd herd rw`)
	if !m.IsSubenv() {
		t.Fatalf("%+v", m)
	}
	for _, bad := range []string{"", "1 2 3", "a b 0:1 / / rw - x y z"} {
		if _, err := parseMountLine(bad); err == nil {
			t.Errorf("parsed %q", bad)
		}
	}
	ms := []Mount{{MountPoint: "/"}, {MountPoint: "/tmp"}, {MountPoint: "/tmp/x", Source: "a"}, {MountPoint: "/tmp/x", Source: "b"}}
	if m, _ := MountOf(ms, "/tmp/x/y"); m.Source != "b" {
		t.Errorf("MountOf = %+v", m)
	}
	if m, _ := MountOf(ms, "/tmp/xy"); m.MountPoint != "/tmp" {
		t.Errorf("MountOf = %+v", m)
	}
}

func FuzzDecodeArgv(f *testing.F) {
	f.Add([]byte("hello\x00--contents\x00x"))
	f.Add([]byte("\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		argv := DecodeArgv(b)
		_ = ShowArgv(argv)
		if len(argv) > 0 && string(EncodeArgv(argv)) != string(b) && string(EncodeArgv(argv))+"\x00" != string(b) {
			t.Fatalf("%q -> %q", b, argv)
		}
	})
}

func FuzzParseMountLine(f *testing.F) {
	f.Add(`89 69 0:42 / /tmp/a\040b rw,nosuid shared:1 - fuse.herd-translator herd:hello\040x rw`)
	f.Fuzz(func(t *testing.T, line string) { parseMountLine(line) })
}

func TestSideTable(t *testing.T) {
	d := t.TempDir()
	if err := updateSideTable(d, "a", []string{"hello", "--contents", "x"}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(d, SideTable))
	if string(b) != `{"a":"hello\u0000--contents\u0000x"}` {
		t.Fatalf("side table = %s", b)
	}
	tab, _ := readSideTable(d)
	if DecodeArgv([]byte(tab["a"]))[2] != "x" {
		t.Fatalf("%q", tab)
	}
	if err := updateSideTable(d, "a", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(d, SideTable)); !os.IsNotExist(err) {
		t.Fatal("empty side table left")
	}
}
