#!/bin/bash
# bench/net.sh: the subenvironment's network against the host's loopback,
# slirp4netns and pasta, measured in one run on this machine.
#
#   TCP bulk (iperf3, Gbit/s): namespace -> host and host -> namespace
#   connection setup: sequential short HTTP requests per second, one
#   connection each (Go client, busybox httpd on the host's 127.0.0.1)
#
# Every figure is also given as a ratio to the host's loopback measured in
# the same run (shared machines are noisy: compare ratios, not absolutes).
# herd-net runs through nsrun (a user+net namespace attached by netattach,
# as `subenv run --net nat` does). Only loopback and namespace-internal
# addresses are contacted. Needs: iperf3, busybox, slirp4netns, passt
# (pasta), util-linux (unshare, nsenter). Peers that cannot run are "n/a".
#
#   NET_BENCH_SECONDS (default 5)   iperf3 duration per figure
#   NET_BENCH_CONNS   (default 1000) requests for the setup rate
#   NET_BENCH_USER    (default herdnet when root) user pasta runs as
#   NET_BENCH_CC      (default: the machine's) TCP congestion control for
#                     the run, e.g. cubic (root: sets the host's default,
#                     which new namespaces inherit, and puts it back after)
#
# The congestion control matters more than any peer: with BBR (this
# machine's default) every sender paces its packets with a timer, which
# caps the host's own loopback at about 22 Gbit/s here; with cubic (most
# distributions' default) loopback reaches about 72 and the peers' ratios
# change completely. The table says which one ran.
set -uo pipefail
cd "$(dirname "$0")/.."
T=${NET_BENCH_SECONDS:-5}
N=${NET_BENCH_CONNS:-1000}
# Not under /tmp: a subenvironment starts with an empty /tmp.
tmp=$(mktemp -d /var/tmp/herd-netbench.XXXXXX)
chmod 755 "$tmp"
pids=()
tunmode=""
ccfile=/proc/sys/net/ipv4/tcp_congestion_control
ccold=""
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	[ -n "$tunmode" ] && chmod "$tunmode" /dev/net/tun
	[ -n "$ccold" ] && echo "$ccold" >"$ccfile"
	wait 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
trap "exit 130" INT TERM # so that cleanup (which restores /dev/net/tun's mode) runs

for p in iperf3 busybox; do
	command -v $p >/dev/null || { echo "net.sh: $p is required (Debian package $p)" >&2; exit 1; }
done
if [ -n "${NET_BENCH_CC:-}" ] && [ "$NET_BENCH_CC" != "$(cat $ccfile)" ]; then
	old=$(cat $ccfile)
	echo "$NET_BENCH_CC" >"$ccfile" || { echo "net.sh: cannot set the congestion control to $NET_BENCH_CC (root is needed)" >&2; exit 1; }
	ccold=$old
fi
CGO_ENABLED=0 go build -o "$tmp/herd-net" ./cmd/herd-net || exit 1
CGO_ENABLED=0 go build -o "$tmp/nsrun" ./subenv/netattach/nstest/nsrun || exit 1

# freeport: a TCP port nobody listens on, below the kernel's ephemeral
# range (a port there may be some connection's local end: bind would fail).
eph=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null)
eph=${eph:-32768}
freeport() {
	local p
	while :; do
		p=$((10000 + RANDOM % (eph - 10000)))
		(exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null || { echo $p; return; }
	done
}
IP=$(freeport)
iperf3 -s -p "$IP" -B 127.0.0.1 >"$tmp/iperf.log" 2>&1 & pids+=($!)
mkdir -p "$tmp/www" && echo ok >"$tmp/www/index.html" && chmod -R a+rX "$tmp/www"
for _ in 1 2 3; do # another program may take the port first
	HP=$(freeport)
	busybox httpd -f -p "127.0.0.1:$HP" -h "$tmp/www" & hpid=$!
	for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$HP) 2>/dev/null && break; sleep 0.05; done
	kill -0 $hpid 2>/dev/null && break
done
pids+=($hpid)
# (not a probe connection: iperf3 takes any connection for a client)
for _ in $(seq 100); do grep -q "Server listening" "$tmp/iperf.log" && break; sleep 0.05; done

gbits() { awk '/receiver/ { for (i = 2; i <= NF; i++) if ($i ~ /bits\/sec/) v = $(i-1) } END { if (v == "") print "n/a"; else print v }'; }
rate() { awk '/requests in/ { v = $NF; sub("/s", "", v) } END { if (v == "") print "n/a"; else print v }'; }

