package control

import (
	"fmt"
	"strings"
)

// Extended attributes that carry translator records and control requests.
const (
	// XattrPassive holds a node's passive translator: the argv joined
	// with NUL bytes.
	XattrPassive = "user.herd.translator"
	// XattrActive: set (NUL-joined argv) starts an active translator on a
	// node inside a subenvironment; get shows the running one's argv.
	XattrActive = "user.herd.active"
	// XattrGoaway: set ("" or "force") stops the active translator.
	XattrGoaway = "user.herd.goaway"
	// XattrOptions: get/set the running translator's options (NUL-joined).
	XattrOptions = "user.herd.options"
	// XattrRefresh: reading it on a node in a herd FUSE mount makes the
	// bridge drop its and the kernel's cached copy of the node's server
	// (fsysopts on the host, after changing a translator's options).
	XattrRefresh = "user.herd.refresh"
)

// SideTable is the file, in a node's directory, that holds the passive
// records of its entries where the filesystem refuses xattrs.
const SideTable = ".herd-translators"

// EncodeArgv joins argv with NUL bytes, the Hurd's argz format.
func EncodeArgv(argv []string) []byte {
	return []byte(strings.Join(argv, "\x00"))
}

// DecodeArgv splits a NUL-joined argv. A trailing NUL (as the Hurd's argz
// stores it) is accepted. An empty record is no argv at all.
func DecodeArgv(b []byte) []string {
	s := strings.TrimSuffix(string(b), "\x00")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\x00")
}

// ShowArgv formats argv for a person, as showtrans prints it: words
// separated by spaces, a word quoted when it needs to be.
func ShowArgv(argv []string) string {
	var b strings.Builder
	for i, a := range argv {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(quote(a))
	}
	return b.String()
}

func quote(s string) string {
	if s == "" {
		return "''"
	}
	safe, plain := true, true
	for _, r := range s {
		if r < ' ' || r == 0x7f {
			plain = false
		}
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:,+@%^", r)) {
			safe = false
		}
	}
	if safe {
		return s
	}
	if plain {
		return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
	}
	// Control characters: the shell's $'...' form keeps it on one line.
	var b strings.Builder
	b.WriteString("$'")
	for _, c := range []byte(s) {
		switch {
		case c == '\n':
			b.WriteString(`\n`)
		case c == '\t':
			b.WriteString(`\t`)
		case c == '\\' || c == '\'':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < ' ' || c == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('\'')
	return b.String()
}
