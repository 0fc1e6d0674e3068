#!/bin/bash
# File work inside a subenvironment vs natively vs go-fuse's own loopback
# example (a FUSE filesystem with no protocol hop) on the same tree.
# Prints a table of seconds (best of $RUNS warm runs) and ratios.
#
#   bench/files.sh            (root or a plain user; needs /dev/fuse)
#   FILES=20000 SIZE_MB=1024 RUNS=3 bench/files.sh
set -euo pipefail
cd "$(dirname "$0")/.."
FILES=${FILES:-20000}
SIZE_MB=${SIZE_MB:-1024}
RUNS=${RUNS:-3}
base=${BENCH_DIR:-/var/tmp/herd-bench-$(id -u)}
mnt=$base/mnt
bin=$base/bin

cleanup() {
	fusermount3 -u "$mnt" 2>/dev/null || umount "$mnt" 2>/dev/null || true
	[ -n "${loop_pid:-}" ] && kill "$loop_pid" 2>/dev/null || true
	rm -rf "$base/out-native" "$base/out-subenv" "$base/tree/out-loopback"
}
trap cleanup EXIT

mkdir -p "$bin" "$mnt"
go build -o "$bin/" ./cmd/subenv ./bench/fileops
go build -o "$bin/loopback" github.com/hanwen/go-fuse/v2/example/loopback
PATH=$bin:$PATH

if [ ! -e "$base/tree/.done-$FILES" ]; then
	echo "setting up $FILES files, a source tree and a ${SIZE_MB} MiB file under $base/tree" >&2
	rm -rf "$base/tree"
	mkdir -p "$base/tree/files"
	per=100
	for ((d = 0; d < FILES / per; d++)); do
		mkdir "$base/tree/files/d$d"
		for ((f = 0; f < per; f++)); do
			printf '%*s' $(((d * per + f) % 4096 + 1)) x >"$base/tree/files/d$d/f$f"
		done
	done
	cp -a "$(go env GOROOT)/src" "$base/tree/src"
	dd if=/dev/urandom of="$base/tree/big" bs=1M count="$SIZE_MB" status=none
	touch "$base/tree/.done-$FILES"
fi

loopback -q "$mnt" "$base/tree" &
loop_pid=$!
for _ in $(seq 100); do mountpoint -q "$mnt" && break; sleep 0.05; done
mountpoint -q "$mnt" || { echo "files.sh: go-fuse loopback did not mount" >&2; exit 1; }

# best DIR OP ARG...: the best of $RUNS runs of a command that prints seconds.
best() {
	local b="" t
	for ((i = 0; i < RUNS; i++)); do
		t=$("$@")
		if [ -z "$b" ] || awk "BEGIN{exit !($t < $b)}"; then b=$t; fi
	done
	echo "$b"
}
native() { fileops -op "$1" "$2"; }
inloop() { fileops -op "$1" "${2/#$base\/tree/$mnt}"; }
insub() { subenv run -- "$bin/fileops" -op "$1" "$2"; }
tar_native() { local s e; s=$(date +%s.%N); tar cf - -C "$base/tree/src" . | cat >/dev/null; e=$(date +%s.%N); awk "BEGIN{printf \"%.4f\n\", $e - $s}"; }
tar_loop() { local s e; s=$(date +%s.%N); tar cf - -C "$mnt/src" . | cat >/dev/null; e=$(date +%s.%N); awk "BEGIN{printf \"%.4f\n\", $e - $s}"; }
tar_sub() { subenv run -- sh -c 's=$(date +%s.%N); tar cf - -C "$1" . | cat >/dev/null; e=$(date +%s.%N); awk "BEGIN{printf \"%.4f\n\", $e - $s}"' sh "$base/tree/src"; }

printf '%-14s %10s %10s %10s %14s %14s\n' work native loopback herd "herd/native" "loopback/herd"
row() {
	local name=$1 n=$2 l=$3 h=$4
	printf '%-14s %10s %10s %10s %14s %14s\n' "$name" "$n" "$l" "$h" \
		"$(awk "BEGIN{printf \"%.2fx\", $h / $n}")" "$(awk "BEGIN{printf \"%.2f\", $l / $h}")"
}
for op in find stat cat openclose; do
	row "$op" "$(best native $op "$base/tree/files")" "$(best inloop $op "$base/tree/files")" "$(best insub $op "$base/tree/files")"
done
row "tar c src" "$(best tar_native)" "$(best tar_loop)" "$(best tar_sub)"
row "seq read" "$(best native seqread "$base/tree/big")" "$(best inloop seqread "$base/tree/big")" "$(best insub seqread "$base/tree/big")"
row "seq write" "$(best fileops -op seqwrite -size $((SIZE_MB << 20)) "$base/out-native")" \
	"$(best fileops -op seqwrite -size $((SIZE_MB << 20)) "$mnt/out-loopback")" \
	"$(best subenv run -- "$bin/fileops" -op seqwrite -size $((SIZE_MB << 20)) "$base/out-subenv")"
echo "(seconds, best of $RUNS warm runs; loopback/herd >= 1 means herd is at least as fast as go-fuse's loopback)"
