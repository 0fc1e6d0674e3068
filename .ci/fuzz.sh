#!/bin/bash
# Runs every Fuzz* target in the module for a bounded time each (default
# 15s), so CI exercises the decoders beyond their seed corpus.
set -euo pipefail
fuzztime=${1:-15s}
cd "$(dirname "$0")/.."
found=0
for dir in $(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do
	for f in $(grep -h '^func Fuzz' "$dir"/*_test.go | sed 's/^func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do
		found=1
		echo "fuzz: $dir $f ($fuzztime)"
		go test -run '^$' -fuzz "^$f\$" -fuzztime "$fuzztime" "$dir"
	done
done
if [ "$found" = 0 ]; then
	echo "fuzz: no fuzz targets found" >&2
	exit 1
fi
