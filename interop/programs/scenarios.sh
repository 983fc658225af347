#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The scenarios run.sh compares: each runs real libnbd programs against servers it starts itself.
#
#   scenarios.sh --list                 names and one-line descriptions
#   scenarios.sh --skip-reason NAME     prints why NAME cannot run here (empty: it can)
#   RUN=DIR scenarios.sh NAME           runs NAME once; transcript on stdout
#
# Only run.sh calls this; see lib.sh for the environment it passes.  Every
# scenario must be deterministic on one library, so anything whose order or
# timing may vary (server logs, progress updates) stays out of the
# transcript or is normalised by normalise.py.
set -euo pipefail

HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)

# name|description, in run order.
SCENARIOS=(
    "nbdinfo-plain|nbdinfo on nbdkit memory/pattern/null/data, an export description, and a [ CMD ] subprocess"
    "nbdinfo-json|nbdinfo --json for several servers, checked to parse"
    "nbdinfo-list|nbdinfo --list (text and --json) on nbdkit with two exports and on qemu-nbd"
    "nbdinfo-map|nbdinfo --map, --totals, --json on data/pattern/null/sparse-random"
    "nbdinfo-map-qemu|nbdinfo --map of base:allocation, qemu:allocation-depth and qemu:dirty-bitmap on a qcow2 via qemu-nbd"
    "nbdinfo-size|nbdinfo --size (and --json) on several servers"
    "nbdinfo-can-is|every nbdinfo --can/--is query on read-write, read-only, null and qemu-nbd servers (exit codes)"
    "nbdinfo-content|nbdinfo --content / --no-content"
    "nbdinfo-errors|nbdinfo against a missing socket, bad URIs, a missing export and an unknown context"
    "nbdinfo-tls|nbdkit with TLS (PSK): nbds+unix URIs, --is tls, wrong user, TLS refused, nbdcopy over TLS"
    "nbdinfo-tls-x509|nbdkit with TLS certificates made by certtool at test time: client certificates, wrong CA, tls-verify-peer, hostname check over TCP, nbdcopy over TLS"
    "nbdcopy-nbd-to-nbd|nbdcopy pattern -> memory: default, --connections/--requests, --synchronous, --flush, --progress"
    "nbdcopy-file-to-nbd|nbdcopy sparse file -> memory, with --progress and from stdin"
    "nbdcopy-nbd-to-file|nbdcopy sparse-random -> file and stdout, --progress=FD, --allocated, --synchronous"
    "nbdcopy-nbd-to-null|nbdcopy to null: with connection/request variants"
    "nbdcopy-sparse|nbdcopy sparse-random -> memory: zero detection, --allocated, --target-is-zero, --no-extents"
    "nbdcopy-qemu|nbdcopy qcow2 (qemu-nbd) -> file and file -> qcow2 (qemu-nbd), and to a [ qemu-nbd ] subprocess"
    "nbddump|nbddump on data, pattern, null and a [ CMD ] subprocess"
    "nbdfuse|nbdfuse: mount a memory export, write and read through the mount, three rounds of eight parallel O_DIRECT reads; read-only mount of pattern"
    "nbdsh|nbdsh running nbdsh_script.py: sync and aio calls, callbacks, opt mode, errors"
    "nbdkit-nbd-proxy|nbdkit's nbd plugin (linked to libnbd) proxying nbdkit memory; qemu-img convert/compare through it"
    "nbdkit-nbd-proxy-qemu|nbdkit nbd plugin (uri=) proxying qemu-nbd qcow2; qemu-img convert/compare through it"
    "sid-nbdinfo-version|sid-1.24 set only: nbdinfo --version (program and library lines)"
    "sid-nbdinfo-memory|sid-1.24 set only: nbdinfo and --json on nbdkit memory, read-only pattern, null and an export description"
    "sid-nbdinfo-tls|sid-1.24 set only: nbdinfo and --json over TLS: PSK and x509 (certificates made by certtool, server checking the client's)"
    "sid-nbdinfo-qemu|sid-1.24 set only: nbdinfo, --json, --list, --map (allocation, dirty bitmap) on qemu-nbd exports"
    "sid-nbdinfo-list|sid-1.24 set only: nbdinfo --list and --list --json on nbdkit with two exports"
    "sid-nbdinfo-map|sid-1.24 set only: nbdinfo --map, --totals, --json on data/sparse-random/null"
    "sid-nbdinfo-can-is|sid-1.24 set only: every --can/--is query 1.14 also knows on read-write, read-only and qemu-nbd servers (exit codes)"
)

scenario_names() {
    local s
    for s in "${SCENARIOS[@]}"; do echo "${s%%|*}"; done
}

have() { command -v "$1" >/dev/null 2>&1; }

# Why a scenario cannot run on this machine; empty when it can.
skip_reason() {
    local t
    for t in nbdkit nbdinfo nbdcopy sha256sum; do
        have "$t" || { echo "$t not installed (run.sh --install-deps)"; return; }
    done
    case $1 in
        nbdinfo-map-qemu | nbdcopy-qemu | nbdinfo-list | nbdinfo-can-is | nbdkit-nbd-proxy*)
            for t in qemu-img qemu-nbd qemu-io; do
                have "$t" || { echo "$t not installed (qemu-utils)"; return; }
            done ;;
    esac
    case $1 in
        sid-nbdinfo-qemu | sid-nbdinfo-can-is)
            for t in qemu-img qemu-nbd qemu-io; do
                have "$t" || { echo "$t not installed (qemu-utils)"; return; }
            done ;;
    esac
    case $1 in
        nbdinfo-tls-x509 | sid-nbdinfo-tls)
            have certtool || echo "certtool not installed (gnutls-bin)" ;;
        nbdinfo-content)
            have file || echo "file(1) not installed: nbdinfo --content prints nothing without it" ;;
        nbddump)
            have nbddump || echo "nbddump not installed (libnbd-bin)" ;;
        nbdfuse)
            have nbdfuse || { echo "nbdfuse not installed (libnbd-bin)"; return; }
            [[ -c /dev/fuse ]] || { echo "/dev/fuse missing: FUSE unusable here"; return; }
            [[ -r /dev/fuse && -w /dev/fuse ]] || { echo "/dev/fuse not accessible to $(id -un)"; return; }
            have fusermount3 || { echo "fusermount3 not installed (fuse3)"; return; }
            have mountpoint || echo "mountpoint(1) not installed (util-linux)" ;;
        nbdsh)
            have nbdsh || { echo "nbdsh not installed (python3-libnbd)"; return; }
            /usr/bin/python3 -c 'import nbd' 2>/dev/null ||
                echo "/usr/bin/python3 cannot import nbd (python3-libnbd)" ;;
        nbdkit-nbd-proxy*)
            nbdkit --dump-plugin nbd >/dev/null 2>&1 ||
                echo "nbdkit nbd plugin unavailable (nbdkit --dump-plugin nbd fails)" ;;
    esac
}

