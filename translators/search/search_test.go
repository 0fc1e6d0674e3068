package search

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeExe(t *testing.T, p string) {
	t.Helper()
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestOrder(t *testing.T) {
	trans := t.TempDir()
	path1 := t.TempDir()
	writeExe(t, filepath.Join(trans, "hello"))
	writeExe(t, filepath.Join(path1, "hello"))
	writeExe(t, filepath.Join(path1, "onlypath"))
	os.WriteFile(filepath.Join(trans, "noexec"), []byte("x"), 0o644)
	writeExe(t, filepath.Join(path1, "noexec"))
	t.Setenv(EnvDir, trans)
	t.Setenv("PATH", path1)

	cases := map[string]string{
		"hello":    filepath.Join(trans, "hello"),
		"onlypath": filepath.Join(path1, "onlypath"),
		"noexec":   filepath.Join(path1, "noexec"),
	}
	for name, want := range cases {
		got, err := Resolve(name)
		if err != nil || got != want {
			t.Errorf("Resolve(%q) = %q, %v; want %q", name, got, err, want)
		}
	}
}

func TestPaths(t *testing.T) {
	d := t.TempDir()
	writeExe(t, filepath.Join(d, "t"))
	got, err := Resolve(filepath.Join(d, "t"))
	if err != nil || got != filepath.Join(d, "t") {
		t.Fatalf("absolute: %q %v", got, err)
	}
	wd, _ := os.Getwd()
	defer os.Chdir(wd)
	os.Chdir(d)
	got, err = Resolve("./t")
	if err != nil || got != filepath.Join(d, "t") {
		t.Fatalf("relative: %q %v", got, err)
	}
	if _, err := Resolve("./missing"); err == nil {
		t.Fatal("missing relative path resolved")
	}
	if _, err := Resolve(d); err == nil {
		t.Fatal("directory resolved")
	}
}

func TestNotFound(t *testing.T) {
	trans := t.TempDir()
	t.Setenv(EnvDir, trans)
	t.Setenv("PATH", "/nonexistent-a:/nonexistent-b")
	_, err := Resolve("no-such-translator")
	var nf *NotFoundError
	if !errors.As(err, &nf) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err = %v", err)
	}
	msg := err.Error()
	for _, want := range []string{"no-such-translator", trans, "/nonexistent-a", "/nonexistent-b"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
}

func TestExecutableDirDefault(t *testing.T) {
	t.Setenv(EnvDir, "")
	exe, _ := os.Executable()
	exe, _ = filepath.EvalSymlinks(exe)
	dirs := Dirs()
	if len(dirs) == 0 || dirs[0] != filepath.Dir(exe) {
		t.Fatalf("Dirs()[0] = %v, want %s", dirs, filepath.Dir(exe))
	}
}
