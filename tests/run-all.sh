#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Builds duplexnbd and runs every test CI runs: unit, ABI, generator, integration against
# real servers, the unit and concurrency tests under ASan+UBSan and TSan, a short fuzz run of
# each libFuzzer target, libnbd's own test suites through the harness, real programs, and the
# Debian packages in a throwaway Debian root. --quick: unit tests only.
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
# The differential checks need libnbd 1.22.2, which the suite step below builds: they run
# after it.
ctest -j2 --output-on-failure -LE differential
# The README's main command (Debian's nbdinfo on nbdkit through our library) stays true.
BUILD_DIR="$build" "$root/interop/demo.sh" >/dev/null

# Sanitizer trees next to the main one ($build-asan, $build-tsan): unit and concurrency tests.
SANITIZER_BUILD_PREFIX="$build-" "$root/tests/run-sanitizers.sh"
# The library built without GnuTLS: TLS reported missing, refused with a clear error.
"$root/tests/check-without-gnutls.sh" "$build-notls"
# Each fuzz target for FUZZ_SECONDS (default 60) on its seed corpus, in $build-fuzz.
FUZZ_BUILD_DIR="$build-fuzz" FUZZ_TARGETS="handshake_fuzz reply_fuzz" \
  "$root/tests/fuzz/run.sh" "${FUZZ_SECONDS:-60}"

# libnbd's own test suites, 1.22.2 first (the one that counts), then 1.14.2 (Debian 12's): each
# built from Debian's source package (cached between runs on one machine), run on its own stock
# library and on ours. Any test that passes with stock and not with ours fails the run (the
# harness re-runs a directory's few failures once first). Reports: build/libnbd-testsuite.md
# (both) and build/libnbd-testsuite-<version>.md. The programs below run even when a suite
# fails, so one CI run shows everything; the run fails at the end.
failed=()
"$root/interop/libnbd-testsuite.sh" --libnbd-version "1.22.2 1.14.2" --install-deps --strict \
  --lib "$build/lib/libnbd.so.0" --report "$build/libnbd-testsuite.md" ||
  failed+=("libnbd's test suites (exit $?, see $build/libnbd-testsuite.md)")

# The differential runner and fuzz target (docs/hostile-servers.md, "Differential runs"):
# every hostile case, and a minute of fuzzed server streams, played to libnbd 1.22.2 (just
# built above) and to ours; any difference not listed in
# tests/differential/known-differences.txt fails the run.  Here a skip (77: no reference)
# is a failure, so both are run directly rather than through ctest.
rc=0
python3 "$root/tests/differential/run.py" --driver "$build/tests/nbd_diff_driver" \
  --server "$build/tests/hostile_tests" --ours "$build/lib" || rc=$?
[ "$rc" -eq 0 ] || failed+=("differential runner, hostile cases (exit $rc)")
FUZZ_BUILD_DIR="$build-fuzz" BUILD_DIR="$build" FUZZ_TARGETS=diff_fuzz \
  "$root/tests/fuzz/run.sh" "${FUZZ_SECONDS:-60}" ||
  failed+=("differential fuzzing (see $build-fuzz/diff_fuzz.log)")
# Every call in every state (docs/call-states.md): the generated driver on libnbd 1.22.2 (just
# built above) and on ours, record by record.
rc=0
"$root/tests/differential/call_states/run.sh" "$build/tests/call_states" "$build/lib" \
  "$build/call-states.md" || rc=$?
[ "$rc" -eq 0 ] || failed+=("every call in every state (exit $rc, see $build/call-states.md)")

# Real programs run on stock libnbd and on ours and compared: Debian 12's (nbdinfo, nbdcopy,
# nbddump, nbdfuse, nbdsh, nbdkit's nbd plugin; on Debian's stock libnbd, then ours through
# LD_LIBRARY_PATH and LD_PRELOAD), then libnbd 1.22.2's own, built by the suite above (on the
# tree's stock 1.22.2, then ours), then Debian sid's nbdinfo 1.24.4 on ours against Debian 12's
# nbdinfo on stock (fetched through a private apt state, cached). Any scenario that differs
# fails the run.
programs_deps=()
[ "$(id -u)" -eq 0 ] && programs_deps=(--install-deps)
"$root/interop/programs/run.sh" "${programs_deps[@]}" --strict --tree-programs require --sid-programs require \
  --lib "$build/lib/libnbd.so.0" --report "$build/interop-programs.md" ||
  failed+=("real programs (exit $?, see $build/interop-programs.md)")

# The Debian packages (docs/packaging.md): built with dpkg-buildpackage, installed over libnbd0 in
# a throwaway Debian 12 root made by mmdebstrap (cached in ~/.cache/duplexnbd), Debian's programs
# run on them, libnbd0 put back.  Only as root with deb.debian.org reachable; the script itself
# skips (77) where it cannot mount.  About 10 minutes from a cold cache, 1 warm.
if [ "$(id -u)" -eq 0 ] && timeout 10 bash -c 'exec 3<>/dev/tcp/deb.debian.org/80' 2>/dev/null; then
  rc=0
  "$root/interop/package/run.sh" --report "$build/package-test.md" || rc=$?
  [ "$rc" -eq 0 ] || [ "$rc" -eq 77 ] ||
    failed+=("Debian packages in a throwaway root (exit $rc, see $build/package-test.md)")
else
  echo "run-all: Debian package test skipped (needs root and deb.debian.org)" >&2
fi

if [ "${#failed[@]}" -gt 0 ]; then
  # Fuzz findings again, in a few lines each, where a reader of the run's tail looks.
  for f in "$build-fuzz"/*.finding; do
    [ -f "$f" ] || continue
    echo "run-all: $(basename "$f" .finding) finding:" >&2
    cat "$f" >&2
  done
  printf 'run-all: failed: %s\n' "${failed[@]}" >&2
  exit 1
fi