# A small qcow2 with a persistent dirty bitmap: data written before the
# bitmap exists is clean, data written after is dirty.
make_qcow2() { # make_qcow2 FILE
    qemu-img create -q -f qcow2 "$1" 64M
    qemu-io -f qcow2 -c 'write -q -P 0x11 0 1M' "$1" >/dev/null
    qemu-img bitmap --add --enable "$1" bm0
    qemu-io -f qcow2 -c 'write -q -P 0x22 4M 512k' -c 'write -q -z 8M 1M' \
        -c 'write -q -P 0x33 12M 64k' "$1" >/dev/null
}

# An image the data plugin serves: an MBR signature (so --content says
# something), a string, and holes between, so extents are interesting.
DATA_SPEC='@0x1b8 0xde 0xad 0xbe 0xef @0x1fe 0x55 0xaa @0x10000 "hello, nbd" @0x30000 0x01*4096 @0x80000 0xff*65536'

sc_nbdinfo-plain() {
    start_nbdkit mem memory 1M
    start_nbdkit pat -r pattern 8M
    start_nbdkit null null 1G
    start_nbdkit data -r data "$DATA_SPEC" size=1M
    start_nbdkit desc --filter=exportname memory 2M exportdesc=fixed:"interop test disk"
    step "memory" nbdinfo "$(uri mem)"
    step "pattern read-only" nbdinfo "$(uri pat)"
    step "null 1G" nbdinfo "$(uri null)"
    step "data" nbdinfo "$(uri data)"
    step "export description" nbdinfo "$(uri desc)"
    step "export name in URI" nbdinfo "$(uri mem exp1)"
    step "subprocess [ nbdkit ] (socket activation)" nbdinfo -- [ nbdkit -r pattern 1M ]
    step "version flag (exit code only)" bash -c 'nbdinfo --version >/dev/null'
}

sc_nbdinfo-json() {
    local s
    start_nbdkit mem memory 1M
    start_nbdkit pat -r pattern 8M
    start_nbdkit null null 1G
    start_nbdkit desc --filter=exportname memory 2M exportdesc=fixed:"json \"quoted\" desc"
    for s in mem pat null desc; do
        step --out "$RUN/$s.json" "json $s" nbdinfo --json "$(uri "$s")"
        echo "--- stdout (file)"
        show_file "$RUN/$s.json"
        check "json $s parses" /usr/bin/python3 -c \
            'import json, sys; print(sorted(json.load(open(sys.argv[1]))))' "$RUN/$s.json"
    done
}

sc_nbdinfo-list() {
    start_nbdkit multi --filter=exportname memory 1M exportname=alpha exportname=beta \
        exportname-list=explicit exportdesc=fixed:"shared description" default-export=alpha
    start_nbdkit one memory 1M
    qemu-img create -q -f raw "$RUN/q.raw" 2M
    start_qemu_nbd qemu -f raw -x qexport -D "qemu export description" "$RUN/q.raw"
    step "list two exports" nbdinfo --list "$(uri multi)"
    step "list two exports json" nbdinfo --list --json "$(uri multi)"
    step "list single default export" nbdinfo --list "$(uri one)"
    step "list qemu-nbd" nbdinfo --list "$(uri qemu qexport)"
    step "list qemu-nbd json" nbdinfo --list --json "$(uri qemu qexport)"
}

sc_nbdinfo-map() {
    local s
    start_nbdkit data -r data "$DATA_SPEC" size=1M
    start_nbdkit pat -r pattern 4M
    start_nbdkit null null 64M
    start_nbdkit sr -r sparse-random 64M seed=42
    for s in data pat null sr; do
        step "map $s" nbdinfo --map "$(uri "$s")"
        step "map --totals $s" nbdinfo --map --totals "$(uri "$s")"
    done
    step "map --json data" nbdinfo --map --json "$(uri data)"
    step "map --totals --json sr" nbdinfo --map --totals --json "$(uri sr)"
    step "map base:allocation named" nbdinfo --map=base:allocation "$(uri data)"
}

sc_nbdinfo-map-qemu() {
    make_qcow2 "$RUN/q.qcow2"
    start_qemu_nbd qemu -f qcow2 -B bm0 -A "$RUN/q.qcow2"
    step "map base:allocation" nbdinfo --map "$(uri qemu)"
    step "map totals" nbdinfo --map --totals "$(uri qemu)"
    step "map dirty bitmap" nbdinfo --map=qemu:dirty-bitmap:bm0 "$(uri qemu)"
    step "map dirty bitmap json" nbdinfo --map=qemu:dirty-bitmap:bm0 --json "$(uri qemu)"
    step "map dirty bitmap totals" nbdinfo --map=qemu:dirty-bitmap:bm0 --totals "$(uri qemu)"
    step "map allocation depth" nbdinfo --map=qemu:allocation-depth "$(uri qemu)"
    step "map unknown context" nbdinfo --map=qemu:dirty-bitmap:nosuch "$(uri qemu)"
    step "info lists contexts" nbdinfo "$(uri qemu)"
}

