#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# ABI check: our libnbd.so.0 exports exactly the table's symbols, each under its version
# node, with the node chain LIBNBD_1.0 <- ... <- 1.24 <- DUPLEXNBD_1.0 (the extensions of
# duplexnbd.h, duplexnbd_* only), and every symbol@version Debian's libnbd exports (the
# installed one; libnbd 1.24 is checked by check_libnbd_exports.sh).
set -euo pipefail
lib=$1
map=$2
debian=${DEBIAN_LIBNBD:-/usr/lib/x86_64-linux-gnu/libnbd.so.0}
fail=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Defined dynamic symbols as "name version", version definitions excluded.
exports() {
  objdump -T "$1" | awk '$0 ~ /^[0-9a-f]+ / && $0 !~ /\*UND\*/ && $0 !~ /\*ABS\*/ {print $NF, $(NF-1)}' | sort
}

# The map file as "name version".
awk '/^[A-Z_0-9.]+ *\{/ {node=$1} /^ *(nbd|duplexnbd)_[a-z0-9_]+;/ {gsub(/[ ;]/,""); print $0, node}' "$map" | sort >"$tmp/expected"
exports "$lib" >"$tmp/ours"

if ! diff -u "$tmp/expected" "$tmp/ours" >"$tmp/diff"; then
  echo "FAIL: exported symbols differ from the version script (- expected, + ours):"
  cat "$tmp/diff"
  fail=1
fi
n=$(grep -c '^nbd_' "$tmp/ours" || true)
echo "ours: $n nbd_* symbols, $(grep -c '^duplexnbd_' "$tmp/ours" || true) duplexnbd_* symbols"
[ "$n" -eq 165 ] || { echo "FAIL: expected 165 nbd_* exports, found $n"; fail=1; }
if grep -Ev '^(nbd_[a-z0-9_]+ LIBNBD_|duplexnbd_[a-z0-9_]+ DUPLEXNBD_1\.0$)' "$tmp/ours"; then
  echo "FAIL: exports other than nbd_* in LIBNBD_* nodes and duplexnbd_* in DUPLEXNBD_1.0"
  fail=1
fi

# Version node chain.
objdump -p "$lib" | awk '/^Version definitions:/ {on=1; next} /^Version References:/ {on=0} on && NF' >"$tmp/defs"
chain=$(awk '
  NF == 4 && $2 ~ /^0x/ { if (cur != "") print cur; cur = ($2 == "0x01") ? "" : $4; next }
  NF == 1 && cur != "" { cur = cur "<-" $1 }
  END { if (cur != "") print cur }' "$tmp/defs" | tr '\n' ' ')
expected_chain="LIBNBD_1.0 LIBNBD_1.2<-LIBNBD_1.0 LIBNBD_1.4<-LIBNBD_1.2 LIBNBD_1.6<-LIBNBD_1.4 LIBNBD_1.8<-LIBNBD_1.6 LIBNBD_1.12<-LIBNBD_1.8 LIBNBD_1.16<-LIBNBD_1.12 LIBNBD_1.18<-LIBNBD_1.16 LIBNBD_1.22<-LIBNBD_1.18 LIBNBD_1.24<-LIBNBD_1.22 DUPLEXNBD_1.0<-LIBNBD_1.24 "
echo "version definitions: $chain"
if [ "$chain" != "$expected_chain" ]; then
  echo "FAIL: version definitions should be: $expected_chain"
  fail=1
fi

# Everything Debian's libnbd exports, we export with the same version.
if [ -e "$debian" ]; then
  exports "$debian" >"$tmp/debian"
  missing=$(comm -23 "$tmp/debian" "$tmp/ours")
  if [ -n "$missing" ]; then
    echo "FAIL: symbol@version exported by Debian's libnbd but not by ours:"
    echo "$missing"
    fail=1
  fi
  echo "Debian's libnbd: $(wc -l <"$tmp/debian") symbols, all present with identical versions: $([ -z "$missing" ] && echo yes || echo no)"
else
  echo "note: $debian not found; Debian comparison skipped"
fi
[ "$fail" -eq 0 ] && echo "PASS"
exit "$fail"
