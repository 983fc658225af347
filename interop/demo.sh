#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The main job: build our libnbd.so.0 and run Debian's nbdinfo on an nbdkit server with it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}

"$root/tests/install-deps.sh"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j2

tmp=$(mktemp -d)
cleanup() {
  [ -f "$tmp/pid" ] && kill "$(cat "$tmp/pid")" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
# nbdkit goes into the background once its socket is listening (--exit-with-parent would
# keep it in the foreground); the trap stops it through its pid file.
nbdkit -U "$tmp/sock" -P "$tmp/pid" memory 64M

export LD_LIBRARY_PATH=$build/lib
echo "== nbdinfo --version (shows which libnbd is loaded)"
nbdinfo --version
echo "== nbdinfo nbd+unix:///?socket=$tmp/sock"
nbdinfo "nbd+unix:///?socket=$tmp/sock"
