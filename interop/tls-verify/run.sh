#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# TLS certificate checks against libnbd 1.22: its own TLS test programs on our library, and the same connection attempts on both.
#
# Usage: interop/tls-verify/run.sh [--lib PATH] [--stock PATH] [--src DIR]
#   --lib PATH    library under test (default <repo>/build/lib/libnbd.so.0)
#   --stock PATH  a libnbd 1.22 libnbd.so.0 to compare with (e.g. the build that
#                 interop/libnbd-testsuite.sh caches under ~/.cache/duplexnbd);
#                 without it only ours runs and the matrix is printed, not compared
#   --src DIR     libnbd 1.22 source tree, configured (default /work/ref/src122/libnbd-1.22.2)
#
# Part 1 compiles libnbd's TLS test programs (interop/interop.c as the
# interop-nbdkit-tls-* / -qemu-nbd-tls-* / -nbd-server-tls tests, tests/connect-tls.c,
# opt-starttls.c, connect-uri.c as connect-uri-nbds-*) with the -D flags their
# Makefile.am gives, against our header, makes tests/pki with libnbd's make-pki.sh,
# and runs each (exit 0 pass, 77 skip).  interop-nbdkit-tls-certs-bad-CA is the
# CVE-2024-7383 case: it must fail to connect.
# Part 2 runs probe.c (one attempt, printing rc, errno, error, nbd_get_tls_hostname)
# over a matrix: server certificate (good, another host name, expired, self-signed)
# x how the client connects (Unix socket, TCP to localhost and to 127.0.0.1, sockaddr)
# x client CA (good, wrong, empty directory, none) x nbd_set_tls_hostname (none,
# localhost, another name, "") x verify_peer (1, 0); with --stock, the outputs must
# be identical.
# Exit: 0 all good; 1 a program failed or the matrix differs; 2 cannot run.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
lib=$root/build/lib/libnbd.so.0 stock= src=/work/ref/src122/libnbd-1.22.2
while (($#)); do
  case $1 in
    --lib) lib=$2; shift 2 ;;
    --stock) stock=$2; shift 2 ;;
    --src) src=$2; shift 2 ;;
    *) sed -n '3,25p' "$0"; exit 2 ;;
  esac
done
for t in gcc nbdkit certtool psktool python3; do
  command -v $t >/dev/null || { echo "run.sh: $t is needed" >&2; exit 2; }
done
[[ -f $lib && -f $src/config.h && -f $src/interop/Makefile.am ]] ||
  { echo "run.sh: need --lib and a configured --src tree" >&2; exit 2; }

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
failed=0

# Each library sits alone in a directory as libnbd.so.0, found through LD_LIBRARY_PATH.
libdir() { mkdir -p "$work/lib-$1"; cp "$2" "$work/lib-$1/libnbd.so.0"; echo "$work/lib-$1"; }
ours_dir=$(libdir ours "$lib")
[[ -n $stock ]] && stock_dir=$(libdir stock "$stock")
ln -s libnbd.so.0 "$ours_dir/libnbd.so"
hdr=$root/build/generated/include
[[ -f $hdr/libnbd.h ]] || hdr=$src/include

echo "== part 1: libnbd 1.22's TLS test programs"
mkdir -p "$work/interop" "$work/tests"
(cd "$work/tests" && SRCDIR=$src/tests CERTTOOL=certtool "$src/tests/make-pki.sh" pki >/dev/null 2>&1 &&
  psktool -u alice -p keys.psk >/dev/null)
sed "s#@abs_top_builddir@#$work#g" "$src/interop/nbd-server-tls.conf.in" \
  >"$work/interop/nbd-server-tls.conf"
python3 "$here/programs.py" "$src" "$work" "$hdr" "$ours_dir" >"$work/build.sh"
bash "$work/build.sh" 2>"$work/build.log" || { cat "$work/build.log"; exit 2; }
for p in $(cd "$work" && find interop tests -maxdepth 1 -type f -perm -u+x | sort); do
  for v in ours ${stock:+stock}; do
    d=ours_dir; [[ $v == stock ]] && d=stock_dir
    set +e
    (cd "$work/$(dirname "$p")" && LD_LIBRARY_PATH=${!d} timeout 60 "./$(basename "$p")") \
      >"$work/$v-$(basename "$p").log" 2>&1
    rc=$?
    set -e
    case $rc in 0) r=pass ;; 77) r=skip ;; *) r="FAIL ($rc)"; [[ $v == ours ]] && failed=1 ;; esac
    printf '%-50s %-6s %s\n' "$p" "$v" "$r"
  done
