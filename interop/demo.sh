#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The main job: build our libnbd.so.0, run Debian's nbdinfo on an nbdkit server with it, then
# show the point: the same unmodified program on Debian's libnbd and on ours, side by side.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
seconds=${DEMO_SECONDS:-3}

"$root/tests/install-deps.sh"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
# The library only: the test binaries are the test command's business.
cmake --build "$build" -j2 --target nbd

tmp=$(mktemp -d)
cleanup() {
  for p in "$tmp"/*.pid; do [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
# nbdkit goes into the background once its socket is listening (--exit-with-parent would
# keep it in the foreground); the trap stops it through its pid file.
nbdkit -U "$tmp/sock" -P "$tmp/memory.pid" memory 64M

echo "== nbdinfo --version (shows which libnbd is loaded)"
LD_LIBRARY_PATH=$build/lib nbdinfo --version
echo "== nbdinfo nbd+unix:///?socket=$tmp/sock"
LD_LIBRARY_PATH=$build/lib nbdinfo "nbd+unix:///?socket=$tmp/sock"

# Python programs share one handle between threads; libnbd's one lock serialises them,
# ours overlaps their round trips.  The server answers each read after 1 ms, as a disk
# or a network away would.
stock=/usr/lib/x86_64-linux-gnu
if [ -e "$stock/libnbd.so.0" ] && /usr/bin/python3 -c 'import nbd' 2>/dev/null; then
  nbdkit -U "$tmp/delay.sock" -P "$tmp/delay.pid" --filter=delay memory 64M delay-read=1ms
  uri="nbd+unix:///?socket=$tmp/delay.sock"
  echo
  echo "== Python (Debian's python3-libnbd, unmodified): 16 threads h.pread(64 KiB) on one handle,"
  echo "   server latency 1 ms, ${seconds} s on each library"
  run() { LD_LIBRARY_PATH=$1 /usr/bin/python3 "$root/interop/realbench/python_threads.py" "$uri" 16 "$seconds"; }
  read -r s_ops s_mib s_name s_ver < <(run "$stock")
  read -r o_ops o_mib o_name o_ver < <(run "$build/lib")
  printf '   %-18s %9s reads/s  %7s MiB/s\n' "$s_name $s_ver" "$s_ops" "$s_mib" "$o_name $o_ver" "$o_ops" "$o_mib"
  awk -v a="$s_ops" -v b="$o_ops" 'BEGIN { printf "   ratio (ours / libnbd): %.1fx\n", b / a }'
else
  echo "(Debian's libnbd or python3-libnbd is missing: the side-by-side comparison is skipped)"
fi
