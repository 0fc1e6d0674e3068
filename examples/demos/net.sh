#!/bin/sh
# about: the network as a server: nat by default, a lan between two subenvironments, a published port
#
# The Hurd's pfinet is a TCP/IP stack in a user process. herd's is herd-net
# (gVisor's netstack): each subenvironment gets eth0, whose packets go to a
# net server of its own (nat, the default), or to one shared by every
# subenvironment that names the same lan. No root, no host configuration.
DEMO=net
. "$(dirname "$0")/lib/common.sh"
need subenv herd-net busybox

demo_tmpdir
lan=demo$$
port=$((20000 + $$ % 12000)) # below the kernel's ephemeral ports (32768-)
mkdir "$work/www" && echo "hello from a subenvironment" >"$work/www/index.html" || fail "cannot write $work/www"

say "By default a subenvironment has eth0 (10.0.2.15), served by its own net"
say "server, and a resolv.conf naming the server's DNS forwarder."
check_contains "inet 10.0.2.15/24" subenv run -- busybox ip -4 -o addr show eth0
check_contains "nameserver 10.0.2.3" subenv run -- cat /etc/resolv.conf

say "A web server in a subenvironment on lan '$lan' (the first member gets"
say "10.0.3.15); --publish makes its port 80 reachable at the host's"
say "127.0.0.1:$port."
start_bg "$work/server.out" subenv run --net "lan:$lan" --publish "$port:80" -- \
	busybox httpd -f -p 80 -h "$work/www"
wait_for 60 "the web server" busybox wget -q -O /dev/null "http://127.0.0.1:$port/index.html"

say "A second subenvironment on the same lan fetches the page from the first:"
check_output "hello from a subenvironment" \
	subenv run --net "lan:$lan" -- busybox wget -q -O - http://10.0.3.15/index.html

say "The host reaches it through the published port:"
check_output "hello from a subenvironment" busybox wget -q -O - "http://127.0.0.1:$port/index.html"

say "A subenvironment with the default network (nat) reaches the host's"
say "127.0.0.1 at 10.0.2.2, so the published port too:"
check_output "hello from a subenvironment" \
	subenv run -- busybox wget -q -O - "http://10.0.2.2:$port/index.html"

say "A subenvironment on another lan is in another world: 10.0.3.15 there"
say "is itself, and nothing listens."
check_fails subenv run --net "lan:other$$" -- timeout 10 busybox wget -q -O - http://10.0.3.15/index.html

say "With --net none there is loopback only:"
check_output "lo" subenv run --net none -- ls /sys/class/net

passed
