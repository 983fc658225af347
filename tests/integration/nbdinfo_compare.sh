#!/bin/bash -
# SPDX-License-Identifier: LGPL-2.1-or-later
# Runs Debian's nbdinfo through our libnbd.so.0 and through the system libnbd: same output.
#
# Usage: nbdinfo_compare.sh LIBDIR [TEST_SERVER]
#   LIBDIR       directory holding our libnbd.so.0
#   TEST_SERVER  tests/servers' duplexnbd_test_server (optional: extended-headers cases)
# Exit 77 (skipped) when nbdinfo or nbdkit is missing.  NBDINFO_COMPARE_SELF_CHECK=1
# lets LIBDIR be the system's own library directory (to check this script itself).

set -u
libdir=$(cd "${1:?usage: $0 LIBDIR [TEST_SERVER]}" && pwd)
test_server=${2:-}
ours="$libdir/libnbd.so.0"

skip() { echo "SKIP: $*"; exit 77; }
command -v nbdinfo >/dev/null || skip "nbdinfo is not installed (apt-get install libnbd-bin)"
command -v nbdkit >/dev/null || skip "nbdkit is not installed"
[ -e "$ours" ] || { echo "FAIL: $ours does not exist"; exit 1; }

tmp=$(mktemp -d /tmp/dnbd-nbdinfo-XXXXXX)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$tmp"
}
trap cleanup EXIT

