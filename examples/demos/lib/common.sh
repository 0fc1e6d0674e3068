# common.sh: what the demos share. Sourced by each demo, not run by itself.
#
# A demo reads as a tutorial: `say` tells what comes next and what you should
# see, `run` shows a command and runs it. Any command that fails ends the demo
# with the command printed, and every mount and process the demo started is
# cleaned up on the way out. The last line of a demo that worked is
# "DEMO NAME: PASSED". POSIX sh and busybox applets only: the demos run on
# the live ISO as they run on a build machine.
#
# Set DEMO=name before sourcing.

set -eu
export PATH="$PATH:/usr/local/bin:/usr/sbin:/sbin"

_cleanup=""
_passed=0
_failed=

# say TEXT: narration; consecutive lines make one paragraph.
_said=0
say() {
	[ $_said = 1 ] || echo
	_said=1
	printf '# %s\n' "$*"
}

# _cmd ARGS...: print a command as you would type it, quoting where needed.
_cmd() {
	_said=0
	printf '$'
	for a in "$@"; do
		case $a in
		"" | *[!A-Za-z0-9_./=:,+@%^-]*) printf " '%s'" "$(printf '%s' "$a" | sed "s/'/'\\\\''/g")" ;;
		*) printf ' %s' "$a" ;;
		esac
	done
	echo
}

# show TEXT: a remark on what the last command printed.
show() {
	_said=0
	printf '  (%s)\n' "$*"
}

# fail TEXT: end the demo.
fail() {
	_failed=1
	# What a background server (start_bg) said explains most failures.
	if [ -n "${_out:-}" ] && [ -s "$_out" ]; then
		printf '\n--- %s ---\n' "$(basename "$_out")" >&2
		tail -n 20 "$_out" >&2
	fi
	printf '\nDEMO %s: FAILED: %s\n' "$DEMO" "$*" >&2
	exit 1
}

# run CMD ARGS...: show the command, run it, end the demo if it fails.
run() {
	_cmd "$@"
	"$@" || fail "command failed (exit status $?): $*"
}

# run_input CMD ARGS... <<EOF: show the command and the lines it is fed on
# stdin (as if typed into it), run it, end the demo if it fails.
run_input() {
	_input=$(cat)
	_cmd "$@"
	printf '%s\n' "$_input" | sed 's/^/  > /'
	printf '%s\n' "$_input" | "$@" || fail "command failed (exit status $?): $*"
}

# start_bg OUT CMD ARGS...: show the command and start it in the background
# with its output in the file OUT; it is stopped when the demo ends. $bg is
# its pid.
start_bg() {
	_out=$1
	shift
	_cmd "$@" | sed "s|\$| >$(basename "$_out") 2>\&1 \&|"
	_said=0
	"$@" >"$_out" 2>&1 &
	bg=$!
	at_exit "kill $bg"
}

# run_quiet CMD ARGS...: run without showing the command (setup steps).
run_quiet() {
	"$@" || fail "command failed (exit status $?): $*"
}

# _capture CMD ARGS...: show and run the command and its output, kept in $got.
_capture() {
	_cmd "$@"
	got=$("$@" 2>&1) || fail "command failed: $*
$got"
	printf '%s\n' "$got"
}

# check_output WANT CMD ARGS...: show and run the command; its output must be WANT.
check_output() {
	want=$1
	shift
	_capture "$@"
	[ "$got" = "$want" ] || fail "$* printed
  $got
but the demo expected
  $want"
}

# check_contains WANT CMD ARGS...: the command's output must contain WANT.
check_contains() {
	want=$1
	shift
	_capture "$@"
	case $got in *"$want"*) ;; *) fail "the output of '$*' does not contain '$want'" ;; esac
}

# check_fails CMD ARGS...: show the command; it must fail (its error is shown).
check_fails() {
	_cmd "$@"
	if "$@"; then
		fail "'$*' succeeded, but the demo expected it to fail"
	fi
	show "it failed, as it should"
}

# wait_for SECONDS TEXT CMD ARGS...: poll until the command succeeds.
wait_for() {
	limit=$1 what=$2
	shift 2
	i=0
	while ! "$@" >/dev/null 2>&1; do
		i=$((i + 1))
		[ $i -le $((limit * 10)) ] || fail "timed out after $limit s waiting for $what"
		sleep 0.1
	done
}

# need PROG...: the programs the demo uses must be on PATH.
need() {
	for p in "$@"; do
		command -v "$p" >/dev/null 2>&1 || fail "$p not found on PATH (make build puts herd's programs in ./bin)"
	done
}

# at_exit CMD: run CMD (a string for eval) when the demo ends, last added first.
at_exit() {
	_cleanup="$1
$_cleanup"
}

# mounted DIR: whether DIR is a mount point.
mounted() {
	d=$(cd "$1" 2>/dev/null && pwd -P) || return 1
	awk -v d="$d" '$5 == d { found = 1 } END { exit !found }' /proc/self/mountinfo
}

# demo_tmpdir: make a scratch directory, removed at exit, and set $work to it.
# It is under /var/tmp, not /tmp: a subenvironment starts with an empty /tmp
# of its own, and the demos show the same files inside and out.
demo_tmpdir() {
	work=$(mktemp -d "${HERD_DEMO_TMP:-/var/tmp}/herd-demo-$DEMO.XXXXXX") || fail "mktemp failed"
	chmod 0755 "$work"
	at_exit "rm -rf '$work'"
}

passed() {
	_passed=1
	echo
	echo "DEMO $DEMO: PASSED"
}

_on_exit() {
	st=$?
	set +e
	trap - EXIT INT TERM HUP PIPE
	# Clean up without letting a failing step stop the rest.
	printf '%s\n' "$_cleanup" | while IFS= read -r c; do
		if [ -n "$c" ]; then eval "$c" >/dev/null 2>&1; fi
	done
	if [ $_passed != 1 ] && [ -z "$_failed" ]; then
		# set -e stopped the demo on a command not run through `run`.
		echo "DEMO $DEMO: FAILED (a step exited with status $st before the demo finished)" >&2
		[ $st != 0 ] || st=1
	fi
	exit $st
}
trap _on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
trap 'exit 141' PIPE

# start_ftpd: demo-ftpd (anonymous, loopback only) serving ftproot, with
# ftproot/pub/README; sets $port.
start_ftpd() {
	run_quiet mkdir -p ftproot/pub
	echo "Welcome to the demo FTP server." >ftproot/pub/README
	start_bg "$work/ftpd.log" demo-ftpd --listen 127.0.0.1:0 --ready-file ftpd.addr ftproot
	wait_for 30 "the FTP server to listen" test -s "$work/ftpd.addr"
	port=$(sed 's/.*://' "$work/ftpd.addr")
	show "demo-ftpd listens on 127.0.0.1:$port"
}
