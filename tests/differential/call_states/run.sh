#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Every call in every state: runs the generated call_states driver on libnbd 1.22.2 and on
# ours against fresh nbdkit servers and fails on any difference not listed in
# expected-differences.txt (docs/call-states.md).  Exit 77 when the reference is absent.
#
# Usage: run.sh DRIVER OUR_LIB_DIR [REPORT]
#   DUPLEXNBD_REFERENCE_LIBNBD: libnbd 1.22.2's libnbd.so.0 (default: the one
#   interop/libnbd-testsuite.sh builds under ~/.cache/duplexnbd).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
driver=$(realpath "$1")
ours=$(realpath "$2")
report=${3:-}

# The suite harness points lib/.libs/libnbd.so.0 at the library under test while it runs;
# the stock file is libnbd.so.0.0.0.
ref=${DUPLEXNBD_REFERENCE_LIBNBD:-$HOME/.cache/duplexnbd/libnbd-1.22.2/lib/.libs/libnbd.so.0.0.0}
if [ ! -f "$ref" ]; then
  echo "call_states: SKIP: reference libnbd 1.22.2 not found at $ref" >&2
  exit 77
fi
if ! command -v nbdkit >/dev/null || ! nbdkit --dump-config >/dev/null 2>&1 ||
   ! nbdkit --filter=error memory --version >/dev/null 2>&1; then
  echo "call_states: SKIP: needs nbdkit with the memory plugin and the error filter" >&2
  exit 77
fi

work=$(mktemp -d /tmp/call-states.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
mkdir "$work/ref" "$work/run"
ln -s "$(realpath "$ref")" "$work/ref/libnbd.so.0"

start_servers() {
  rm -f "$work/run/"*.sock "$work/run/"*.pid
  nbdkit -U "$work/run/nbdkit.sock" -P "$work/run/nbdkit.pid" memory 1M
  # Every data command fails with EIO: the "after a server error" state.
  nbdkit -U "$work/run/error.sock" -P "$work/run/error.pid" --filter=error memory 1M \
    error=EIO error-rate=100%
  for f in nbdkit error; do
    for _ in $(seq 100); do [ -S "$work/run/$f.sock" ] && [ -s "$work/run/$f.pid" ] && break; sleep 0.05; done
    pids+=("$(cat "$work/run/$f.pid")")
  done
}
stop_servers() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  pids=()
}

run_on() {  # LIBDIR OUTPUT
  start_servers
  (cd "$work/run" && LD_LIBRARY_PATH="$1" "$driver") >"$2"
  stop_servers
}

start=$(date +%s)
run_on "$work/ref" "$work/ref.txt"
run_on "$ours" "$work/ours.txt"
echo "call_states: both runs took $(( $(date +%s) - start ))s"
grep -q '^# library: libnbd 1.22.2$' "$work/ref.txt" ||
  { echo "call_states: the reference is not libnbd 1.22.2: $(head -1 "$work/ref.txt")" >&2; exit 1; }
grep -q '^# library: duplexnbd ' "$work/ours.txt" ||
  { echo "call_states: ours is not duplexnbd: $(head -1 "$work/ours.txt")" >&2; exit 1; }
# The raw records next to the report, for looking into a difference.
if [ -n "$report" ]; then
  cp "$work/ref.txt" "${report%.md}.libnbd-1.22.2.txt"
  cp "$work/ours.txt" "${report%.md}.duplexnbd.txt"
fi
/usr/bin/env python3 "$here/compare.py" "$here/expected-differences.txt" \
  "$work/ref.txt" "$work/ours.txt" ${report:+--report "$report"}
