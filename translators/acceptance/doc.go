// Package acceptance holds the end-to-end acceptance tests of issue 3
// (translators): every translator of the standard set run as real programs,
// inside a subenvironment as a passive translator started on lookup and on
// the host as an active translator mounted by FUSE, as root and as a plain
// user; a translator killed under a reader; bad input inside a
// subenvironment; and nothing left behind after any of it.
//
// The package has no code of its own: `go test ./translators/acceptance`
// (as root; it creates the user herdaccept) is the matrix.
package acceptance
