#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The Debian packages for real, in a throwaway Debian 12 root so the machine's own libnbd stays:
# builds libnbd0-duplexnbd and libnbd-duplexnbd-dev (dpkg-buildpackage on a copy of the tree),
# makes or reuses a cached bookworm root (mmdebstrap) holding Debian's libnbd-bin,
# python3-libnbd, nbdkit and fio, and in a fresh copy of it runs inside.sh: our packages replace
# libnbd0, Debian's programs run on them (nbdinfo, a verified 256 MiB nbdcopy, Python, fio's nbd
# engine), and reinstalling libnbd0 brings the stock library back.  Root only (chroot, mounts).
#
# Usage: interop/package/run.sh [options]
#   --debs DIR        test the .debs in DIR instead of building them
#   --refresh-root    rebuild the cached root even if it is fresh
#   --report FILE     markdown report (default: <repo>/build/package-test.md)
#   --keep            leave the throwaway root in place (its path is printed)
# Environment: DUPLEXNBD_CACHE (default ~/.cache/duplexnbd) holds root-bookworm.tar and the
# .debs of each source state (debs/<hash>/); DUPLEXNBD_ROOT_MAX_AGE_DAYS (default 7).
# Exit status: 0 all passed, 1 a check failed, 77 cannot run here (not root, no mounts).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
here=$repo/interop/package
cache=${DUPLEXNBD_CACHE:-$HOME/.cache/duplexnbd}
max_age_days=${DUPLEXNBD_ROOT_MAX_AGE_DAYS:-7}
debs_dir="" refresh=0 keep=0 report=$repo/build/package-test.md
while [ $# -gt 0 ]; do
  case $1 in
    --debs) debs_dir=$(cd "$2" && pwd); shift 2 ;;
    --refresh-root) refresh=1; shift ;;
    --report) report=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '3,20p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

skip() { echo "SKIP: $*" >&2; exit 77; }
[ "$(id -u)" -eq 0 ] || skip "needs root (chroot and mounts)"
for t in mmdebstrap dpkg-buildpackage dh chroot mount tar; do
  command -v "$t" >/dev/null || skip "$t not found (apt-get install mmdebstrap debhelper)"
done
probe=$(mktemp -d)
if ! mount -t tmpfs none "$probe" 2>/dev/null; then rmdir "$probe"; skip "cannot mount (container without CAP_SYS_ADMIN?)"; fi
umount "$probe"; rmdir "$probe"

mkdir -p "$cache" "$(dirname "$report")"
now_ms() { echo $(($(date +%s%N) / 1000000)); }
secs() { printf '%d.%d' $(($1 / 1000)) $((($1 % 1000) / 100)); }
declare -a timing=()
timed() { # timed LABEL CMD...: run CMD, record how long it took
  local label=$1 start rc=0
  shift
  start=$(now_ms)
  "$@" || rc=$?
  timing+=("| $label | $(secs $(($(now_ms) - start))) s |")
  return "$rc"
}
total_start=$(now_ms)

