# SPDX-License-Identifier: LGPL-2.1-or-later
# Helpers sourced by scenarios.sh: transcript steps, checksums, and servers started and stopped by pid.
# shellcheck shell=bash disable=SC2034 # STOP_RC is read by scenarios.sh
#
# Contract with run.sh (which runs scenarios.sh once per scenario and library):
#   RUN                  this run's private temp dir (sockets, images, logs)
#   DNBD_LIBVAR/VAL      how the library under test is substituted for THIS
#                        run: LD_LIBRARY_PATH=<dir>, LD_PRELOAD=<file>, or
#                        nothing (stock); applied only to the programs the
#                        scenario tests, never to servers or verification
#   DNBD_PROGRAMS_PATH   when set, a directory put first in PATH for the
#                        programs under test (libnbd 1.22.2's build); checks
#                        and read-backs still find Debian's programs
#   DNBD_PYTHONPATH      when set, PYTHONPATH for the programs under test
#                        (the Python bindings that go with those programs)
#   DNBD_STEP_TIMEOUT    seconds one step may take before it is killed
#   DNBD_SERVER_TIMEOUT  upper bound on any server's lifetime
# The transcript goes to stdout; harness trouble goes to stderr.
# Files in $RUN that run.sh reads afterwards: exits (one exit code per step
# under test), ld/ld.PID (LD_DEBUG=libs logs: which libnbd got initialised),
# pids and mounts (what to clean up if this script dies before its trap),
# proof.txt (version strings, shown in the report but not compared).

STEP_TIMEOUT=${DNBD_STEP_TIMEOUT:-60}
SERVER_TIMEOUT=${DNBD_SERVER_TIMEOUT:-900}

# LD_DEBUG=libs is set for the stock run too, so that all three runs prove
# from the dynamic loader's own log which libnbd.so.0 they initialised;
# LD_DEBUG_OUTPUT keeps that log out of the program's stderr.
mkdir -p "$RUN/ld"
LIBENV=(LD_DEBUG=libs "LD_DEBUG_OUTPUT=$RUN/ld/ld")
if [[ -n ${DNBD_LIBVAR:-} ]]; then
    LIBENV+=("$DNBD_LIBVAR=$DNBD_LIBVAL")
fi
# Another program set (libnbd 1.22.2's own build) comes first in PATH, with
# its Python bindings, for the programs under test only.
if [[ -n ${DNBD_PROGRAMS_PATH:-} ]]; then
    LIBENV+=("PATH=$DNBD_PROGRAMS_PATH:$PATH")
fi
if [[ -n ${DNBD_PYTHONPATH:-} ]]; then
    LIBENV+=("PYTHONPATH=$DNBD_PYTHONPATH")
fi
: >"$RUN/exits"
: >"$RUN/pids"
: >"$RUN/mounts"

declare -gA SERVER_PID=()

die() {
    echo "harness: $*" >&2
    exit 3
}

# Prints a captured output file, flagging a missing final newline so that
# the next transcript marker never glues onto program output.
show_file() {
    cat -- "$1"
    if [[ -s $1 && -n $(tail -c1 -- "$1") ]]; then
        printf '\n[no newline at end of output]\n'
    fi
}

# step [--in FILE] [--out FILE] LABEL CMD...: runs CMD with the library under
# test, time-boxed, and records its stdout, stderr and exit code.  --out sends
# stdout to FILE instead (binary data); --in feeds FILE on stdin.
step() {
    local in=/dev/null out=""
    while :; do
        case $1 in
            --in) in=$2; shift 2 ;;
            --out) out=$2; shift 2 ;;
            *) break ;;
        esac
    done
    local label=$1; shift
    printf '=== %s\n$ %s\n' "$label" "$*"
    local rc=0
    timeout -k 5 "$STEP_TIMEOUT" env "${LIBENV[@]}" "$@" \
        <"$in" >"${out:-$RUN/.stdout}" 2>"$RUN/.stderr" || rc=$?
    if [[ -z $out ]]; then
        echo "--- stdout"
        show_file "$RUN/.stdout"
    fi
    echo "--- stderr"
    show_file "$RUN/.stderr"
    echo "--- exit $rc"
    echo "$rc" >>"$RUN/exits"
}

