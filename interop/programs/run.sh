#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Runs real libnbd programs (nbdinfo, nbdcopy, nbddump, nbdfuse, nbdsh, nbdkit's nbd plugin) on stock libnbd and on ours, and compares.
#
# Usage: interop/programs/run.sh [options]
#   --lib PATH       library under test ("ours"); default $DUPLEXNBD_LIB or
#                    <repo>/build/lib/libnbd.so.0.  Point it at Debian's own
#                    /usr/lib/x86_64-linux-gnu/libnbd.so.0 to validate the
#                    runner: every scenario must then be identical.
#   --only NAMES     comma-separated scenario names or shell globs
#                    (e.g. --only 'nbdcopy-*,nbdsh'); see --list
#   --list           list the scenarios and exit
#   --report FILE    Markdown report (default <repo>/build/interop-programs.md);
#                    transcripts and diffs go to FILE without .md, as a dir
#   --strict         exit 1 if any scenario differs (or proves the wrong library)
#   --install-deps   as root: apt-get install the programs the scenarios use
#   --step-timeout S kill one program after S seconds (default 60)
#   --scenario-timeout S  stop one run of a scenario after S seconds
#                    (default 300); what it printed so far is compared
#   --libnbd-tree DIR  a libnbd 1.22.2 tree built by interop/libnbd-testsuite.sh
#                    (default $DUPLEXNBD_CACHE/libnbd-1.22.2, the cache
#                    defaulting to ~/.cache/duplexnbd); its programs are the
#                    second program set, see below
#   --tree-programs auto|require|only|off  auto (default): run the second
#                    set when the tree is built, else skip it with a message;
#                    require: a missing tree is an error (exit 2); only: the
#                    second set alone (tree required); off: Debian's only
#   --sid-programs auto|require|off  Debian sid's nbdinfo 1.24.4 (program set
#                    "sid-1.24", scenarios sid-*): auto (default) fetches it
#                    with fetch-sid-libnbd.sh (private apt state, cached under
#                    $DUPLEXNBD_CACHE) and skips the set with a message when
#                    that fails; require: failing is an error (exit 2); off
#   -h, --help
#
# Program set "debian12": Debian 12's programs (libnbd 1.14.2, nbdsh from
# python3-libnbd, nbdkit's nbd plugin).
# Each scenario runs three times, each time with fresh servers in a fresh
# temp dir: on stock libnbd (the system's libnbd.so.0), then on ours through
# LD_LIBRARY_PATH=<dir of ours>, then through LD_PRELOAD=<ours>.  The
# library is applied only to the programs under test; servers and the
# checks that verify copied data always run on stock.  Every run proves
# which libnbd.so.0 it initialised from the dynamic loader's LD_DEBUG=libs
# log (realpath compared with the expected file), and the report also shows
# what `nbdinfo --version` prints under each setting.
#
# Program set "libnbd-1.22.2": nbdinfo, nbdcopy, nbddump, nbdfuse and nbdsh
# (with the Python bindings) built by the libnbd 1.22.2 test-suite tree.
# They use calls libnbd 1.14's programs never make.  Each scenario but the
# nbdkit plugin ones runs twice: on the tree's stock libnbd 1.22.2 (a copy,
# through LD_LIBRARY_PATH), then on ours through LD_LIBRARY_PATH; the
# programs come first in PATH for the steps under test only, so checks and
# read-backs still use Debian's stock programs.  The two are compared.
#
# Program set "sid-1.24": Debian sid's nbdinfo 1.24.4, which needs only
# glibc 2.34 and so runs here, on ours (LD_LIBRARY_PATH), against Debian 12's
# nbdinfo on stock libnbd as the reference: no stock libnbd 1.24 can run on
# Debian 12.  Only the sid-* scenarios run in this set (and only in it); they
# compare where the formats agree and check what 1.24 added against expected
# values (sid_nbdinfo_filter.py).
#
# Exit status: 0 normally (whatever ours scored); 1 with --strict when a
# scenario differs; 2 when the runner itself cannot work (bad options,
# missing library or tools).
set -euo pipefail

HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd -- "$HERE/../.." && pwd)
STOCK_LIB=/usr/lib/x86_64-linux-gnu/libnbd.so.0
PACKAGES=(nbdkit qemu-utils libnbd-bin python3-libnbd fuse3 gnutls-bin coreutils file util-linux debian-archive-keyring)

# Debian's tools first: nbdsh runs "python3 -m nbd" and must find
# /usr/bin/python3 (with python3-libnbd), not some other python3 in PATH.
export PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH"
# A library or debug setting inherited from the caller would leak into the
# stock runs and the servers.
unset LD_LIBRARY_PATH LD_PRELOAD LD_DEBUG LD_DEBUG_OUTPUT LIBNBD_DEBUG
export LC_ALL=C.UTF-8 TZ=UTC

OURS=${DUPLEXNBD_LIB:-$REPO/build/lib/libnbd.so.0}
ONLY=""
REPORT=$REPO/build/interop-programs.md
STRICT=0
INSTALL=0
STEP_TIMEOUT=60
SCENARIO_TIMEOUT=300
TREE=${DUPLEXNBD_CACHE:-$HOME/.cache/duplexnbd}/libnbd-1.22.2
TREE_PROGRAMS=auto
SID_PROGRAMS=auto

usage() { sed -n '3,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0"; }

while (($#)); do
    case $1 in
        --lib) OURS=$2; shift 2 ;;
        --lib=*) OURS=${1#*=}; shift ;;
        --only) ONLY=$2; shift 2 ;;
        --only=*) ONLY=${1#*=}; shift ;;
        --report) REPORT=$2; shift 2 ;;
        --report=*) REPORT=${1#*=}; shift ;;
        --strict) STRICT=1; shift ;;
        --install-deps) INSTALL=1; shift ;;
        --step-timeout) STEP_TIMEOUT=$2; shift 2 ;;
        --scenario-timeout) SCENARIO_TIMEOUT=$2; shift 2 ;;
        --libnbd-tree) TREE=$2; shift 2 ;;
        --libnbd-tree=*) TREE=${1#*=}; shift ;;
        --tree-programs) TREE_PROGRAMS=$2; shift 2 ;;
        --tree-programs=*) TREE_PROGRAMS=${1#*=}; shift ;;
        --sid-programs) SID_PROGRAMS=$2; shift 2 ;;
        --sid-programs=*) SID_PROGRAMS=${1#*=}; shift ;;
        --list) bash "$HERE/scenarios.sh" --list; exit 0 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

fail() { echo "run.sh: $*" >&2; exit 2; }
case $TREE_PROGRAMS in auto | require | only | off) ;; *) fail "--tree-programs: auto, require, only or off, not $TREE_PROGRAMS" ;; esac
case $SID_PROGRAMS in auto | require | off) ;; *) fail "--sid-programs: auto, require or off, not $SID_PROGRAMS" ;; esac

if ((INSTALL)); then
    ((EUID == 0)) || fail "--install-deps needs root"
    timeout 600 apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive timeout 1200 apt-get install -y -qq "${PACKAGES[@]}" ||
        fail "apt-get install ${PACKAGES[*]} failed"
fi

[[ -e $STOCK_LIB ]] || fail "stock libnbd not found at $STOCK_LIB (apt-get install libnbd0, or --install-deps)"
[[ -e $OURS ]] || fail "library under test not found: $OURS (build it, or pass --lib)"
# Both substitutions name the file by its soname in the given directory:
# LD_LIBRARY_PATH finds it by that name, and LD_PRELOAD uses the same file.
OURS_DIR=$(cd -- "$(dirname -- "$OURS")" && pwd)
OURS_SO=$OURS_DIR/libnbd.so.0
[[ -e $OURS_SO ]] || fail "$OURS_DIR has no libnbd.so.0 (needed for LD_LIBRARY_PATH)"
STOCK_REAL=$(realpath -- "$STOCK_LIB")
OURS_REAL=$(realpath -- "$OURS_SO")
[[ $(realpath -- "$OURS") == "$OURS_REAL" ]] ||
    fail "--lib $OURS is not the file $OURS_SO resolves to ($OURS_REAL)"
