#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# cost.sh: per-request costs of one benchmark point on libnbd and on ours, counted in ways a
# busy machine does not distort much (throughput does not survive other load; these mostly do):
#   CPU µs/request (median of --runs alternating runs), context switches/request (perf stat),
#   system calls/request (strace -f -c), user-space instructions/request of the measured loop
#   (callgrind; start-up and prefill excluded), with the top objects and functions.
# usage: interop/bench/cost.sh [--ours DIR] [--system LIB] [--runs N] [--cg-bytes N] \
#            [--server null|memory] -- NBD_BENCH_ARGS (without -s/-V/-T; give -B BYTES)
# e.g.   interop/bench/cost.sh -- -d classic -o read -b 4k -q 64 -B 40m
set -euo pipefail
{
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
ours=$repo/build/lib system=/usr/lib/x86_64-linux-gnu/libnbd.so.0
runs=5 cg_bytes= server=null
while [ $# -gt 0 ]; do
  case $1 in
    --ours) ours=$2; shift 2 ;;
    --system) system=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --cg-bytes) cg_bytes=$2; shift 2 ;;
    --server) server=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "cost.sh: unknown option $1 (bench arguments go after --)" >&2; exit 2 ;;
  esac
done
args=("$@")
for t in perf strace valgrind nbdkit gcc python3; do
  command -v $t >/dev/null || { echo "cost.sh: needs $t" >&2; exit 1; }
done

build=$repo/build-bench
mkdir -p "$build"
gcc -std=c11 -Wall -Wextra -Werror -O2 -pthread "$here/nbd_bench.c" -o "$build/nbd_bench" -lnbd
bench=$build/nbd_bench

tmp=$(mktemp -d /dev/shm/nbd-cost.XXXXXX)
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
nbdkit -f --exit-with-parent -U "$tmp/s.sock" "$server" 1G &
server_pid=$!
for _ in $(seq 100); do [ -S "$tmp/s.sock" ] && break; sleep 0.05; done

# Both libraries are copied, so a rebuild meanwhile does not change what is measured.
if [ -d "$ours" ]; then ours=$ours/libnbd.so.0; fi
mkdir -p "$tmp/A" "$tmp/B"
cp "$(readlink -f "$system")" "$tmp/A/libnbd.so.0"
cp "$(readlink -f "$ours")" "$tmp/B/libnbd.so.0"
verify=pattern; [ "$server" = null ] && verify=zero
base=(-s "$tmp/s.sock" -V "$verify")
run() { LD_LIBRARY_PATH=$tmp/$1 "${@:2}"; }

declare -A cpu
for _ in $(seq "$runs"); do
  for side in A B; do
    cpu[$side]+=" $(run $side "$bench" "${base[@]}" "${args[@]}" | cut -f15)"
  done
done
median() { tr ' ' '\n' | grep . | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

cg_args=("${args[@]}")
if [ -n "$cg_bytes" ]; then
  for i in "${!cg_args[@]}"; do
    [ "${cg_args[$i]}" = -B ] && cg_args[$((i + 1))]=$cg_bytes
  done
fi
for side in A B; do
  name=libnbd; [ $side = B ] && name=ours
  line=$(run $side "$bench" "${base[@]}" "${args[@]}")
  reqs=$(cut -f16 <<<"$line")
  cs=$(run $side perf stat -x, -e context-switches "$bench" "${base[@]}" "${args[@]}" 2>&1 >/dev/null |
       awk -F, '/context-switches/ { print $1 }')
  run $side strace -f -c -o "$tmp/strace-$side" "$bench" "${base[@]}" "${args[@]}" >/dev/null
  calls=$(awk '$NF == "total" { print $4 }' "$tmp/strace-$side")
  # The measured loop only: run_classic (classic, poll) or sync_thread (sync).
  cg_line=$(run $side valgrind --tool=callgrind --collect-atstart=no --toggle-collect=run_classic \
            --toggle-collect=sync_thread --toggle-collect=reader_thread \
            --callgrind-out-file="$tmp/cg-$side" "$bench" "${base[@]}" "${cg_args[@]}" 2>/dev/null)
  echo "== $name: CPU µs/request median $(median <<<"${cpu[$side]}") (runs:${cpu[$side]})"
  awk -v c="$cs" -v n="$reqs" 'BEGIN { printf "   context switches/request %.3f\n", c / n }'
  awk -v c="$calls" -v n="$reqs" 'BEGIN { printf "   system calls/request %.2f:", c / n }'
  awk -v n="$reqs" 'NR > 2 && $NF != "total" && $1 !~ /^-/ && $4 ~ /^[0-9]+$/ && $4 / n >= 0.01 {
      printf " %s %.2f", $NF, $4 / n } END { print "" }' "$tmp/strace-$side"
  python3 "$here/callgrind_objects.py" "$tmp/cg-$side" "$(cut -f16 <<<"$cg_line")" 8 | sed 's/^/   /'
done
exit 0
}
