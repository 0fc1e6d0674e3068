#!/bin/sh
# about: a translator on a node: active and passive, showtrans, fsysopts
#
# The Hurd's first lesson: any node can be made to show whatever a program
# (a translator) serves. Here the program is `hello`, whose node becomes a
# file that says hello.
DEMO=hello
. "$(dirname "$0")/lib/common.sh"
need settrans showtrans fsysopts hello subenv

demo_tmpdir
cd "$work"

say "An active translator: settrans -a starts 'hello' and attaches it to the node"
say "greeting (-c creates the node). On the host that is a FUSE mount."
run settrans -a -c "$work/greeting" hello
at_exit "settrans -g '$work/greeting'"
check_output "Hello, world!" cat greeting
show "the file is whatever the translator says"

say "showtrans -a names the translator running on the node:"
check_contains hello showtrans -a greeting

say "fsysopts talks to the running translator: it shows its options, and"
say "changes them while it runs: cat shows the new text."
run fsysopts greeting
run fsysopts greeting --contents="Hello, herd!
"
# The translator tells the kernel to drop its cached copy; that message
# travels through the FUSE bridge on its own, so give it a moment to land.
wait_for 10 "the new contents" sh -c '[ "$(cat greeting)" = "Hello, herd!" ]'
check_output "Hello, herd!" cat greeting

say "settrans -g makes the translator go away: the node is a plain (empty)"
say "file again."
run settrans -g greeting
check_output "" cat greeting
check_fails showtrans -a greeting

say "A passive translator is only a record on the node: the command line to"
say "run. Nothing runs yet; showtrans shows the record."
run settrans -p greeting hello --contents="Hello from a passive translator!
"
check_contains hello showtrans greeting
show "on the host the record is inert: cat still shows the plain file"
check_output "" cat greeting

say "Wherever herd serves this tree (here: a subenvironment, whose root is"
say "served by herd's fs server), the first lookup of the node starts the"
say "translator and the reader sees what it serves."
check_output "Hello from a passive translator!" subenv run -- cat "$work/greeting"

say "Clearing the record (settrans with no translator) makes it a plain file everywhere."
run settrans greeting
check_fails showtrans greeting
check_output "" subenv run -- cat "$work/greeting"

passed
