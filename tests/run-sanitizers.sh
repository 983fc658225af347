#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Builds the ASan+UBSan and TSan trees and runs the unit, hostile-server and concurrency tests under each.
#
#   tests/run-sanitizers.sh [address] [thread]     default: both
#   SANITIZER_BUILD_PREFIX=...                     default <repo>/build-  (build-asan, build-tsan)
#   DUPLEXNBD_DUPLEX_PROOF_MIB=...                 volume of the duplex proof, default 64 MiB
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
prefix=${SANITIZER_BUILD_PREFIX:-$root/build-}
kinds=("$@")
[ "${#kinds[@]}" -eq 0 ] && kinds=(address thread)
export DUPLEXNBD_DUPLEX_PROOF_MIB=${DUPLEXNBD_DUPLEX_PROOF_MIB:-64}
# The concurrency tests: threads sharing one handle.
concurrency='DuplexProof.*:StressTest.*:CompletionTest.*:FaultTest.*:EngineLifecycle.*:Extensions.*'

for kind in "${kinds[@]}"; do
  case "$kind" in
    address) build=${prefix}asan ;;
    thread) build=${prefix}tsan ;;
    *) echo "unknown sanitizer '$kind' (address or thread)" >&2; exit 2 ;;
  esac
  echo "== $kind: building in $build"
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDUPLEXNBD_SANITIZE="$kind" >/dev/null
  nice cmake --build "$build" -j2 --target unit_tests integration_tests hostile_tests duplexnbd_test_server

  # Any report fails the run: ASan/LSan/UBSan abort, TSan exits non-zero at the end.
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  export LSAN_OPTIONS=suppressions=$root/tests/sanitizers/lsan.supp:print_suppressions=0
  export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:exitcode=66:suppressions=$root/tests/sanitizers/tsan.supp"
  echo "== $kind: unit tests"
  (cd "$build" && timeout 1800 ./tests/unit_tests --gtest_brief=1)
  echo "== $kind: hostile-server catalogue"
  (cd "$build" && timeout 1800 ./tests/hostile_tests --gtest_brief=1)
  echo "== $kind: concurrency tests ($concurrency, duplex proof ${DUPLEXNBD_DUPLEX_PROOF_MIB} MiB)"
  (cd "$build" && timeout 1800 ./tests/integration_tests --gtest_brief=1 --gtest_filter="$concurrency")
done
echo "sanitizers: all clean"
