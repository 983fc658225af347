#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Builds duplexnbd and runs every test CI runs: unit, ABI, generator, integration against
# real servers, the unit and concurrency tests under ASan+UBSan and TSan, a short fuzz run of
# each libFuzzer target, and libnbd's own test suite through the harness. --quick: unit tests only.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
quick=0
[ "${1:-}" = "--quick" ] && quick=1

"$root/tests/install-deps.sh"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build "$build" -j2

cd "$build"
if [ "$quick" -eq 1 ]; then
  ctest -L unit -j2 --output-on-failure
  exit 0
fi
ctest -j2 --output-on-failure
# The README's main command (Debian's nbdinfo on nbdkit through our library) stays true.
BUILD_DIR="$build" "$root/interop/demo.sh" >/dev/null

# Sanitizer trees next to the main one ($build-asan, $build-tsan): unit and concurrency tests.
SANITIZER_BUILD_PREFIX="$build-" "$root/tests/run-sanitizers.sh"
# The library built without GnuTLS: TLS reported missing, refused with a clear error.
"$root/tests/check-without-gnutls.sh" "$build-notls"
# Each fuzz target for FUZZ_SECONDS (default 60) on its seed corpus, in $build-fuzz.
FUZZ_BUILD_DIR="$build-fuzz" "$root/tests/fuzz/run.sh" "${FUZZ_SECONDS:-60}"

# libnbd's own suite, stock library next to ours: any test that passes with stock and not
# with ours fails the run (the harness re-runs a directory's few failures once first).
if [ -x "$root/interop/libnbd-testsuite.sh" ]; then
  "$root/interop/libnbd-testsuite.sh" --install-deps --strict --lib "$build/lib/libnbd.so.0" \
    --report "$build/libnbd-testsuite.md"
fi

# Real programs (nbdinfo, nbdcopy, nbddump, nbdfuse, nbdsh, nbdkit's nbd plugin) run on stock
# libnbd and on ours (LD_LIBRARY_PATH and LD_PRELOAD) and compared; about 6-11 minutes. Any
# scenario that differs fails the run.
programs_deps=()
[ "$(id -u)" -eq 0 ] && programs_deps=(--install-deps)
"$root/interop/programs/run.sh" "${programs_deps[@]}" --strict --lib "$build/lib/libnbd.so.0" \
  --report "$build/interop-programs.md"
