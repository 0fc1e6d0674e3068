package proto

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// The decoders face bytes from any peer. The fuzzers check that they never
// panic and that whatever they accept is canonical: encoding the decoded
// value gives back the very same bytes.
//
// Run: go test -run '^$' -fuzz FuzzDecodeFrame -fuzztime 15s ./proto
// (and FuzzDecodeRequest, FuzzDecodeReply). The seed corpus is in
// testdata/fuzz; HERD_PROTO_WRITE_CORPUS=1 go test -run TestWriteCorpus
// regenerates it from seedMessages.

// seedMessages are well-formed messages of every kind and op.
func seedMessages() []*message {
	var out []*message
	req := func(r *request, flags uint8) {
		e := newEnc(0)
		encodeRequest(e, r)
		if r.hasCaller {
			flags |= flagCaller
		}
		out = append(out, &message{header: header{tag: 1, op: r.op, kind: kindRequest, flags: flags, status: 5000}, body: e.body()})
	}
	caller := Caller{Uid: 1000, Gid: 1000, Pid: 42}
	in := SetAttrIn{Valid: SetAttrMode | SetAttrSize, Mode: 0o644, Size: 4096, Atime: Timespec{1, 2}, Mtime: Timespec{3, 4}, Handle: 5}
	for _, r := range []*request{
		{op: opRoot}, {op: opGetOptions}, {op: opSetOptions, strs: []string{"--rw", ""}}, {op: opGoaway, flags: 1},
		{op: opLookup, node: 1, name: "etc", hasCaller: true, caller: caller}, {op: opForget, node: 2, nlookup: 3},
		{op: opGetAttr, node: 1}, {op: opSetAttr, node: 1, setattr: in}, {op: opReadDir, node: 1},
		{op: opReadDirPlus, node: 1}, {op: opMkdir, node: 1, name: "d", mode: 0o755},
		{op: opMknod, node: 1, name: "p", mode: 0o10644, rdev: 7}, {op: opCreate, node: 1, name: "f", flags: 2, mode: 0o600},
		{op: opUnlink, node: 1, name: "f"}, {op: opRmdir, node: 1, name: "d"},
		{op: opRename, node: 1, name: "a", node2: 2, name2: "b", flags: 1}, {op: opLink, node: 3, node2: 1, name: "l"},
		{op: opSymlink, node: 1, name: "s", name2: "/t"}, {op: opReadlink, node: 4},
		{op: opGetXattr, node: 1, name: "user.x"}, {op: opListXattr, node: 1},
		{op: opSetXattr, node: 1, name: "user.x", data: []byte("v"), flags: 1}, {op: opRemoveXattr, node: 1, name: "user.x"},
		{op: opStatFS, node: 1}, {op: opOpen, node: 5, flags: 0}, {op: opRead, handle: 1, off: 0, size: 4096},
		{op: opWrite, handle: 1, off: 8, data: []byte("hello")}, {op: opFsync, handle: 1, sync: true},
		{op: opFallocate, handle: 1, flags: 1, off: 0, length: 1 << 20}, {op: opLseek, handle: 1, off: 0, flags: 3},
		{op: opRelease, handle: 1},
	} {
		req(r, 0)
	}
	en := entryFor("redirect")
	rep := func(op uint16, r *reply) {
		e := newEnc(0)
		encodeReply(e, op, r)
		out = append(out, &message{header: header{tag: 1, op: op, kind: kindReply}, body: e.body()})
	}
	rep(opLookup, &reply{entry: en})
	rep(opRoot, &reply{entry: entryFor("x")})
	rep(opGetOptions, &reply{strs: []string{"a", "b"}})
	rep(opGetAttr, &reply{attr: fixtureAttr})
	rep(opReadDir, &reply{dir: fixtureDir})
	rep(opReadDirPlus, &reply{dirp: []DirEntryPlus{{DirEntry: fixtureDir[0], Entry: en}}})
	rep(opCreate, &reply{entry: en, open: OpenResult{Handle: 9, Flags: 1}})
	rep(opOpen, &reply{open: OpenResult{Handle: 9, Flags: 2}})
	rep(opReadlink, &reply{str: "target"})
	rep(opRead, &reply{data: []byte("data")})
	rep(opStatFS, &reply{statfs: fixtureStatFS})
	rep(opWrite, &reply{n: 5})
	rep(opLseek, &reply{off: 1 << 40})
	rep(opUnlink, &reply{})
	errE := newEnc(0)
	errE.str("no such file")
	out = append(out, &message{header: header{tag: 2, op: opLookup, kind: kindReply, status: 2}, body: errE.body()})
	for _, n := range []*notification{{typ: notifyInvalNode, node: 1, off: 2, length: 3}, {typ: notifyInvalEntry, node: 1, name: "x"}} {
		e := newEnc(0)
		encodeNotify(e, n)
		out = append(out, &message{header: header{op: n.typ, kind: kindNotify}, body: e.body()})
	}
	he := newEnc(0)
	encodeHello(he, &helloReply{version: Version, name: "fs", interfaces: []string{"fs", "io"}, cookie: make([]byte, cookieSize), flags: helloLanes})
	out = append(out, &message{header: header{kind: kindHello}, body: he.body()})
	out = append(out, &message{header: header{tag: 3, op: opRead, kind: kindCancel}})
	return out
}

func (m *message) wire() []byte {
	return frame(m.header, m.body)
}