sc_nbdinfo-size() {
    local s
    start_nbdkit mem memory 1M
    start_nbdkit null null 1T
    start_nbdkit odd -r pattern 12345
    start_nbdkit data -r data "$DATA_SPEC" size=1M
    for s in mem null odd data; do
        step "size $s" nbdinfo --size "$(uri "$s")"
        step "size --json $s" nbdinfo --size --json "$(uri "$s")"
    done
}

# Every --can and --is question nbdinfo knows, asked of each server named.
can_is_steps() {
    local s q
    for s in "$@"; do
        for q in cache connect df fast-zero flush fua multi-conn read structured-reply trim write zero; do
            step "$s --can $q" nbdinfo --can "$q" "$(uri "$s")"
        done
        for q in read-only rotational tls; do
            step "$s --is $q" nbdinfo --is "$q" "$(uri "$s")"
        done
    done
}

sc_nbdinfo-can-is() {
    start_nbdkit rw memory 1M
    start_nbdkit ro -r pattern 1M
    start_nbdkit null null 1M
    qemu-img create -q -f qcow2 "$RUN/q.qcow2" 4M
    start_qemu_nbd qemu -f qcow2 "$RUN/q.qcow2"
    can_is_steps rw ro null qemu
    step "--can on a missing socket" nbdinfo --can connect "$(uri missing)"
    step "--can unknown flag" nbdinfo --can frobnicate "$(uri rw)"
}

sc_nbdinfo-content() {
    start_nbdkit data -r data "$DATA_SPEC" size=1M
    start_nbdkit pat -r pattern 1M
    start_nbdkit null null 1M
    step "content data (MBR)" nbdinfo --content "$(uri data)"
    step "content pattern" nbdinfo --content "$(uri pat)"
    step "content null" nbdinfo --content "$(uri null)"
    step "no-content data" nbdinfo --no-content "$(uri data)"
}

sc_nbdinfo-errors() {
    start_nbdkit strict --filter=exportname memory 1M exportname=only exportname-strict=true
    step "missing socket" nbdinfo "$(uri missing)"
    step "unknown URI scheme" nbdinfo "http://localhost/x"
    step "malformed URI" nbdinfo "nbd+unix://?socket"
    step "unix URI without socket" nbdinfo "nbd+unix:///"
    step "missing export (strict server)" nbdinfo "$(uri strict nosuch)"
    step "existing export (strict server)" nbdinfo --size "$(uri strict only)"
    step "map of unknown context" nbdinfo --map=nosuch:context "$(uri strict only)"
    step "no arguments" nbdinfo
}

sc_nbdinfo-tls() {
    # A fixed pre-shared key: deterministic and needs no certificate tools.
    printf 'alice:%s\n' 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef \
        >"$RUN/keys.psk"
    start_nbdkit tls --tls=require --tls-psk="$RUN/keys.psk" memory 4M
    start_nbdkit opt --tls=on --tls-psk="$RUN/keys.psk" -r pattern 1M
    local tlsuri="nbds+unix://alice@/?socket=$RUN/tls.sock&tls-psk-file=$RUN/keys.psk"
    local opturi="nbds+unix://alice@/?socket=$RUN/opt.sock&tls-psk-file=$RUN/keys.psk"
    step "info over TLS" nbdinfo "$tlsuri"
    step "--is tls" nbdinfo --is tls "$tlsuri"
    step "json over TLS" nbdinfo --json "$tlsuri"
    step "plain client, TLS-required server" nbdinfo "$(uri tls)"
    step "--can connect without TLS" nbdinfo --can connect "$(uri tls)"
    step "wrong PSK user" nbdinfo "nbds+unix://mallory@/?socket=$RUN/tls.sock&tls-psk-file=$RUN/keys.psk"
    step "TLS-optional server, plain client" nbdinfo --is tls "$(uri opt)"
    step "TLS-optional server, TLS client" nbdinfo --is tls "$opturi"
    mkdata "$RUN/src.img" $((4 << 20)) 11
    sum_file source "$RUN/src.img"
    step "nbdcopy file -> TLS" nbdcopy "$RUN/src.img" "$tlsuri"
    step "nbdcopy TLS -> file" nbdcopy "$tlsuri" "$RUN/dst.img"
    sum_file "TLS round trip" "$RUN/dst.img"
    step "nbdcopy TLS -> null:" nbdcopy "$opturi" null:
}

