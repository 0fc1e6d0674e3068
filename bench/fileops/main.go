// Command fileops times one kind of file work over a tree, so bench/files.sh
// can run the same work natively, on go-fuse's loopback and inside a
// subenvironment, and compare. It prints the elapsed seconds on stdout,
// one number per pass (--passes).
//
//	fileops -op find|stat|cat|openclose|tar|seqread|seqwrite PATH
//
// tar runs GNU tar c of the tree into a pipe (tar skips reading files when
// its output is /dev/null). seqwrite removes the file it wrote, after the
// timing, so runs leave nothing behind, and syncs before and after
// (untimed), so that a run does not pay for the writeback or discard of the
// gigabyte the previous run wrote and removed. This machine's virtio disk
// still makes about one 1 GiB write in three take 2-2.7 s instead of
// 0.7-0.8 s, whichever path writes: files.sh keeps the best of its runs.
package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"
)

func main() {
	op := pflag.String("op", "", "find, stat, cat, openclose, tar, seqread or seqwrite")
	size := pflag.Int64("size", 1<<30, "bytes for seqwrite")
	passes := pflag.Int("passes", 1, "do the work this many times in this process and print each time (the first pass is cold for a fresh mount, later ones find the kernel's caches warm)")
	pflag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: fileops --op OP [--passes N] [--size BYTES] PATH\n\nTimes one kind of file work over PATH (a tree, or a file for seqread/seqwrite).\n\n")
		pflag.PrintDefaults()
	}
	pflag.Parse()
	if pflag.NArg() != 1 {
		pflag.Usage()
		os.Exit(2)
	}
	path := pflag.Arg(0)
	var times []string
	for i := 0; i < *passes; i++ {
		if *op == "seqwrite" {
			unix.Sync()
		}
		start := time.Now()
		err := once(*op, path, *size)
		elapsed := time.Since(start)
		if *op == "seqwrite" {
			os.Remove(path)
			unix.Sync()
		}
		if err == errUnknownOp {
			fmt.Fprintf(os.Stderr, "fileops: unknown --op %q\n", *op)
			os.Exit(2)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "fileops: %v\n", err)
			os.Exit(1)
		}
		times = append(times, fmt.Sprintf("%.4f", elapsed.Seconds()))
	}
	fmt.Println(strings.Join(times, " "))
}

var errUnknownOp = errors.New("unknown op")

// once does the work one time.
func once(op, path string, size int64) error {
	var err error
	switch op {
	case "find":
		err = walk(path, func(string, fs.DirEntry) error { return nil })
	case "stat":
		err = walk(path, func(p string, _ fs.DirEntry) error { _, err := os.Lstat(p); return err })
	case "cat":
		buf := make([]byte, 128<<10)
		err = walk(path, func(p string, d fs.DirEntry) error {
			if !d.Type().IsRegular() {
				return nil
			}
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = io.CopyBuffer(io.Discard, f, buf)
			return err
		})
	case "openclose":
		err = walk(path, func(p string, d fs.DirEntry) error {
			if !d.Type().IsRegular() {
				return nil
			}
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			return f.Close()
		})
	case "tar":
		cmd := exec.Command("tar", "cf", "-", "-C", path, ".")
		cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr // a pipe, drained by a goroutine
		err = cmd.Run()
	case "seqread":
		err = seqRead(path)
	case "seqwrite":
		err = seqWrite(path, size)
	default:
		return errUnknownOp
	}
	return err
}

func walk(root string, fn func(string, fs.DirEntry) error) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return fn(p, d)
	})
}

func seqRead(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.CopyBuffer(io.Discard, f, make([]byte, 1<<20))
	return err
}

func seqWrite(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	for n := int64(0); n < size; n += int64(len(buf)) {
		if _, err := f.Write(buf); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