// FuzzDecodeFrame feeds a byte stream to the frame reader and decodes every
// message it yields as its kind says.
func FuzzDecodeFrame(f *testing.F) {
	for _, m := range seedMessages() {
		f.Add(m.wire())
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fr := newFrameReader(bytes.NewReader(data))
		for {
			m, err := fr.read()
			if err != nil {
				return
			}
			decodeAny(t, m)
		}
	})
}

func decodeAny(t *testing.T, m *message) {
	switch m.kind {
	case kindRequest:
		checkRequest(t, m.op, m.flags, m.body)
	case kindReply:
		if m.status != 0 {
			d := &dec{b: m.body}
			d.str()
			d.end()
			return
		}
		checkReply(t, m.op, m.body)
	case kindNotify:
		if n, err := decodeNotify(m.op, m.body); err == nil {
			e := newEnc(0)
			encodeNotify(e, n)
			if !bytes.Equal(e.body(), m.body) {
				t.Fatalf("notification not canonical")
			}
		}
	case kindHello:
		if h, err := decodeHello(m.body); err == nil {
			e := newEnc(0)
			encodeHello(e, h)
			if !bytes.Equal(e.body(), m.body) {
				t.Fatalf("hello not canonical")
			}
		}
	}
}

func checkRequest(t *testing.T, op uint16, flags uint8, body []byte) {
	r, err := decodeRequest(op, flags, body)
	if err != nil {
		return
	}
	e := newEnc(0)
	encodeRequest(e, r)
	if !bytes.Equal(e.body(), body) {
		t.Fatalf("request op %d not canonical:\n in  %x\n out %x", op, body, e.body())
	}
}

func checkReply(t *testing.T, op uint16, body []byte) {
	r, err := decodeReply(op, body)
	if err != nil {
		return
	}
	e := newEnc(0)
	encodeReply(e, op, r)
	if !bytes.Equal(e.body(), body) {
		t.Fatalf("reply op %d not canonical:\n in  %x\n out %x", op, body, e.body())
	}
}

// FuzzDecodeRequest decodes a request body of any op.
func FuzzDecodeRequest(f *testing.F) {
	for _, m := range seedMessages() {
		if m.kind == kindRequest {
			f.Add(m.op, m.flags, m.body)
		}
	}
	f.Fuzz(func(t *testing.T, op uint16, flags uint8, body []byte) {
		checkRequest(t, op, flags&flagCaller, body)
	})
}

// FuzzDecodeReply decodes a success reply body of any op.
func FuzzDecodeReply(f *testing.F) {
	for _, m := range seedMessages() {
		if m.kind == kindReply && m.status == 0 {
			f.Add(m.op, m.body)
		}
	}
	f.Fuzz(func(t *testing.T, op uint16, body []byte) {
		checkReply(t, op, body)
	})
}

// TestWriteCorpus writes the seed corpus files (testdata/fuzz/...) when
// HERD_PROTO_WRITE_CORPUS=1; otherwise it checks they exist.
func TestWriteCorpus(t *testing.T) {
	write := os.Getenv("HERD_PROTO_WRITE_CORPUS") == "1"
	files := map[string]string{}
	for i, m := range seedMessages() {
		name := fmt.Sprintf("seed-%02d-kind%d-op%d", i, m.kind, m.op)
		files[filepath.Join("FuzzDecodeFrame", name)] = "go test fuzz v1\n[]byte(" + strconv.Quote(string(m.wire())) + ")\n"
		switch {
		case m.kind == kindRequest:
			files[filepath.Join("FuzzDecodeRequest", name)] = fmt.Sprintf("go test fuzz v1\nuint16(%d)\nbyte(%s)\n[]byte(%s)\n",
				m.op, strconv.QuoteRune(rune(m.flags)), strconv.Quote(string(m.body)))
		case m.kind == kindReply && m.status == 0:
			files[filepath.Join("FuzzDecodeReply", name)] = fmt.Sprintf("go test fuzz v1\nuint16(%d)\n[]byte(%s)\n",
				m.op, strconv.Quote(string(m.body)))
		}
	}
	// A stream of two messages, the second split in two frames.
	var two []byte
	seeds := seedMessages()
	two = append(two, seeds[0].wire()...)
	w := seeds[4]
	two = append(two, frame(header{tag: w.tag, op: w.op, kind: w.kind, flags: w.flags | flagMore}, w.body[:5])...)
	two = append(two, frame(header{tag: w.tag, op: w.op, kind: w.kind, flags: w.flags}, w.body[5:])...)
	files[filepath.Join("FuzzDecodeFrame", "seed-stream-continuation")] = "go test fuzz v1\n[]byte(" + strconv.Quote(string(two)) + ")\n"

	for name, content := range files {
		path := filepath.Join("testdata", "fuzz", name)
		if write {
			os.MkdirAll(filepath.Dir(path), 0o755)
			if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if _, err := os.Stat(path); err != nil {
			t.Errorf("seed corpus file missing (HERD_PROTO_WRITE_CORPUS=1 writes it): %v", err)
		}
	}
	// And the frame reader accepts the continuation stream.
	fr := newFrameReader(bytes.NewReader(two))
	for range 2 {
		m, err := fr.read()
		if err != nil {
			t.Fatal(err)
		}
		if m.kind == kindRequest {
			if _, err := decodeRequest(m.op, m.flags, m.body); err != nil {
				t.Fatal(err)
			}
		}
	}
}