for t in timeout sha256sum realpath diff /usr/bin/python3; do
    command -v "$t" >/dev/null || fail "$t not found"
done

ART=${REPORT%.md}
mkdir -p -- "$(dirname -- "$REPORT")"
rm -rf -- "$ART"
mkdir -p -- "$ART"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/duplexnbd-programs.XXXXXX")
# The scenarios run from a snapshot taken now: bash reads a script as it
# runs it, so editing the checkout during a run would break the run.
mkdir -p "$WORK/scripts"
cp -- "$HERE"/scenarios.sh "$HERE"/lib.sh "$HERE"/normalise.py "$HERE"/nbdsh_script.py \
    "$HERE"/sid_nbdinfo_filter.py "$WORK/scripts/"
REPO_HERE=$HERE
HERE=$WORK/scripts

# Whatever a scenario left behind (it cleans up after itself, but it may
# have been killed): unmount its FUSE mounts, stop its recorded processes.
# A pid is only signalled if its command line still names that run's dir,
# so a recycled pid is never hit.
cleanup_run() {
    local run=$1 m pid
    if [[ -f $run/mounts ]]; then
        while read -r m; do
            [[ -n $m ]] && mountpoint -q -- "$m" 2>/dev/null && fusermount3 -u -z -- "$m" 2>/dev/null
        done <"$run/mounts" || true
    fi
    [[ -f $run/pids ]] || return 0
    while read -r pid; do
        [[ $pid =~ ^[0-9]+$ ]] || continue
        if tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -F -- "$run" >/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            sleep 0.5
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done <"$run/pids"
}