# make_certs [--ca CADIR] DIR CN NAME...: in DIR, ca-cert.pem, a server
# certificate for the given DNS names / IP addresses and a client
# certificate, as nbdkit --tls-certificates and libnbd tls-certificates=
# expect; signed by a fresh CA (its key kept outside DIR, in DIR.ca-key.pem)
# or by the CA made earlier for CADIR.
make_certs() {
    local ca="" dir cn n who
    if [[ $1 == --ca ]]; then ca=$2; shift 2; fi
    dir=$1 cn=$2; shift 2
    mkdir -p "$dir"
    if [[ -z $ca ]]; then
        ca=$dir
        certtool --generate-privkey --outfile "$dir.ca-key.pem" 2>/dev/null
        printf 'cn = duplexnbd interop CA %s\nca\ncert_signing_key\nexpiration_days = 2\n' "$cn" >"$dir.ca.info"
        certtool --generate-self-signed --load-privkey "$dir.ca-key.pem" \
            --template "$dir.ca.info" --outfile "$dir/ca-cert.pem" 2>/dev/null
    else
        cp "$ca/ca-cert.pem" "$dir/ca-cert.pem"
    fi
    {
        printf 'organization = duplexnbd interop\ncn = %s\n' "$cn"
        for n in "$@"; do
            if [[ $n =~ ^[0-9.]+$ ]]; then echo "ip_address = $n"; else echo "dns_name = $n"; fi
        done
        printf 'tls_www_server\nencryption_key\nsigning_key\nexpiration_days = 2\n'
    } >"$dir.server.info"
    printf 'organization = duplexnbd interop\ncn = interop-client\ntls_www_client\nencryption_key\nsigning_key\nexpiration_days = 2\n' \
        >"$dir.client.info"
    for who in server client; do
        certtool --generate-privkey --outfile "$dir/$who-key.pem" 2>/dev/null
        certtool --generate-certificate --load-ca-certificate "$ca/ca-cert.pem" \
            --load-ca-privkey "$ca.ca-key.pem" --load-privkey "$dir/$who-key.pem" \
            --template "$dir.$who.info" --outfile "$dir/$who-cert.pem" 2>/dev/null
    done
    chmod 0600 "$dir"/*-key.pem
}

free_port() {
    /usr/bin/python3 -c '
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# start_nbdkit_tcp NAME PORT NBDKIT-ARGS...: nbdkit on 127.0.0.1:PORT; the
# port is volatile, so normalise.py is told to rewrite it (see $RUN/volatile).
start_nbdkit_tcp() {
    local name=$1 port=$2; shift 2
    rm -f "$RUN/$name.pid"
    printf '%s\t%s\n' ":$port" ":\$PORT_$name" >>"$RUN/volatile"
    start_bg "$name" 0 nbdkit -f --exit-with-parent -i 127.0.0.1 -p "$port" \
        -P "$RUN/$name.pid" "$@"
    wait_for "$name" "its pidfile" test -s "$RUN/$name.pid"
}

sc_nbdinfo-tls-x509() {
    local good=$RUN/certs other=$RUN/other cafile=$RUN/caonly wrongname=$RUN/wrongname port
    make_certs "$good" localhost localhost 127.0.0.1
    make_certs "$other" localhost localhost 127.0.0.1
    # Same CA as $good, so the host name is the only thing wrong with it.
    make_certs --ca "$good" "$wrongname" elsewhere.example elsewhere.example
    mkdir -p "$cafile"
    cp "$good/ca-cert.pem" "$cafile/"
    # Certificates are regenerated by every run: only their verdicts are compared.
    start_nbdkit vp --tls=require --tls-certificates="$good" --tls-verify-peer memory 4M
    start_nbdkit any --tls=require --tls-certificates="$good" -r data "$DATA_SPEC" size=1M
    start_nbdkit wn --tls=require --tls-certificates="$wrongname" -r pattern 1M
    local vp="nbds+unix:///?socket=$RUN/vp.sock&tls-certificates=$good"
    step "info, client certificate checked by server" nbdinfo "$vp"
    step "--is tls" nbdinfo --is tls "$vp"
    step "--map over TLS" nbdinfo --map "$vp"
    # The server drops the connection when it rejects the client: whether
    # the client then fails in a send or a receive is a race on any library.
    step "no client certificate, server verifies peer (exit code only: which call fails races)" \
        bash -c 'nbdinfo --size "$1" 2>/dev/null' _ "nbds+unix:///?socket=$RUN/vp.sock&tls-certificates=$cafile"
    step "no client certificate, server does not verify" nbdinfo --size "nbds+unix:///?socket=$RUN/any.sock&tls-certificates=$cafile"
    step "plain client, TLS-required server" nbdinfo --can connect "$(uri vp)"
    step "unix socket, certificate for another host name" nbdinfo --size "nbds+unix:///?socket=$RUN/wn.sock&tls-certificates=$good"
    port=$(free_port)
    start_nbdkit_tcp tcp "$port" --tls=require --tls-certificates="$good" -r pattern 2M
    step "TCP, host name localhost matches" nbdinfo --size "nbds://localhost:$port/?tls-certificates=$good"
    step "TCP, IP address 127.0.0.1 matches" nbdinfo --size "nbds://127.0.0.1:$port/?tls-certificates=$good"
    step "TCP, server certificate from another CA" nbdinfo --size "nbds://localhost:$port/?tls-certificates=$other"
    port=$(free_port)
    start_nbdkit_tcp wntcp "$port" --tls=require --tls-certificates="$wrongname" -r pattern 2M
    step "TCP, certificate for another host name" nbdinfo --size "nbds://localhost:$port/?tls-certificates=$good"
    step "TCP, another host name, nbd_set_tls_verify_peer(false)" nbdsh -c "
h.set_tls_verify_peer(False)
h.set_uri_allow_local_file(True)
h.connect_uri('nbds://localhost:$port/?tls-certificates=$good')
print(h.get_size(), h.get_tls_negotiated())"
    mkdata "$RUN/src.img" $((4 << 20)) 13 1
    sum_file source "$RUN/src.img"
    step "nbdcopy file -> TLS (x509) -C 2" nbdcopy -C 2 "$RUN/src.img" "$vp"
    step "nbdcopy TLS (x509) -> file" nbdcopy "$vp" "$RUN/dst.img"
    sum_file "x509 round trip" "$RUN/dst.img"
    step "nbddump over TLS (x509)" nbddump "nbds+unix:///?socket=$RUN/any.sock&tls-certificates=$good"
}

sc_nbdcopy-nbd-to-nbd() {
    local i
    start_nbdkit src -r pattern 32M
    for i in 1 2 3 4 5; do start_nbdkit "dst$i" memory 32M; done
    readback source "$(uri src)"
    step "default" nbdcopy "$(uri src)" "$(uri dst1)"
    readback dst1 "$(uri dst1)"
    step "--connections=4 --requests=16" nbdcopy --connections=4 --requests=16 "$(uri src)" "$(uri dst2)"
    readback dst2 "$(uri dst2)"
    step "--synchronous" nbdcopy --synchronous "$(uri src)" "$(uri dst3)"
    readback dst3 "$(uri dst3)"
    step "--flush --request-size=1M -C 2 -R 4" nbdcopy --flush --request-size=1048576 -C 2 -R 4 \
        "$(uri src)" "$(uri dst4)"
    readback dst4 "$(uri dst4)"
    step "--progress" nbdcopy --progress "$(uri src)" "$(uri dst5)"
    readback dst5 "$(uri dst5)"
    step "size mismatch (dest too small)" nbdcopy -- "$(uri src)" [ nbdkit memory 1M ]
}

sc_nbdcopy-file-to-nbd() {
    mkdata "$RUN/src.img" $((32 << 20)) 5 1
    sum_file source "$RUN/src.img"
    start_nbdkit dst1 memory 32M
    start_nbdkit dst2 memory 32M
    start_nbdkit dst3 memory 32M
    step "file -> nbd --progress" nbdcopy --progress "$RUN/src.img" "$(uri dst1)"
    readback dst1 "$(uri dst1)"
    check "destination map (stock)" nbdinfo --map --totals "$(uri dst1)"
    step "file -> nbd -C 2 --request-size=65536" nbdcopy -C 2 --request-size=65536 "$RUN/src.img" "$(uri dst2)"
    readback dst2 "$(uri dst2)"
    step --in "$RUN/src.img" "stdin -> nbd" nbdcopy -- - "$(uri dst3)"
    readback dst3 "$(uri dst3)"
}

sc_nbdcopy-nbd-to-file() {
    start_nbdkit sr -r sparse-random 64M seed=7 percent=25
    readback source "$(uri sr)"
    step "nbd -> file --progress=2" nbdcopy --progress=2 "$(uri sr)" "$RUN/d1.img"
    sum_file d1 "$RUN/d1.img"
    alloc_file d1 "$RUN/d1.img"
    step "nbd -> file --allocated" nbdcopy --allocated "$(uri sr)" "$RUN/d2.img"
    sum_file d2 "$RUN/d2.img"
    alloc_file d2 "$RUN/d2.img"
    step "nbd -> file --synchronous -C 1" nbdcopy --synchronous -C 1 "$(uri sr)" "$RUN/d3.img"
    sum_file d3 "$RUN/d3.img"
    step --out "$RUN/d4.img" "nbd -> stdout" nbdcopy -- "$(uri sr)" -
    sum_file d4 "$RUN/d4.img"
    step "nbd -> file -C 8 -R 8 --no-extents" nbdcopy -C 8 -R 8 --no-extents "$(uri sr)" "$RUN/d5.img"
    sum_file d5 "$RUN/d5.img"
}

sc_nbdcopy-nbd-to-null() {
    start_nbdkit pat -r pattern 256M
    start_nbdkit sr -r sparse-random 256M seed=3
    step "pattern -> null:" nbdcopy "$(uri pat)" null:
    step "pattern -> null: -C 4 -R 64" nbdcopy -C 4 -R 64 "$(uri pat)" null:
    step "pattern -> null: --synchronous" nbdcopy --synchronous "$(uri pat)" null:
    step "sparse-random -> null: --progress" nbdcopy --progress "$(uri sr)" null:
    step "sparse-random -> null: --no-extents -C 1" nbdcopy --no-extents -C 1 "$(uri sr)" null:
}

sc_nbdcopy-sparse() {
    local i
    start_nbdkit sr -r sparse-random 128M seed=3 percent=10
    for i in 1 2 3 4; do start_nbdkit "dst$i" memory 128M; done
    readback source "$(uri sr)"
    check "source map totals (stock)" nbdinfo --map --totals "$(uri sr)"
    step "sparse copy" nbdcopy "$(uri sr)" "$(uri dst1)"
    readback dst1 "$(uri dst1)"
    check "dst1 map totals (stock)" nbdinfo --map --totals "$(uri dst1)"
    step "--allocated" nbdcopy --allocated "$(uri sr)" "$(uri dst2)"
    readback dst2 "$(uri dst2)"
    check "dst2 map totals (stock)" nbdinfo --map --totals "$(uri dst2)"
    step "--target-is-zero" nbdcopy --target-is-zero "$(uri sr)" "$(uri dst3)"
    readback dst3 "$(uri dst3)"
    check "dst3 map totals (stock)" nbdinfo --map --totals "$(uri dst3)"
    step "--no-extents -S 0" nbdcopy --no-extents -S 0 "$(uri sr)" "$(uri dst4)"
    readback dst4 "$(uri dst4)"
    check "dst4 map totals (stock)" nbdinfo --map --totals "$(uri dst4)"
}

sc_nbdcopy-qemu() {
    make_qcow2 "$RUN/src.qcow2"
    qemu-img create -q -f qcow2 "$RUN/dst.qcow2" 64M
    qemu-img create -q -f qcow2 "$RUN/sub.qcow2" 64M
    start_qemu_nbd src -r -f qcow2 "$RUN/src.qcow2"
    step "qcow2 -> file" nbdcopy "$(uri src)" "$RUN/raw.img"
    sum_file raw "$RUN/raw.img"
    check "raw matches qcow2" qemu-img compare -U -f raw -F qcow2 "$RUN/raw.img" "$RUN/src.qcow2"
    start_qemu_nbd dst -f qcow2 "$RUN/dst.qcow2"
    step "file -> qcow2 --flush" nbdcopy --flush "$RUN/raw.img" "$(uri dst)"
    stop dst
    check "qcow2 written through qemu-nbd" qemu-img compare -f raw -F qcow2 "$RUN/raw.img" "$RUN/dst.qcow2"
    check "allocation of written qcow2" qemu-img map --output=json -f qcow2 "$RUN/dst.qcow2"
    step "file -> [ qemu-nbd ] subprocess" nbdcopy -- "$RUN/raw.img" [ qemu-nbd -f qcow2 "$RUN/sub.qcow2" ]
    check "qcow2 written through subprocess" qemu-img compare -f raw -F qcow2 "$RUN/raw.img" "$RUN/sub.qcow2"
}

sc_nbddump() {
    start_nbdkit data -r data "$DATA_SPEC" size=1M
    start_nbdkit pat -r pattern 8K
    start_nbdkit null null 1M
    start_nbdkit odd -r data '"tail of an odd-sized disk"' size=1001
    step "dump data" nbddump "$(uri data)"
    step "dump pattern" nbddump "$(uri pat)"
    step "dump null" nbddump "$(uri null)"
    step "dump odd size" nbddump "$(uri odd)"
    step "dump subprocess" nbddump -- [ nbdkit -r data '"subprocess"' size=64 ]
    step "dump missing socket" nbddump "$(uri missing)"
}

# mount_fuse NAME MOUNTDIR "OPTIONS" NBDFUSE-ARGS...: nbdfuse (which stays
# in the foreground) with the library under test, until the file shows up.
# OPTIONS are split on spaces: nbdfuse wants them before the mountpoint.
mount_fuse() {
    local name=$1 dir=$2 opts
    read -ra opts <<<"$3"
    shift 3
    mkdir -p "$dir"
    echo "$dir" >>"$RUN/mounts"
    start_bg "$name" 1 nbdfuse "${opts[@]}" "$dir/disk" "$@"
    wait_for "$name" "the mount" test -f "$dir/disk"
}

umount_fuse() { # umount_fuse NAME MOUNTDIR: prints nbdfuse's exit status
    local rc=0
    timeout 30 fusermount3 -u -- "$2" || rc=$?
    echo "=== fusermount3 -u: exit $rc"
    # nbdfuse exits by itself once unmounted; stop() only bounds the wait.
    local i
    for ((i = 0; i < 200; i++)); do
        alive "${SERVER_PID[$1]}" || break
        sleep 0.05
    done
    stop "$1"
    record_exit "nbdfuse after unmount" "$STOP_RC"
    echo "--- nbdfuse stderr"
    show_file "$RUN/$1.log"
}

sc_nbdfuse() {
    mkdata "$RUN/src.img" $((8 << 20)) 9 1
    sum_file source "$RUN/src.img"
    start_nbdkit mem memory 8M
    start_nbdkit pat -r pattern 4M
    mount_fuse fuse1 "$RUN/m1" "" --unix "$RUN/mem.sock"
    echo "=== mounted size: $(stat -c %s "$RUN/m1/disk")"
    check "write through the mount" dd if="$RUN/src.img" of="$RUN/m1/disk" bs=1M conv=notrunc,fsync status=none
    check "read back through the mount" cmp "$RUN/src.img" "$RUN/m1/disk"
    echo "=== sha256 through the mount: $(sha256sum <"$RUN/m1/disk" | cut -d' ' -f1)"
    # Three rounds of eight readers at once, each on its own MiB, bypassing
    # the page cache: nbdfuse's threads then have many commands in flight
    # on the handle.
    local i r rc pids
    for r in 1 2 3; do
        pids=()
        for i in 0 1 2 3 4 5 6 7; do
            dd if="$RUN/m1/disk" of="$RUN/slice$i" bs=64k skip=$((i * 16)) count=16 \
                iflag=direct status=none 2>"$RUN/slice$i.err" &
            pids+=($!)
        done
        for i in 0 1 2 3 4 5 6 7; do
            rc=0
            wait "${pids[$i]}" || rc=$?
            printf '=== round %s, parallel O_DIRECT read of MiB %s: dd exit %s, %s\n' "$r" "$i" "$rc" \
                "$(cmp -s -i $((i << 20)):0 -n $((1 << 20)) "$RUN/src.img" "$RUN/slice$i" && echo matches || echo DIFFERS)"
            show_file "$RUN/slice$i.err"
        done
    done
    umount_fuse fuse1 "$RUN/m1"
    readback "server after unmount" "$(uri mem)"
    mount_fuse fuse2 "$RUN/m2" "-r" "$(uri pat)"
    echo "=== read-only mount: size $(stat -c %s "$RUN/m2/disk") sha256 $(sha256sum <"$RUN/m2/disk" | cut -d' ' -f1)"
    check "write to read-only mount fails" dd if=/dev/zero of="$RUN/m2/disk" bs=4k count=1 conv=notrunc status=none
    umount_fuse fuse2 "$RUN/m2"
}

sc_nbdsh() {
    start_nbdkit mem memory 1M
    start_nbdkit ro -r data "$DATA_SPEC" size=1M
    start_nbdkit list --filter=exportname memory 1M exportname=a exportname=b \
        exportname-list=explicit exportname-strict=true exportdesc=fixed:"opt mode export"
    start_nbdkit eio --filter=error memory 1M error=EIO error-pread-rate=1
    # nbdsh is a shell script that runs "python3 -m nbd": run.sh puts /usr/bin
    # first in PATH so that is Debian's python3 with python3-libnbd.
    step --in "$HERE/nbdsh_script.py" "nbdsh -n -c - < nbdsh_script.py" \
        env NBDSH_MEM="$RUN/mem.sock" NBDSH_RO="$RUN/ro.sock" NBDSH_LIST="$RUN/list.sock" \
        NBDSH_EIO="$RUN/eio.sock" NBDSH_MISSING="$RUN/missing.sock" nbdsh -n -c -
    step "nbdsh -u URI -c" nbdsh -u "$(uri mem)" -c 'print(h.get_size(), h.is_read_only(), h.get_protocol())'
    step "nbdsh --opt-mode --base-allocation" nbdsh --opt-mode --base-allocation -u "$(uri list a)" \
        -c 'print(h.aio_is_negotiating()); h.opt_go(); print(h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION), h.get_size())'
    step "nbdsh uncaught nbd.Error" nbdsh -c "h.connect_uri('$(uri missing)')"
}

# proxy_proof NAME: the nbd plugin reports the libnbd version it runs on;
# recorded as evidence, not compared (ours may carry another version).
proxy_proof() {
    {
        echo "nbdkit --dump-plugin nbd (libnbd lines), library under test:"
        timeout 30 env "${LIBENV[@]}" nbdkit --dump-plugin nbd 2>&1 | grep -i libnbd || true
    } >>"$RUN/proof.txt"
}

sc_nbdkit-nbd-proxy() {
    proxy_proof
    mkdata "$RUN/src.img" $((64 << 20)) 21 1
    sum_file source "$RUN/src.img"
    start_nbdkit back memory 64M
    start_nbdkit proxy --lib nbd socket="$RUN/back.sock"
    check "info through proxy (stock nbdinfo)" nbdinfo "$(uri proxy)"
    check "qemu-img convert file -> proxy" qemu-img convert -n -f raw -O raw "$RUN/src.img" "$(uri proxy)"
    check "qemu-img compare file vs proxy" qemu-img compare -f raw -F raw "$RUN/src.img" "$(uri proxy)"
    check "qemu-img convert proxy -> qcow2" qemu-img convert -f raw -O qcow2 "$(uri proxy)" "$RUN/out.qcow2"
    check "qemu-img compare file vs qcow2" qemu-img compare -f raw -F qcow2 "$RUN/src.img" "$RUN/out.qcow2"
    check "qemu-img map through proxy" qemu-img map --output=json -f raw "$(uri proxy)"
    readback "backing store" "$(uri back)"
    stop proxy
    record_exit "proxy nbdkit after SIGTERM" "$STOP_RC"
}

sc_nbdkit-nbd-proxy-qemu() {
    proxy_proof
    make_qcow2 "$RUN/q.qcow2"
    mkdata "$RUN/src.img" $((64 << 20)) 23 1
    start_qemu_nbd qemu -f qcow2 "$RUN/q.qcow2"
    start_nbdkit proxy --lib nbd uri="$(uri qemu)"
    check "info through proxy (stock nbdinfo)" nbdinfo "$(uri proxy)"
    check "qemu-img compare proxy vs qcow2 (before)" qemu-img compare -U -f raw -F qcow2 "$(uri proxy)" "$RUN/q.qcow2"
    check "qemu-img convert file -> proxy" qemu-img convert -n -f raw -O raw "$RUN/src.img" "$(uri proxy)"
    check "qemu-img compare file vs proxy" qemu-img compare -f raw -F raw "$RUN/src.img" "$(uri proxy)"
    stop proxy
    record_exit "proxy nbdkit after SIGTERM" "$STOP_RC"
    stop qemu
    check "qemu-img compare file vs qcow2 (after)" qemu-img compare -f raw -F qcow2 "$RUN/src.img" "$RUN/q.qcow2"
}

# ---- Debian sid's nbdinfo 1.24.4 (program set "sid-1.24") ------------------
# run.sh runs these only in that set: Debian 12's nbdinfo on stock libnbd is
# the reference, sid's nbdinfo (first in PATH through DNBD_PROGRAMS_PATH) runs
# on ours.  No stock libnbd 1.24 runs here (sid's libnbd0 needs sid's
# libraries), so sid's program is judged by 1.14's output where the formats
# agree, and by expected values for what 1.24 added (sid_nbdinfo_filter.py).

# What servers without NBD extended headers (nbdkit 1.32, qemu 7.2) give: per
# export, and (JSON only) for the connection.
SID_EXPECT=(--expect can_block_status_payload=false)
SID_EXPECT_JSON=(--expect can_block_status_payload=false --expect extended=false)

# sid_info LABEL [--expect KEY=VALUE]... -- NBDINFO-ARGS...
sid_info() {
    local label=$1 expects=() sid=()
    shift
    while [[ $1 != -- ]]; do expects+=("$1" "$2"); shift 2; done
    shift
    [[ -z ${DNBD_PROGRAMS_PATH:-} ]] || sid=(--sid)
    step --out "$RUN/sid.out" "$label" nbdinfo "$@"
    echo "--- stdout (1.24-only fields set aside)"
    /usr/bin/python3 "$HERE/sid_nbdinfo_filter.py" info "$RUN/sid.out" "${sid[@]}" "${expects[@]}"
}

sc_sid-nbdinfo-version() {
    local sid=()
    [[ -z ${DNBD_PROGRAMS_PATH:-} ]] || sid=(--sid)
    step --out "$RUN/version.out" "version" nbdinfo --version
    /usr/bin/python3 "$HERE/sid_nbdinfo_filter.py" version "$RUN/version.out" "${sid[@]}"
}

sc_sid-nbdinfo-memory() {
    local s
    start_nbdkit mem memory 1M
    start_nbdkit pat -r pattern 8M
    start_nbdkit null null 1G
    start_nbdkit desc --filter=exportname memory 2M exportdesc=fixed:"sid \"quoted\" desc"
    for s in mem pat null desc; do
        sid_info "info $s" "${SID_EXPECT[@]}" -- "$(uri "$s")"
        sid_info "json $s" "${SID_EXPECT_JSON[@]}" -- --json "$(uri "$s")"
        # The keys, less those only 1.24 has (the filter checked their values).
        check "json $s parses" /usr/bin/python3 -c \
            'import json, sys; j = json.load(open(sys.argv[1])); new = {"extended", "can_block_status_payload"}
print(sorted(set(j) - new), sorted(set(j["exports"][0]) - new))' "$RUN/sid.out"
    done
    sid_info "export name in URI" "${SID_EXPECT[@]}" -- "$(uri mem exp1)"
    sid_info "size" -- --size "$(uri pat)"
    sid_info "size json" -- --size --json "$(uri null)"
}

sc_sid-nbdinfo-tls() {
    local certs=$RUN/certs psk
    printf 'alice:%s\n' 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef \
        >"$RUN/keys.psk"
    start_nbdkit psk --tls=require --tls-psk="$RUN/keys.psk" memory 4M
    psk="nbds+unix://alice@/?socket=$RUN/psk.sock&tls-psk-file=$RUN/keys.psk"
    sid_info "PSK info" "${SID_EXPECT[@]}" -- "$psk"
    sid_info "PSK json" "${SID_EXPECT_JSON[@]}" -- --json "$psk"
    step "PSK --is tls" nbdinfo --is tls "$psk"
    step "PSK, wrong user" nbdinfo --size "nbds+unix://mallory@/?socket=$RUN/psk.sock&tls-psk-file=$RUN/keys.psk"
    make_certs "$certs" localhost localhost 127.0.0.1
    start_nbdkit x509 --tls=require --tls-certificates="$certs" --tls-verify-peer -r pattern 2M
    local x509="nbds+unix:///?socket=$RUN/x509.sock&tls-certificates=$certs"
    sid_info "x509 info" "${SID_EXPECT[@]}" -- "$x509"
    sid_info "x509 json" "${SID_EXPECT_JSON[@]}" -- --json "$x509"
    step "x509 --is tls" nbdinfo --is tls "$x509"
    sid_info "x509 map" -- --map "$x509"
    # Exit code only: 1.22+ nbdinfo connects in opt mode and fails later, in
    # another call, so the message names another function than 1.14's; and its
    # --can connect succeeds here (the server did answer), where 1.14's fails.
    step "plain client, TLS-required server (exit code only)" \
        bash -c 'nbdinfo --size "$1" 2>/dev/null' _ "$(uri x509)"
}

sc_sid-nbdinfo-qemu() {
    qemu-img create -q -f raw "$RUN/q.raw" 2M
    start_qemu_nbd raw -f raw -x qexport -D "qemu export description" "$RUN/q.raw"
    make_qcow2 "$RUN/q.qcow2"
    start_qemu_nbd qcow -f qcow2 -B bm0 -A "$RUN/q.qcow2"
    sid_info "info raw" "${SID_EXPECT[@]}" -- "$(uri raw qexport)"
    sid_info "json raw" "${SID_EXPECT_JSON[@]}" -- --json "$(uri raw qexport)"
    sid_info "list raw" "${SID_EXPECT[@]}" -- --list "$(uri raw qexport)"
    sid_info "list json raw" "${SID_EXPECT_JSON[@]}" -- --list --json "$(uri raw qexport)"
    sid_info "info qcow2 (contexts)" "${SID_EXPECT[@]}" -- "$(uri qcow)"
    sid_info "json qcow2" "${SID_EXPECT_JSON[@]}" -- --json "$(uri qcow)"
    sid_info "map base:allocation" -- --map "$(uri qcow)"
    sid_info "map totals" -- --map --totals "$(uri qcow)"
    sid_info "map dirty bitmap" -- --map=qemu:dirty-bitmap:bm0 "$(uri qcow)"
    sid_info "map dirty bitmap json" -- --map=qemu:dirty-bitmap:bm0 --json "$(uri qcow)"
    sid_info "map allocation depth" -- --map=qemu:allocation-depth "$(uri qcow)"
}

sc_sid-nbdinfo-list() {
    start_nbdkit multi --filter=exportname memory 1M exportname=alpha exportname=beta \
        exportname-list=explicit exportdesc=fixed:"shared description" default-export=alpha
    start_nbdkit one memory 1M
    sid_info "list two exports" "${SID_EXPECT[@]}" -- --list "$(uri multi)"
    sid_info "list two exports json" "${SID_EXPECT_JSON[@]}" -- --list --json "$(uri multi)"
    sid_info "list single default export" "${SID_EXPECT[@]}" -- --list "$(uri one)"
}

sc_sid-nbdinfo-map() {
    local s
    start_nbdkit data -r data "$DATA_SPEC" size=1M
    start_nbdkit null null 64M
    start_nbdkit sr -r sparse-random 64M seed=42
    for s in data null sr; do
        sid_info "map $s" -- --map "$(uri "$s")"
        sid_info "map --totals $s" -- --map --totals "$(uri "$s")"
    done
    sid_info "map --json data" -- --map --json "$(uri data)"
    sid_info "map --totals --json sr" -- --map --totals --json "$(uri sr)"
    sid_info "map base:allocation named" -- --map=base:allocation "$(uri data)"
}

sc_sid-nbdinfo-can-is() {
    start_nbdkit rw memory 1M
    start_nbdkit ro -r pattern 1M
    qemu-img create -q -f qcow2 "$RUN/q.qcow2" 4M
    start_qemu_nbd qemu -f qcow2 "$RUN/q.qcow2"
    can_is_steps rw ro qemu
    step "--can on a missing socket" nbdinfo --can connect "$(uri missing)"
}

main() {
    case ${1:-} in
        --list)
            local s
            for s in "${SCENARIOS[@]}"; do printf '%s\t%s\n' "${s%%|*}" "${s#*|}"; done
            return ;;
        --skip-reason)
            skip_reason "$2"
            return ;;
        "" | -*)
            echo "usage: see the header of $0" >&2
            return 2 ;;
    esac
    local name=$1
    # Not "grep -q": it exits at the first match, and with pipefail the
    # writer's SIGPIPE would then fail the pipeline now and then.
    [[ $'\n'$(scenario_names)$'\n' == *$'\n'"$name"$'\n'* ]] ||
        { echo "harness: unknown scenario $name" >&2; exit 3; }
    [[ -n ${RUN:-} && -d $RUN ]] || { echo "harness: RUN must name an existing directory" >&2; exit 3; }
    # shellcheck source-path=SCRIPTDIR source=lib.sh
    source "$HERE/lib.sh"
    cd "$RUN"
    "sc_$name"
}

main "$@"
