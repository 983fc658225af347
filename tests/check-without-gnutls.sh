#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Builds the library without GnuTLS and checks that TLS is reported missing and refused clearly.
#
#   tests/check-without-gnutls.sh [BUILD_DIR]     default <repo>/build-notls
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build-notls}

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDUPLEXNBD_WITH_GNUTLS=OFF \
  -DDUPLEXNBD_TESTS=OFF >/dev/null
nice cmake --build "$build" -j2 --target nbd

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/check.c" <<'EOF'
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <libnbd.h>

static int failures;
#define CHECK(cond, ...) do { if (!(cond)) { failures++; printf ("FAIL: " __VA_ARGS__); printf ("\n"); } } while (0)

int main (int argc, char **argv) {
  struct nbd_handle *h = nbd_create ();
  CHECK (nbd_supports_tls (h) == 0, "supports_tls should be false");
  CHECK (nbd_set_tls (h, LIBNBD_TLS_REQUIRE) == -1, "set_tls(REQUIRE) should fail");
  CHECK (nbd_get_errno () == ENOTSUP, "set_tls errno %d, want ENOTSUP", nbd_get_errno ());
  CHECK (nbd_get_error () && strstr (nbd_get_error (), "TLS"), "set_tls error should mention TLS");
  CHECK (nbd_set_tls (h, LIBNBD_TLS_DISABLE) == 0, "set_tls(DISABLE) should work");
  /* nbds:// asks for TLS: refused with a clear error, nothing sent in plaintext. */
  CHECK (nbd_connect_uri (h, argv[1]) == -1, "nbds:// connect should fail");
  CHECK (nbd_get_errno () == ENOTSUP, "nbds:// errno %d, want ENOTSUP", nbd_get_errno ());
  printf ("nbds:// refused: %s\n", nbd_get_error ());
  nbd_close (h);
  /* Plaintext still works. */
  h = nbd_create ();
  CHECK (nbd_connect_uri (h, argv[2]) == 0, "plain connect: %s", nbd_get_error ());
  CHECK (nbd_get_size (h) == 1048576, "size");
  nbd_close (h);
  return failures ? 1 : 0;
}
EOF
cc -std=c99 -Wall -Werror -I"$build/generated/include" "$work/check.c" -o "$work/check" \
  -L"$build/lib" -l:libnbd.so.0

nbdkit -f --exit-with-parent -U "$work/tls.sock" --tls=require --tls-psk=/dev/null memory 1M &
pids+=($!)
nbdkit -f --exit-with-parent -U "$work/plain.sock" memory 1M &
pids+=($!)
for _ in $(seq 100); do
  [ -S "$work/tls.sock" ] && [ -S "$work/plain.sock" ] && break
  sleep 0.1
done
LD_LIBRARY_PATH="$build/lib" "$work/check" "nbds+unix:///?socket=$work/tls.sock" \
  "nbd+unix:///?socket=$work/plain.sock"
echo "without GnuTLS: all checks passed"