done

echo "== part 2: the same attempts on each library"
gcc -Wall -o "$work/probe" "$here/probe.c" -I"$hdr" -L"$ours_dir" -lnbd
pki=$work/pki
mkdir -p "$pki"/{good,other,wrongca,othername,expired,selfsigned,empty}
q() { certtool "$@" >>"$work/certtool.log" 2>&1; }
for d in good other; do
  q --generate-privkey --key-type=ecdsa --outfile "$pki/$d/ca-key.pem"
  printf 'cn = CA %s\nca\ncert_signing_key\nexpiration_days = 30\n' $d >"$pki/$d/ca.info"
  q --generate-self-signed --load-privkey "$pki/$d/ca-key.pem" --template "$pki/$d/ca.info" \
    --outfile "$pki/$d/ca-cert.pem"
done
cp "$pki/other/ca-cert.pem" "$pki/wrongca/"
server_cert() {  # DIR CA-DIR|"" TEMPLATE-LINES
  local d=$pki/$1
  q --generate-privkey --key-type=ecdsa --outfile "$d/server-key.pem"
  printf 'organization = t\nencryption_key\nsigning_key\ntls_www_server\n%b' "$3" >"$d/server.info"
  if [[ -z $2 ]]; then
    q --generate-self-signed --load-privkey "$d/server-key.pem" --template "$d/server.info" \
      --outfile "$d/server-cert.pem"
    cp "$d/server-cert.pem" "$d/ca-cert.pem"
  else
    q --generate-certificate --load-ca-certificate "$pki/$2/ca-cert.pem" \
      --load-ca-privkey "$pki/$2/ca-key.pem" --load-privkey "$d/server-key.pem" \
      --template "$d/server.info" --outfile "$d/server-cert.pem"
    [[ $1 == "$2" ]] || cp "$pki/$2/ca-cert.pem" "$d/"
  fi
}
local_names='cn = localhost\ndns_name = localhost\nip_address = 127.0.0.1\n'
server_cert good good "${local_names}expiration_days = 30\n"
server_cert othername good 'cn = nbd.example.invalid\ndns_name = nbd.example.invalid\nexpiration_days = 30\n'
server_cert expired good "${local_names}"'activation_date = "2019-01-01 00:00:00 UTC"\nexpiration_date = "2020-01-01 00:00:00 UTC"\n'
server_cert selfsigned "" "${local_names}expiration_days = 30\n"

declare -A port
for d in good othername expired selfsigned; do
  nbdkit -f --exit-with-parent -U "$work/$d.sock" --tls=require --tls-certificates="$pki/$d" \
    memory 1M 2>>"$work/nbdkit.log" &
  pids+=($!)
  for _ in 1 2 3 4 5; do
    port[$d]=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    nbdkit -f --exit-with-parent -i 127.0.0.1 -p "${port[$d]}" --tls=require \
      --tls-certificates="$pki/$d" memory 1M 2>>"$work/nbdkit.log" &
    pids+=($!)
    sleep 0.5
    kill -0 "${pids[-1]}" 2>/dev/null && break
  done
done
sleep 0.5
matrix() {  # LIBDIR
  local d t c hn v dir
  for d in good othername expired selfsigned; do
    for t in unix:"$work/$d.sock" tcp:localhost:${port[$d]} tcp:127.0.0.1:${port[$d]} \
      inet:127.0.0.1:${port[$d]}; do
      for c in good wrongca empty -; do
        dir=-; [[ $c != - ]] && dir=$pki/$c
        for hn in - localhost nbd.example.invalid EMPTY; do
          for v in 1 0; do
            printf '%-10s %-14s ca=%-7s tls_hostname=%-19s verify=%s | ' "$d" "${t%%:*}:${t#*:}" \
              "$c" "$hn" "$v" | sed "s#$work/##; s#:[0-9]* # #"
            LD_LIBRARY_PATH=$1 timeout 20 "$work/probe" "$t" "$dir" "$hn" "$v" | sed "s#$work/##g"
          done
        done
      done
    done
  done
}
matrix "$ours_dir" >"$work/matrix-ours.txt"
if [[ -n $stock ]]; then
  matrix "$stock_dir" >"$work/matrix-stock.txt"
  if diff "$work/matrix-stock.txt" "$work/matrix-ours.txt"; then
    echo "identical: $(wc -l <"$work/matrix-ours.txt") attempts," \
      "$(grep -c 'rc=-1' "$work/matrix-ours.txt") of them refused"
  else
    failed=1
  fi
else
  cat "$work/matrix-ours.txt"
fi
exit $failed
