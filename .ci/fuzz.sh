#!/bin/bash
# Runs every Fuzz* target in the module for a bounded budget each, so CI
# exercises the decoders beyond their seed corpus.
#
# The budget is a count of executions (default 100000x), not a duration: with
# a duration, Go 1.26's fuzz coordinator can report a bare "context deadline
# exceeded" failure when -fuzztime expires while a worker is mid-call
# (golang/go#75804, fixed in Go 1.27), which fails CI without any finding.
# A count has no deadline to race; -timeout still bounds a stuck target.
set -euo pipefail
fuzztime=${1:-100000x}
cd "$(dirname "$0")/.."
found=0
for dir in $(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do
	for f in $(grep -h '^func Fuzz' "$dir"/*_test.go | sed 's/^func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do
		found=1
		echo "fuzz: $dir $f ($fuzztime)"
		go test -run '^$' -fuzz "^$f\$" -fuzztime "$fuzztime" -timeout 5m "$dir"
	done
done
if [ "$found" = 0 ]; then
	echo "fuzz: no fuzz targets found" >&2
	exit 1
fi
