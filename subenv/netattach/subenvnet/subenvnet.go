// Package subenvnet used to register the net issue's --net modes (nat,
// lan:NAME[,nat], prog:PATH) with the launcher. They are now built into
// package herd/subenv itself (subenv/netmodes.go), so that nat, subenv's
// default, works for every user of the package; importing this package
// is harmless and no longer needed. Its tests still run subenv's net modes
// end to end.
package subenvnet
