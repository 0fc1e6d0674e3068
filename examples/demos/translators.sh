#!/bin/sh
# about: a tour of translators: hello, passive vs active, tarfs, hostmux+ftpfs
#
# The Hurd's idea in one sitting: a node in the file tree shows whatever a
# program (a translator) serves. An active translator is running now; a
# passive one is a record on the node, started when someone looks the node
# up. showtrans shows both, fsysopts talks to a running translator, and
# settrans -g sends it away. The other demos (hello, archive, hostmux) go
# deeper into each piece; this one ties them together.
DEMO=translators
. "$(dirname "$0")/lib/common.sh"
need settrans showtrans fsysopts hello tarfs hostmux ftpfs demo-ftpd subenv tar

demo_tmpdir
cd "$work"

say "1. An active translator. settrans -a starts 'hello' now and attaches it"
say "to the node greeting (-c creates it); on the host that is a FUSE mount."
run settrans -a -c greeting hello
at_exit "settrans -g '$work/greeting'"
check_output "Hello, world!" cat greeting
say "showtrans -a names the translator running on the node:"
check_contains hello showtrans -a greeting

say "fsysopts asks the running translator for its options, and changes them"
say "while it runs; the next cat shows the new text."
run fsysopts greeting
run fsysopts greeting --contents="Hello, translators!
"
# The translator's invalidation reaches the kernel on its own path through
# the FUSE bridge: wait until it has landed.
wait_for 10 "the new contents" sh -c '[ "$(cat greeting)" = "Hello, translators!" ]'
check_output "Hello, translators!" cat greeting

say "settrans -g makes it go away: greeting is a plain, empty file again."
run settrans -g greeting
check_output "" cat greeting
check_fails showtrans -a greeting

say "2. A passive translator is only a record on the node: a command line."
say "Inside a subenvironment (its tree served by herd's fs server) the first"
say "lookup of the node starts it: showtrans -p shows the record, cat starts it,"
say "showtrans -a shows it running. (It runs in the current directory; --net"
say "none: no network is needed.)"
check_output "hello
Hello, world!
hello" subenv run --net none -- sh -c "settrans -p -c passive hello
showtrans -p passive
cat passive
showtrans -a passive"
show "the subenvironment's writes were thrown away with it: nothing on the host"
check_fails test -e passive

say "3. tarfs serves a tarball as a directory you can read and write."
run_quiet mkdir -p project/src
echo "# project" >project/README
printf 'int main(void) { return 0; }\n' >project/src/main.c
run tar -cf project.tar project
run_quiet rm -r project
run settrans -a -c browse tarfs "$work/project.tar"
at_exit "settrans -g '$work/browse'"
check_contains tarfs showtrans -a browse
check_contains "main.c" ls -R browse
check_output "# project" cat browse/project/README
run_input sh -s <<EOF
echo "edited through tarfs" >> browse/project/README
EOF
say "When tarfs goes away it writes the archive back; tar itself reads the edit:"
run settrans -g browse
check_output "# project
edited through tarfs" tar -xOf project.tar project/README

say "4. hostmux + ftpfs: a directory in which each name is a host, served by"
say "ftpfs. The FTP server is demo-ftpd on this machine (anonymous, loopback)."
start_ftpd
run settrans -a -c "$work/ftp:" hostmux ftpfs "\${host}:$port/"
at_exit "settrans -g '$work/ftp:'"
check_contains "hostmux ftpfs" showtrans -a ftp:
check_output "Welcome to the demo FTP server." cat ftp:/localhost/pub/README
show "looking up ftp:/localhost started 'ftpfs localhost:$port/' on that node"
check_output "localhost" ls ftp:
run settrans -g "ftp:"
check_fails showtrans -a ftp:

passed
