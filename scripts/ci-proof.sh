#!/usr/bin/env bash
# The stability proof of issue 11: .ci/run N times in a row (default 5),
# each on a fresh clone of this repository's HEAD, each with a CPU burner
# on both cores beside it (stress-ng --cpu 2), so every run is also a run
# of the e2e package under a burner. Stops at the first red run. As root.
# Prints one line a run; the logs stay in $OUT (default /tmp/ci-proof).
set -uo pipefail
n=${1:-5}
repo=$(cd "$(dirname "$0")/.." && pwd)
commit=$(git -C "$repo" rev-parse HEAD)
out=${OUT:-/tmp/ci-proof}
mkdir -p "$out"
command -v stress-ng >/dev/null || { apt-get update -qq && apt-get install -y -qq stress-ng >/dev/null; }
for i in $(seq 1 "$n"); do
	d=$(mktemp -d)
	git clone -q "$repo" "$d/wiremesh" && git -C "$d/wiremesh" checkout -q "$commit" || exit 1
	stress-ng --cpu 2 --timeout 2h >/dev/null 2>&1 &
	burner=$!
	start=$(date +%s)
	(cd "$d/wiremesh" && env -u CI ./.ci/run) >"$out/run-$i.log" 2>&1
	rc=$?
	kill "$burner"; wait "$burner" 2>/dev/null
	rm -rf "$d"
	echo "run $i of $n, commit $commit: rc=$rc in $(($(date +%s) - start)) s ($out/run-$i.log)"
	[ "$rc" -eq 0 ] || exit 1
done
