#!/bin/bash
# File work inside a subenvironment vs natively vs go-fuse's own loopback
# example (a FUSE filesystem with no protocol hop) on the same tree.
# herd is measured twice: as subenv runs by default (its fs server, herd-fs
# run from the subenv binary, a process of its own reached over the
# protocol) and with --fs herd-fs (the same server named as any --fs
# program is).
# Prints a markdown table of seconds (best of $RUNS interleaved runs) and
# ratios.
#
#   bench/files.sh            (root or a plain user; needs /dev/fuse)
#   FILES=20000 SIZE_MB=1024 RUNS=3 SEQ_RUNS=5 bench/files.sh
#
# Everything lives under /var/tmp: /tmp inside a subenvironment starts empty.
set -euo pipefail
cd "$(dirname "$0")/.."
FILES=${FILES:-20000}
SIZE_MB=${SIZE_MB:-1024}
RUNS=${RUNS:-3}
# The 1 GiB rows get more runs: about one disk write in three is 3x slow
# here, whichever path writes (bench/fileops).
SEQ_RUNS=${SEQ_RUNS:-5}
base=${BENCH_DIR:-/var/tmp/herd-bench-$(id -u)}
bin=$base/bin
loop_pid=

cleanup() {
	local m
	for m in "$base"/mnt-loopback.*; do
		[ -d "$m" ] || continue
		if mountpoint -q "$m"; then fusermount3 -u "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; fi
		rmdir "$m" 2>/dev/null || true
	done
	if [ -n "$loop_pid" ]; then kill "$loop_pid" 2>/dev/null || true; wait "$loop_pid" 2>/dev/null || true; fi
	rm -f "$base/tree/out"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$bin"
chmod 755 "$base" "$bin"
CGO_ENABLED=0 go build -o "$bin/" ./cmd/subenv ./cmd/herd-fs ./bench/fileops
go build -o "$bin/loopback" github.com/hanwen/go-fuse/v2/example/loopback

if [ ! -e "$base/tree/.done-$FILES-$SIZE_MB" ]; then
	echo "# setting up $FILES files, a source tree and a ${SIZE_MB} MiB file under $base/tree" >&2
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
	touch "$base/tree/.done-$FILES-$SIZE_MB"
fi

# The subenvironments get no network (--net none): only file work is timed,
# and a net server would only add noise.
sub=("$bin/subenv" run --net none --)
ext=("$bin/subenv" run --net none --fs "$bin/herd-fs" --fs-arg=--hide-tmp --)

# best: the best of the lines on stdin (seconds, one number per pass),
# field by field: "cold warm"; FAILED if any run failed.
best() {
	awk '$1 == "FAILED" {bad = 1} {for (i = 1; i <= NF; i++) if (NR == 1 || $i < b[i]) b[i] = $i; if (NF > n) n = NF}
		END {if (bad || NR == 0) {print "FAILED FAILED"; exit} if (n == 1) b[2] = b[1]; printf "%s %s\n", b[1], b[2]}'
}
run_native() { "$bin/fileops" "$@"; }
# The loopback is mounted afresh for each run, as a subenvironment is, so
# that its first pass is as cold as herd's.
run_loop() {
	local m rc=0
	m=$(mktemp -d "$base/mnt-loopback.XXXXXX")
	"$bin/loopback" -q "$m" "$base/tree" &
	loop_pid=$!
	for _ in $(seq 200); do mountpoint -q "$m" && break; sleep 0.05; done
	if mountpoint -q "$m"; then
		"$bin/fileops" "${@/#$base\/tree/$m}" || rc=$?
		fusermount3 -u "$m" || umount "$m" || rc=1
	else
		echo "files.sh: go-fuse loopback did not mount on $m" >&2
		rc=1
	fi
	kill "$loop_pid" 2>/dev/null
	wait "$loop_pid" 2>/dev/null
	loop_pid=
	rmdir "$m"
	return $rc
}
run_herd() { "${sub[@]}" "$bin/fileops" "$@"; }
run_ext() { "${ext[@]}" "$bin/fileops" "$@"; }

status=0
num() { [[ $1 =~ ^[0-9]+(\.[0-9]+)?$ ]]; }
ratio() { if num "$1" && num "$2"; then awk "BEGIN{printf \"%.2f\", $1 / $2}"; else echo -; fi; }
names=(); cold=(); warm=()
measure() { # NAME OP PATH [ARGS]: fills cold[] and warm[] with "native loopback herd ext"
	local name=$1 op=$2 p=$3 r i c="" w="" x y out
	shift 3
	local passes=2
	[ "$op" = seqwrite ] && passes=1 # the file is removed after each pass
	local runners=(run_native run_loop run_herd run_ext) rounds=$RUNS
	case $op in seqread | seqwrite) rounds=$SEQ_RUNS ;; esac
	local -A runs=()
	# Rounds interleave the four, so that a slow spell of the machine (the
	# disk flushing the last run's writes, say) falls on all of them alike.
	for ((i = 0; i < rounds; i++)); do
		for r in "${runners[@]}"; do
			out=$($r --op "$op" --passes $passes "$p" "$@") || { echo "files.sh: failed: $r --op $op $p" >&2; out=FAILED; }
			runs[$r]+="$out"$'\n'
		done
	done
	for r in "${runners[@]}"; do
		read -r x y < <(printf '%s' "${runs[$r]}" | best)
		num "$x" && num "$y" || status=1
		c+="${x:-FAILED} "; w+="${y:-FAILED} "
	done
	names+=("$name"); cold+=("$c"); warm+=("$w")
}
table() { # TITLE ARRAYNAME
	local -n vals=$2
	local i n l h e
	echo "$1"
	printf '| %-10s | %8s | %8s | %8s | %8s | %11s | %10s | %13s | %12s |\n' work native loopback herd herd-ext \
		"herd/native" "ext/native" "loopback/herd" "loopback/ext"
	printf '|%s|%s|%s|%s|%s|%s|%s|%s|%s|\n' ------------ ---------- ---------- ---------- ---------- ------------- ------------ --------------- --------------
	for i in "${!names[@]}"; do
		read -r n l h e <<<"${vals[$i]}"
		printf '| %-10s | %8s | %8s | %8s | %8s | %11s | %10s | %13s | %12s |\n' "${names[$i]}" "$n" "$l" "$h" "$e" \
			"$(ratio "$h" "$n")" "$(ratio "$e" "$n")" "$(ratio "$l" "$h")" "$(ratio "$l" "$e")"
	done
	echo
}
measure find find "$base/tree/files"
measure stat stat "$base/tree/files"
measure cat cat "$base/tree/files"
measure openclose openclose "$base/tree/files"
measure "tar c src" tar "$base/tree/src"
measure "seq read" seqread "$base/tree/big"
measure "seq write" seqwrite "$base/tree/out" --size $((SIZE_MB << 20))
table "warm: second pass in the same process (kernel caches filled by the first)" warm
table "cold: first pass (a fresh subenvironment; a fresh loopback mount)" cold
echo "seconds, best of $RUNS runs ($SEQ_RUNS for seq read/write); $FILES files in $((FILES / 100)) dirs; ${SIZE_MB} MiB for seq read/write (one pass: cold = warm);"
echo "native = $(df --output=fstype "$base" | tail -1) under $base; loopback = go-fuse v2 example/loopback (1 s timeouts);"
echo "herd = subenv run --net none (its default fs server, a process of its own over proto); herd-ext = subenv run --net none --fs herd-fs;"
echo "in herd the write lands in the copy-on-write layer; loopback/herd >= 1 means herd is at least as fast as loopback."
exit $status
