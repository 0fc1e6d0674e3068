#!/bin/sh
# about: ftpfs behind hostmux: FTP servers as directories, one per host name
#
# The Hurd's ~/ftp: directory: hostmux is a directory in which looking up a
# host name starts a translator for that host, here ftpfs, which serves an
# FTP server's files as a directory tree you can read and write.
DEMO=hostmux
. "$(dirname "$0")/lib/common.sh"
need settrans showtrans hostmux ftpfs demo-ftpd

demo_tmpdir
cd "$work"

say "An FTP server on this machine (demo-ftpd, anonymous, loopback only)"
say "serving the directory ftproot:"
start_ftpd

say "settrans -a -c ftp: hostmux ftpfs '\${host}:$port/' makes ftp: a directory"
say "where every name is a host: looking up ftp:/localhost starts"
say "'ftpfs localhost:$port/' on that node."
run settrans -a -c "$work/ftp:" hostmux ftpfs "\${host}:$port/"
at_exit "settrans -g '$work/ftp:'"
check_contains "hostmux ftpfs" showtrans -a ftp:
run ls -l ftp:/localhost
check_output "Welcome to the demo FTP server." cat ftp:/localhost/pub/README

say "Writing works too: ftpfs sends the file back (STOR) when it is closed,"
say "and it lands in the FTP server's directory."
run_input sh -s <<EOF
echo "uploaded through ftpfs" > ftp:/localhost/pub/upload.txt
EOF
check_output "uploaded through ftpfs" cat ftproot/pub/upload.txt

say "ftp: itself lists the hosts looked up so far:"
check_output "localhost" ls ftp:

say "settrans -g stops hostmux and the ftpfs it started."
run settrans -g "ftp:"
check_fails showtrans -a ftp:

passed