CURRENT_RUN=""
# shellcheck disable=SC2317 # called by the EXIT trap
on_exit() {
    [[ -n $CURRENT_RUN ]] && cleanup_run "$CURRENT_RUN"
    rm -rf -- "$WORK"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The libnbd 1.22.2 tree's programs, if it is built: ELF binaries from the
# libtool .libs dirs (they carry no RUNPATH, LD_LIBRARY_PATH always picks
# their libnbd) and the tree's nbdsh wrapper, which runs /usr/bin/python3
# -m nbd with the tree's bindings found through PYTHONPATH.
TREE_PROGS=(info/.libs/nbdinfo copy/.libs/nbdcopy dump/.libs/nbddump fuse/.libs/nbdfuse sh/nbdsh)
tree_missing() { # prints what the tree lacks; empty when it can be used
    local f
    [[ -f $TREE/.duplexnbd-stamp ]] || { echo "$TREE is not a built tree (no .duplexnbd-stamp)"; return; }
    for f in lib/.libs/libnbd.so.0.0.0 python/nbd.py "${TREE_PROGS[@]}"; do
        [[ -e $TREE/$f ]] || { echo "$TREE/$f missing"; return; }
    done
    compgen -G "$TREE/python/.libs/libnbdmod*.so" >/dev/null || echo "$TREE/python/.libs/libnbdmod*.so missing"
}
SETS=()
[[ $TREE_PROGRAMS == only ]] || SETS+=(debian12)
TREE_NOTE=""
if [[ $TREE_PROGRAMS != off ]]; then
    why=$(tree_missing)
    if [[ -z $why ]]; then
        SETS+=(libnbd-1.22.2)
    elif [[ $TREE_PROGRAMS == require || $TREE_PROGRAMS == only ]]; then
        fail "libnbd 1.22.2 programs required but not usable: $why (build the tree: interop/libnbd-testsuite.sh --libnbd-version 1.22.2 --stock-only)"
    else
        TREE_NOTE="libnbd 1.22.2 programs skipped: $why (build the tree with interop/libnbd-testsuite.sh --libnbd-version 1.22.2 --stock-only, or pass --libnbd-tree DIR)"
        echo "run.sh: $TREE_NOTE" >&2
    fi
fi
TREE_VERSION="" TREE_STOCK="" TREE_BIN="" TREE_PYTHONPATH=""
if [[ " ${SETS[*]} " == *" libnbd-1.22.2 "* ]]; then
    TREE_VERSION=$(sed -n 's/^#define PACKAGE_VERSION "\(.*\)"/\1/p' "$TREE/config.h" 2>/dev/null)
    # Copies: the test-suite harness repoints the tree's libnbd.so.0
    # symlink while it runs, and the tree may be rebuilt.
    TREE_STOCK=$WORK/tree-stock
    TREE_BIN=$WORK/tree-bin
    mkdir -p "$TREE_STOCK" "$TREE_BIN"
    cp -- "$TREE/lib/.libs/libnbd.so.0.0.0" "$TREE_STOCK/libnbd.so.0"
    for f in "${TREE_PROGS[@]}"; do cp -- "$TREE/$f" "$TREE_BIN/"; done
    TREE_PYTHONPATH=$WORK/tree-python
    mkdir -p "$TREE_PYTHONPATH"
    cp -- "$TREE"/python/*.py "$TREE"/python/.libs/libnbdmod*.so "$TREE_PYTHONPATH/"
fi

# Debian sid's nbdinfo, fetched (or found in the cache) and copied, so a
# refetch during the run cannot change it.
SID_BIN="" SID_NOTE=""
if [[ $SID_PROGRAMS != off ]]; then
    if sid_root=$("$REPO_HERE/fetch-sid-libnbd.sh" 2>"$WORK/sid-fetch.log"); then
        SID_BIN=$WORK/sid-bin
        mkdir -p "$SID_BIN"
        cp -- "$sid_root/usr/bin/nbdinfo" "$SID_BIN/"
        SETS+=(sid-1.24)
    elif [[ $SID_PROGRAMS == require ]]; then
        fail "Debian sid's nbdinfo required but not fetched: $(tail -n 3 "$WORK/sid-fetch.log" | paste -sd' ' -)"
    else
        SID_NOTE="Debian sid's nbdinfo skipped: fetch-sid-libnbd.sh failed: $(tail -n 2 "$WORK/sid-fetch.log" | paste -sd' ' -)"
        echo "run.sh: $SID_NOTE" >&2
    fi
fi

# Variants: how a program set meets a library.  The first variant of each
# set is its reference; the others are compared with it.
declare -A SET_VARIANTS=([debian12]="stock llp preload" [libnbd-1.22.2]="tstock tours" [sid-1.24]="sref sours")
declare -A SET_TITLE=([debian12]="Debian 12's programs (libnbd 1.14.2)" [libnbd-1.22.2]="libnbd ${TREE_VERSION:-1.22.2}'s own programs (built by the test-suite tree)"
    [sid-1.24]="Debian sid's nbdinfo 1.24.4 on ours, against Debian 12's nbdinfo on stock")
declare -A VLABEL=([stock]="stock" [llp]="ours (LD_LIBRARY_PATH)" [preload]="ours (LD_PRELOAD)"
    [tstock]="stock ${TREE_VERSION:-1.22.2}" [tours]="ours" [sref]="Debian 12 nbdinfo, stock" [sours]="sid nbdinfo, ours")
declare -A VVAR=([stock]="" [llp]=LD_LIBRARY_PATH [preload]=LD_PRELOAD [tstock]=LD_LIBRARY_PATH [tours]=LD_LIBRARY_PATH
    [sref]="" [sours]=LD_LIBRARY_PATH)
declare -A VVAL=([stock]="" [llp]="$OURS_DIR" [preload]="$OURS_SO" [tstock]="$TREE_STOCK" [tours]="$OURS_DIR"
    [sref]="" [sours]="$OURS_DIR")
declare -A VEXPECT=([stock]="$STOCK_REAL" [llp]="$OURS_REAL" [preload]="$OURS_REAL"
    [tstock]="${TREE_STOCK:+$(realpath -m -- "$TREE_STOCK/libnbd.so.0")}" [tours]="$OURS_REAL"
    [sref]="$STOCK_REAL" [sours]="$OURS_REAL")
declare -A VPATH=([stock]="" [llp]="" [preload]="" [tstock]="$TREE_BIN" [tours]="$TREE_BIN" [sref]="" [sours]="$SID_BIN")
declare -A VPYTHONPATH=([stock]="" [llp]="" [preload]="" [tstock]="$TREE_PYTHONPATH" [tours]="$TREE_PYTHONPATH"
    [sref]="" [sours]="")
VARIANTS=()
for set in "${SETS[@]}"; do
    read -ra vs <<<"${SET_VARIANTS[$set]}"
    VARIANTS+=("${vs[@]}")
done

# Which libnbd.so.0 files the processes of a run initialised, as realpaths.
loaded_libs() { # loaded_libs LDDIR
    local f
    for f in "$1"/ld.*; do
        [[ -e $f ]] || continue
        sed -n 's/.*calling init: \(.*libnbd\.so[^ ]*\).*/\1/p' "$f"
    done | sort -u | while read -r f; do realpath -- "$f"; done | sort -u
}

