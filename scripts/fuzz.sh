#!/usr/bin/env bash
# Runs every native Go fuzz target in the module for the given -fuzztime
# each: a duration (30s) or a count of inputs (20000x).
# A failing input is saved under the package's testdata/fuzz/ by go test.
#
# `make test` gives a count. With a duration, Go 1.26's fuzzing coordinator
# can report "context deadline exceeded" at the deadline while a worker is
# still mid-input on a loaded machine (golang/go#75804, fixed in Go 1.27):
# a failure with no failing input. A count sets no deadline, so CI cannot
# hit it.
set -euo pipefail
fuzztime=${1:-10s}
cd "$(dirname "$0")/.."
for pkg in $(go list ./...); do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
		echo "fuzz $pkg $target ($fuzztime)"
		if ! out=$(go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg" 2>&1); then
			echo "$out"
			exit 1
		fi
		echo "$out" | tail -n 3
	done
done
