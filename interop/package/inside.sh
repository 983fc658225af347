#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Runs inside the throwaway Debian root (interop/package/run.sh): installs our .debs over
# Debian's libnbd0, checks that Debian's own programs run on them with no LD_* variable, then
# puts the stock library back.  Prints "== step" headers, outputs, and "PASS"/"FAIL" lines;
# exits 1 if any check failed.
set -uo pipefail
here=/tmp/duplexnbd-test
t=$here/run
mkdir -p "$t"
fails=0
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null) || multiarch=x86_64-linux-gnu
lib=/usr/lib/$multiarch/libnbd.so.0
mem_uri="nbd+unix:///?socket=$t/mem.sock"
size=256M

now_ms() { echo $(($(date +%s%N) / 1000000)); }
secs() { printf '%d.%d' $(($1 / 1000)) $((($1 % 1000) / 100)); }  # milliseconds as seconds
step() { printf '\n== %s\n' "$*"; step_start=$(now_ms); }
step_time() { printf -- '-- %s: %s s\n' "$1" "$(secs $(($(now_ms) - step_start)))"; }
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
# expect LABEL PATTERN TEXT: TEXT matches the extended regex PATTERN.
expect() { if grep -Eq -- "$2" <<<"$3"; then pass "$1"; else fail "$1 (wanted /$2/)"; fi; }
owner() { dpkg -S "$(readlink -f "$1")" 2>/dev/null | cut -d: -f1; }
installed() { [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]; }
stop_server() {
  [ -f "$t/mem.pid" ] && kill "$(cat "$t/mem.pid")" 2>/dev/null
  rm -f "$t/mem.pid"
}
trap stop_server EXIT
[ -z "$(env | grep '^LD_')" ] || { echo "FAIL: LD_* set: $(env | grep '^LD_')"; exit 1; }

step "stock: Debian's libnbd0 as installed"
out=$(nbdinfo --version 2>&1); echo "$out"
echo "$lib -> $(readlink -f "$lib") (package $(owner "$lib"))"

step "install Debian's users of libnbd (a no-op when the cached root has them)"
apt-get install -y -q libnbd-bin python3-libnbd nbdkit fio 2>&1 | tail -n 3
for p in libnbd-bin python3-libnbd nbdkit fio; do
  echo "$p: $(apt-cache show --no-all-versions "$p" | grep -E '^Depends:' | grep -oE 'libnbd0[^,]*')"
done
step_time "install users"

step "install our packages over libnbd0"
debs=("$here"/debs/*.deb)
printf '%s\n' "${debs[@]##*/}"
out=$(apt-get install -y "${debs[@]}" 2>&1); rc=$?
grep -E 'REMOVED|NEW packages|no longer required|dependency problems|^  |^Setting up|^Removing|^E:|^W:' <<<"$out"
[ "$rc" -eq 0 ] && pass "apt-get install ./our .debs" || { fail "apt-get install (exit $rc)"; echo "$out" | tail -20; exit 1; }
step_time "install ours"
for p in libnbd-bin python3-libnbd nbdkit fio; do
  installed "$p" && pass "$p still installed" || fail "$p was removed"
done
installed libnbd0 && fail "libnbd0 still installed" || pass "libnbd0 removed"
apt-get check >/dev/null 2>&1 && pass "apt-get check: dependencies satisfied" || fail "apt-get check"
echo "$lib -> $(readlink -f "$lib") (package $(owner "$lib"))"
[ "$(owner "$lib")" = libnbd0-duplexnbd ] && pass "libnbd.so.0 belongs to libnbd0-duplexnbd" || fail "libnbd.so.0 owner"
dpkg -s libnbd0-duplexnbd | grep -E '^(Version|Provides|Conflicts|Replaces|Depends):'

step "nbdinfo --version and its library"
out=$(nbdinfo --version 2>&1); echo "$out"
expect "nbdinfo runs on duplexnbd" '^duplexnbd [0-9]' "$out"
echo "ldd: $(ldd "$(command -v nbdinfo)" | grep libnbd)"

step "nbdcopy: nbdkit pattern -> nbdkit memory, $size, then read back and compared"
nbdkit -U "$t/mem.sock" -P "$t/mem.pid" memory size=$size || fail "nbdkit memory did not start"
for _ in $(seq 50); do [ -S "$t/mem.sock" ] && break; sleep 0.1; done
expected=$(python3 - <<'PY'
# The pattern plugin's bytes, computed without libnbd: each 8-byte word is its offset, big-endian.
import hashlib
from array import array
h, step, size = hashlib.sha256(), 1 << 20, 256 << 20
for base in range(0, size, step):
    a = array("Q", range(base, base + step, 8)); a.byteswap(); h.update(a.tobytes())
print(h.hexdigest())
PY
)
start=$(now_ms)
nbdkit -U - pattern size=$size --run "nbdcopy \"\$uri\" \"$mem_uri\"" &&
  pass "nbdcopy pattern -> memory" || fail "nbdcopy pattern -> memory"