# proof VARIANT LDDIR: "ok", or what went wrong.
proof() {
    local libs
    libs=$(loaded_libs "$2")
    if [[ -z $libs ]]; then
        echo "no process loaded libnbd"
    elif [[ $libs == "${VEXPECT[$1]}" ]]; then
        echo ok
    else
        echo "loaded $(echo "$libs" | paste -sd, -) instead of ${VEXPECT[$1]}"
    fi
}

# The environment a variant's programs under test get (besides LD_DEBUG).
variant_env() { # variant_env VARIANT: one NAME=VALUE per line
    [[ -n ${VVAR[$1]} ]] && echo "${VVAR[$1]}=${VVAL[$1]}"
    [[ -n ${VPATH[$1]} ]] && echo "PATH=${VPATH[$1]}:$PATH"
    [[ -n ${VPYTHONPATH[$1]} ]] && echo "PYTHONPATH=${VPYTHONPATH[$1]}"
    return 0
}

# Preflight: what nbdinfo --version says under each setting, and which file
# the loader initialised for it.
declare -A PRE_VERSION PRE_PROOF
for v in "${VARIANTS[@]}"; do
    d=$WORK/preflight-$v
    mkdir -p "$d/ld"
    envs=(LD_DEBUG=libs "LD_DEBUG_OUTPUT=$d/ld/ld")
    mapfile -t -O 2 envs < <(variant_env "$v")
    out=$(timeout 30 env "${envs[@]}" nbdinfo --version 2>&1) || out="nbdinfo --version failed: $out"
    PRE_VERSION[$v]=$(echo "$out" | sed -n 2p)
    [[ -n ${PRE_VERSION[$v]} ]] || PRE_VERSION[$v]=$(echo "$out" | paste -sd' ' -)
    PRE_PROOF[$v]="$(loaded_libs "$d/ld" | paste -sd, -) ($(proof "$v" "$d/ld"))"
done

# Scenario selection.
mapfile -t ALL < <(bash "$HERE/scenarios.sh" --list | cut -f1)
SELECTED=()
for s in "${ALL[@]}"; do
    if [[ -z $ONLY ]]; then SELECTED+=("$s"); continue; fi
    IFS=, read -ra pats <<<"$ONLY"
    for p in "${pats[@]}"; do
        # shellcheck disable=SC2053 # glob match is the point
        if [[ $s == $p ]]; then SELECTED+=("$s"); break; fi
    done