# Nothing here may hang: every nbdinfo run is time-limited.
run_nbdinfo() { timeout 60 nbdinfo "$@" 2>&1; echo "exit status: $?"; }
ours_nbdinfo() { LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" run_nbdinfo "$@"; }
system_nbdinfo() { env -u LD_LIBRARY_PATH -u LD_PRELOAD bash -c 'timeout 60 nbdinfo "$@" 2>&1; echo "exit status: $?"' nbdinfo "$@"; }

failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# ---- 1. Prove which library each side loads.
ver_ours=$(LD_LIBRARY_PATH="$libdir" nbdinfo --version 2>&1)
ver_sys=$(env -u LD_LIBRARY_PATH nbdinfo --version 2>&1)
echo "ours:   $(echo "$ver_ours" | tr '\n' ' ')"
echo "system: $(echo "$ver_sys" | tr '\n' ' ')"
echo "$ver_ours" | grep -q '^duplexnbd ' || fail "nbdinfo --version with LD_LIBRARY_PATH=$libdir does not print our package name"
echo "$ver_sys" | grep -q duplexnbd && fail "the system run loaded duplexnbd"
if LD_DEBUG=libs LD_LIBRARY_PATH="$libdir" nbdinfo --version 2>&1 >/dev/null |
     grep -q "calling init: $ours\$"; then
  echo "ld.so: calling init: $ours"
else
  fail "ld.so did not initialise $ours"
fi
if [ "$failures" -ne 0 ] && [ "${NBDINFO_COMPARE_SELF_CHECK:-0}" = 1 ]; then
  echo "(self check: library identity failures ignored)"
  failures=0
fi
[ "$failures" -eq 0 ] || exit 1

# ---- 2. Servers on private sockets.
wait_socket() {  # wait_socket PATH PID
  local i
  for i in $(seq 1 200); do
    [ -S "$1" ] && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}
start_server() {  # start_server NAME SOCKET CMD...
  local name=$1 sock=$2
  shift 2
  "$@" >"$tmp/$name.log" 2>&1 &
  pids+=($!)
  wait_socket "$sock" $! || { cat "$tmp/$name.log"; fail "$name did not start"; return 1; }
}

# A sparse disk with data in a few places (the data plugin reports extents).
data_sock=$tmp/data.sock
start_server data "$data_sock" nbdkit -f --exit-with-parent -U "$data_sock" \
  data "1 2 3 @1048576 4 5 6 @4194304 ( 0x55 )*65536 @7340032 9" size=8M
data_uri="nbd+unix:///?socket=$data_sock"

# Two exports with descriptions, for --list.
list_sock=$tmp/list.sock
start_server list "$list_sock" nbdkit -f --exit-with-parent -U "$list_sock" eval \
  'list_exports=echo NAMES+DESCRIPTIONS; echo alpha; echo beta; echo "first export"; echo "second export"' \
  'open=echo "$3"' \
  'get_size=case "$2" in beta) echo 2M ;; *) echo 1M ;; esac' \
  'pread=dd if=/dev/zero count=$3 iflag=count_bytes 2>/dev/null'
list_uri="nbd+unix:///alpha?socket=$list_sock"

# nbdkit's memory plugin, read-only, with the error filter failing every block status
# request: nbdinfo --map must fail the same way through both libraries.
err_sock=$tmp/err.sock
start_server err "$err_sock" nbdkit -f --exit-with-parent -U "$err_sock" -r \
  --filter=error memory 1M error-extents=EIO error-extents-rate=100%
err_uri="nbd+unix:///?socket=$err_sock"

cases=(
  "plain|$data_uri"
  "json|--json $data_uri"
  "size|--size $data_uri"
  "map|--map $data_uri"
  "map-totals|--map --totals $data_uri"
  "map-json|--map --json $data_uri"
  "can-trim|--can trim $data_uri"
  "can-df|--can df $data_uri"
  "is-read-only|--is read-only $data_uri"
  "list|--list $list_uri"
  "list-json|--list --json $list_uri"
  "export-beta|nbd+unix:///beta?socket=$list_sock"
  "read-only|$err_uri"
  "map-error|--map $err_uri"
  "socket-activation|--json -- [ nbdkit --exit-with-parent -f memory 3M ]"
  "bad-uri|nbd+unix:///?socket=$tmp/no-such-socket"
)

# A qcow2 image with a dirty bitmap through qemu-nbd, when qemu-utils is there.
if command -v qemu-nbd >/dev/null && command -v qemu-img >/dev/null && command -v qemu-io >/dev/null; then
  img=$tmp/disk.qcow2
  if qemu-img create -q -f qcow2 "$img" 64M && qemu-img bitmap --add "$img" b0 &&
     qemu-io -f qcow2 -c "write -P 0x55 1M 64k" -c "write 8M 128k" "$img" >/dev/null; then
    qemu_sock=$tmp/qemu.sock
    start_server qemu "$qemu_sock" qemu-nbd -f qcow2 -k "$qemu_sock" --persistent --shared=8 \
      --read-only --bitmap=b0 "$img"
    qemu_uri="nbd+unix:///?socket=$qemu_sock"
    cases+=("qemu-plain|$qemu_uri"
            "qemu-map|--map $qemu_uri"
            "qemu-dirty-map|--map=qemu:dirty-bitmap:b0 $qemu_uri"
            "qemu-dirty-totals|--map=qemu:dirty-bitmap:b0 --totals $qemu_uri")
  else
    fail "could not prepare the qcow2 image"
  fi
else
  echo "note: qemu-utils missing, qemu-nbd cases skipped"
fi

# Our own server speaks extended headers, which our library negotiates and Debian's
# does not: nbdinfo (built against 1.14) must not be able to tell.
if [ -n "$test_server" ] && [ -x "$test_server" ]; then
  ts_sock=$tmp/ts.sock
  if start_server test-server "$ts_sock" "$test_server" --socket "$ts_sock" --size 16G \
       --name disk --description "duplexnbd test export"; then
    ts_uri="nbd+unix:///disk?socket=$ts_sock"
    if command -v qemu-io >/dev/null; then
      qemu-io -f raw -c "write -P 0x11 5G 1M" -c "write -P 0x22 9G 64k" "$ts_uri" >/dev/null ||
        fail "could not write to the test server"
    fi
    cases+=("extended-plain|$ts_uri"
            "extended-json|--json $ts_uri"
            "extended-map|--map $ts_uri"
            "extended-map-data|--map=duplexnbd:data --totals $ts_uri"
            "extended-list|--list $ts_uri")
  fi
fi

# ---- 3. Compare.
# Normalisation: library-made socket paths (socket activation) are random.
normalise() { sed -E 's#/tmp/libnbd[A-Za-z0-9]*/sock#SOCKET#g; s#'"$tmp"'#TMP#g'; }

for c in "${cases[@]}"; do
  name=${c%%|*}
  args=${c#*|}
  # Word splitting of $args is intended: the cases are simple argument lists.
  # shellcheck disable=SC2086
  ours_nbdinfo $args | normalise >"$tmp/$name.ours"
  # shellcheck disable=SC2086
  system_nbdinfo $args | normalise >"$tmp/$name.system"
  if cmp -s "$tmp/$name.ours" "$tmp/$name.system"; then
    echo "ok:   $name ($(wc -l <"$tmp/$name.ours") lines)"
  else
    fail "$name: nbdinfo $args"
    diff -u "$tmp/$name.system" "$tmp/$name.ours" | sed 's/^/    /' | head -60
  fi
done

if [ "$failures" -ne 0 ]; then
  echo "$failures case(s) differ"
  exit 1
fi
echo "all ${#cases[@]} cases identical"
