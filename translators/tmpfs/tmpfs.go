// Package tmpfs is the tmpfs translator: a memory filesystem with full
// POSIX behaviour (kit.MemFS) and an optional size limit, past which writes
// fail with ENOSPC. statfs reports the limit; fsysopts --size changes it at
// run time.
package tmpfs

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"herd/translators/kit"
)

// Translator is tmpfs, for kit.Main.
func Translator() kit.Translator {
	flags := pflag.NewFlagSet("tmpfs", pflag.ContinueOnError)
	size := flags.StringP("size", "s", "", "limit file data to `SIZE`: bytes with an optional k, M, G or T suffix, or a percentage of RAM (50%); default no limit")
	mode := flags.StringP("mode", "m", "1777", "permission bits of the root directory (octal)")
	var fs *kit.MemFS
	return kit.Translator{
		Name:  "tmpfs",
		Args:  "[SIZE]",
		Doc:   "Serves a directory held in memory: files, directories, links, xattrs, all of POSIX. Contents go when the translator does. SIZE, as the Hurd's tmpfs takes it, is --size.",
		Flags: flags,
		Root: func(args []string) (kit.Node, error) {
			switch {
			case len(args) > 1:
				return nil, kit.Usagef("one SIZE only")
			case len(args) == 1 && *size != "":
				return nil, kit.Usagef("SIZE given twice (argument and --size)")
			case len(args) == 1:
				*size = args[0]
			}
			limit, err := ParseSize(*size)
			if err != nil {
				return nil, kit.Usagef("--size: %v", err)
			}
			m, err := strconv.ParseUint(*mode, 8, 32)
			if err != nil || m > 0o7777 {
				return nil, kit.Usagef("--mode %q: want octal permission bits like 1777", *mode)
			}
			fs = kit.NewMemFSOwned(kit.MemOptions{MaxBytes: limit, RootMode: uint32(m)})
			return fs.Root(), nil
		},
		SetOptions: func(changed []string) error {
			for _, c := range changed {
				switch c {
				case "size":
					limit, err := ParseSize(*size)
					if err != nil {
						return fmt.Errorf("--size: %v", err)
					}
					fs.SetMaxBytes(limit)
				case "mode":
					return fmt.Errorf("--mode cannot change at run time: chmod the root instead")
				}
			}
			return nil
		},
	}
}

// ParseSize reads a size as tmpfs(5) does: a number of bytes with an
// optional binary suffix (k, m, g, t), or a percentage of the physical RAM.
// "" and "0" mean no limit.
func ParseSize(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	if p, ok := strings.CutSuffix(s, "%"); ok {
		pct, err := strconv.ParseFloat(p, 64)
		if err != nil || pct <= 0 || pct > 100 {
			return 0, fmt.Errorf("%q: want a percentage between 0 and 100", s)
		}
		var si unix.Sysinfo_t
		if err := unix.Sysinfo(&si); err != nil {
			return 0, fmt.Errorf("sysinfo: %v", err)
		}
		ram := float64(si.Totalram) * float64(si.Unit)
		return int64(ram * pct / 100), nil
	}
	mult := int64(1)
	switch strings.ToLower(s[len(s)-1:]) {
	case "k":
		mult = 1 << 10
	case "m":
		mult = 1 << 20
	case "g":
		mult = 1 << 30
	case "t":
		mult = 1 << 40
	}
	num := s
	if mult != 1 {
		num = s[:len(s)-1]
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q: want bytes with an optional k, M, G or T suffix, or a percentage like 50%%", s)
	}
	return n * mult, nil
}
