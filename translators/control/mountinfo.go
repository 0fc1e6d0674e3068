package control

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Mount is one line of /proc/self/mountinfo.
type Mount struct {
	ID, Parent int
	Root       string
	MountPoint string
	FSType     string
	Source     string
}

// IsFUSE reports whether the mount is a FUSE filesystem.
func (m Mount) IsFUSE() bool { return m.FSType == "fuse" || strings.HasPrefix(m.FSType, "fuse.") }

// IsSubenv reports whether the mount is a subenvironment's fs bridge.
func (m Mount) IsSubenv() bool { return m.IsFUSE() && m.Source == SubenvSource }

// IsTranslator reports whether the mount is a host translator mounted by
// settrans -a.
func (m Mount) IsTranslator() bool {
	return m.IsFUSE() && strings.HasPrefix(m.Source, TranslatorSourcePrefix)
}

// SubenvSource is the source (fsname) of a subenvironment's root mount.
const SubenvSource = "herd"

// TranslatorSourcePrefix starts the source of a host translator's mount;
// the translator's command line follows.
const TranslatorSourcePrefix = "herd:"

// ReadMounts parses /proc/self/mountinfo.
func ReadMounts() ([]Mount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Mount
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		m, err := parseMountLine(sc.Text())
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

// parseMountLine parses "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS".
func parseMountLine(line string) (Mount, error) {
	f := strings.Fields(line)
	sep := -1
	for i := 6; i < len(f); i++ {
		if f[i] == "-" {
			sep = i
			break
		}
	}
	if len(f) < 7 || sep < 0 || sep+2 >= len(f) {
		return Mount{}, fmt.Errorf("mountinfo: malformed line %q", line)
	}
	id, err1 := strconv.Atoi(f[0])
	parent, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil {
		return Mount{}, fmt.Errorf("mountinfo: malformed line %q", line)
	}
	return Mount{
		ID: id, Parent: parent,
		Root:       unescapeMount(f[3]),
		MountPoint: unescapeMount(f[4]),
		FSType:     unescapeMount(f[sep+1]),
		Source:     unescapeMount(f[sep+2]),
	}, nil
}

// unescapeMount undoes the kernel's octal escapes (\040 for space, \011,
// \012, \134).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// MountOf returns the mount that holds path (which must be absolute and
// clean, symlinks resolved): the last-mounted one whose mount point is
// path or one of its ancestors.
func MountOf(mounts []Mount, path string) (Mount, bool) {
	best := -1
	bestLen := -1
	for i, m := range mounts {
		if !within(path, m.MountPoint) {
			continue
		}
		// Later lines are mounted later and cover earlier ones on the same point.
		if len(m.MountPoint) >= bestLen {
			best, bestLen = i, len(m.MountPoint)
		}
	}
	if best < 0 {
		return Mount{}, false
	}
	return mounts[best], true
}

// MountAt returns the topmost mount whose mount point is exactly path.
func MountAt(mounts []Mount, path string) (Mount, bool) {
	for i := len(mounts) - 1; i >= 0; i-- {
		if mounts[i].MountPoint == path {
			return mounts[i], true
		}
	}
	return Mount{}, false
}

func within(path, dir string) bool {
	if dir == "/" {
		return strings.HasPrefix(path, "/")
	}
	return path == dir || strings.HasPrefix(path, dir+"/")
}

// Canonical returns path absolute, cleaned, with symlinks resolved. When
// path does not exist, its parent is resolved and the last element kept.
func Canonical(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		return real, nil
	}
	dir, base := filepath.Split(abs)
	realDir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", err
	}
	return filepath.Join(realDir, base), nil
}
