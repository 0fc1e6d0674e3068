// Command fileops times one kind of file work over a tree, so bench/files.sh
// can run the same work natively, on go-fuse's loopback and inside a
// subenvironment, and compare. It prints the elapsed seconds on stdout.
//
//	fileops -op find|stat|cat|openclose|seqread|seqwrite PATH
package main

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/pflag"
)

func main() {
	op := pflag.String("op", "", "find, stat, cat, openclose, seqread or seqwrite")
	size := pflag.Int64("size", 1<<30, "bytes for seqwrite")
	pflag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: fileops -op OP PATH\n\nTimes one kind of file work over PATH (a tree, or a file for seqread/seqwrite).\n\n")
		pflag.PrintDefaults()
	}
	pflag.Parse()
	if pflag.NArg() != 1 {
		pflag.Usage()
		os.Exit(2)
	}
	path := pflag.Arg(0)
	start := time.Now()
	var err error
	switch *op {
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
	case "seqread":
		err = seqRead(path)
	case "seqwrite":
		err = seqWrite(path, *size)
	default:
		fmt.Fprintf(os.Stderr, "fileops: unknown -op %q\n", *op)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "fileops: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("%.4f\n", time.Since(start).Seconds())
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
