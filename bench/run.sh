#!/bin/bash
# make bench: every benchmark, each against the native path and the peers
# of shared/ANCHORS.md in the same run. Tables go to stdout; the exit status
# is non-zero when any benchmark failed to run.
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
section() { printf '\n== %s ==\n# %s; load average %s\n' "$1" "$(date -u '+%F %T UTC')" "$(cut -d' ' -f1-3 /proc/loadavg)"; }
failed() { echo "# FAILED: $1"; status=1; }

echo "# $(nproc) cores, $(free -g | awk '/^Mem/{print $2}') GiB RAM, kernel $(uname -r), $(. /etc/os-release && echo "$PRETTY_NAME"), $(go version | cut -d' ' -f3), as $(id -un)"
section "proto: round trips (go test -bench)"
go test -run '^$' -bench . -benchtime 2s ./proto/ || failed proto
section "fs bridge: stat/open/read through FUSE vs native (go test -bench)"
go test -run '^$' -bench . -benchtime 2s ./subenv/fsbridge/ || failed fsbridge
section "redirect: lookup through a translator redirect vs the fs server alone (go test -bench)"
go test -run '^$' -bench . -benchtime 200x ./bench/redirect/ || failed redirect
section "start-up: subenv run vs unshare vs bwrap"
bash bench/startup.sh || failed startup
section "file work: native vs go-fuse loopback vs herd"
bash bench/files.sh || failed files
if [ -f bench/net.sh ]; then
	section "network: herd-net vs loopback, slirp4netns, pasta"
	bash bench/net.sh || failed net
	# Again with cubic when the machine's default is another (BBR's pacing
	# caps loopback itself: see bench/net.sh). Root only: it sets the
	# host's default for the run.
	if [ "$(id -u)" = 0 ] && [ "$(cat /proc/sys/net/ipv4/tcp_congestion_control)" != cubic ] &&
		grep -qw cubic /proc/sys/net/ipv4/tcp_available_congestion_control; then
		section "network, TCP congestion control cubic"
		NET_BENCH_CC=cubic bash bench/net.sh || failed "net (cubic)"
	fi
fi
if [ -f bench/translators.sh ]; then
	section "translators"
	# Its own work dir, so that make bench does not trip over a
	# bench/translators.sh someone runs by hand (its mounts are fixed names).
	BENCH_DIR=${TRANSLATORS_BENCH_DIR:-/var/tmp/herd-bench-make-translators-$(id -u)} bash bench/translators.sh || failed translators
fi
exit $status
