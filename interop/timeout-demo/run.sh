#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Demonstration: nbd_pread against a stopped server (SIGSTOP, as a frozen VM) returns
# ETIMEDOUT after 1 s on duplexnbd (duplexnbd_set_request_timeout); on Debian's libnbd,
# which has no timeouts, the same program is still waiting when we give up on it.
#
#   interop/timeout-demo/run.sh [--lib DIR_OR_LIBNBD_SO] [--wait SECONDS]
# Exit 0 when duplexnbd times out as promised (and stock, if present, did not return).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
ours=$repo/build/lib
wait=5
while [ $# -gt 0 ]; do
  case $1 in
    --lib) ours=$2; shift 2 ;;
    --wait) wait=$2; shift 2 ;;
    *) echo "usage: $0 [--lib PATH] [--wait SECONDS]" >&2; exit 2 ;;
  esac
done
[ -f "$ours" ] && ours=$(dirname "$ours")
command -v nbdkit >/dev/null || { echo "timeout-demo: needs nbdkit" >&2; exit 77; }
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
cc -O1 -o "$tmp/stopped_server" "$here/stopped_server.c" -I"$repo/build/generated/include" -ldl \
  -L"$ours" -lnbd

# One run: start a server, connect, stop the server, read; the program gets `wait` s.
run() {
  local label=$1 libdir=$2 sock=$tmp/$1.sock rc=0
  nbdkit -f --exit-with-parent -U "$sock" memory 1M &
  local srv=$!
  pids+=("$srv")
  for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
  coproc PROG { LD_LIBRARY_PATH=$libdir exec timeout "$wait" "$tmp/stopped_server" "nbd+unix:///?socket=$sock"; }
  local prog_pid=$PROG_PID line out=${PROG[0]} in=${PROG[1]}
  while IFS= read -r line <&"$out"; do
    echo "[$label] $line"
    [ "$line" = ready ] && break
  done
  kill -STOP "$srv"
  # The stop takes effect only when one of the server's threads runs; until every thread is
  # stopped (state T) the others may still answer.
  local i
  for i in $(seq 500); do
    ! grep -qv '^[^)]*) [Tt]' /proc/"$srv"/task/*/stat 2>/dev/null && break
    sleep 0.01
  done
  echo "[$label] server stopped (SIGSTOP)"
  echo go >&"$in"
  while IFS= read -r line <&"$out"; do echo "[$label] $line"; done
  wait "$prog_pid" || rc=$?
  [ "$rc" -eq 124 ] && echo "[$label] still waiting after ${wait} s: killed"
  kill -CONT "$srv"; kill "$srv" 2>/dev/null || true
  return "$rc"
}

ours_rc=0
run duplexnbd "$ours" || ours_rc=$?
stock_rc=0
if [ -e /usr/lib/x86_64-linux-gnu/libnbd.so.0 ]; then
  run libnbd /usr/lib/x86_64-linux-gnu || stock_rc=$?
fi
if [ "$ours_rc" -ne 0 ]; then
  echo "timeout-demo: FAIL: duplexnbd did not time out (exit $ours_rc)"
  exit 1
fi
echo "timeout-demo: duplexnbd returned ETIMEDOUT; libnbd exit: $stock_rc (124 = still waiting, killed)"
