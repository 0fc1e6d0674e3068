#!/bin/bash
# tarfs on the Go toolchain's src tree (tarred by real tar) vs the extracted
# tree natively vs archivemount (Debian's libarchive FUSE filesystem, the
# peer: apt install archivemount). Workloads: mounting (building the index),
# find over the tree, cat of every file, tar cf - of the whole tree. Prints
# milliseconds ("first" = the first run after mounting, "warm" = best of
# $RUNS more, $AM_RUNS for archivemount) and ratios to native.
#
#   bench/translators.sh            (root, or a user who may mount FUSE)
#   RUNS=5 AM_RUNS=3 bench/translators.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
AM_RUNS=${AM_RUNS:-1} # archivemount reads the archive from its start for each file: minutes per run
base=${BENCH_DIR:-/var/tmp/herd-bench-translators-$(id -u)}
bin=$base/bin
pids=()

cleanup() {
	for m in "$base"/mnt-*; do
		[ -d "$m" ] || continue
		fusermount3 -u "$m" 2>/dev/null || umount "$m" 2>/dev/null || true
	done
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

mkdir -p "$bin"
go build -o "$bin/" ./cmd/tarfs
src=$(go env GOROOT)/src
if [ ! -e "$base/.done" ]; then
	echo "setting up $base/src.tar and its extraction" >&2
	rm -rf "$base/native"
	mkdir -p "$base/native"
	tar cf "$base/src.tar" -C "$(dirname "$src")" src
	tar xf "$base/src.tar" -C "$base/native"
	touch "$base/.done"
fi
have_am=1
if [ -n "${NO_ARCHIVEMOUNT:-}" ] || ! command -v archivemount >/dev/null; then have_am=0; fi

now() { date +%s%N; }
ms() { echo $((($2 - $1) / 1000000)); }

waitmount() {
	for _ in $(seq 6000); do
		grep -q " $1 " /proc/self/mountinfo && return 0
		sleep 0.01
	done
	echo "$1 never mounted" >&2
	return 1
}

# mount_fs NAME: mounts the archive on $base/mnt-NAME; MS is the time taken.
mount_fs() {
	local m=$base/mnt-$1 s e
	mkdir -p "$m"
	s=$(now)
	case $1 in
	tarfs)
		"$bin/tarfs" "$base/src.tar" --mount "$m" </dev/null >/dev/null &
		pids+=($!)
		waitmount "$m"
		;;
	archivemount)
		archivemount -f -o readonly "$base/src.tar" "$m" </dev/null >/dev/null &
		pids+=($!)
		waitmount "$m"
		;;
	esac
	e=$(now)
	MS=$(ms "$s" "$e")
}

umount_fs() {
	local m=$base/mnt-$1
	fusermount3 -u "$m" 2>/dev/null || umount "$m"
	wait "${pids[-1]}" || true
}

declare -A R OUT
# Errors are counted, not fatal: a peer may fail on some files.
work_find() { (find "$1" 2>/dev/null || true) | wc -l; }
work_cat() { (find "$1" -type f -exec cat {} + 2>/dev/null || true) | wc -c; }
work_tar() { (tar cf - -C "$1" . 2>/dev/null || true) | wc -c; }

# measure FS DIR: first and warm times of each workload on DIR.
measure() {
	local fs=$1 dir=$2 runs=$3 w s e best t
	echo "measuring $fs" >&2
	for w in find cat tar; do
		s=$(now); OUT[$fs,$w]=$("work_$w" "$dir"); e=$(now)
		R[$fs,$w,first]=$(ms "$s" "$e")
		best=
		for _ in $(seq "$runs"); do
			s=$(now); "work_$w" "$dir" >/dev/null; e=$(now)
			t=$(ms "$s" "$e")
			if [ -z "$best" ] || [ "$t" -lt "$best" ]; then best=$t; fi
		done
		R[$fs,$w,warm]=$best
	done
}

# Sanity: the three trees hold the same bytes.
R[native,mount,first]=0
measure native "$base/native/src" "$RUNS"
mount_fs tarfs
R[tarfs,mount,first]=$MS
n_native=$(work_find "$base/native/src")
n_tarfs=$(work_find "$base/mnt-tarfs/src")
[ "$n_native" = "$n_tarfs" ] || { echo "tarfs shows $n_tarfs names, native $n_native" >&2; exit 1; }
measure tarfs "$base/mnt-tarfs/src" "$RUNS"
umount_fs tarfs
fss="native tarfs"
if [ $have_am = 1 ]; then
	mount_fs archivemount
	R[archivemount,mount,first]=$MS
	measure archivemount "$base/mnt-archivemount/src" "$AM_RUNS"
	umount_fs archivemount
	fss="$fss archivemount"
else
	echo "archivemount left out (NO_ARCHIVEMOUNT set, or not installed: apt install archivemount)" >&2
fi

for fs in $fss; do
	for w in find cat; do
		if [ "${OUT[$fs,$w]}" != "${OUT[native,$w]}" ]; then
			echo "note: $fs: $w gives ${OUT[$fs,$w]} (names or bytes), native ${OUT[native,$w]}: it serves the tree wrongly" >&2
		fi
	done
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "-"; else printf "%.2f", a / b }'; }
printf '\ntarfs vs native vs archivemount: Go src tree (%s names, %s MiB tar), ms\n' "$n_native" $(($(stat -c %s "$base/src.tar") >> 20))
printf '%-14s' workload
for fs in $fss; do printf '%14s' "$fs"; done
printf '%14s' tarfs/native
if [ $have_am = 1 ]; then printf '%14s%16s' am/native tarfs/am; fi
printf '\n'
for row in "mount first" "find first" "find warm" "cat first" "cat warm" "tar first" "tar warm"; do
	set -- $row
	printf '%-14s' "$1 ($2)"
	for fs in $fss; do printf '%14s' "${R[$fs,$1,$2]}"; done
	printf '%14s' "$(ratio "${R[tarfs,$1,$2]}" "${R[native,$1,$2]}")"
	if [ $have_am = 1 ]; then
		printf '%14s%16s' "$(ratio "${R[archivemount,$1,$2]}" "${R[native,$1,$2]}")" "$(ratio "${R[tarfs,$1,$2]}" "${R[archivemount,$1,$2]}")"
	fi
	printf '\n'
done