# measure NAME PREFIX... : runs "PREFIX iperf3 ..." and "PREFIX nsrun get ...";
# GW is the host's loopback as seen from inside.
declare -A up down conns
measure() {
	local name=$1 gw=$2; shift 2
	up[$name]=$("$@" iperf3 -c "$gw" -p "$IP" -t "$T" -f g 2>&1 | gbits)
	down[$name]=$("$@" iperf3 -c "$gw" -p "$IP" -t "$T" -f g -R 2>&1 | gbits)
	conns[$name]=$("$@" "$tmp/nsrun" get "http://$gw:$HP/index.html" "$N" 2>&1 | rate)
}
order=()
row() { order+=("$1"); measure "$@"; }

row "host loopback" 127.0.0.1 env
row "herd-net, MTU 65520" 10.0.2.2 "$tmp/nsrun" --herd-net "$tmp/herd-net" --
row "herd-net, MTU 1500" 10.0.2.2 "$tmp/nsrun" --herd-net "$tmp/herd-net" --mtu 1500 --
# The whole subenvironment (nat is subenv run's default; herd-net is found
# next to subenv, in $tmp).
if CGO_ENABLED=0 go build -o "$tmp/subenv" ./cmd/subenv &&
	"$tmp/subenv" run --net nat -- true 2>/dev/null; then
	row "subenv run --net nat" 10.0.2.2 "$tmp/subenv" run --net nat --
	# --forward: the host's ports at 127.0.0.1 inside, two sockets spliced
	# (as pasta -T below).
	row "subenv run --forward (splice)" 127.0.0.1 "$tmp/subenv" run --net nat --forward "$IP" --forward "$HP" --
fi

# slirp4netns: a namespace held by sleep, slirp4netns attached from outside.
slirp() { # slirp MTU
	local mtu=$1
	command -v slirp4netns >/dev/null || return 1
	unshare --user --map-root-user --net --fork --kill-child sh -c 'echo $$ >"$0"; exec sleep 3600' "$tmp/ns.pid" & local holder=$!
	pids+=($holder)
	for _ in $(seq 100); do [ -s "$tmp/ns.pid" ] && break; sleep 0.05; done
	local nspid; nspid=$(cat "$tmp/ns.pid"); rm -f "$tmp/ns.pid"
	rm -f "$tmp/slirp.ready"
	slirp4netns --configure --mtu="$mtu" --ready-fd=3 "$nspid" tap0 3>"$tmp/slirp.ready" >/dev/null 2>&1 & local sl=$!
	pids+=($sl)
	for _ in $(seq 200); do [ -s "$tmp/slirp.ready" ] && break; sleep 0.05; done
	order+=("slirp4netns, MTU $mtu")
	measure "slirp4netns, MTU $mtu" 10.0.2.2 nsenter --preserve-credentials -U -n -t "$nspid"
	kill $sl "$nspid" $holder 2>/dev/null
	wait $sl $holder 2>/dev/null
}
slirp 65520
slirp 1500

# pasta: run as an unprivileged user (it refuses root); the gateway address
# inside is mapped to the host's loopback.
if command -v pasta >/dev/null; then
	asuser=()
	if [ "$(id -u)" = 0 ]; then
		u=${NET_BENCH_USER:-herdnet}
		id "$u" >/dev/null 2>&1 || useradd -M -s /bin/sh "$u"
		asuser=(setpriv --reuid="$u" --regid="$u" --clear-groups env HOME="$tmp")
		tunmode=$(stat -c %a /dev/net/tun)
		chmod 0666 /dev/net/tun
	fi
	gw=$("${asuser[@]}" pasta --config-net -- sh -c "ip route | awk '/^default/ {print \$3; exit}'" 2>/dev/null | tail -1)
	if [ -n "$gw" ]; then
		row "pasta (own stack, gateway)" "$gw" "${asuser[@]}" pasta --config-net --
	fi
	order+=("pasta -T (socket splice)")
	measure "pasta -T (socket splice)" 127.0.0.1 "${asuser[@]}" pasta --config-net -T "$IP,$HP" --
fi

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || b == "n/a" || b == 0) print "-"; else printf "%.2f", a / b }'; }
base="host loopback"
printf '\n%-30s | %-20s | %-20s | %-18s\n' "path" "ns -> host Gbit/s" "host -> ns Gbit/s" "connections/s"
printf '%s\n' "-------------------------------+----------------------+----------------------+-------------------"
for k in "${order[@]}"; do
	printf '%-30s | %8s  (%5s)     | %8s  (%5s)     | %7s  (%5s)\n' "$k" \
		"${up[$k]}" "$(ratio "${up[$k]}" "${up[$base]}")" \
		"${down[$k]}" "$(ratio "${down[$k]}" "${down[$base]}")" \
		"${conns[$k]}" "$(ratio "${conns[$k]}" "${conns[$base]}")"
done
echo "(ratios to the host loopback in this run; iperf3 ${T}s each, $N requests for the rate; TCP congestion control $(cat $ccfile))"