copy_s=$(secs $(($(now_ms) - start)))
got=$(nbdcopy "$mem_uri" - | sha256sum | cut -d' ' -f1)
echo "expected sha256 $expected"
echo "read back sha256 $got"
[ -n "$got" ] && [ "$got" = "$expected" ] && pass "256 MiB copied and read back intact (copy ${copy_s}s)" || fail "checksum differs"
out=$(nbdcopy --version 2>&1); echo "$out"
expect "nbdcopy runs on duplexnbd" '^duplexnbd [0-9]' "$out"
step_time nbdcopy

step "python3-libnbd"
out=$(python3 - "$mem_uri" <<'PY' 2>&1
import os, struct, sys
import nbd
h = nbd.NBD()
print("package", h.get_package_name(), h.get_version())
print("loaded", sorted({os.path.realpath(l.split()[-1]) for l in open("/proc/self/maps") if "libnbd.so" in l}))
h.connect_uri(sys.argv[1])
off = 200 * 1024 * 1024 + 8 * 1234
buf = h.pread(64, off)
want = b"".join(struct.pack(">Q", off + i) for i in range(0, 64, 8))
print("size", h.get_size(), "pread", "matches" if buf == want else "DIFFERS")
h.shutdown()
PY
)
echo "$out"
expect "python: get_package_name() is duplexnbd" '^package duplexnbd ' "$out"
expect "python: read the pattern back through the library" 'pread matches' "$out"
expect "python: loaded the packaged library" "loaded \\['/usr/lib/$multiarch/libnbd.so.0.0.0'\\]" "$out"

step "fio --ioengine=nbd: random writes with crc32c verification, then 3 s of random reads"
echo "ldd: $(ldd "$(command -v fio)" | grep libnbd)"
out=$(fio --name=write-verify --ioengine=nbd --uri="$mem_uri" --rw=randwrite --bs=64k \
  --size=64M --iodepth=16 --verify=crc32c --do_verify=1 2>&1); rc=$?
grep -E 'err=|WRITE:|READ:|verify' <<<"$out"
[ "$rc" -eq 0 ] && grep -q 'err= 0' <<<"$out" && pass "fio write+verify" || { fail "fio write+verify (exit $rc)"; echo "$out" | tail -20; }
out=$(fio --name=randread --ioengine=nbd --uri="$mem_uri" --rw=randread --bs=4k --size=256M \
  --iodepth=32 --time_based --runtime=3 2>&1); rc=$?
grep -E 'err=|READ:|IOPS' <<<"$out"
[ "$rc" -eq 0 ] && grep -q 'err= 0' <<<"$out" && pass "fio randread" || { fail "fio randread (exit $rc)"; echo "$out" | tail -20; }
step_time fio
stop_server

step "the dev package: pkg-config, man pages"
echo "pkg-config --modversion libnbd: $(pkg-config --modversion libnbd 2>&1)"
echo "pkg-config --cflags --libs libnbd: $(pkg-config --cflags --libs libnbd 2>&1)"
[ "$(pkg-config --modversion libnbd 2>/dev/null)" = "$(dpkg-query -W -f='${Provides}' libnbd0-duplexnbd | grep -oE '[0-9][0-9.]+')" ] &&
  pass "libnbd.pc version is the provided libnbd version" || fail "libnbd.pc version"
page=$(man -w nbd_pread 2>&1); echo "man -w nbd_pread: $page ($(owner "$page"))"
[ "$(owner "$page")" = libnbd-duplexnbd-dev ] && pass "nbd_pread(3) is ours" || fail "nbd_pread(3) owner"
MANWIDTH=80 man nbd_pread 2>/dev/null | sed -n '/^VERSION/,/^$/p'
man -w duplexnbd >/dev/null 2>&1 && pass "duplexnbd(3) installed" || fail "duplexnbd(3) missing"

step "back to the stock library: apt-get install --reinstall libnbd0"
out=$(apt-get install -y --reinstall libnbd0 2>&1) || {
  echo "(cached package lists out of date: apt-get update, then again)"
  apt-get update -q >/dev/null 2>&1
  out=$(apt-get install -y --reinstall libnbd0 2>&1)
}
rc=$?
grep -E 'REMOVED|NEW packages|no longer required|dependency problems|^  |^Setting up|^Removing|^E:|^W:' <<<"$out"
[ "$rc" -eq 0 ] && pass "libnbd0 reinstalled" || fail "reinstalling libnbd0 (exit $rc)"
installed libnbd0-duplexnbd && fail "libnbd0-duplexnbd still installed" || pass "libnbd0-duplexnbd removed"
for p in libnbd-bin python3-libnbd nbdkit fio; do
  installed "$p" && pass "$p still installed" || fail "$p was removed"
done
echo "$lib -> $(readlink -f "$lib") (package $(owner "$lib"))"
out=$(nbdinfo --version 2>&1); echo "$out"
expect "nbdinfo back on libnbd" '^libnbd 1\.' "$out"
out=$(python3 -c 'import nbd; print("package", nbd.NBD().get_package_name())' 2>&1); echo "$out"
expect "python back on libnbd" '^package libnbd$' "$out"
step_time restore

echo
if [ "$fails" -eq 0 ]; then echo "ALL PASSED"; else echo "$fails FAILED"; fi
[ "$fails" -eq 0 ]