done
((${#SELECTED[@]})) || fail "--only '$ONLY' matches no scenario (see --list)"

# Runs one scenario on one variant; leaves transcript, normalised
# transcript, exit list, proof and logs under $ART/NAME/VARIANT.
declare -A EXITS PROOF HARNESS
run_one() {
    local name=$1 v=$2 run out rc=0
    run=$(mktemp -d "$WORK/$name.$v.XXXXXX")
    out=$ART/$name/$v
    mkdir -p "$out"
    CURRENT_RUN=$run
    RUN=$run DNBD_LIBVAR=${VVAR[$v]} DNBD_LIBVAL=${VVAL[$v]} \
        DNBD_PROGRAMS_PATH=${VPATH[$v]} DNBD_PYTHONPATH=${VPYTHONPATH[$v]} \
        DNBD_STEP_TIMEOUT=$STEP_TIMEOUT DNBD_SERVER_TIMEOUT=$((SCENARIO_TIMEOUT + STEP_TIMEOUT + 60)) \
        timeout -k $((STEP_TIMEOUT + 30)) "$SCENARIO_TIMEOUT" bash "$HERE/scenarios.sh" "$name" \
        </dev/null >"$out/transcript.raw" 2>"$out/harness.log" || rc=$?
    cleanup_run "$run"
    CURRENT_RUN=""
    # Debian 12's programs (no program path of their own) compare with libnbd 1.14.2.
    local across=()
    # So do the two sides of the sid-1.24 set (1.14 against 1.24).
    [[ -n ${VPATH[$v]} && $v != sours ]] || across=(--across-versions)
    /usr/bin/python3 "$HERE/normalise.py" "$run" "${across[@]}" <"$out/transcript.raw" >"$out/transcript.txt"
    EXITS[$name.$v]=$(rle 2>/dev/null <"$run/exits" || echo -)
    HARNESS[$name.$v]=""
    if ((rc == 124 || rc == 137)); then
        HARNESS[$name.$v]="run stopped after the ${SCENARIO_TIMEOUT}s scenario time limit"
    elif ((rc != 0)); then
        HARNESS[$name.$v]="scenario script exit $rc: $(tail -n 3 "$out/harness.log" | paste -sd' ' -)"
    fi
    PROOF[$name.$v]=$(proof "$v" "$run/ld")
    [[ -f $run/proof.txt ]] && cp "$run/proof.txt" "$out/proof.txt"
    cp "$run"/*.log "$out/" 2>/dev/null || true
    loaded_libs "$run/ld" >"$out/loaded-libnbd.txt"
    rm -rf -- "$run"
}

# Exit codes as a run-length list in step order: "0x12 2 0x3".
rle() {
    awk 'NR == 1 { prev = $1; n = 1; next }
         $1 == prev { n++; next }
         { printf "%s%s ", prev, (n > 1 ? "x" n : ""); prev = $1; n = 1 }
         END { if (NR) printf "%s%s", prev, (n > 1 ? "x" n : ""); else printf "-" }'
}

# Why a scenario cannot run with a program set; empty when it can.
set_skip_reason() { # set_skip_reason SET NAME
    if [[ $1 == sid-1.24 && $2 != sid-* ]]; then
        echo "runs with the other program sets, not Debian sid's nbdinfo"
        return
    elif [[ $1 != sid-1.24 && $2 == sid-* ]]; then
        echo "Debian sid's nbdinfo only (the sid-1.24 program set)"
        return
    fi
    if [[ $1 == libnbd-1.22.2 ]]; then
        case $2 in
            nbdkit-nbd-proxy*)
                echo "nbdkit's nbd plugin is Debian's, built against libnbd 1.14.2: not one of libnbd ${TREE_VERSION}'s programs"
                return ;;
        esac
        PATH="$TREE_BIN:$PATH" PYTHONPATH="$TREE_PYTHONPATH" bash "$HERE/scenarios.sh" --skip-reason "$2"
    else
        bash "$HERE/scenarios.sh" --skip-reason "$2"
    fi
}

START=$SECONDS
declare -A VERDICT SKIP SECS
DIFFERS=0
printf 'stock: %s -> %s\nours:  %s\n' "$STOCK_LIB" "$STOCK_REAL" "$OURS_REAL"
[[ -z $TREE_STOCK ]] || printf 'libnbd %s programs from %s, its stock library copied to %s\n' "$TREE_VERSION" "$TREE" "$TREE_STOCK"
[[ -z $TREE_NOTE ]] || echo "$TREE_NOTE"
[[ -z $SID_NOTE ]] || echo "$SID_NOTE"
for v in "${VARIANTS[@]}"; do
    printf 'preflight %-24s nbdinfo --version: %-22s loaded: %s\n' "${VLABEL[$v]}" "${PRE_VERSION[$v]}" "${PRE_PROOF[$v]}"
done
for set in "${SETS[@]}"; do
    read -ra vs <<<"${SET_VARIANTS[$set]}"
    ref=${vs[0]}
    echo "--- ${SET_TITLE[$set]}"
    for name in "${SELECTED[@]}"; do
        key=$set:$name
        reason=$(set_skip_reason "$set" "$name")
        if [[ -n $reason ]]; then
            SKIP[$key]=$reason
            printf '%-24s skipped: %s\n' "$name" "$reason"
            continue
        fi
        t0=$SECONDS
        for v in "${vs[@]}"; do run_one "$name" "$v"; done
        problems=()
        for v in "${vs[@]:1}"; do
            if ! diff -u --label "${VLABEL[$ref]}/$name" --label "${VLABEL[$v]}/$name" \
                "$ART/$name/$ref/transcript.txt" "$ART/$name/$v/transcript.txt" >"$ART/$name/$v.diff"; then
                problems+=("${VLABEL[$v]}: output differs")
            else
                rm -f "$ART/$name/$v.diff"
            fi
        done
        for v in "${vs[@]}"; do
            [[ ${PROOF[$name.$v]} == ok ]] || problems+=("${VLABEL[$v]}: ${PROOF[$name.$v]}")
            [[ -z ${HARNESS[$name.$v]} ]] || problems+=("${VLABEL[$v]}: ${HARNESS[$name.$v]}")
        done
        if ((${#problems[@]})); then
            VERDICT[$key]="NO — $(printf '%s; ' "${problems[@]}" | sed 's/; $//')"
            DIFFERS=1
        else
            VERDICT[$key]=yes
        fi
        SECS[$key]=$((SECONDS - t0))
        line=$(printf '%-24s' "$name")
        for v in "${vs[@]}"; do line+=$(printf ' %s: %-14s' "${VLABEL[$v]}" "${EXITS[$name.$v]}"); done
        echo "$line identical: ${VERDICT[$key]} (${SECS[$key]}s)"
    done
done
ELAPSED=$((SECONDS - START))

# Markdown report.
cell() { printf '%s' "$1" | sed 's/|/\\|/g'; }
results_table() { # results_table SET: one Markdown table
    local set=$1 name key v head sep row
    read -ra vs <<<"${SET_VARIANTS[$set]}"
    head="| scenario |" sep="|---|"
    for v in "${vs[@]}"; do head+=" ${VLABEL[$v]} exit |"; sep+="---|"; done
    echo "$head identical? | seconds |"
    echo "$sep---|---:|"
    for name in "${SELECTED[@]}"; do
        key=$set:$name
        row="| $name |"
        if [[ -n ${SKIP[$key]:-} ]]; then
            for v in "${vs[@]}"; do row+=" skipped |"; done
            echo "$row skipped: $(cell "${SKIP[$key]}") | - |"
        else
            for v in "${vs[@]}"; do row+=" ${EXITS[$name.$v]} |"; done
            echo "$row $(cell "${VERDICT[$key]}") | ${SECS[$key]} |"
        fi
    done
}
{
    echo "# Real libnbd programs: stock libnbd vs ours"
    echo
    echo "Generated by \`interop/programs/run.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC') in ${ELAPSED}s."
    echo
    echo "- stock: \`$STOCK_LIB\` → \`$STOCK_REAL\`"
    echo "- ours: \`$OURS_REAL\` (LD_LIBRARY_PATH=\`$OURS_DIR\`, LD_PRELOAD=\`$OURS_SO\`)"
    if [[ -n $TREE_STOCK ]]; then
        echo "- libnbd $TREE_VERSION's programs and stock library: from \`$TREE\` (copies: \`$TREE_BIN\`, \`$TREE_STOCK/libnbd.so.0\`)"
    fi
    [[ -z $TREE_NOTE ]] || echo "- $TREE_NOTE"
    [[ -z $SID_BIN ]] || echo "- Debian sid's nbdinfo 1.24.4: fetched by \`interop/programs/fetch-sid-libnbd.sh\` (copy: \`$SID_BIN/nbdinfo\`)"
    [[ -z $SID_NOTE ]] || echo "- $SID_NOTE"
    echo "- transcripts, normalised transcripts, diffs, logs: \`$ART/\`"
    echo
    echo "## Which library each setting loads"
    echo
    echo "| setting | \`nbdinfo --version\`, library line | libnbd.so.0 initialised (LD_DEBUG=libs) |"
    echo "|---|---|---|"
    for v in "${VARIANTS[@]}"; do
        label=${VLABEL[$v]}
        [[ -z ${VPATH[$v]} ]] || label="libnbd $TREE_VERSION programs, $label"
        echo "| $label | $(cell "${PRE_VERSION[$v]}") | $(cell "${PRE_PROOF[$v]}") |"
    done
    echo
    echo "Every scenario run repeats the loader check for all its processes that use libnbd."
    echo "Exit columns list the exit codes of the steps run on the library, in order (\`0x5\` = five zeros)."
    for set in "${SETS[@]}"; do
        echo
        echo "## Results: ${SET_TITLE[$set]}"
        echo
        results_table "$set"
    done
    echo
    echo "## Scenarios"
    echo
    bash "$HERE/scenarios.sh" --list | while IFS=$'\t' read -r n d; do echo "- \`$n\`: $d"; done
    for set in "${SETS[@]}"; do
        read -ra vs <<<"${SET_VARIANTS[$set]}"
        for name in "${SELECTED[@]}"; do
            [[ ${VERDICT[$set:$name]:-yes} == yes ]] && continue
            echo
            echo "## $name ($set): differences"
            for v in "${vs[@]:1}"; do
                [[ -f $ART/$name/$v.diff ]] || continue
                echo
                echo "### ${VLABEL[${vs[0]}]} vs ${VLABEL[$v]} (first 200 lines; full diff in \`$ART/$name/$v.diff\`)"
                echo
                echo '```diff'
                head -n 200 "$ART/$name/$v.diff"
                echo '```'
            done
            for v in "${vs[@]}"; do
                [[ -n ${HARNESS[$name.$v]} ]] && echo && echo "- ${VLABEL[$v]}: $(cell "${HARNESS[$name.$v]}")"
                [[ ${PROOF[$name.$v]} == ok ]] || echo "- ${VLABEL[$v]}: library check: ${PROOF[$name.$v]}"
            done
        done
    done
    # No proof files (no nbd-plugin scenario selected) is not an error.
    proofs=$(cat "$ART"/*/*/proof.txt 2>/dev/null | sort -u || true)
    if [[ -n $proofs ]]; then
        echo
        echo "## Version evidence from nbdkit's nbd plugin (not compared)"
        echo
        for f in "$ART"/*/*/proof.txt; do
            echo "- \`${f#"$ART"/}\`: $(grep -v '^nbdkit' "$f" | paste -sd' ' -)"
        done
    fi
} >"$REPORT"

for set in "${SETS[@]}"; do
    echo
    echo "${SET_TITLE[$set]}:"
    results_table "$set"
done
for set in "${SETS[@]}"; do
    read -ra vs <<<"${SET_VARIANTS[$set]}"
    for name in "${SELECTED[@]}"; do
        for v in "${vs[@]:1}"; do
            if [[ -f $ART/$name/$v.diff ]]; then
                echo
                echo "--- diff $name: ${VLABEL[${vs[0]}]} vs ${VLABEL[$v]} (first 60 lines of $ART/$name/$v.diff)"
                head -n 60 "$ART/$name/$v.diff"
            fi
        done
    done
done
echo
echo "report: $REPORT  (${ELAPSED}s)"
if ((STRICT && DIFFERS)); then exit 1; fi
exit 0
