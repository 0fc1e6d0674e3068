package control

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
)

// RuntimeDir returns the directory for host translators' sockets, state
// files and logs: $XDG_RUNTIME_DIR/herd/trans, else /tmp/herd-UID/trans,
// created with mode 0700 and checked to be the caller's own (a directory
// another user made in /tmp must not receive our sockets).
func RuntimeDir() (string, error) {
	uid := os.Geteuid()
	var base string
	if x := os.Getenv("XDG_RUNTIME_DIR"); x != "" && ownedDir(x, uid) == nil {
		base = filepath.Join(x, "herd")
	} else {
		base = filepath.Join(os.TempDir(), fmt.Sprintf("herd-%d", uid))
	}
	dir := filepath.Join(base, "trans")
	for _, d := range []string{base, dir} {
		if err := os.Mkdir(d, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return "", fmt.Errorf("runtime dir: %w", err)
		}
		if err := ownedDir(d, uid); err != nil {
			return "", fmt.Errorf("runtime dir: %w", err)
		}
	}
	return dir, nil
}

func ownedDir(d string, uid int) error {
	var st syscall.Stat_t
	if err := syscall.Lstat(d, &st); err != nil {
		return &os.PathError{Op: "lstat", Path: d, Err: err}
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return fmt.Errorf("%s is not a directory", d)
	}
	if int(st.Uid) != uid {
		return fmt.Errorf("%s belongs to uid %d, not to us (%d)", d, st.Uid, uid)
	}
	if d != os.Getenv("XDG_RUNTIME_DIR") && st.Mode&0o077 != 0 {
		return fmt.Errorf("%s is open to other users (mode %o)", d, st.Mode&0o777)
	}
	return nil
}

// NodeKey names a node's files in the runtime directory: a readable
// rendering of its path, shortened, plus a hash of the whole path, so that
// the socket path stays within the 108 bytes a unix address allows.
func NodeKey(node string) string {
	sum := sha256.Sum256([]byte(node))
	var b strings.Builder
	for _, r := range strings.Trim(node, "/") {
		switch {
		case r == '/':
			b.WriteByte('-')
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	name := b.String()
	if len(name) > 32 {
		name = name[len(name)-32:]
	}
	return name + "." + hex.EncodeToString(sum[:6])
}

// State describes a host active translator; the holder writes it beside
// the translator's socket once the mount answers and removes it on exit.
type State struct {
	Node          string   `json:"node"`
	Argv          []string `json:"argv"`    // as the user gave it
	Program       string   `json:"program"` // resolved argv[0]
	Socket        string   `json:"socket"`
	Log           string   `json:"log"`
	HolderPid     int      `json:"holder_pid"`
	TranslatorPid int      `json:"translator_pid"`
	// UnderlyingFD is the holder's descriptor of the node under the
	// mount; /proc/HOLDER/fd/N reaches the host file while it is covered.
	UnderlyingFD int `json:"underlying_fd"`
}

// Paths of a node's files in the runtime directory. RunDir is the
// translator's own runtime dir (HERD_RUNTIME_DIR: hostmux's children's
// sockets go there), named short since sockets go below it.
type Paths struct{ Socket, State, Log, RunDir string }

// PathsFor returns where the translator of node keeps its files.
func PathsFor(dir, node string) Paths {
	key := NodeKey(node)
	k := filepath.Join(dir, key)
	return Paths{Socket: k + ".sock", State: k + ".json", Log: k + ".log",
		RunDir: filepath.Join(dir, key[strings.LastIndexByte(key, '.')+1:]+".d")}
}

// WriteState writes st atomically.
func WriteState(path string, st *State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// ReadState reads a state file.
func ReadState(path string) (*State, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &st, nil
}

// Alive reports whether pid names a live process (not a zombie).
func Alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z' && s[i+2] != 'X'
	}
	return true
}

// lockRuntime takes the runtime directory's lock (flock on the directory
// itself, so no lock file is left behind).
func lockRuntime() (func(), error) {
	dir, err := RuntimeDir()
	if err != nil {
		return nil, err
	}
	fd, err := syscall.Open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(fd, syscall.LOCK_EX); err != nil {
		syscall.Close(fd)
		return nil, err
	}
	var once sync.Once
	return func() { once.Do(func() { syscall.Close(fd) }) }, nil
}
