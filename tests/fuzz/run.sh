#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Builds the libFuzzer targets (clang, own build dir) and runs each for N seconds on its seed corpus; fails on any finding.
#
#   tests/fuzz/run.sh [SECONDS]        default 60 per target
#   FUZZ_BUILD_DIR=...                 default <repo>/build-fuzz
#   FUZZ_TARGETS="reply_fuzz"          default: all targets
#
# New inputs libFuzzer finds go to $FUZZ_BUILD_DIR/work/<target>/, crash, leak and timeout
# reproducers to $FUZZ_BUILD_DIR/artifacts/<target>/: never into the repo.  Reproduce one
# with: $FUZZ_BUILD_DIR/tests/fuzz/<target> <artifact>
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
seconds=${1:-60}
build=${FUZZ_BUILD_DIR:-$root/build-fuzz}
targets=${FUZZ_TARGETS:-"handshake_fuzz reply_fuzz"}

if ! command -v clang++ >/dev/null; then
  echo "tests/fuzz/run.sh: clang++ is needed (apt-get install clang)" >&2
  exit 1
fi
CC=clang CXX=clang++ cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DDUPLEXNBD_FUZZ=ON -DDUPLEXNBD_TESTS=OFF >/dev/null
# shellcheck disable=SC2086
nice cmake --build "$build" -j2 --target $targets

failed=0
for t in $targets; do
  work=$build/work/$t
  artifacts=$build/artifacts/$t
  mkdir -p "$work" "$artifacts"
  echo "== $t: ${seconds}s"
  # The first corpus directory receives new inputs; the repo's seeds are only read.
  if ! ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0} \
       UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
       "$build/tests/fuzz/$t" "$work" "$root/tests/fuzz/corpus/$t" \
         -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=131072 \
         -artifact_prefix="$artifacts/" -print_final_stats=1 >"$build/$t.log" 2>&1; then
    echo "!! $t found a problem; log: $build/$t.log, reproducers: $artifacts" >&2
    grep -E "^==[0-9]+==ERROR|^SUMMARY|runtime error|invariant broken|ALARM|deadly signal" "$build/$t.log" | head -20 >&2 || true
    failed=1
  else
    grep -E "^stat::number_of_executed_units|^stat::new_units_added|cov:" "$build/$t.log" | tail -3
  fi
done
exit "$failed"
