package tarfs

import (
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
)

// Compression is how the archive is compressed.
type Compression int

const (
	Auto Compression = iota // tell from the archive's first bytes
	None
	Gzip
	Bzip2
	Xz
)

func (c Compression) String() string {
	return [...]string{"auto", "none", "gzip", "bzip2", "xz"}[c]
}

// detect tells the compression from the first bytes of an archive.
// Anything not compressed is None (ReadIndex then says whether it is tar).
func detect(head []byte) (Compression, error) {
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		return Gzip, nil
	case bytes.HasPrefix(head, []byte("BZh")):
		return Bzip2, nil
	case bytes.HasPrefix(head, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		return Xz, nil
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return None, errors.New("zstd-compressed archives are not supported (decompress it first)")
	case bytes.HasPrefix(head, []byte("PK\x03\x04")):
		return None, errors.New("a zip archive, not a tar archive (use zipfs)")
	}
	return None, nil
}

// decompress copies the decompressed src to dst. Go's library reads gzip
// and bzip2; xz, which it lacks, goes through Debian's xz program. A
// truncated or corrupt stream copies what could be decompressed and
// returns the error: the archive's members up to there stay readable.
func decompress(c Compression, src io.Reader, dst io.Writer) error {
	switch c {
	case Gzip:
		zr, err := gzip.NewReader(src)
		if err != nil {
			return fmt.Errorf("gzip: %w", err)
		}
		_, err = io.Copy(dst, zr)
		if err != nil {
			return fmt.Errorf("gzip: %w", err)
		}
		return nil
	case Bzip2:
		if _, err := io.Copy(dst, bzip2.NewReader(src)); err != nil {
			return fmt.Errorf("bzip2: %w", err)
		}
		return nil
	case Xz:
		return filter(src, dst, "xz", "-dc")
	}
	_, err := io.Copy(dst, src)
	return err
}

// compress writes src to dst compressed with c. gzip is Go's; bzip2 and
// xz are Debian's bzip2 and xz programs (Go's library writes neither).
func compress(c Compression, src io.Reader, dst io.Writer) error {
	switch c {
	case Gzip:
		zw := gzip.NewWriter(dst)
		if _, err := io.Copy(zw, src); err != nil {
			return err
		}
		return zw.Close()
	case Bzip2:
		return filter(src, dst, "bzip2", "-c")
	case Xz:
		return filter(src, dst, "xz", "-c", "-T0")
	}
	_, err := io.Copy(dst, src)
	return err
}

// filter runs prog with src as stdin and dst as stdout.
func filter(src io.Reader, dst io.Writer, prog string, args ...string) error {
	path, err := exec.LookPath(prog)
	if err != nil {
		return fmt.Errorf("%s: the %s program is needed for this archive (Debian: apt install %s)", prog, prog, map[string]string{"xz": "xz-utils", "bzip2": "bzip2"}[prog])
	}
	cmd := exec.Command(path, args...)
	var stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = src, dst, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if i := strings.IndexByte(msg, '\n'); i >= 0 {
			msg = msg[:i]
		}
		if msg == "" {
			msg = err.Error()
		}
		return fmt.Errorf("%s", msg)
	}
	return nil
}
