#!/bin/sh
# about: networks served by a user program: a lan between two subenvironments, a published port
#
# The Hurd's pfinet: the TCP/IP stack is a program anyone may run. Each
# subenvironment's network is served by herd-net (gVisor's netstack in a
# user process): subenvironments started with --net lan:NAME share one
# private network; --publish makes a server inside reachable from the host.
DEMO=net
. "$(dirname "$0")/lib/common.sh"
need subenv herd-net busybox timeout
# (busybox wget is bounded with timeout(1), not its -T: Debian's static
# busybox 1.35 crashes in wget -T when the connection is refused.)

demo_tmpdir
cd "$work"
lan=demo$$
mkdir www
echo "hello from a web server in a subenvironment" >www/index.html

say "Subenvironment A joins the lan '$lan' and runs a web server (busybox"
say "httpd) on port 80; once it answers, A prints its address on the lan."
cat >a.sh <<'EOF'
busybox httpd -f -p 80 -h www &
until timeout 10 busybox wget -q -O /dev/null http://127.0.0.1/ 2>/dev/null; do sleep 0.1; done
ip addr show eth0 | awk '/inet / { print "serving on", $2 }'
wait
EOF
run cat a.sh
start_bg "$work/a.out" subenv run --net "lan:$lan" -- sh a.sh
wait_for 60 "subenvironment A's web server" grep -q '^serving on ' "$work/a.out"
run cat a.out
ip=$(awk '/^serving on / { sub("/.*", "", $3); print $3 }' "$work/a.out")

say "Subenvironment B joins the same lan and fetches A's page ($ip) with wget."
check_output "hello from a web server in a subenvironment" \
	subenv run --net "lan:$lan" -- timeout 10 busybox wget -q -O - "http://$ip/"

say "--publish HOSTPORT:PORT: the net server (nat, the default mode) listens on the"
say "host's 127.0.0.1:HOSTPORT and forwards into the subenvironment. Here a web"
say "server inside, port 80, is fetched from the host."
hostport=$((20000 + $$ % 20000))
start_bg "$work/c.out" subenv run --net nat --publish "$hostport:80" -- busybox httpd -f -p 80 -h www
wait_for 60 "the published port" timeout 10 busybox wget -q -O /dev/null "http://127.0.0.1:$hostport/"
check_output "hello from a web server in a subenvironment" timeout 10 busybox wget -q -O - "http://127.0.0.1:$hostport/"

passed
