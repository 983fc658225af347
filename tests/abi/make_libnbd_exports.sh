#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Writes the exports of a real libnbd.so.0 (symbol and version node, and the node chain) as
# the data file tests/abi/check_libnbd_exports.sh compares our library with. Run once per
# libnbd release we follow; CI has no copy of that library, so the output is committed.
#
#   tests/abi/make_libnbd_exports.sh LIBNBD_SO PACKAGE_DESCRIPTION > tests/abi/libnbd-X.Y.Z-exports.txt
#
# e.g. with LIBNBD_SO = usr/lib/x86_64-linux-gnu/libnbd.so.0 unpacked from
# libnbd0_1.24.4-1_amd64.deb (dpkg-deb -x) and PACKAGE_DESCRIPTION = "Debian sid's libnbd0
# 1.24.4-1 (amd64)".
set -euo pipefail
lib=$1
what=$2

echo "# The nbd_* exports of $what and its symbol version nodes,"
echo "# written by tests/abi/make_libnbd_exports.sh from that package's libnbd.so.0"
echo "# (objdump -p for the nodes and their parents, objdump -T for the symbols)."
echo "# 'node NAME [PARENT]' lines, oldest first, then 'SYMBOL NODE' lines, sorted."
# Version definitions: "N 0xFLAGS 0xHASH NAME" then, indented, the parent's name.
objdump -p "$lib" | awk '
  /^Version definitions:/ {on = 1; next}
  /^Version References:/ {on = 0}
  !on || !NF {next}
  $2 ~ /^0x/ { if (name != "") print "node", name, parent; name = ($2 == "0x01") ? "" : $4; parent = ""; next }
  { parent = parent " " $1 }
  END { if (name != "") print "node", name, parent }' | tr -s ' ' | sed 's/ *$//'
objdump -T "$lib" | awk '$0 ~ /^[0-9a-f]+ / && $0 !~ /\*UND\*/ && $NF ~ /^nbd_/ {print $NF, $(NF-1)}' |
  LC_ALL=C sort
