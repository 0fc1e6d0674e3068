// Command jsonfs is an example translator written with herd's kit: it
// serves a JSON document as a read-only tree. Objects are directories of
// their keys, arrays directories named 0, 1, 2, ..., and scalars files
// holding the value (strings as they are, others as JSON) and a newline.
//
//	settrans -a ~/conf jsonfs config.json
//	cat ~/conf/servers/0/host
//
// Without FILE it reads the node it sits on, so `settrans -p doc.json
// jsonfs` shows a document as its own tree.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"herd/translators/kit"
)

func main() {
	kit.Main(kit.Translator{
		Name: "jsonfs",
		Args: "[FILE]",
		Doc:  "Serves a JSON document as a tree: objects and arrays are directories, scalars files.",
		Root: func(args []string) (kit.Node, error) {
			var r io.Reader
			switch {
			case len(args) == 1:
				f, err := os.Open(args[0])
				if err != nil {
					return nil, err
				}
				defer f.Close()
				r = f
			case len(args) == 0 && kit.Underlying() != nil:
				r = kit.Underlying()
			case len(args) == 0:
				return nil, kit.Usagef("missing FILE")
			default:
				return nil, kit.Usagef("one FILE only")
			}
			return parse(r)
		},
	})
}

// parse reads one JSON document and builds its tree.
func parse(r io.Reader) (kit.Node, error) {
	dec := json.NewDecoder(r)
	dec.UseNumber() // numbers stay as written
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("not JSON: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("not JSON: more than one document")
	}
	return node(v), nil
}

func node(v any) kit.Node {
	entries := map[string]kit.Node{}
	switch v := v.(type) {
	case map[string]any:
		for k, c := range v {
			entries[name(k)] = node(c)
		}
	case []any:
		for i, c := range v {
			entries[strconv.Itoa(i)] = node(c)
		}
	case string:
		return kit.StaticFile([]byte(v + "\n"))
	default:
		b, _ := json.Marshal(v)
		return kit.StaticFile(append(b, '\n'))
	}
	return kit.Dir(entries)
}

// name makes a key a file name: '/', NUL and '%' are percent-escaped, and
// the names a directory cannot hold ("", ".", "..") too.
func name(k string) string {
	k = strings.NewReplacer("%", "%25", "/", "%2F", "\x00", "%00").Replace(k)
	if k == "" || k == "." || k == ".." {
		var b bytes.Buffer
		for i := 0; i < len(k); i++ {
			fmt.Fprintf(&b, "%%%02X", k[i])
		}
		if k == "" {
			return "%"
		}
		return b.String()
	}
	return k
}
