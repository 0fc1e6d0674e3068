#!/bin/sh
# about: tarfs: browse and edit a tarball as a directory
#
# The Hurd's tarfs: a translator that serves a tar archive as a directory
# tree you can read and write; the changes go back into the archive.
DEMO=archive
. "$(dirname "$0")/lib/common.sh"
need settrans showtrans tarfs subenv tar

demo_tmpdir
cd "$work"

say "A small project, packed into a tarball (and the tree removed):"
run_quiet mkdir -p project/src
echo "# project" >project/README
printf 'int main(void) { return 0; }\n' >project/src/main.c
run tar -cf project.tar project
run_quiet rm -r project
run tar -tf project.tar

say "settrans -a attaches tarfs to a directory node: the archive's contents"
say "appear there, to ls, cat and every other program."
run settrans -a -c browse tarfs "$work/project.tar"
at_exit "settrans -g '$work/browse'"
check_contains "main.c" ls -R browse
check_output "# project" cat browse/project/README

say "Edit through the directory: append to a file, create a new one."
run_input sh -s <<EOF
echo "edited through tarfs" >> browse/project/README
echo "version 1" > browse/project/NEWS
EOF
run ls browse/project

say "When the translator goes away (settrans -g) it writes the archive back:"
say "tar itself now lists NEWS and shows the edited README."
run settrans -g browse
check_contains "project/NEWS" tar -tf project.tar
check_output "# project
edited through tarfs" tar -xOf project.tar project/README

say "The Hurd's way: a passive tarfs on the tarball itself. Where herd serves"
say "the tree (a subenvironment; --rw writes through to the host), the file"
say "project.tar is looked up as a directory, started on first use."
run settrans -p project.tar tarfs
check_contains tarfs showtrans project.tar
run_input subenv run --rw -- sh -s <<EOF
set -e
cd $work
ls project.tar/project
cat project.tar/project/NEWS
echo "version 2, written inside a subenvironment" >> project.tar/project/NEWS
EOF

say "Back on the host, tar sees the subenvironment's write in the archive:"
check_output "version 1
version 2, written inside a subenvironment" tar -xOf project.tar project/NEWS
run settrans project.tar

passed
