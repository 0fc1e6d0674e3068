// Package httpfs is the httpfs translator: a web server's directory index
// pages (as Apache, nginx and python's http.server write them: HTML with a
// link per entry) as directories, and the files they link to as files,
// read-only.
//
// A directory is the page at a URL ending in "/"; its entries are the
// links on it that name one element beneath it (a link ending in "/" is a
// subdirectory; sort links, parents and links elsewhere are left out). A
// page is kept for --cache-timeout. A file's size and time come from a
// HEAD request (Content-Length, Last-Modified), done when it is first
// looked at and kept as long as the page. Reads ask for the bytes wanted
// with a Range request when the server takes them (Accept-Ranges: bytes,
// answered 206); otherwise the whole body is fetched once and kept in
// memory.
//
// Errors: 404 and 410 are ENOENT, 401 and 403 EACCES, anything else the
// server answers or a server that cannot be reached EIO. At start, a URL
// that is not http(s) or a server that does not answer is a one-line
// error.
package httpfs

import (
	"context"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"herd/proto"
	"herd/translators/kit"
)

// Translator is httpfs, for kit.Main.
func Translator() kit.Translator {
	flags := pflag.NewFlagSet("httpfs", pflag.ContinueOnError)
	ttl := flags.Duration("cache-timeout", 10*time.Second, "how long a directory page and a file's size are kept before the server is asked again")
	var site *site
	return kit.Translator{
		Name:  "httpfs",
		Args:  "URL",
		Doc:   "Serves a web server's directory index pages (Apache, nginx, python -m http.server) as read-only directories and the files they link to as files.",
		Flags: flags,
		Root: func(args []string) (kit.Node, error) {
			if len(args) != 1 {
				return nil, kit.Usagef("want one URL, got %d arguments", len(args))
			}
			u, err := url.Parse(args[0])
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return nil, kit.Usagef("%q: want an http:// or https:// URL", args[0])
			}
			u.Fragment, u.RawQuery = "", ""
			site = newSite(func() time.Duration { return *ttl })
			return site.root(u)
		},
	}
}

type site struct {
	client *http.Client
	ttl    func() time.Duration
}

func newSite(ttl func() time.Duration) *site {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.ResponseHeaderTimeout = 60 * time.Second // a server that stops answering: EIO, not a hang
	tr.DisableCompression = true                // sizes and ranges are of the bytes stored
	return &site{client: &http.Client{Transport: tr}, ttl: ttl}
}

