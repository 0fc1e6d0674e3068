#!/bin/bash
# make bench: every benchmark, each against the native path and the peers
# of shared/ANCHORS.md in the same run. Tables go to stdout.
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
section() { printf '\n== %s ==\n' "$1"; }

section "proto: round trips (go test -bench)"
go test -run '^$' -bench . -benchtime 2s ./proto/ || status=1
section "fs bridge: stat/open/read through FUSE vs native (go test -bench)"
go test -run '^$' -bench . -benchtime 2s ./subenv/fsbridge/ || status=1
section "start-up: subenv run vs unshare vs bwrap"
bash bench/startup.sh || status=1
section "file work: native vs go-fuse loopback vs herd"
bash bench/files.sh || status=1
if [ -f bench/net.sh ]; then
	section "network: herd-net vs loopback, slirp4netns, pasta"
	bash bench/net.sh || status=1
fi
if [ -f bench/translators.sh ]; then
	section "translators"
	bash bench/translators.sh || status=1
fi
exit $status
