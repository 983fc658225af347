#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# `cmake --install` into two prefixes; against each, a C program built with pkg-config and a C and
# a C++ program built through find_package(duplexnbd) must run on that prefix's library (not the
# build tree's, not Debian's), report the package "duplexnbd", and read back from nbdkit memory
# what they wrote.  The second prefix is then moved, and the CMake package must still work
# from the new place.  Usage: check_install.sh BUILD_DIR VERSION
set -euo pipefail
build=$(cd "$1" && pwd)
version=$2
here=$(cd "$(dirname "$0")" && pwd)
for t in cmake pkg-config cc nbdkit; do
  command -v "$t" >/dev/null || { echo "SKIP: $t not found"; exit 77; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
unset LD_LIBRARY_PATH LD_PRELOAD PKG_CONFIG_PATH PKG_CONFIG_LIBDIR CMAKE_PREFIX_PATH
fail=0
bad() { echo "FAIL: $*"; fail=1; }

# run_probe LABEL PREFIX BINARY [ARGS]: the probe ran on PREFIX's library, as duplexnbd.
run_probe() {
  local label=$1 prefix=$2 bin=$3 out lib
  shift 3
  if ! out=$("$bin" "$@" 2>&1); then bad "$label: $bin failed: $out"; return; fi
  grep -qx 'package duplexnbd' <<<"$out" || bad "$label: package is not duplexnbd: $out"
  grep -qx "version $version" <<<"$out" || bad "$label: version is not $version: $out"
  lib=$(sed -n 's/^library //p' <<<"$out")
  if [ -n "$lib" ]; then
    case $lib in
      "$(realpath "$prefix")"/*) ;;
      *) bad "$label: loaded $lib, not the library under $prefix" ;;
    esac
  fi
  if [ "${1:-}" = --nbdkit ]; then
    grep -qx 'read back matches' <<<"$out" || bad "$label: nbdkit round trip: $out"
  fi
  echo "  $label: $(tr '\n' ' ' <<<"$out")"
}

cmake_consumer() { # cmake_consumer LABEL PREFIX
  local label=$1 prefix=$2 dir=$tmp/consumer-$1
  if ! cmake -S "$here/consumer" -B "$dir" -DCMAKE_PREFIX_PATH="$prefix" >"$dir.log" 2>&1 ||
     ! cmake --build "$dir" >>"$dir.log" 2>&1; then
    bad "$label: CMake consumer did not build:"; cat "$dir.log"; return
  fi
  grep -q "duplexnbd_DIR=$prefix/" "$dir.log" || bad "$label: find_package found $(grep -o 'duplexnbd_DIR=[^ ]*' "$dir.log")"
  run_probe "$label find_package C" "$prefix" "$dir/probe_c" --nbdkit
  run_probe "$label find_package C++" "$prefix" "$dir/probe_cxx"
}

prefixes=("$tmp/one" "$tmp/two/opt/duplexnbd")
labels=(one two)
for i in "${!prefixes[@]}"; do
  prefix=${prefixes[$i]} label=${labels[$i]}
  echo "prefix $prefix"
  cmake --install "$build" --prefix "$prefix" >"$tmp/install.log" 2>&1 ||
    { bad "cmake --install --prefix $prefix"; cat "$tmp/install.log"; continue; }
  pc=$(find "$prefix" -name libnbd.pc)
  [ -n "$pc" ] || { bad "$label: no libnbd.pc installed"; continue; }
  libdir=$(dirname "$(dirname "$pc")")
  for f in "$libdir/libnbd.so.0.0.0" "$libdir/libnbd.so.0" "$libdir/libnbd.so" \
           "$prefix/include/libnbd.h" "$prefix/include/nbd.hpp" \
           "$libdir/cmake/duplexnbd/duplexnbdConfig.cmake" \
           "$prefix/share/man/man3/nbd_pread.3" "$prefix/share/man/man3/duplexnbd.3"; do
    [ -e "$f" ] || bad "$label: not installed: ${f#"$prefix"/}"
  done
  [ "$(readlink "$libdir/libnbd.so.0")" = libnbd.so.0.0.0 ] || bad "$label: libnbd.so.0 is not a link to libnbd.so.0.0.0"
  grep -qx 'libnbd.pc' <(sed -n "s|^$prefix/.*/||p" "$build/install_manifest.txt") ||
    bad "$label: libnbd.pc missing from install_manifest.txt"
  # Nothing installed may point at the build tree, the configure-time prefix or another prefix.
  for other in "$build" /usr/local "${prefixes[@]}"; do
    [ "$other" = "$prefix" ] && continue
    hits=$(grep -rlF -- "$other" "$pc" "$libdir/cmake" 2>/dev/null || true)
    [ -z "$hits" ] || bad "$label: $other named in: $hits"
  done
  grep -qx "prefix=$prefix" "$pc" || bad "$label: libnbd.pc: $(grep '^prefix=' "$pc")"

  # pkg-config, as a user with PKG_CONFIG_PATH (Debian's own libnbd.pc stays on the default path).
  export PKG_CONFIG_PATH=$libdir/pkgconfig
  [ "$(pkg-config --variable=pcfiledir libnbd)" = "$libdir/pkgconfig" ] || bad "$label: pkg-config found $(pkg-config --path libnbd)"
  [ "$(pkg-config --modversion libnbd)" = "$version" ] || bad "$label: pkg-config version $(pkg-config --modversion libnbd)"
  # shellcheck disable=SC2046
  if cc -o "$tmp/probe-pc" "$here/probe.c" $(pkg-config --cflags --libs libnbd) \
        -Wl,-rpath,"$(pkg-config --variable=libdir libnbd)" 2>"$tmp/cc.log"; then
    run_probe "$label pkg-config" "$prefix" "$tmp/probe-pc" --nbdkit
  else
    bad "$label: pkg-config build failed:"; cat "$tmp/cc.log"
  fi
  unset PKG_CONFIG_PATH
  cmake_consumer "$label" "$prefix"

  # The man pages are found under the prefix.
  page=$(man -M "$prefix/share/man" -w nbd_pread 2>/dev/null || true)
  [ "$page" = "$prefix/share/man/man3/nbd_pread.3" ] || bad "$label: man -M finds nbd_pread at '$page'"
done

# A moved tree: the CMake package computes everything from its own location.
mv "$tmp/two" "$tmp/moved"
echo "prefix $tmp/moved/opt/duplexnbd (moved after installing)"
cmake_consumer moved "$tmp/moved/opt/duplexnbd"

[ "$fail" -eq 0 ] && echo PASS
exit "$fail"