# check LABEL CMD...: a verification command run on the stock library (the
# runner cleared LD_LIBRARY_PATH/LD_PRELOAD), so that what ours produced is
# judged by a known-good reader.  Its exit code is part of the transcript
# but not of the step exit list.
check() {
    local label=$1; shift
    printf '=== check: %s\n$ %s\n' "$label" "$*"
    local rc=0
    timeout -k 5 "$STEP_TIMEOUT" "$@" </dev/null >"$RUN/.stdout" 2>"$RUN/.stderr" || rc=$?
    echo "--- stdout"
    show_file "$RUN/.stdout"
    echo "--- stderr"
    show_file "$RUN/.stderr"
    echo "--- exit $rc"
}

# sum_file LABEL FILE: size, checksum and allocated KiB of a file.
sum_file() {
    local label=$1 file=$2
    if [[ ! -e $file ]]; then
        echo "=== sha256 $label: (missing)"
        return
    fi
    printf '=== sha256 %s: %s size=%s\n' "$label" \
        "$(sha256sum <"$file" | cut -d' ' -f1)" "$(stat -c %s -- "$file")"
}

# alloc_file LABEL FILE: how much of a file is data rather than holes, from
# SEEK_DATA/SEEK_HOLE.  st_blocks would also count the filesystem's extent
# tree blocks, which vary with fragmentation from run to run.
alloc_file() {
    local label=$1 file=$2
    sync -- "$file" 2>/dev/null || true
    printf '=== allocated %s: %s\n' "$label" "$(/usr/bin/python3 - "$file" <<'EOF'
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
size, off, data, extents = os.fstat(fd).st_size, 0, 0, 0
while off < size:
    try:
        start = os.lseek(fd, off, os.SEEK_DATA)
    except OSError:
        break
    off = os.lseek(fd, start, os.SEEK_HOLE)
    data += off - start
    extents += 1
print("%d KiB of data in %d extents" % (data // 1024, extents))
EOF
)"
}

# readback LABEL URI: copies an NBD export to a file with the STOCK nbdcopy
# and prints its checksum, so data written through ours is verified by a
# reader that does not depend on ours.
readback() {
    local label=$1 uri=$2 rc=0
    rm -f "$RUN/readback.img"
    timeout -k 5 "$STEP_TIMEOUT" nbdcopy -- "$uri" "$RUN/readback.img" \
        </dev/null >"$RUN/.rb.out" 2>&1 || rc=$?
    if ((rc != 0)); then
        printf '=== readback %s: stock nbdcopy failed, exit %s\n' "$label" "$rc"
        show_file "$RUN/.rb.out"
        return
    fi
    sum_file "readback $label" "$RUN/readback.img"
    rm -f "$RUN/readback.img"
}

# mkdata FILE SIZE SEED [HOLES]: a deterministic pseudo-random file; with
# HOLES=1 every other MiB is left as a hole, so copies meet sparse input.
mkdata() {
    /usr/bin/python3 - "$@" <<'EOF'
import random, sys
path, size, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
holes = len(sys.argv) > 4 and sys.argv[4] == "1"
rng = random.Random(seed)
mib = 1 << 20
with open(path, "wb") as f:
    f.truncate(size)
    for off in range(0, size, mib):
        if holes and (off // mib) % 2 == 1:
            continue
        f.seek(off)
        f.write(rng.randbytes(min(mib, size - off)))
EOF
}

uri() { # uri NAME [EXPORT]
    printf 'nbd+unix:///%s?socket=%s/%s.sock' "${2:-}" "$RUN" "$1"
}

# Background process under a lifetime bound; its pid (timeout's, which
# forwards TERM to the program and its process group) is recorded in
# $RUN/pids so run.sh can stop it even if this script is killed.
# start_bg NAME WITH_LIB CMD...
start_bg() {
    local name=$1 withlib=$2; shift 2
    if ((withlib)); then
        timeout -k 5 "$SERVER_TIMEOUT" env "${LIBENV[@]}" "$@" \
            </dev/null >"$RUN/$name.log" 2>&1 &
    else
        timeout -k 5 "$SERVER_TIMEOUT" "$@" </dev/null >"$RUN/$name.log" 2>&1 &
    fi
    SERVER_PID[$name]=$!
    echo "$!" >>"$RUN/pids"
}

# True while the process runs.  kill -0 is not enough: a child that has
# exited stays a zombie until waited for, and kill -0 succeeds on zombies.
alive() {
    local st
    st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $st && ${st%% *} != Z ]]
}