# ---------------------------------------------------------------------------------------------
# 1. The .debs, built once per source state.  Only what the package build reads is copied and
# hashed (the build has DUPLEXNBD_TESTS=OFF), so editing tests or docs keeps the cached .debs.
package_inputs=(CMakeLists.txt LICENSE bindings cmake debian generator lib)
build_debs() {
  local key src
  key=$(cd "$repo" && git ls-files -co --exclude-standard -z -- "${package_inputs[@]}" | sort -z |
        xargs -0 sha256sum | sha256sum | cut -c1-16)
  debs_dir=$cache/debs/$key
  if ls "$debs_dir"/libnbd0-duplexnbd_*.deb "$debs_dir"/libnbd-duplexnbd-dev_*.deb >/dev/null 2>&1; then
    echo "packages: cached for this source state ($debs_dir)"
    debs_state="cached ($key)"
    return 0
  fi
  src=$cache/pkgbuild/$key/duplexnbd
  rm -rf "$cache/pkgbuild/$key"
  mkdir -p "$src"
  (cd "$repo" && git ls-files -co --exclude-standard -z -- "${package_inputs[@]}" |
     tar --null -T - -cf -) | tar -C "$src" -xf -
  echo "packages: dpkg-buildpackage -b -us -uc in $src (log: $cache/pkgbuild/$key/build.log)"
  if ! (cd "$src" && DEB_BUILD_OPTIONS="parallel=2 ${DEB_BUILD_OPTIONS:-}" \
          dpkg-buildpackage -b -us -uc) >"$cache/pkgbuild/$key/build.log" 2>&1; then
    tail -n 30 "$cache/pkgbuild/$key/build.log"
    echo "FAIL: dpkg-buildpackage" >&2
    return 1
  fi
  mkdir -p "$debs_dir.tmp"
  mv "$cache/pkgbuild/$key"/libnbd0-duplexnbd_*.deb "$cache/pkgbuild/$key"/libnbd-duplexnbd-dev_*.deb \
    "$debs_dir.tmp/"
  rm -rf "$debs_dir" && mv "$debs_dir.tmp" "$debs_dir"
  rm -rf "$cache/pkgbuild/$key"
  # The three newest source states' packages are kept.
  ls -dt "$cache"/debs/*/ | tail -n +4 | xargs -r rm -rf
  debs_state="built ($key)"
}
if [ -z "$debs_dir" ]; then
  timed "build the .debs (dpkg-buildpackage)" build_debs
else
  debs_state="given ($debs_dir)"
fi
ls "$debs_dir"/*.deb

# ---------------------------------------------------------------------------------------------
# 2. The cached root: Debian 12 with Debian's users of libnbd installed, apt's package lists
# and libnbd0's own .deb kept (so putting it back needs no download while the lists are current).
root_tar=$cache/root-bookworm.tar
root_key="bookworm variant=apt include=libnbd-bin,python3-libnbd,nbdkit,fio,man-db,pkgconf keep=lists,libnbd0.deb v1"
make_root() {
  rm -rf "$cache/root-bookworm.tmp.tar"
  mmdebstrap --variant=apt --include=libnbd-bin,python3-libnbd,nbdkit,fio,man-db,pkgconf \
    --skip=cleanup/apt \
    --customize-hook='find "$1/var/cache/apt/archives" -name "*.deb" ! -name "libnbd0_*" -delete' \
    --customize-hook='rm -f "$1/var/cache/apt/pkgcache.bin" "$1/var/cache/apt/srcpkgcache.bin"' \
    bookworm "$cache/root-bookworm.tmp.tar" >"$cache/root-bookworm.log" 2>&1 ||
    { tail -n 30 "$cache/root-bookworm.log"; echo "FAIL: mmdebstrap" >&2; return 1; }
  mv "$cache/root-bookworm.tmp.tar" "$root_tar"
  echo "$root_key" >"$cache/root-bookworm.key"
}
root_state=cached
if [ "$refresh" -eq 1 ] || [ ! -f "$root_tar" ] ||
   [ "$(cat "$cache/root-bookworm.key" 2>/dev/null)" != "$root_key" ] ||
   [ -n "$(find "$root_tar" -mtime +"$max_age_days")" ]; then
  echo "root: mmdebstrap bookworm -> $root_tar (log: $cache/root-bookworm.log)"
  timed "mmdebstrap the bookworm root (cold cache)" make_root
  root_state="built"
fi
echo "root: $root_tar ($(du -h "$root_tar" | cut -f1), $root_state)"

# ---------------------------------------------------------------------------------------------
# 3. A throwaway copy of the root, /proc and /dev mounted, the .debs and inside.sh copied in.
work=$(mktemp -d "${TMPDIR:-/tmp}/duplexnbd-pkgtest.XXXXXX")
root=$work/root
mounted=()
cleanup() {
  local p m
  # Processes still running in the root (an nbdkit left by a failed check) go first.
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/root" 2>/dev/null)" = "$root" ] && kill "${p#/proc/}" 2>/dev/null
  done
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
    m=${mounted[$i]}
    umount "$m" 2>/dev/null || { sleep 1; umount "$m" 2>/dev/null; } || umount -l "$m" || true
  done
  for m in "${mounted[@]}"; do
    if mountpoint -q "$m"; then
      echo "run.sh: $m is still mounted; leaving $work in place" >&2
      return
    fi
  done
  if [ "$keep" -eq 1 ]; then echo "kept: $root"; else rm -rf --one-file-system "$work"; fi
}
trap cleanup EXIT
extract() { mkdir -p "$root" && tar -C "$root" -xf "$root_tar"; }
timed "extract the root" extract
mount -t proc proc "$root/proc" && mounted+=("$root/proc")
mount --bind /dev "$root/dev" && mounted+=("$root/dev")
mount --bind /dev/pts "$root/dev/pts" && mounted+=("$root/dev/pts")  # apt's terminal log
cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
mkdir -p "$root/tmp/duplexnbd-test/debs"
cp "$debs_dir"/libnbd0-duplexnbd_*.deb "$debs_dir"/libnbd-duplexnbd-dev_*.deb "$root/tmp/duplexnbd-test/debs/"
cp "$here/inside.sh" "$root/tmp/duplexnbd-test/"

# ---------------------------------------------------------------------------------------------
# 4. The checks, with a clean environment: no LD_* variable, nothing from the host's PATH.
log=$work/inside.log
rc=0
timed "checks inside the root (inside.sh)" \
  chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive TERM=dumb /bin/bash /tmp/duplexnbd-test/inside.sh \
  >"$log" 2>&1 || rc=$?
cat "$log"
timing+=("| total | $(secs $(($(now_ms) - total_start))) s |")

{
  echo "# Package test: libnbd0-duplexnbd in a throwaway Debian 12 root"
  echo
  echo "Run by \`interop/package/run.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs;"
  echo "packages: $debs_state; root: $root_state ($(du -h "$root_tar" | cut -f1))."
  echo
  echo "| phase | time |"
  echo "|---|---|"
  printf '%s\n' "${timing[@]}"
  echo
  echo '```'
  cat "$log"
  echo '```'
} >"$report"
echo "report: $report"
exit "$rc"
