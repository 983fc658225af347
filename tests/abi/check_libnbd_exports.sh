#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# ABI check against a libnbd release kept as data: our libnbd.so.0 exports exactly the
# nbd_* symbols that release exports, each with the same version node, and its version
# nodes chain to the same parents.  The only other exports allowed are duplexnbd's own
# extensions, duplexnbd_* in node DUPLEXNBD_1.0 (whose parent is the newest libnbd node).
#
#   tests/abi/check_libnbd_exports.sh OUR_LIBNBD_SO EXPORTS_FILE
#
# EXPORTS_FILE is tests/abi/libnbd-1.24.4-exports.txt, written once by
# tests/abi/make_libnbd_exports.sh from Debian sid's libnbd0_1.24.4-1_amd64.deb (objdump -T
# and objdump -p of its libnbd.so.0; see the file's header): CI has no copy of that library.
# Our side is read with objdump -T for the symbols and readelf -V for the node chain, so the
# check does not lean on the tool that wrote the data alone.
set -euo pipefail
lib=$1
data=$2
fail=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

grep -v '^#' "$data" | grep '^node ' | sed 's/^node //' >"$tmp/want_nodes"
grep -v '^#' "$data" | grep '^nbd_' | LC_ALL=C sort >"$tmp/want_syms"
want_n=$(wc -l <"$tmp/want_syms")
if [ "$want_n" -eq 0 ] || [ ! -s "$tmp/want_nodes" ]; then
  echo "FAIL: $data holds no symbols or no nodes"
  exit 1
fi

# Every defined dynamic symbol as "name version" (the version in parentheses when it is a
# hidden, non-default one); version definitions themselves are *ABS*.
objdump -T "$lib" | awk '$0 ~ /^[0-9a-f]+ / && $0 !~ /\*UND\*/ && $0 !~ /\*ABS\*/ {print $NF, $(NF-1)}' |
  LC_ALL=C sort >"$tmp/ours_all"
grep '^nbd_' "$tmp/ours_all" >"$tmp/ours_syms" || true

if grep -Ev '^(nbd_[a-z0-9_]+ |duplexnbd_[a-z0-9_]+ DUPLEXNBD_1\.0$)' "$tmp/ours_all" >"$tmp/extra"; then
  echo "FAIL: exports other than nbd_* and duplexnbd_* (in DUPLEXNBD_1.0):"
  cat "$tmp/extra"
  fail=1
fi
if ! diff -u "$tmp/want_syms" "$tmp/ours_syms" >"$tmp/diff"; then
  echo "FAIL: nbd_* exports differ from $(basename "$data") (- libnbd, + ours):"
  cat "$tmp/diff"
  fail=1
fi
echo "ours: $(wc -l <"$tmp/ours_syms") nbd_* symbols; libnbd: $want_n"

# readelf -V: "0x001c: Rev: 1  Flags: none  Index: 2  Cnt: 1  Name: LIBNBD_1.0", each
# followed by "0x0054: Parent 1: LIBNBD_1.0" lines; the BASE entry is the file's name.
readelf -V "$lib" | awk '
  /^Version definition section/ {on = 1; next}
  /^Version (needs|symbols) section/ {on = 0}
  !on {next}
  / Flags: BASE / {next}
  /Name: / { if (name != "") print name parents; name = $NF; parents = ""; next }
  /Parent [0-9]+: / && name != "" { parents = parents " " $NF }
  END { if (name != "") print name parents }' >"$tmp/ours_all_nodes"
grep -v '^DUPLEXNBD_' "$tmp/ours_all_nodes" >"$tmp/ours_nodes" || true
ext_node=$(grep '^DUPLEXNBD_' "$tmp/ours_all_nodes" || true)
newest=$(tail -n 1 "$tmp/want_nodes" | awk '{print $1}')
if [ -n "$ext_node" ] && [ "$ext_node" != "DUPLEXNBD_1.0 $newest" ]; then
  echo "FAIL: extension node is '$ext_node', expected 'DUPLEXNBD_1.0 $newest'"
  fail=1
fi
if ! diff -u "$tmp/want_nodes" "$tmp/ours_nodes" >"$tmp/diff"; then
  echo "FAIL: version nodes differ from $(basename "$data") (- libnbd, + ours; NODE PARENT):"
  cat "$tmp/diff"
  fail=1
fi
echo "version nodes: $(tr '\n' ',' <"$tmp/ours_nodes" | sed 's/,$//')"

[ "$fail" -eq 0 ] && echo "PASS"
exit "$fail"