# record_exit LABEL RC: adds the exit status of a library-using background
# program (a proxy, nbdfuse) to the transcript and the step exit list.
record_exit() {
    echo "=== $1: exit $2"
    echo "$2" >>"$RUN/exits"
}

# Waits until a condition holds while the process is still alive.
wait_for() { # wait_for NAME WHAT CMD...
    local name=$1 what=$2 i; shift 2
    for ((i = 0; i < 300; i++)); do
        "$@" && return 0
        if ! alive "${SERVER_PID[$name]}"; then
            die "$name exited before $what: $(tail -n 20 "$RUN/$name.log" 2>/dev/null)"
        fi
        sleep 0.05
    done
    die "$name: timed out waiting for $what"
}

sock_accepts() {
    [[ -S $1 ]] && /usr/bin/python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])' "$1" 2>/dev/null
}

# start_nbdkit NAME [--lib] NBDKIT-ARGS...: nbdkit on $RUN/NAME.sock.  nbdkit
# writes its pidfile only once it accepts connections, so waiting for the
# pidfile avoids a probe connection.  --lib runs nbdkit itself with the
# library under test (for the nbd plugin, which links libnbd).
start_nbdkit() {
    local name=$1 withlib=0; shift
    if [[ ${1:-} == --lib ]]; then withlib=1; shift; fi
    rm -f "$RUN/$name.sock" "$RUN/$name.pid"
    start_bg "$name" "$withlib" nbdkit -f --exit-with-parent \
        -U "$RUN/$name.sock" -P "$RUN/$name.pid" "$@"
    wait_for "$name" "its pidfile" test -s "$RUN/$name.pid"
}

# start_qemu_nbd NAME QEMU-NBD-ARGS...: qemu-nbd has no ready signal, so
# wait for its socket to accept a (harmless, persistent-server) connection.
start_qemu_nbd() {
    local name=$1; shift
    rm -f "$RUN/$name.sock"
    start_bg "$name" 0 qemu-nbd -t -k "$RUN/$name.sock" "$@"
    wait_for "$name" "its socket" sock_accepts "$RUN/$name.sock"
}

# stop NAME: TERM, a grace period, then KILL; prints nothing.  Returns the
# process's exit status through STOP_RC.
stop() {
    local name=$1 pid i
    pid=${SERVER_PID[$name]:-}
    STOP_RC=""
    [[ -n $pid ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        alive "$pid" || break
        sleep 0.05
    done
    kill -KILL "$pid" 2>/dev/null || true
    STOP_RC=0
    wait "$pid" 2>/dev/null || STOP_RC=$?
    unset "SERVER_PID[$name]"
}

stop_all() {
    local m name
    while read -r m; do
        [[ -n $m ]] && mountpoint -q -- "$m" && fusermount3 -u -z -- "$m" 2>/dev/null
    done <"$RUN/mounts" || true
    for name in "${!SERVER_PID[@]}"; do
        stop "$name"
    done
}
trap stop_all EXIT
# run.sh's time limit arrives as TERM: exit through the EXIT trap so the
# servers are stopped here too (run.sh also stops them by pid afterwards).
trap 'exit 143' TERM INT