// root makes the node for the URL given on the command line, asking the
// server now so a bad URL or a server that is down is an error at start.
func (s *site) root(u *url.URL) (kit.Node, error) {
	resp, err := s.client.Get(u.String())
	if err != nil {
		return nil, fmt.Errorf("%s: %v", u, unwrapURLError(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", u, resp.Status)
	}
	// The server may have redirected /dir to /dir/.
	u = resp.Request.URL
	if strings.HasSuffix(u.Path, "/") || strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		if !strings.HasSuffix(u.Path, "/") {
			u.Path += "/"
		}
		d := &dirNode{s: s, u: u}
		body, err := io.ReadAll(io.LimitReader(resp.Body, maxPage))
		if err != nil {
			return nil, fmt.Errorf("%s: %v", u, err)
		}
		d.fill(body)
		return d, nil
	}
	f := &fileNode{s: s, u: u}
	f.setMeta(resp)
	return f, nil
}

// maxPage bounds an index page: a directory of a million names.
const maxPage = 64 << 20

func unwrapURLError(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}

// errnoOf is what an HTTP status means to a file system call.
func errnoOf(status int) syscall.Errno {
	switch status {
	case http.StatusNotFound, http.StatusGone:
		return syscall.ENOENT
	case http.StatusUnauthorized, http.StatusForbidden:
		return syscall.EACCES
	}
	return syscall.EIO
}

// dirNode is an index page.
type dirNode struct {
	s *site
	u *url.URL // ends in "/"

	mu       sync.Mutex
	children map[string]kit.Node
	fetched  time.Time
	mtime    time.Time
}

var (
	_ kit.Lookuper  = (*dirNode)(nil)
	_ kit.Readdirer = (*dirNode)(nil)
)

func (d *dirNode) Getattr(ctx context.Context, out *proto.Attr) syscall.Errno {
	out.Mode = syscall.S_IFDIR | 0o555
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.mtime.IsZero() {
		out.Mtime = proto.Timespec{Sec: d.mtime.Unix()}
		out.Ctime, out.Atime = out.Mtime, out.Mtime
	}
	return 0
}

// list fetches the page when the one kept is older than the cache timeout.
func (d *dirNode) list(ctx context.Context) syscall.Errno {
	d.mu.Lock()
	fresh := time.Since(d.fetched) < d.s.ttl()
	d.mu.Unlock()
	if fresh {
		return 0
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.u.String(), nil)
	if err != nil {
		return syscall.EIO
	}
	resp, err := d.s.client.Do(req)
	if err != nil {
		return syscall.EIO
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return errnoOf(resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxPage))
	if err != nil {
		return syscall.EIO
	}
	d.fill(body)
	return 0
}

// fill makes the children from a page, keeping the nodes of names that
// stay (a node keeps its number while its name means the same thing).
func (d *dirNode) fill(page []byte) {
	links := Links(d.u, page)
	d.mu.Lock()
	defer d.mu.Unlock()
	old := d.children
	d.children = make(map[string]kit.Node, len(links))
	for _, l := range links {
		switch n := old[l.Name].(type) {
		case *dirNode:
			if l.Dir {
				d.children[l.Name] = n
				continue
			}
		case *fileNode:
			if !l.Dir {
				n.expire()
				d.children[l.Name] = n
				continue
			}
		}
		if l.Dir {
			d.children[l.Name] = &dirNode{s: d.s, u: l.URL}
		} else {
			d.children[l.Name] = &fileNode{s: d.s, u: l.URL}
		}
	}
	d.fetched = time.Now()
}

func (d *dirNode) Lookup(ctx context.Context, name string) (kit.Node, syscall.Errno) {
	if errno := d.list(ctx); errno != 0 {
		return nil, errno
	}
	d.mu.Lock()
	n := d.children[name]
	d.mu.Unlock()
	if n == nil {
		return nil, syscall.ENOENT
	}
	return n, 0
}

func (d *dirNode) Readdir(ctx context.Context) ([]proto.DirEntry, syscall.Errno) {
	if errno := d.list(ctx); errno != 0 {
		return nil, errno
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]proto.DirEntry, 0, len(d.children))
	for name, n := range d.children {
		mode := uint32(syscall.S_IFREG)
		if _, ok := n.(*dirNode); ok {
			mode = syscall.S_IFDIR
		}
		out = append(out, proto.DirEntry{Name: name, Mode: mode})
	}
	return out, 0
}

// Link is an entry of an index page.
type Link struct {
	Name string
	URL  *url.URL
	Dir  bool
}

// Links reads the entries of an index page at base: the links (<a href>)
// that name one element directly beneath base, in page order, each once.
func Links(base *url.URL, page []byte) []Link {
	var out []Link
	seen := map[string]bool{}
	for _, href := range hrefs(string(page)) {
		if l, ok := child(base, href); ok && !seen[l.Name] {
			seen[l.Name] = true
			out = append(out, l)
		}
	}
	return out
}

