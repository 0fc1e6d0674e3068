package ftpfs

import (
	"strconv"
	"strings"
	"syscall"
	"time"
)

// entry is one name of a listing.
type entry struct {
	name   string
	mode   uint32 // type and permission bits
	size   int64
	mtime  time.Time
	target string // a symlink's, when the listing says (LIST's "a -> b")
}

// parseMLSD reads a machine listing (RFC 3659): "fact=value;...; name"
// per line. Lines it cannot read, and the directory's own entries (cdir,
// pdir), are left out.
func parseMLSD(data []byte) []entry {
	var out []entry
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimRight(line, "\r")
		sp := strings.Index(line, " ")
		if sp < 0 {
			continue
		}
		facts, name := line[:sp], line[sp+1:]
		if !validName(name) {
			continue
		}
		e := entry{name: name, mode: syscall.S_IFREG | 0o644}
		explicitPerm := false
		ok := true
		for _, f := range strings.Split(facts, ";") {
			k, v, found := strings.Cut(f, "=")
			if !found {
				continue
			}
			switch strings.ToLower(k) {
			case "type":
				switch t := strings.ToLower(v); {
				case t == "file":
				case t == "dir":
					e.mode = syscall.S_IFDIR | e.mode&07777
				case t == "cdir" || t == "pdir":
					ok = false
				case t == "os.unix=symlink" || strings.HasPrefix(t, "os.unix=slink"):
					e.mode = syscall.S_IFLNK | 0o777
					if _, target, found := strings.Cut(v, ":"); found {
						e.target = target
					}
				}
			case "size":
				if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
					e.size = n
				}
			case "modify":
				if t, ok := parseTime(v); ok {
					e.mtime = t
				}
			case "unix.mode":
				// Octal; pyftpdlib writes Python's 0o644.
				if m, err := strconv.ParseUint(strings.TrimPrefix(v, "0o"), 8, 32); err == nil {
					e.mode = e.mode&syscall.S_IFMT | uint32(m)&07777
					explicitPerm = true
				}
			}
		}
		if !ok {
			continue
		}
		if !explicitPerm && e.mode&syscall.S_IFMT == syscall.S_IFDIR {
			e.mode = syscall.S_IFDIR | 0o755
		}
		out = append(out, e)
	}
	return out
}

// parseTime reads MLSD's and MDTM's YYYYMMDDHHMMSS[.sss] (UTC).
func parseTime(v string) (time.Time, bool) {
	if len(v) < 14 {
		return time.Time{}, false
	}
	t, err := time.Parse("20060102150405", v[:14])
	if err != nil {
		return time.Time{}, false
	}
	if len(v) > 15 && v[14] == '.' {
		if frac, err := strconv.Atoi(v[15:]); err == nil && frac >= 0 {
			ns := frac
			for i := len(v[15:]); i < 9; i++ {
				ns *= 10
			}
			if ns < 1e9 {
				t = t.Add(time.Duration(ns))
			}
		}
	}
	return t, true
}

var months = map[string]time.Month{
	"jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6,
	"jul": 7, "aug": 8, "sep": 9, "oct": 10, "nov": 11, "dec": 12,
}

// parseLIST reads a Unix "ls -l" listing, as most servers send for LIST:
//
//	-rw-r--r--   1 owner group  1234 Jan 02 15:04 name
//	drwxr-xr-x   2 owner group  4096 Jan 02  2006 dir
//	lrwxrwxrwx   1 owner group     4 Jan 02 15:04 link -> target
//
// The name is the rest of the line, spaces kept. "total" lines and lines
// in other styles are left out. now places dates without a year.
func parseLIST(data []byte, now time.Time) []entry {
	var out []entry
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimRight(line, "\r")
		e, ok := parseLISTLine(line, now)
		if ok {
			out = append(out, e)
		}
	}
	return out
}

func parseLISTLine(line string, now time.Time) (entry, bool) {
	// Eight fields, then the name: find where the ninth starts.
	rest := line
	var f []string
	for len(f) < 8 {
		rest = strings.TrimLeft(rest, " ")
		i := strings.Index(rest, " ")
		if i < 0 {
			return entry{}, false
		}
		f = append(f, rest[:i])
		rest = rest[i+1:]
	}
	// A single space separates the time from the name; more are part of it
	// only in pathological names, which "ls -l" aligns anyway.
	name := strings.TrimLeft(rest, " ")
	perm := f[0]
	if len(perm) < 10 {
		return entry{}, false
	}
	var e entry
	switch perm[0] {
	case '-':
		e.mode = syscall.S_IFREG
	case 'd':
		e.mode = syscall.S_IFDIR
	case 'l':
		e.mode = syscall.S_IFLNK
	default:
		return entry{}, false // devices, sockets: not served
	}
	bits := []uint32{0o400, 0o200, 0o100, 0o40, 0o20, 0o10, 0o4, 0o2, 0o1}
	for i, b := range bits {
		switch perm[1+i] {
		case 'r', 'w', 'x', 's', 't':
			e.mode |= b
		case '-', 'S', 'T':
		default:
			return entry{}, false
		}
	}
	size, err := strconv.ParseInt(f[4], 10, 64)
	if err != nil || size < 0 {
		return entry{}, false
	}
	e.size = size
	mon, ok := months[strings.ToLower(f[5])]
	day, err := strconv.Atoi(f[6])
	if !ok || err != nil || day < 1 || day > 31 {
		return entry{}, false
	}
	if h, m, found := strings.Cut(f[7], ":"); found {
		hh, err1 := strconv.Atoi(h)
		mm, err2 := strconv.Atoi(m)
		if err1 != nil || err2 != nil {
			return entry{}, false
		}
		e.mtime = time.Date(now.Year(), mon, day, hh, mm, 0, 0, time.UTC)
		if e.mtime.After(now.Add(24 * time.Hour)) {
			e.mtime = e.mtime.AddDate(-1, 0, 0) // ls shows the time for the last six months
		}
	} else {
		y, err := strconv.Atoi(f[7])
		if err != nil {
			return entry{}, false
		}
		e.mtime = time.Date(y, mon, day, 0, 0, 0, 0, time.UTC)
	}
	if e.mode&syscall.S_IFMT == syscall.S_IFLNK {
		if n, t, found := strings.Cut(name, " -> "); found {
			name, e.target = n, t
		}
	}
	if !validName(name) {
		return entry{}, false
	}
	e.name = name
	return e, true
}

// validName: one path element, not "." or "..".
func validName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, "/\x00")
}
