#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Builds small C99 programs against our header and Debian's, links and runs them with ours.
set -euo pipefail
include=$1
libdir=$2
srcdir=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cc=${CC:-cc}

$cc -std=c99 -Wall -Wextra -Werror -pedantic -I"$include" "$srcdir/new_macros.c" \
  -L"$libdir" -lnbd -o "$tmp/new_macros"
LD_LIBRARY_PATH=$libdir "$tmp/new_macros"

# Our header also compiles as C++.
echo '#include <libnbd.h>
int main() { nbd_completion_callback c = NBD_NULL_COMPLETION; return c.callback != nullptr; }' >"$tmp/cxx.cpp"
c++ -std=c++17 -Wall -Wextra -Werror -I"$include" -fsyntax-only "$tmp/cxx.cpp"

if [ -e /usr/include/libnbd.h ]; then
  $cc -std=c99 -Wall -Werror -I/usr/include "$srcdir/debian_header.c" \
    -L"$libdir" -lnbd -Wl,-rpath,"$libdir" -o "$tmp/debian_header"
  # Prove which library the program really loaded.
  LD_LIBRARY_PATH=$libdir LD_DEBUG=libs "$tmp/debian_header" 2>"$tmp/ld.log" >/dev/null
  loaded=$(awk '/calling init: .*libnbd\.so\.0/ {print $NF; exit}' "$tmp/ld.log")
  echo "loaded: $loaded"
  case "$loaded" in
    "$libdir"/*) ;;
    *) echo "FAIL: the program did not load our library"; exit 1 ;;
  esac
  LD_LIBRARY_PATH=$libdir "$tmp/debian_header"
else
  echo "note: Debian's /usr/include/libnbd.h is not installed; skipped"
fi
echo PASS