// hrefs returns the href attributes of the page's <a> tags, entities
// decoded. It reads as much HTML as index pages use: tags, quoted and
// unquoted attributes, comments.
func hrefs(page string) []string {
	var out []string
	for i := 0; i < len(page); {
		lt := strings.IndexByte(page[i:], '<')
		if lt < 0 {
			break
		}
		i += lt + 1
		if strings.HasPrefix(page[i:], "!--") {
			end := strings.Index(page[i+3:], "-->")
			if end < 0 {
				break
			}
			i += 3 + end + 3
			continue
		}
		if i+1 >= len(page) || (page[i] != 'a' && page[i] != 'A') || !isSpace(page[i+1]) {
			continue
		}
		i++
		// Attributes until '>'.
		for i < len(page) && page[i] != '>' {
			for i < len(page) && (isSpace(page[i]) || page[i] == '/') {
				i++
			}
			start := i
			for i < len(page) && !isSpace(page[i]) && page[i] != '=' && page[i] != '>' {
				i++
			}
			name := strings.ToLower(page[start:i])
			for i < len(page) && isSpace(page[i]) {
				i++
			}
			if i >= len(page) || page[i] != '=' {
				if start == i {
					i++ // a stray character: step over it
				}
				continue
			}
			i++
			for i < len(page) && isSpace(page[i]) {
				i++
			}
			var val string
			if i < len(page) && (page[i] == '"' || page[i] == '\'') {
				q := page[i]
				end := strings.IndexByte(page[i+1:], q)
				if end < 0 {
					return out
				}
				val = page[i+1 : i+1+end]
				i += end + 2
			} else {
				start := i
				for i < len(page) && !isSpace(page[i]) && page[i] != '>' {
					i++
				}
				val = page[start:i]
			}
			if name == "href" {
				out = append(out, html.UnescapeString(val))
			}
		}
	}
	return out
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' }

// child resolves href against base and returns the entry it names, if it
// is one element beneath base on the same server.
func child(base *url.URL, href string) (Link, bool) {
	if href == "" || strings.HasPrefix(href, "?") || strings.HasPrefix(href, "#") {
		return Link{}, false
	}
	ref, err := url.Parse(href)
	if err != nil {
		return Link{}, false
	}
	u := base.ResolveReference(ref)
	if u.Scheme != base.Scheme || u.Host != base.Host || u.RawQuery != "" {
		return Link{}, false
	}
	u.Fragment = ""
	rest, ok := strings.CutPrefix(u.Path, base.Path)
	if !ok || rest == "" {
		return Link{}, false
	}
	dir := strings.HasSuffix(rest, "/")
	name := strings.TrimSuffix(rest, "/")
	if name == "" || strings.Contains(name, "/") || name == "." || name == ".." || strings.ContainsRune(name, 0) {
		return Link{}, false
	}
	if path.Clean(u.Path) != path.Join(base.Path, name) {
		return Link{}, false
	}
	return Link{Name: name, URL: u, Dir: dir}, true
}

// fileNode is a file on the server.
type fileNode struct {
	s *site
	u *url.URL

	mu      sync.Mutex
	checked time.Time // when size and time were last asked for (HEAD)
	size    int64
	mtime   time.Time
	ranges  bool   // the server answers Range requests
	body    []byte // the whole file, when the server cannot do ranges
	hasBody bool
}

var (
	_ kit.Reader = (*fileNode)(nil)
	_ kit.Opener = (*fileNode)(nil)
)

func (f *fileNode) expire() {
	f.mu.Lock()
	f.checked = time.Time{}
	f.mu.Unlock()
}

// setMeta takes size, time and range support from a response's headers
// (f.mu held, or f not yet shared).
func (f *fileNode) setMeta(resp *http.Response) {
	f.size = resp.ContentLength
	if t, err := http.ParseTime(resp.Header.Get("Last-Modified")); err == nil {
		f.mtime = t
	}
	f.ranges = resp.Header.Get("Accept-Ranges") == "bytes"
	f.checked = time.Now()
}

// head asks for size and time when what is kept is older than the cache
// timeout (f.mu held). A server that does not say the size is asked for
// the whole file.
func (f *fileNode) head(ctx context.Context) syscall.Errno {
	if time.Since(f.checked) < f.s.ttl() {
		return 0
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, f.u.String(), nil)
	if err != nil {
		return syscall.EIO
	}
	resp, err := f.s.client.Do(req)
	if err != nil {
		return syscall.EIO
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return errnoOf(resp.StatusCode)
	}
	oldSize, oldTime := f.size, f.mtime
	f.setMeta(resp)
	if f.hasBody && (f.size != oldSize || !f.mtime.Equal(oldTime)) {
		f.body, f.hasBody = nil, false // changed on the server
	}
	if f.size < 0 {
		return f.fetch(ctx)
	}
	return 0
}

// fetch gets the whole body (f.mu held).
func (f *fileNode) fetch(ctx context.Context) syscall.Errno {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.u.String(), nil)
	if err != nil {
		return syscall.EIO
	}
	resp, err := f.s.client.Do(req)
	if err != nil {
		return syscall.EIO
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return errnoOf(resp.StatusCode)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil || (resp.ContentLength >= 0 && int64(len(body)) != resp.ContentLength) {
		return syscall.EIO // cut short
	}
	f.body, f.hasBody, f.size = body, true, int64(len(body))
	return 0
}

func (f *fileNode) Getattr(ctx context.Context, out *proto.Attr) syscall.Errno {
	f.mu.Lock()
	defer f.mu.Unlock()
	if errno := f.head(ctx); errno != 0 {
		return errno
	}
	out.Mode = syscall.S_IFREG | 0o444
	out.Size = uint64(max(f.size, 0))
	if !f.mtime.IsZero() {
		out.Mtime = proto.Timespec{Sec: f.mtime.Unix()}
		out.Ctime, out.Atime = out.Mtime, out.Mtime
	}
	return 0
}

// Open refuses writing (read-only, EROFS from the kit otherwise would be
// EACCES-less) and lets the kernel keep pages while the size stands.
func (f *fileNode) Open(ctx context.Context, flags uint32) (kit.Handle, uint32, syscall.Errno) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&syscall.O_TRUNC != 0 {
		return nil, 0, syscall.EROFS
	}
	return nil, 0, 0
}

