#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Builds the libFuzzer targets (clang, own build dir) and runs each for N seconds on its seed corpus; fails on any finding.
#
#   tests/fuzz/run.sh [SECONDS]        default 60 per target
#   FUZZ_BUILD_DIR=...                 default <repo>/build-fuzz
#   FUZZ_TARGETS="reply_fuzz"          default: all targets
#   BUILD_DIR=...                      the ordinary build diff_fuzz drives (default <repo>/build)
#   DIFF_FUZZ_REFERENCE=...            libnbd 1.22.2's lib/.libs (default: the suite harness's
#                                      cache); diff_fuzz is skipped, and says so, without it
#
# New inputs libFuzzer finds go to $FUZZ_BUILD_DIR/work/<target>/, crash, leak and timeout
# reproducers to $FUZZ_BUILD_DIR/artifacts/<target>/: never into the repo.  Reproduce one
# with: $FUZZ_BUILD_DIR/tests/fuzz/<target> <artifact>
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
seconds=${1:-60}
build=${FUZZ_BUILD_DIR:-$root/build-fuzz}
targets=${FUZZ_TARGETS:-"handshake_fuzz reply_fuzz diff_fuzz"}
main_build=${BUILD_DIR:-$root/build}
export DIFF_FUZZ_REFERENCE=${DIFF_FUZZ_REFERENCE:-$HOME/.cache/duplexnbd/libnbd-1.22.2/lib/.libs}
export DIFF_FUZZ_DRIVER=$main_build/tests/nbd_diff_driver DIFF_FUZZ_OURS=$main_build/lib
# diff_fuzz plays each input to the driver of the ordinary build on libnbd 1.22.2 and on ours.
case " $targets " in
  *" diff_fuzz "*)
    if [ ! -e "$DIFF_FUZZ_REFERENCE/libnbd.so.0" ]; then
      echo "tests/fuzz/run.sh: diff_fuzz skipped: no libnbd 1.22.2 at $DIFF_FUZZ_REFERENCE" \
           "(interop/libnbd-testsuite.sh builds it)" >&2
      targets=$(echo " $targets " | sed 's/ diff_fuzz / /')
    else
      cmake -S "$root" -B "$main_build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
      nice cmake --build "$main_build" -j2 --target nbd nbd_diff_driver
    fi
    ;;
esac

if ! command -v clang++ >/dev/null; then
  echo "tests/fuzz/run.sh: clang++ is needed (apt-get install clang)" >&2
  exit 1
fi
CC=clang CXX=clang++ cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DDUPLEXNBD_FUZZ=ON -DDUPLEXNBD_TESTS=OFF >/dev/null
# shellcheck disable=SC2086
[ -z "${targets// }" ] || nice cmake --build "$build" -j2 --target $targets

failed=0
for t in $targets; do
  work=$build/work/$t
  artifacts=$build/artifacts/$t
  mkdir -p "$work" "$artifacts"
  # diff_fuzz runs two child processes per input and reports a silent one itself, with its
  # state: after 60 s, plus up to 60 s for gdb's stacks, and a silent one is played twice;
  # libFuzzer's own limit stays above the 480 s that takes for both, so the report wins.
  timeout=10 max_len=131072
  [ "$t" = diff_fuzz ] && timeout=600 max_len=8192
  echo "== $t: ${seconds}s"
  rm -f "$build/$t.finding"
  touch "$build/$t.started"
  # The first corpus directory receives new inputs; the repo's seeds are only read.
  if ! ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0} \
       UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
       "$build/tests/fuzz/$t" "$work" "$root/tests/fuzz/corpus/$t" \
         -max_total_time="$seconds" -timeout="$timeout" -rss_limit_mb=2048 -max_len="$max_len" \
         -artifact_prefix="$artifacts/" -print_final_stats=1 >"$build/$t.log" 2>&1; then
    echo "!! $t found a problem; log: $build/$t.log, reproducers: $artifacts" >&2
    # The finding in a few lines, kept beside the log ($t.finding) so that a caller can
    # show it again at the end of a long run, where CI's excerpt of the output looks.
    {
      grep -E "^==[0-9]+==ERROR|^SUMMARY|runtime error|invariant broken|ALARM|deadly signal" "$build/$t.log" | head -20 || true
      # diff_fuzz's own report: the two outcomes and both drivers' records.
      sed -n '/^diff_fuzz: /,/^==[0-9]*== ERROR/p' "$build/$t.log" | head -150
      # The reproducer itself (small), to replay elsewhere: base64 -d > f; $t f
      find "$artifacts" -type f -newer "$build/$t.started" -size -17k | while read -r a; do
        echo "reproducer $(basename "$a") (base64):"
        base64 -w 100 "$a"
      done
    } > "$build/$t.finding"
    cat "$build/$t.finding" >&2
    failed=1
  else
    grep -E "^stat::number_of_executed_units|^stat::new_units_added|cov:" "$build/$t.log" | tail -3
    stalls=$(grep -c "stalled; played again" "$build/$t.log" || true)
    [ "$stalls" = 0 ] || echo "$t: $stalls silent driver(s) played again (see $build/$t.log)"
  fi
done
exit "$failed"
