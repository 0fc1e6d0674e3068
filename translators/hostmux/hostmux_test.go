package hostmux

import (
	"reflect"
	"testing"
)

func TestArgv(t *testing.T) {
	cases := []struct {
		template []string
		pattern  string
		want     []string
	}{
		{[]string{"ftpfs", "/"}, DefaultPattern, []string{"ftpfs", "localhost/"}},
		{[]string{"ftpfs", "/pub"}, DefaultPattern, []string{"ftpfs", "localhost/pub"}},
		{[]string{"hello", "--contents"}, DefaultPattern, []string{"hello", "--contents", "localhost"}},
		{[]string{"httpfs", "http://${host}:8080/"}, DefaultPattern, []string{"httpfs", "http://localhost:8080/"}},
		{[]string{"x", "%h", "a%h"}, "%h", []string{"x", "localhost", "alocalhost"}},
		{[]string{"x"}, "", []string{"x", "localhost"}},
		{[]string{"${host}"}, DefaultPattern, []string{"${host}", "localhost"}}, // never the program
	}
	for _, c := range cases {
		if got := Argv(c.template, c.pattern, "localhost"); !reflect.DeepEqual(got, c.want) {
			t.Errorf("Argv(%q, %q) = %q; want %q", c.template, c.pattern, got, c.want)
		}
	}
}

func TestCommandLine(t *testing.T) {
	cases := [][2][]string{
		{{"hello", "--contents"}, {"--", "hello", "--contents"}},
		{{"-H", "%h", "hello", "-x"}, {"-H", "%h", "--", "hello", "-x"}},
		{{"--host-pattern=%h", "ftpfs", "/"}, {"--host-pattern=%h", "--", "ftpfs", "/"}},
		{{"--mount", "/mnt", "hello"}, {"--mount", "/mnt", "--", "hello"}},
		{{"--", "hello", "-x"}, {"--", "hello", "-x"}},
		{{"--help"}, {"--help"}},
	}
	for _, c := range cases {
		if got := CommandLine(c[0], "-H", "--host-pattern"); !reflect.DeepEqual(got, c[1]) {
			t.Errorf("CommandLine(%q) = %q; want %q", c[0], got, c[1])
		}
	}
}
