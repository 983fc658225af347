#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Fetches Debian sid's libnbd 1.24 binary packages (libnbd-bin, libnbd-dev, libnbd0) through a private apt state and unpacks them under the cache.
#
# Usage: interop/programs/fetch-sid-libnbd.sh   (prints the unpacked root on stdout)
#
# The private state (its own sources entry, index lists and package cache
# under $DUPLEXNBD_CACHE/apt/sid) means the machine's /etc/apt and
# /var/lib/apt are neither read for sources nor changed.  Debian's archive
# key signs sid's Release file, and apt checks each .deb against it.
# The unpacked root is reused while it holds the expected version.
# sid's nbdinfo needs only glibc >= 2.34, so it runs on Debian 12; it is
# run on our library only (sid's libnbd0 is unpacked for its man pages and
# the ABI list, never loaded here: its dependencies are sid's).
set -euo pipefail

SUITE=sid
VERSION="${SID_LIBNBD_VERSION:-1.24.4-1}"
MIRROR="http://deb.debian.org/debian"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
cache="${DUPLEXNBD_CACHE:-$HOME/.cache/duplexnbd}"
root="$cache/sid-libnbd-$VERSION"

if [ -x "$root/usr/bin/nbdinfo" ] && [ -f "$root/.complete" ]; then
    echo "$root"
    exit 0
fi
[ -r "$KEYRING" ] || { echo "error: $KEYRING missing (apt-get install debian-archive-keyring)" >&2; exit 2; }

dir="$cache/apt/$SUITE"
opts=(-o Dir::Etc::SourceList=/dev/null
      -o Dir::Etc::SourceParts="$dir/etc"
      -o Dir::State::Lists="$dir/lists"
      -o Dir::State::Status=/dev/null
      -o Dir::Cache="$dir/cache"
      -o APT::Architecture=amd64)
mkdir -p "$dir/etc" "$dir/lists/partial" "$dir/cache/archives/partial"
printf '%s\n' "Types: deb" "URIs: $MIRROR" "Suites: $SUITE" "Components: main" \
    "Signed-By: $KEYRING" >"$dir/etc/$SUITE.sources"

apt-get "${opts[@]}" -q update >&2 || { echo "error: apt-get update of the private $SUITE state failed" >&2; exit 2; }
debs="$cache/sid-debs-$VERSION"
rm -rf "$debs" "$root"; mkdir -p "$debs" "$root"
(cd "$debs" && apt-get "${opts[@]}" -q download \
    "libnbd-bin=$VERSION" "libnbd-dev=$VERSION" "libnbd0=$VERSION") >&2 ||
    { echo "error: apt-get download of libnbd $VERSION from $SUITE failed" >&2; exit 2; }
for deb in "$debs"/*.deb; do
    dpkg-deb -x "$deb" "$root"
done
[ -x "$root/usr/bin/nbdinfo" ] || { echo "error: no usr/bin/nbdinfo in the unpacked packages" >&2; exit 2; }
touch "$root/.complete"
echo "$root"
