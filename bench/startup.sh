#!/bin/bash
# Start-up of an isolated /bin/true: subenv run against unshare and bwrap
# (shared/ANCHORS.md), interleaved rounds, medians in ms, ratio to bwrap.
#   ROUNDS=N (default 200)   AS_USER=NAME (run everything as that user; root only)
set -uo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-200}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"
# Built from this tree (not ./bin, which may be older), static as shipped.
CGO_ENABLED=0 go build -o "$tmp/" ./cmd/subenv ./cmd/herd-fs ./cmd/herd-net || exit 1
# subenv starts herd-net (the default --net nat) from PATH.
export PATH=$tmp:$PATH
subenv=$tmp/subenv
herdfs=$tmp/herd-fs

# subenv's fs server is herd-fs, a process of its own, in every row: started
# from the subenv binary by default, named with --fs (from PATH) in subenv-ext.
names=(true unshare bwrap subenv subenv-nonet subenv-ext)
cmds=(
	"/bin/true"
	"unshare -Urmnp --fork /bin/true"
	"bwrap --unshare-all --ro-bind / / --dev /dev --proc /proc /bin/true"
	"$subenv run -- /bin/true"
	"$subenv run --net none -- /bin/true"
	"$subenv run --fs $herdfs --fs-arg=--hide-tmp -- /bin/true"
)

# The timing loop runs in one bash (EPOCHREALTIME, no fork per reading),
# optionally as another user, and prints "name ms" lines.
cat > "$tmp/loop.sh" <<'LOOP'
rounds=$1; shift
n=$(( $# / 2 ))
names=("${@:1:$n}"); cmds=("${@:$((n+1))}")
cd /
for ((r = 0; r < rounds; r++)); do
	for ((i = 0; i < n; i++)); do
		t0=$EPOCHREALTIME
		${cmds[$i]} </dev/null >/dev/null 2>&1 || echo "${names[$i]} FAILED"
		t1=$EPOCHREALTIME
		echo "${names[$i]} $(( (${t1/./} - ${t0/./}) ))"
	done
done
LOOP
available=()
status=0
for i in "${!names[@]}"; do
	if timeout 60 ${cmds[$i]} </dev/null >/dev/null 2>&1; then
		available+=("$i")
	else
		echo "# ${names[$i]}: not available here (${cmds[$i]})"
		# herd's own rows must run; a missing peer is only noted.
		case ${names[$i]} in subenv*) status=1 ;; esac
	fi
done
run_names=(); run_cmds=()
for i in "${available[@]}"; do run_names+=("${names[$i]}"); run_cmds+=("${cmds[$i]}"); done
if [ -n "${AS_USER:-}" ]; then
	chmod 755 "$tmp/loop.sh"
	runuser -u "$AS_USER" -- bash "$tmp/loop.sh" "$ROUNDS" "${run_names[@]}" "${run_cmds[@]}" > "$tmp/times"
else
	bash "$tmp/loop.sh" "$ROUNDS" "${run_names[@]}" "${run_cmds[@]}" > "$tmp/times"
fi
if grep -q FAILED "$tmp/times"; then
	grep FAILED "$tmp/times" | sort | uniq -c
fi
median() { grep "^$1 [0-9]" "$tmp/times" | awk '{print $2}' | sort -n | awk '{a[NR]=$1} END {if (NR==0) print 0; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
bw=$(median bwrap)
echo "start-up of /bin/true, median of $ROUNDS interleaved rounds, as $(id -un ${AS_USER:-})"
printf '| %-12s | %-68s | %9s | %14s |\n' name "command" "median ms" "ratio to bwrap"
printf '|%s|%s|%s|%s|\n' -------------- ---------------------------------------------------------------------- ----------- ----------------
for i in "${available[@]}"; do
	us=$(median "${names[$i]}")
	ratio=-
	[ "$bw" != 0 ] && ratio=$(awk -v a="$us" -v b="$bw" 'BEGIN{printf "%.2f", a/b}')
	printf '| %-12s | %-68s | %9.2f | %14s |\n' "${names[$i]}" "${cmds[$i]//$tmp\//}" "$(awk -v a="$us" 'BEGIN{print a/1000}')" "$ratio"
done
exit $status
