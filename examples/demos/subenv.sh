#!/bin/sh
# about: a shell in a subenvironment: its own fs server, copy-on-write, a custom server
#
# The Hurd's subhurd: a world whose servers are ordinary programs you chose.
# `subenv run` starts a shell whose root file tree is served by herd's fs
# server over FUSE: the host's / read-only underneath, your writes kept in a
# copy-on-write layer, gone when the subenvironment ends (or kept with --keep).
DEMO=subenv
. "$(dirname "$0")/lib/common.sh"
need subenv confguard

demo_tmpdir
keep=herd-demo-$$
keepdir=${XDG_DATA_HOME:-$HOME/.local/share}/herd/keep/$keep
at_exit "rm -rf '$keepdir'"
note=/etc/herd-demo-$$.txt

say "A shell in a subenvironment. Inside it is root in namespaces of its own,"
say "its root directory is a FUSE mount (fuse.herd) served by herd's fs server,"
say "and a file it writes into /etc lands in its copy-on-write layer."
run_input subenv run -- sh -s <<EOF
set -e
echo "inside: \$(id -un), pid \$\$, hostname \$(hostname)"
echo "written inside a subenvironment" > $note
cat $note
EOF
say "The root's file system type, as the kernel inside sees it:"
check_output "fuse.herd" subenv run -- awk '$5 == "/" { print $8 }' /proc/self/mountinfo

say "On the host nothing changed: the file does not exist here."
check_fails test -e "$note"
show "$note is not on the host"

say "With --keep NAME the copy-on-write layer outlives the subenvironment: a"
say "later run with the same NAME sees what an earlier one wrote."
run subenv run --keep "$keep" -- sh -c "echo 'kept between runs' > $note"
check_output "kept between runs" subenv run --keep "$keep" -- cat "$note"
check_fails test -e "$note"
show "still nothing on the host; the layer is in $keepdir"
check_output "kept between runs" cat "$keepdir$note"

say "A subenvironment's fs server is any program that speaks herd's protocol."
say "examples/confguard is one written as a user would: herd's fs server with"
say "every *.conf file made untouchable. Swap it in with --fs: writing"
say "/etc/x.conf is refused (Permission denied), other files are writable."
run_input subenv run --fs confguard -- sh -s <<EOF
if echo "port = 1" > /etc/herd-demo.conf; then echo "wrote a .conf file!"; exit 1; fi
echo "other files are fine" > $note
cat $note
EOF

passed