func (f *fileNode) Read(ctx context.Context, h kit.Handle, off int64, size int) ([]byte, syscall.Errno) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if errno := f.head(ctx); errno != 0 {
		return nil, errno
	}
	if off >= f.size && !f.hasBody {
		return nil, 0
	}
	if !f.hasBody && f.ranges {
		b, errno, ok := f.readRange(ctx, off, size)
		if ok {
			return b, errno
		}
	}
	if !f.hasBody {
		if errno := f.fetch(ctx); errno != 0 {
			return nil, errno
		}
	}
	if off >= int64(len(f.body)) {
		return nil, 0
	}
	end := min(off+int64(size), int64(len(f.body)))
	return append([]byte(nil), f.body[off:end]...), 0
}

// readRange asks for size bytes at off. ok is false when the server
// answered with the whole file instead (it is kept then, for later reads).
func (f *fileNode) readRange(ctx context.Context, off int64, size int) ([]byte, syscall.Errno, bool) {
	end := min(off+int64(size), f.size) - 1
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.u.String(), nil)
	if err != nil {
		return nil, syscall.EIO, true
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, end))
	resp, err := f.s.client.Do(req)
	if err != nil {
		return nil, syscall.EIO, true
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusPartialContent:
		b, err := io.ReadAll(io.LimitReader(resp.Body, int64(size)))
		if err != nil || int64(len(b)) != end-off+1 {
			return nil, syscall.EIO, true
		}
		return b, 0, true
	case http.StatusOK:
		f.ranges = false
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return nil, syscall.EIO, true
		}
		f.body, f.hasBody, f.size = body, true, int64(len(body))
		return nil, 0, false
	case http.StatusRequestedRangeNotSatisfiable:
		return nil, 0, true // the file shrank: nothing there
	}
	return nil, errnoOf(resp.StatusCode), true
}
