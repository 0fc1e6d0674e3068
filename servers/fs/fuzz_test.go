package fs

import (
	"strings"
	"testing"
)

// FuzzSideTable: a side table is a file in a host directory anyone with
// write access there may have written; decoding must never panic, and a
// record read back from it is a usable argv or nothing.
func FuzzSideTable(f *testing.F) {
	f.Add([]byte(`{"ln":"tarfs\u0000-z\u0000x.tar.gz"}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"a":""}`))
	f.Add([]byte(`not json`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m := parseSideTable(b)
		for name, v := range m {
			for _, a := range splitNul([]byte(v)) {
				if a == "" || strings.ContainsRune(a, 0) {
					t.Fatalf("record %q gives argument %q", name, a)
				}
			}
		}
	})
}
