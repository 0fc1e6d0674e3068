package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"herd/translators/kit"
	"herd/translators/kit/kittest"
)

func TestMain(m *testing.M) { kittest.Main(m, nil) }

const doc = `{
  "name": "herd",
  "version": 3,
  "stable": false,
  "nothing": null,
  "servers": [{"host": "a.example", "port": 21}, {"host": "b.example", "port": 8080}],
  "a/b": "slash",
  "..": "dots",
  "nested": {"deeper": {"deepest": "bottom"}}
}`

func TestTree(t *testing.T) {
	root, err := parse(strings.NewReader(doc))
	if err != nil {
		t.Fatal(err)
	}
	m := kittest.MountNode(t, root)
	for path, want := range map[string]string{
		"name":                  "herd\n",
		"version":               "3\n",
		"stable":                "false\n",
		"nothing":               "null\n",
		"servers/0/host":        "a.example\n",
		"servers/1/port":        "8080\n",
		"a%2Fb":                 "slash\n",
		"%2E%2E":                "dots\n",
		"nested/deeper/deepest": "bottom\n",
	} {
		b, err := os.ReadFile(filepath.Join(m.Dir, path))
		if err != nil || string(b) != want {
			t.Errorf("%s: %q, %v; want %q", path, b, err, want)
		}
	}
	ents, err := os.ReadDir(filepath.Join(m.Dir, "servers"))
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
		if !e.IsDir() {
			t.Errorf("servers/%s is not a directory", e.Name())
		}
	}
	sort.Strings(names)
	if err != nil || strings.Join(names, ",") != "0,1" {
		t.Errorf("servers lists %q, %v", names, err)
	}
	if err := os.WriteFile(filepath.Join(m.Dir, "name"), []byte("x"), 0o644); err == nil {
		t.Error("the tree is writable")
	}
}

func TestBadJSON(t *testing.T) {
	for _, s := range []string{"", "{", `{"a":1} {"b":2}`, "[1,]"} {
		if _, err := parse(strings.NewReader(s)); err == nil {
			t.Errorf("parse(%q) succeeded", s)
		}
	}
}

// TestProgram builds jsonfs as a user would and mounts a file with it.
func TestProgram(t *testing.T) {
	dir := kittest.TempDir(t)
	bin := filepath.Join(dir, "jsonfs")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v: %s", err, out)
	}
	file := filepath.Join(dir, "doc.json")
	os.WriteFile(file, []byte(doc), 0o644)
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	kittest.RunMount(t, bin, mnt, file)
	out, err := exec.Command("cat", filepath.Join(mnt, "servers/0/host"), filepath.Join(mnt, "nested/deeper/deepest")).CombinedOutput()
	if err != nil || string(out) != "a.example\nbottom\n" {
		t.Errorf("cat: %q, %v", out, err)
	}
	// A broken document: a one-line error, exit status 1.
	os.WriteFile(file, []byte("{broken"), 0o644)
	out, err = exec.Command(bin, "--mount", mnt, file).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.HasPrefix(string(out), "jsonfs: not JSON") || strings.Count(string(out), "\n") != 1 {
		t.Errorf("broken document: %v: %q", err, out)
	}
}

// FuzzParse: any input either fails to parse or gives a tree whose names
// are all valid file names.
func FuzzParse(f *testing.F) {
	f.Add([]byte(doc))
	f.Add([]byte(`{"": {".": [1, {"/": null}]}, "%": ".."}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		root, err := parse(bytes.NewReader(data))
		if err != nil {
			return
		}
		var walk func(n kit.Node, depth int)
		walk = func(n kit.Node, depth int) {
			l, ok := n.(kit.Readdirer)
			if !ok || depth > 100 {
				return
			}
			ents, _ := l.Readdir(context.Background())
			for _, e := range ents {
				if e.Name == "" || e.Name == "." || e.Name == ".." || strings.ContainsAny(e.Name, "/\x00") {
					t.Fatalf("bad name %q", e.Name)
				}
				c, errno := n.(kit.Lookuper).Lookup(context.Background(), e.Name)
				if errno != 0 {
					t.Fatalf("listed %q does not look up: %v", e.Name, errno)
				}
				walk(c, depth+1)
			}
		}
		walk(root, 0)
	})
}
