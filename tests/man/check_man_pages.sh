#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Every function the built library exports has a man page, no page lacks a function, and each
# page renders through man(1) and groff with every warning on and none printed, and has a NAME
# line whatis(1) can index.  Usage: check_man_pages.sh LIBRARY MAN3DIR
set -euo pipefail
lib=$1
man3=$2
for t in objdump groff man lexgrog; do
  command -v "$t" >/dev/null || { echo "FAIL: $t not found (apt-get install binutils groff-base man-db)"; exit 1; }
done
fail=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Defined dynamic symbols: libnbd's nbd_* and any duplexnbd_* extension.
objdump -T "$lib" | awk '$0 ~ /^[0-9a-f]+ / && $0 !~ /\*UND\*/ && $0 !~ /\*ABS\*/ {print $NF}' |
  grep -E '^(nbd|duplexnbd)_' | sort -u >"$tmp/symbols"
n=$(wc -l <"$tmp/symbols")
[ "$n" -gt 0 ] || { echo "FAIL: no nbd_* symbols exported by $lib"; exit 1; }
(cd "$man3" && ls -- *.3 2>/dev/null) | sed 's/\.3$//' | grep -vx duplexnbd | sort >"$tmp/pages" || true

if ! diff -u "$tmp/symbols" "$tmp/pages" >"$tmp/diff"; then
  echo "FAIL: exported symbols (-) and man pages (+) differ:"
  grep -E '^[-+][a-z]' "$tmp/diff"
  fail=1
fi
[ -f "$man3/duplexnbd.3" ] || { echo "FAIL: no overview page duplexnbd.3"; fail=1; }

# One check per page: "page: problem" lines, nothing when all is well.  Two at a time.
check_page() {
  local page=$1 name out
  name=$(basename "$page" .3)
  out=$(MANWIDTH=80 man --warnings=w -l "$page" 2>&1 >/dev/null) || out="man failed: $out"
  [ -z "$out" ] || printf '%s: man: %s\n' "$name" "$out"
  out=$(groff -man -Tutf8 -ww -z "$page" 2>&1) || out="groff failed: $out"
  [ -z "$out" ] || printf '%s: groff: %s\n' "$name" "$out"
  # lexgrog prints `file: "name - summary"` when it finds a NAME line whatis can use.
  out=$(lexgrog "$page" 2>&1) || true
  case $out in
    *": \"$name - "*) ;;
    *) printf '%s: whatis cannot parse the NAME section: %s\n' "$name" "$out" ;;
  esac
}
export -f check_page
ls "$man3"/*.3 | xargs -P 2 -I{} bash -c 'check_page "$1"' _ {} >"$tmp/problems"
if [ -s "$tmp/problems" ]; then
  echo "FAIL: pages with warnings:"
  cat "$tmp/problems"
  fail=1
fi
echo "$n exported functions, $(wc -l <"$tmp/pages") function pages + duplexnbd.3, each rendered by man and groff (all warnings on)"
[ "$fail" -eq 0 ] && echo PASS
exit "$fail"
