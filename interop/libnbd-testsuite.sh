#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Runs libnbd's own test suite (Debian's libnbd source) against stock libnbd and against a given libnbd.so.0, and compares.
#
# Usage: interop/libnbd-testsuite.sh [options]
#   --lib PATH          library under test ("ours"); default $DUPLEXNBD_LIB or
#                       <repo>/build/lib/libnbd.so.0
#   --libnbd-version V  whose test suite to run: 1.22.2 (default) or 1.14.2;
#                       each has its own cached tree and saved results.  A
#                       list ("1.22.2 1.14.2") or "all" runs each in turn and
#                       writes a combined report beside the per-version ones
#   --stock-only        run only the stock library built from libnbd's source
#   --ours-only         run only ours (compares with the last saved stock run)
#   --dirs "D1 D2"      test directories to run (default: all of the version's,
#                       see ALL_DIRS in facts())
#   -j N                parallel tests per directory (default 2)
#   --report FILE       Markdown report (default
#                       <repo>/build/libnbd-testsuite-<version>.md; with
#                       several versions the combined one, default
#                       <repo>/build/libnbd-testsuite.md, and FILE without
#                       .md plus -<version>.md for each version)
#   --test-timeout S    kill one test after S seconds (default 120)
#   --dir-timeout S     kill one directory's whole run after S seconds (default 1800)
#   --budget S          stop starting new directories after S seconds in total
#                       (default 0 = no limit; skipped directories are reported)
#   --retries N         re-run a directory's failed tests once if at most N
#                       failed (default 5, 0 = never); the report lists re-runs
#   --strict            exit 1 when ours has regressions against stock
#   --install-deps      as root: apt-get install the packages in PACKAGES
#   --rebuild           throw the cached libnbd build away and build it again
#   -h, --help
# Environment: DUPLEXNBD_CACHE (default ~/.cache/duplexnbd), DUPLEXNBD_LIB,
# DUPLEXNBD_LIBNBD_VERSION (default for --libnbd-version).
#
# Network: only the first build of a version downloads, and only Debian's
# source package, through a private apt state under the cache (the
# machine's apt configuration is neither used for it nor changed).
#
# Exit status: 0 when the harness worked (whatever ours scored), 1 with
# --strict and regressions, 2 when the harness itself could not do its job
# (with several versions: the worst of theirs, 2 before 1).
#
# How the library is swapped: libnbd's tests run through libtool wrappers and
# its ./run script, which both PREPEND <tree>/lib/.libs to LD_LIBRARY_PATH, and
# the Python module carries a RUNPATH to that directory; so LD_LIBRARY_PATH or
# LD_PRELOAD cannot substitute a library.  Instead the harness repoints the
# symlink <tree>/lib/.libs/libnbd.so.0 at the library under test for the
# duration of that run and always points it back at the stock file
# (libnbd.so.0.0.0, which stays untouched) afterwards, on errors and on signals.

# Functions called through step() look unreachable to shellcheck; the
# NOT_APPLICABLE text holds backquotes for Markdown, not expansions.
# shellcheck disable=SC2317,SC2016
set -euo pipefail

# Everything a fresh Debian 12 needs for building libnbd 1.22.2 and 1.14.2 and for their
# tests to run rather than skip (the tests probe for these servers and tools).
# Of Debian trixie's Build-Depends for 1.22.2 the others are not needed here:
# ocaml (bindings off), bash-completion (only installs completions),
# nbdkit-plugin-dev (no test builds a plugin).  Also left out: nbd-client (its
# tests need the nbd kernel module) and pycodestyle (a style check of the
# Python sources, not of any library).  What still skips on both libraries
# needs newer nbdkit/qemu than Debian 12's, a git checkout, sshd or AF_VSOCK.
#   debian-archive-keyring: verifies the source package (see fetch_source)
#   build-essential dpkg-dev pkg-config: compiler, make, apt-get source/dpkg-source
#   python3-dev: Python bindings and python/ tests
#   libgnutls28-dev gnutls-bin: TLS support and the certtool/psktool the TLS tests use
#   libxml2-dev: NBD URI support;  libfuse3-dev fuse3: nbdfuse and fuse/ tests
#   nbdkit nbd-server qemu-utils qemu-system-common: the servers the tests talk to
#     (qemu-system-common carries qemu-storage-daemon)
#   iproute2 (ss), jq, bsdextrautils (hexdump): used by individual test scripts
PACKAGES="debian-archive-keyring build-essential dpkg-dev pkg-config python3-dev libgnutls28-dev gnutls-bin libxml2-dev libfuse3-dev fuse3 nbdkit nbd-server qemu-utils qemu-system-common iproute2 jq bsdextrautils"

# The Python the bindings are built for and the python/ tests run with:
# Debian's, whose headers python3-dev installs, whatever python3 comes first
# in PATH (configure would otherwise pick e.g. a pyenv one).
PYTHON=/usr/bin/python3

# Where Debian's source packages come from (see fetch_source).
DEBIAN_MIRROR="http://deb.debian.org/debian"
DEBIAN_KEYRING="/usr/share/keyrings/debian-archive-keyring.gpg"

# The libnbd releases whose suites this harness knows, newest first; the
# first is the default.  facts() below holds what differs between them.
KNOWN_VERSIONS="1.22.2 1.14.2"

# Tests whose result says nothing about whether a library is a drop-in
# replacement: they compare the library's version string with the source
# tree's.  They are run and shown, but never counted as regressions.
# One entry per line: glob over "dir/test" | reason.
VERSION_STRING_TESTS='
tests/get-version|asserts nbd_get_package_name() == "libnbd" and nbd_get_version() == the source tree version
*/test-version.sh|checks that `tool --version` prints "libnbd <source tree version>"
'

# Tests of an older suite that check a behaviour a newer libnbd changed on purpose, where the
# newer suite checks the opposite; we follow the newest release.  Shown, never counted.
SUPERSEDED_BY_1_22='
tests/opt-list-meta|its own FIXME says the client-side refusal it expects (nbd_opt_list_meta_context without structured replies) is overly strict; libnbd 1.22 sends the option and lets the server answer, and 1.22.2'"'"'s `tests/opt-list-meta` and `python/t/240-opt-list-meta.py` require that
'

# Sets the facts of one libnbd version:
#   ALL_DIRS        every directory with automake TESTS that the harness runs.
#                   "python/t" is the harness's own pseudo directory:
#                   python/run-python-tests stops at the first failing
#                   t/*.py, so each t/*.py is run again as its own automake
#                   test to see all of them.
#   NOT_APPLICABLE  see VERSION_STRING_TESTS
#   CONFIGURE_ARGS  build only what the tests need.  Hiding perl from
#                   configure turns off the man pages; bindings other than
#                   Python are off: they need their toolchains, and their
#                   tests exercise the bindings more than the library.
#   MAKE_ARGS       api_built= stops docs/Makefile.inc from still asking for
#                   the ~180 generated API man pages.
#   SOURCE_FIXES    functions applied to the unpacked tree before configure
#   DEBIAN_VERSION, DEBIAN_SUITE  the Debian source package the suite comes
#                   from (Debian's patches applied), and the suite to fetch it from
#   RECIPE_EXTRA    anything else that, changed, must rebuild the cached tree
facts() {
    case "$1" in
        1.22.2)
            # Not run: ocaml/ (and ocaml/tests), golang/, rust/ (not built),
            # ublk/ (nbdublk needs libublksrv, which Debian 12 lacks).
            # lib/ has unit tests of libnbd's internal fork-safe helpers.
            ALL_DIRS="common/include common/utils lib tests python python/t sh info copy dump fuse interop"
            NOT_APPLICABLE="$VERSION_STRING_TESTS"
            CONFIGURE_ARGS="--disable-ocaml --disable-golang --disable-rust --disable-ublk --disable-static ac_cv_prog_PERL=no"
            MAKE_ARGS="api_built="
            SOURCE_FIXES=""
            RECIPE_EXTRA=""
            DEBIAN_VERSION=1.22.2-1 DEBIAN_SUITE=trixie
            ;;
        1.14.2)
            # Not run: ocaml/, golang/ (not built).
            ALL_DIRS="common/include common/utils tests python python/t sh info copy dump fuse interop"
            NOT_APPLICABLE="$VERSION_STRING_TESTS$SUPERSEDED_BY_1_22"
            CONFIGURE_ARGS="--disable-ocaml --disable-golang --disable-static ac_cv_prog_PERL=no"
            MAKE_ARGS="api_built="
            SOURCE_FIXES="fix_requires_probe"
            RECIPE_EXTRA="requires-probe-fix=1"
            DEBIAN_VERSION=1.14.2-1 DEBIAN_SUITE=bookworm
            ;;
        *) return 1 ;;
    esac
}

select_version() {
    case " $KNOWN_VERSIONS " in
        *" $1 "*) facts "$1" ;;
        *) die "libnbd $1 is not known to this harness (known: $KNOWN_VERSIONS)" ;;
    esac
    LIBNBD_VERSION="$1"
    CONFIGURE_ARGS="$CONFIGURE_ARGS PYTHON=$PYTHON"
    # Changing any of this (or bumping recipe=) rebuilds the cached tree.
    RECIPE="recipe=3 debian=$DEBIAN_VERSION configure=$CONFIGURE_ARGS make=$MAKE_ARGS $RECIPE_EXTRA"
}

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
helpers="$here/libnbd-testsuite"

ours_lib="${DUPLEXNBD_LIB:-$repo/build/lib/libnbd.so.0}"
cache="${DUPLEXNBD_CACHE:-$HOME/.cache/duplexnbd}"
report=""
version="${DUPLEXNBD_LIBNBD_VERSION:-${KNOWN_VERSIONS%% *}}"
run_stock=1 run_ours=1 dirs="" jobs=2 strict=0 install_deps=0 rebuild=0
test_timeout=120 dir_timeout=1800 budget=0 retries=5 ours_src="" ours_sum="" built_now=0

die() { echo "libnbd-testsuite: error: $*" >&2; exit 2; }
note() { echo "libnbd-testsuite: $*" >&2; }
usage() { sed -n '4,/^$/{/^$/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

# Options passed on unchanged when several versions run one after another.
passthru=()
while [ $# -gt 0 ]; do
    case "$1" in
        --libnbd-version|--libnbd-version=*|--report|--report=*) ;;
        --lib|--dirs|-j|--test-timeout|--dir-timeout|--budget|--retries) passthru+=("$1" "${2:-}") ;;
        *) passthru+=("$1") ;;
    esac
    case "$1" in
        --lib) ours_lib="${2:?--lib needs a path}"; shift ;;
        --lib=*) ours_lib="${1#*=}" ;;
        --libnbd-version) version="${2:?--libnbd-version needs a version}"; shift ;;
        --libnbd-version=*) version="${1#*=}" ;;
        --stock-only) run_ours=0 ;;
        --ours-only) run_stock=0 ;;
        --dirs) dirs="${2:?--dirs needs a list}"; shift ;;
        --dirs=*) dirs="${1#*=}" ;;
        -j) jobs="${2:?-j needs a number}"; shift ;;
        -j*) jobs="${1#-j}" ;;
        --report) report="${2:?--report needs a file}"; shift ;;
        --report=*) report="${1#*=}" ;;
        --test-timeout) test_timeout="${2:?}"; shift ;;
        --dir-timeout) dir_timeout="${2:?}"; shift ;;
        --budget) budget="${2:?}"; shift ;;
        --retries) retries="${2:?}"; shift ;;
        --strict) strict=1 ;;
        --install-deps) install_deps=1 ;;
        --rebuild) rebuild=1 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
    shift
done

# Runs this script once per version and puts their reports together.
run_versions() {
    local v rc worst=0 t0 combined="${report:-$repo/build/libnbd-testsuite.md}"
    local -A rcs=() secs=()
    for v in $1; do
        note "==== libnbd $v"
        t0=$SECONDS rc=0
        "$here/$(basename "${BASH_SOURCE[0]}")" "${passthru[@]}" --libnbd-version "$v" \
            --report "${combined%.md}-$v.md" || rc=$?
        rcs[$v]=$rc secs[$v]=$((SECONDS - t0))
        if [ "$rc" != 0 ] && { [ "$worst" = 0 ] || [ "$worst" = 1 ]; }; then worst=$rc; fi
    done
    mkdir -p "$(dirname "$combined")"
    {
        echo "# libnbd's own test suites: stock vs ours"
        echo
        echo "Generated $(date -u '+%Y-%m-%d %H:%M UTC') by \`interop/libnbd-testsuite.sh --libnbd-version \"$1\"\`."
        echo "Each version's suite runs on the stock library built from that version's Debian source"
        echo "package and on ours; a regression is a test that passes on stock and not on ours."
        echo
        echo "| libnbd suite | tests | ours passes | of the applicable | regressions | source tree | run seconds | harness exit |"
        echo "|---|---:|---:|---:|---:|---|---:|---|"
        for v in $1; do
            local tests="-" pass="-" app="-" reg="-" built="-" f="$cache/results-$v/summary.tsv"
            if [ -f "$f" ] && [ "$f" -nt "$combined.started" ]; then
                IFS=$'\t' read -r tests pass app reg built <"$f" || true
            fi
            echo "| $v | $tests | $pass | $app | $reg | $built | ${secs[$v]} | ${rcs[$v]} |"
        done
        for v in $1; do
            echo
            if [ -f "${combined%.md}-$v.md" ] && [ "${combined%.md}-$v.md" -nt "$combined.started" ]; then
                sed 's/^#/##/' "${combined%.md}-$v.md"
            else
                echo "## libnbd $v: no report (harness exit ${rcs[$v]})"
            fi
        done
    } >"$combined.tmp"
    mv "$combined.tmp" "$combined"
    rm -f "$combined.started"
    note "combined report written to $combined"
    exit "$worst"
}

[ "$version" != all ] || version="$KNOWN_VERSIONS"
if [ "$(wc -w <<<"$version")" -gt 1 ]; then
    combined_report="${report:-$repo/build/libnbd-testsuite.md}"
    mkdir -p "$(dirname "$combined_report")"
    : >"$combined_report.started"
    run_versions "$version"
fi
select_version "$version"
[ -n "$dirs" ] || dirs="$ALL_DIRS"
[ -n "$report" ] || report="$repo/build/libnbd-testsuite-$LIBNBD_VERSION.md"
[ "$run_stock$run_ours" != 00 ] || die "--stock-only and --ours-only exclude each other"
for n in "$jobs" "$test_timeout" "$dir_timeout" "$budget" "$retries"; do
    [[ "$n" =~ ^[0-9]+$ ]] || die "not a number: $n"
done
for d in $dirs; do
    case " $ALL_DIRS " in *" $d "*) ;; *) die "unknown test directory: $d (known: $ALL_DIRS)" ;; esac
done

tree="$cache/libnbd-$LIBNBD_VERSION"
stamp="$tree/.duplexnbd-stamp"
results="$cache/results-$LIBNBD_VERSION"
probe_bin="$cache/probe-$LIBNBD_VERSION"
build_logs="$cache/build-logs-$LIBNBD_VERSION"
start_time=$SECONDS

# The test scripts call nbdkit, nbd-server and friends by bare name, and Debian
# installs some of them in sbin (this is also what debian/rules does).
export PATH="/usr/sbin:/sbin:$PATH"
export DEBIAN_FRONTEND=noninteractive

# ---------------------------------------------------------------- packages

missing_packages() {
    local p
    for p in $PACKAGES; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q ' installed$' || echo "$p"
    done
}

apt_updated=0
apt_update() {
    [ $apt_updated = 1 ] && return 0
    apt-get update -q >/dev/null || die "apt-get update failed"
    apt_updated=1
}

install_packages() {
    local missing
    missing="$(missing_packages | tr '\n' ' ')"
    [ -n "${missing// /}" ] || { note "all needed packages are installed"; return 0; }
    [ "$(id -u)" = 0 ] || die "--install-deps needs root; missing: $missing"
    note "installing: $missing"
    apt_update
    # shellcheck disable=SC2086  # word splitting of the package list is wanted
    apt-get install -y -q --no-install-recommends $missing >"$cache/apt-install.log" 2>&1 ||
        { tail -20 "$cache/apt-install.log" >&2; die "apt-get install failed (log: $cache/apt-install.log)"; }
}

# ---------------------------------------------------------------- build

build_log() { echo "$build_logs/$1.log"; }
step() {
    local name="$1"; shift
    note "build: $name"
    if ! "$@" >"$(build_log "$name")" 2>&1; then
        tail -30 "$(build_log "$name")" >&2
        die "build step '$name' failed (log: $(build_log "$name"))"
    fi
}

# The source package comes through a private apt state under the cache: its
# own deb-src entry for the version's Debian suite, its own index lists and
# its own package cache, so the machine's /etc/apt and /var/lib/apt are
# neither read for sources nor changed.  Debian's archive key signs the
# suite's Release file, and apt checks the .dsc and tarballs against it.
apt_private() {
    local dir="$cache/apt/$DEBIAN_SUITE"
    APT_OPTS=(-o Dir::Etc::SourceList=/dev/null
              -o Dir::Etc::SourceParts="$dir/etc"
              -o Dir::State::Lists="$dir/lists"
              -o Dir::Cache="$dir/cache")
    mkdir -p "$dir/etc" "$dir/lists/partial" "$dir/cache/archives/partial"
    printf '%s\n' "Types: deb-src" "URIs: $DEBIAN_MIRROR" "Suites: $DEBIAN_SUITE" \
        "Components: main" "Signed-By: $DEBIAN_KEYRING" >"$dir/etc/$DEBIAN_SUITE.sources"
}

fetch_source() {
    local src="$cache/src-$LIBNBD_VERSION" dsc
    dsc="$src/libnbd_${DEBIAN_VERSION}.dsc"
    # This runs under step(), which shows the tail of this output when it
    # fails: so complain and return 1 rather than die.
    [ -r "$DEBIAN_KEYRING" ] ||
        { echo "error: $DEBIAN_KEYRING missing (apt-get install debian-archive-keyring)"; return 1; }
    # A download kept from an earlier build is reused when dpkg-source
    # still finds every file the .dsc lists, with its checksum.
    if [ -f "$dsc" ] && dpkg-source -x --no-copy "$dsc" "$tree"; then
        echo "reused $dsc"
        return 0
    fi
    rm -rf "$src" "$tree"; mkdir -p "$src"
    apt_private
    echo "+ apt-get ${APT_OPTS[*]} update"
    apt-get "${APT_OPTS[@]}" -q update ||
        { echo "error: apt-get update of the private $DEBIAN_SUITE state failed"; return 1; }
    echo "+ apt-get ${APT_OPTS[*]} source --download-only libnbd=$DEBIAN_VERSION"
    (cd "$src" && apt-get "${APT_OPTS[@]}" -q source --download-only "libnbd=$DEBIAN_VERSION") ||
        { echo "error: apt-get source libnbd=$DEBIAN_VERSION from $DEBIAN_SUITE failed"; return 1; }
    [ -f "$dsc" ] || { echo "error: apt-get source left no $dsc"; return 1; }
    # dpkg-source applies Debian's patches, i.e. we test the suite Debian
    # ships.  (It cannot check the .dsc signature without debian-keyring; apt
    # already checked the files against the signed Sources index.)
    dpkg-source -x --no-copy "$dsc" "$tree"
}

# interop/requires.c and tests/requires.c probe qemu-nbd for TLS support with
# the bash-only "|&" through system(), which runs /bin/sh (dash on Debian), so
# the probe always fails and TLS interop tests skip.  Make it POSIX sh.
fix_requires_probe() {
    local f
    for f in "$tree/interop/requires.c" "$tree/tests/requires.c"; do
        [ -f "$f" ] || continue
        sed -i 's/ |& / 2>\&1 | /g' "$f"
        ! grep -q '|&' "$f" || die "could not fix the |& probe in $f"
    done
}

# Four fuse tests wait for nbdfuse with "for i in {1..60}" inside an
# "nbdkit --run '...'" string, which nbdkit hands to /bin/sh (dash): the brace
# range does not expand there, so they wait one second instead of sixty and
# fail whenever the machine is busy.  seq means the same to bash and dash.
# Scripts are read at run time, so this is applied on every run (idempotent).
fix_test_scripts() {
    local f
    for f in "$tree"/fuse/test-*.sh; do
        [ -f "$f" ] || continue
        grep -q '{1\.\.60}' "$f" || continue
        sed -i 's/for i in {1\.\.60}; do/for i in $(seq 60); do/' "$f"
    done
}

build_tree() {
    mkdir -p "$build_logs"
    # libtool bakes absolute paths into wrappers and RUNPATHs, so the tree is
    # built in its final place; the stamp marks it complete.
    rm -rf "$tree"
    step fetch-and-unpack fetch_source
    local fix
    for fix in $SOURCE_FIXES; do "$fix"; done
    # shellcheck disable=SC2086  # CONFIGURE_ARGS is a list of words
    step configure sh -c "cd '$tree' && ./configure $CONFIGURE_ARGS"
    step make make -C "$tree" -j"$(nproc)" "$MAKE_ARGS"
    # Builds every check_PROGRAM (and test data) without running a test.
    step make-check-programs make -C "$tree" -j"$(nproc)" check "$MAKE_ARGS" TESTS=
    echo "$RECIPE" >"$stamp"
}

build_probe() {
    if [ ! -x "$probe_bin" ] || [ "$helpers/probe.c" -nt "$probe_bin" ] || [ "$stamp" -nt "$probe_bin" ]; then
        cc -O1 -o "$probe_bin" "$helpers/probe.c" -I"$tree/include" \
           -L"$tree/lib/.libs" -lnbd -ldl ||
            die "could not compile $helpers/probe.c"
    fi
}

# ---------------------------------------------------------------- library swap

libs_dir() { echo "$tree/lib/.libs"; }

point_at_stock() {
    [ -d "$(libs_dir)" ] || return 0
    [ -f "$(libs_dir)/libnbd.so.0.0.0" ] || return 0
    ln -sfn libnbd.so.0.0.0 "$(libs_dir)/libnbd.so.0"
}

point_at() {
    ln -sfn "$1" "$(libs_dir)/libnbd.so.0"
}

bg_pid=""
cleanup() {
    local rc=$?
    if [ -n "$bg_pid" ]; then kill -TERM "$bg_pid" 2>/dev/null || true; wait "$bg_pid" 2>/dev/null || true; fi
    point_at_stock
    exit "$rc"
}
trap cleanup EXIT
# set -e alone exits silently; say where, so a harness bug is not mistaken
# for a verdict on the library.  Command substitutions run without -e, so
# their failures are expected and handled: stay quiet there.
set -E
trap '[ "$BASH_SUBSHELL" != 0 ] || echo "libnbd-testsuite: internal error: \"$BASH_COMMAND\" failed at line $LINENO" >&2' ERR
trap 'exit 130' INT
trap 'exit 143' TERM HUP

# Runs a command in the background and waits for it, so INT/TERM reach our
# trap at once instead of after the (possibly long) command finishes.
run_waiting() {
    local rc=0
    "$@" &
    bg_pid=$!
    wait "$bg_pid" || rc=$?
    bg_pid=""
    return "$rc"
}

# ---------------------------------------------------------------- proof

# Prints "library under test: ..." and fails unless the library the loader
# really picks for the suite's programs is $1 (a realpath).
prove_library() {
    local label="$1" want="$2" out path name version traced py
    out="$("$tree/run" "$probe_bin" 2>/dev/null)" || true
    IFS=$'\t' read -r path name version <<<"$out" || true
    # Second, independent witness: one of the suite's own compiled tests,
    # through its libtool wrapper and ./run, traced by the dynamic loader.
    traced="$(cd "$tree/tests" && LD_DEBUG=libs "$tree/run" ./close-null 2>&1 >/dev/null |
              sed -n 's/.*calling init: \(.*libnbd\.so[^ ]*\).*/\1/p' | tail -1)" || true
    [ -n "$traced" ] && traced="$(realpath "$traced")"
    # Third: what the Python binding (RUNPATH to lib/.libs) maps.
    py="$(cd "$tree/python" && "$tree/run" "$PYTHON" -c '
import nbd
print([l.split()[-1] for l in open("/proc/self/maps") if "libnbd.so" in l][0])' 2>/dev/null)" || py="(import failed)"
    [ "$py" = "(import failed)" ] || py="$(realpath "$py")"

    echo "[$label] library under test: ${path:-?} (package ${name:-?} ${version:-?})"
    [ "$label" != ours ] || echo "[$label]   a snapshot of: $ours_src"
    echo "[$label]   loader trace of tests/close-null: ${traced:-?}"
    echo "[$label]   python binding maps: $py"
    if [ -z "$path" ] || [ "$path" = "?" ]; then
        note "[$label] the probe could not run against this library; relying on the loader trace"
        path="$traced"
    fi
    [ "$path" = "$want" ] || die "[$label] the suite would load $path, expected $want"
    [ -z "$traced" ] || [ "$traced" = "$want" ] || die "[$label] tests/close-null loads $traced, expected $want"
    local origin=""
    [ "$label" = ours ] && origin="snapshot of $ours_src, sha256 $ours_sum..."
    printf '%s\t%s\t%s\t%s\n' "$path" "${name:-?}" "${version:-?}" "$origin" >"$results/$label/library.tsv"
}

# ---------------------------------------------------------------- running

# Removes the previous run's automake results of one directory.
clean_results() {
    local d="$1" f
    for f in "$d"/*.trs; do
        [ -e "$f" ] || continue
        rm -f "$f" "${f%.trs}.log"
    done
    rm -f "$d/test-suite.log"
}

# Where one directory's saved results live ("python/t" -> "python-t", so
# clearing "python" never clears "python/t").
saved() { echo "$results/$1/dirs/${2//\//-}"; }

run_dir() {
    local label="$1" key="$2" out make_dir="$2" rc=0 limit="$dir_timeout" left
    out="$(saved "$1" "$2")"
    rm -rf "$out"; mkdir -p "$out"
    if [ "$budget" -gt 0 ]; then
        left=$((budget - (SECONDS - start_time)))
        if [ "$left" -le 0 ]; then
            note "[$label] $key: not run, --budget $budget exhausted"
            echo "budget" >"$out/not-run"; return 0
        fi
        [ "$left" -lt "$limit" ] && limit="$left"
    fi
    # The per-test timeout rides on LOG_COMPILER, which automake puts in front
    # of every test, script or binary.  timeout(1) runs the test in its own
    # process group and kills the whole group, servers the test started too.
    local log_compiler="timeout -k 10 $test_timeout $tree/run"
    local -a make_cmd=(make) extra=()
    if [ "$key" = python/t ]; then
        make_dir=python
        extra=(TESTS="$(cd "$tree/python" && echo t/*.py)")
        log_compiler="$log_compiler $PYTHON"
        make_cmd=(env MAKEFILES="$helpers/python-each.mk" make)
    fi
    make_cmd+=(-C "$tree/$make_dir" -k -j"$jobs")
    local -a make_vars=(LOG_COMPILER="$log_compiler" "${extra[@]}")
    clean_results "$tree/$key"
    note "[$label] $key ..."
    local t0=$SECONDS f
    run_waiting timeout -k 30 "$limit" "${make_cmd[@]}" check "${make_vars[@]}" >"$out/make.log" 2>&1 || rc=$?

    # Some tests are timing-sensitive on a loaded machine.  automake's
    # "recheck" re-runs exactly the failed ones; a few failures are worth one
    # more try, many mean the library is broken and a retry only costs time.
    local -a failed=()
    local n_app=0
    mapfile -t failed < <(grep -l '^:recheck: yes' "$tree/$key"/*.trs 2>/dev/null || true)
    for f in "${failed[@]}"; do
        na_reason "$key/$(basename "$f" .trs)" >/dev/null || n_app=$((n_app + 1))
    done
    left=$((limit - (SECONDS - t0)))
    if [ "$rc" != 124 ] && [ "$rc" != 137 ] && [ "$left" -gt 0 ] &&
       [ "$n_app" -gt 0 ] && [ ${#failed[@]} -le "$retries" ]; then
        mkdir -p "$out/first-attempt"
        for f in "${failed[@]}"; do cp "$f" "${f%.trs}.log" "$out/first-attempt/" 2>/dev/null || true; done
        note "[$label] $key: re-running ${#failed[@]} failed test(s) once"
        run_waiting timeout -k 30 "$left" "${make_cmd[@]}" recheck "${make_vars[@]}" >>"$out/make.log" 2>&1 || rc=$?
    fi
    echo "$((SECONDS - t0))" >"$out/seconds"
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        note "[$label] $key: whole directory timed out after ${limit}s"
        echo "dir timed out" >"$out/not-run"
    fi
    # Move rather than copy: with LIBNBD_DEBUG=1 some logs are hundreds of MB.
    local log
    for f in "$tree/$key"/*.trs; do
        [ -e "$f" ] || continue
        log="${f%.trs}.log"
        mv "$f" "$out/"
        [ -f "$log" ] || continue
        mv "$log" "$out/"
        log="$out/$(basename "$log")"
        # A passing test's debug trace is rarely read; keep its tail only.
        if [ "$(trs_result "$out/$(basename "$f")")" = PASS ] && [ "$(stat -c %s "$log")" -gt 1048576 ]; then
            { echo "[libnbd-testsuite: passing test's log cut to its last 2000 lines]"; tail -n 2000 "$log"; } >"$log.cut"
            mv "$log.cut" "$log"
        fi
    done
    if [ -f "$tree/$key/test-suite.log" ]; then mv "$tree/$key/test-suite.log" "$out/"; fi
    return 0
}

trs_result() { [ -f "$1" ] || return 0; sed -n 's/^:test-result: *\([A-Z]*\).*/\1/p' "$1" | head -1; }

# Writes "$results/$label/results.tsv" from every directory saved for that
# label (this run's and, for directories not run now, earlier runs'):
# dir, dir/test, result, exit status, first attempt's result if re-run.
# A handful of processes per label, not a few per test: forks are what
# costs time on a busy machine (a minute per label otherwise).
collect() {
    local label="$1" d f list
    list="$results/$label/trs.list"
    local -a logs=()
    : >"$list"
    for d in $ALL_DIRS; do
        for f in "$(saved "$label" "$d")"/*.trs; do
            [ -e "$f" ] || continue
            printf '%s\t%s\n' "$d" "$f" >>"$list"
            logs+=("${f%.trs}.log")
        done
    done
    # The exit status is the last "exit status: N" in the last 4 KiB of the
    # test's log; one tail prints them all, each after a "==> FILE <==" line.
    { [ ${#logs[@]} -eq 0 ] || tail -v -c 4096 -- "${logs[@]}" 2>/dev/null || true; } |
    awk -v list="$list" '
        function result(file,   l, r) {
            r = ""
            while ((getline l < file) > 0)
                if (l ~ /^:test-result:/) { r = l; sub(/^:test-result: */, "", r); sub(/[^A-Z].*/, "", r); break }
            close(file)
            return r
        }
        /^==> .* <==$/ { cur = substr($0, 5, length($0) - 8); next }
        match($0, /exit status: [0-9]+/) { ex[cur] = substr($0, RSTART + 13, RLENGTH - 13) }
        END {
            while ((getline line < list) > 0) {
                split(line, a, "\t")
                n = a[2]; sub(/.*\//, "", n); sub(/\.trs$/, "", n)
                dir = a[2]; sub(/\/[^\/]*$/, "", dir)
                lg = a[2]; sub(/\.trs$/, ".log", lg)
                res = result(a[2])
                printf "%s\t%s/%s\t%s\t%s\t%s\n", a[1], a[1], n, (res == "" ? "ERROR" : res),
                       ((lg in ex) ? ex[lg] : "?"), result(dir "/first-attempt/" n ".trs")
            }
        }' >"$results/$label/results.tsv"
    rm -f "$list"
}

run_suite() {
    local label="$1" lib="$2"
    mkdir -p "$results/$label"
    if [ "$label" = stock ]; then point_at_stock; else point_at "$lib"; fi
    prove_library "$label" "$lib"
    local d t0=$SECONDS
    for d in $dirs; do run_dir "$label" "$d"; done
    point_at_stock
    collect "$label"
    echo "$((SECONDS - t0))" >"$results/$label/seconds"
}

# ---------------------------------------------------------------- report

na_reason() {
    local t="$1" line pat
    while IFS= read -r line; do
        [ -n "$line" ] || continue
        pat="${line%%|*}"
        # shellcheck disable=SC2053  # $pat is a glob on purpose
        [[ "$t" == $pat ]] && { echo "${line#*|}"; return 0; }
    done <<<"$NOT_APPLICABLE"
    return 1
}

# Rows of one label's results.tsv whose directory is in this run's --dirs.
selected() { awk -F'\t' -v dirs=" $dirs " 'index(dirs, " " $1 " ")' "$results/$1/results.tsv" 2>/dev/null; }

table() {
    local label="$1" d
    echo "| dir | PASS | FAIL | SKIP | XFAIL | ERROR | seconds |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    local total_secs=0
    for d in $dirs; do
        local note_="" secs
        [ -f "$(saved "$label" "$d")/not-run" ] && note_=" ($(cat "$(saved "$label" "$d")/not-run"))"
        secs="$(cat "$(saved "$label" "$d")/seconds" 2>/dev/null || echo '-')"
        [ "$secs" = - ] || total_secs=$((total_secs + secs))
        # XPASS (none expected in this suite) is a failure to automake too.
        selected "$label" | awk -F'\t' -v d="$d" -v n="$note_" -v s="$secs" '
            $1==d { c[$3]++ }
            END { printf "| %s%s | %d | %d | %d | %d | %d | %s |\n", d, n, c["PASS"], c["FAIL"]+c["XPASS"], c["SKIP"], c["XFAIL"], c["ERROR"], s }'
    done
    selected "$label" | awk -F'\t' -v s="$total_secs" '{ c[$3]++ }
        END { printf "| **total** | %d | %d | %d | %d | %d | %s |\n", c["PASS"], c["FAIL"]+c["XPASS"], c["SKIP"], c["XFAIL"], c["ERROR"], s }'
}


describe() {  # result + exit status, e.g. "FAIL (exit 124: timed out)"
    local res="$1" ex="$2"
    case "$ex" in
        124|137) echo "$res (exit $ex: timed out after ${test_timeout}s)" ;;
        127) echo "$res (exit 127: could not start, e.g. missing symbol)" ;;
        '?'|'') echo "$res" ;;
        *) echo "$res (exit $ex)" ;;
    esac
}

# Labels to show: the ones run now, and stock's saved results when ours is
# compared with them.
shown_labels() {
    if [ $run_stock = 1 ] || { [ $run_ours = 1 ] && [ -s "$results/stock/results.tsv" ]; }; then echo stock; fi
    if [ $run_ours = 1 ]; then echo ours; fi
}

# Where the suite came from and what building it cost.
tree_origin() {
    local secs when
    secs="$(cat "$tree/.duplexnbd-build-seconds" 2>/dev/null || echo '?')"
    if [ "$built_now" = 1 ]; then when="built by this run in ${secs}s"
    else when="cached, built on $(date -u -r "$stamp" '+%Y-%m-%d %H:%M UTC') in ${secs}s"; fi
    echo "Suite: Debian's libnbd $DEBIAN_VERSION source package ($DEBIAN_SUITE, Debian's patches applied) in \`$tree\`, $when"
}

write_report() {
    local stock_tsv="$results/stock/results.tsv" ours_tsv="$results/ours/results.tsv"
    # Each label's results by test, read once (an awk per test is slow).
    local -A stock_res=() ours_res=() ours_exit=()
    local _t _r _e
    if [ -f "$stock_tsv" ]; then
        while IFS=$'\t' read -r _ _t _r _ _; do stock_res[$_t]=$_r; done <"$stock_tsv"
    fi
    if [ -f "$ours_tsv" ]; then
        while IFS=$'\t' read -r _ _t _r _e _; do ours_res[$_t]=$_r ours_exit[$_t]=$_e; done <"$ours_tsv"
    fi
    local labels t res ex sres reason n_reg=0 label
    labels="$(shown_labels | tr '\n' ' ')"
    echo "# libnbd $LIBNBD_VERSION test suite: stock vs ours"
    echo
    echo "Generated $(date -u '+%Y-%m-%d %H:%M UTC') by \`interop/libnbd-testsuite.sh\`;" \
         "directories: \`$dirs\`; per-test timeout ${test_timeout}s; logs under \`$results/<label>/dirs\`."
    echo "$(tree_origin)."
    echo "\`python/t\` runs each \`python/t/*.py\` on its own, so it repeats what \`python/run-python-tests\` covers in one test."
    for label in $labels; do
        local lpath lname lver lorigin when=""
        IFS=$'\t' read -r lpath lname lver lorigin <"$results/$label/library.tsv" || true
        [ -z "$lorigin" ] || when=", $lorigin"
        [ "$label" = stock ] && [ $run_stock = 0 ] &&
            when="$when, saved on $(date -r "$results/stock/results.tsv" '+%Y-%m-%d %H:%M')"
        echo
        echo "## $label: \`$lpath\` (package $lname $lver)$when"
        echo
        table "$label"
        local retried
        retried="$(selected "$label" | awk -F'\t' '$5 != "" { printf "`%s` (%s, then %s) ", $2, $5, $3 }')"
        [ -z "$retried" ] || { echo; echo "Re-run once after failing: $retried"; }
    done

    local built_col
    if [ "$built_now" = 1 ]; then built_col="built, $(cat "$tree/.duplexnbd-build-seconds")s"; else built_col="cached"; fi
    printf '%s\t%s\t%s\t%s\t%s\n' - - - - "$built_col" >"$results/summary.tsv"
    case " $labels " in *" ours "*) ;; *) echo "$n_reg" >"$results/regressions"; return 0 ;; esac
    echo
    echo "## Tests not passing with ours"
    echo
    local any=0 also
    while IFS=$'\t' read -r _ t res ex _; do
        case "$res" in PASS|XFAIL) continue ;; esac
        any=1
        reason="$(na_reason "$t")" && reason=" — not applicable" || reason=""
        sres="${stock_res[$t]:-}"
        also=""; [ -z "$sres" ] || also="; stock: $sres"
        echo "- \`$t\`: $(describe "$res" "$ex")$also$reason"
    done < <(selected ours)
    [ $any = 1 ] || echo "(none)"

    if [ -s "$stock_tsv" ]; then
        echo
        echo "## Regressions (pass with stock, not with ours; a new SKIP counts)"
        echo
        while IFS=$'\t' read -r _ t sres _ _; do
            [ "$sres" = PASS ] || continue
            na_reason "$t" >/dev/null && continue
            res="${ours_res[$t]:-}"
            [ "$res" = PASS ] && continue
            n_reg=$((n_reg + 1))
            if [ -z "$res" ]; then echo "- \`$t\`: no result"
            else echo "- \`$t\`: $(describe "$res" "${ours_exit[$t]:-}")"; fi
        done < <(selected stock)
        [ $n_reg -gt 0 ] || echo "(none)"
        local better
        better="$(awk -F'\t' 'NR==FNR { s[$2]=$3; next } $3=="PASS" && ($2 in s) && s[$2]!="PASS" { printf "`%s` (stock %s) ", $2, s[$2] }' \
                  <(selected stock) <(selected ours))"
        [ -z "$better" ] || { echo; echo "Pass with ours but not with stock: $better"; }
        # Deliberately not in the "N passed, N failed" shape that CI log
        # scrapers take for a test runner's verdict: this is a comparison.
        local n_app=0 n_app_pass=0
        while IFS=$'\t' read -r _ t res _ _; do
            na_reason "$t" >/dev/null && continue
            n_app=$((n_app + 1)); [ "$res" != PASS ] || n_app_pass=$((n_app_pass + 1))
        done < <(selected ours)
        echo
        local n_pass n_all
        n_pass="$(selected ours | awk -F'\t' '$3=="PASS"' | wc -l)"
        n_all="$(selected ours | wc -l)"
        echo "Summary: ours passes $n_pass of $n_all tests ($n_app_pass of $n_app applicable);" \
             "regressions against stock: $n_reg."
        printf '%s\t%s\t%s\t%s\t%s\n' "$n_all" "$n_pass" "$n_app_pass of $n_app" "$n_reg" "$built_col" \
            >"$results/summary.tsv"
    fi

    echo
    echo "## Not applicable (run and shown above, never counted as regressions)"
    echo
    while IFS= read -r line; do
        [ -n "$line" ] || continue
        echo "- \`${line%%|*}\`: ${line#*|}"
    done <<<"$NOT_APPLICABLE"
    echo "$n_reg" >"$results/regressions"
}

# ---------------------------------------------------------------- main

mkdir -p "$cache"
[ $install_deps = 1 ] && install_packages
command -v apt-get >/dev/null || die "needs a Debian system (apt-get)"

# One harness at a time per cache: the library swap is global to the tree.
exec 9>"$cache/.lock"
flock -w 7200 9 || die "another run holds $cache/.lock"

# A run killed with SIGKILL cannot restore the symlink; do it now.
point_at_stock

if [ $rebuild = 1 ] || [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$RECIPE" ]; then
    missing="$(missing_packages | tr '\n' ' ')"
    [ -z "${missing// /}" ] || note "warning: packages not installed (use --install-deps): $missing"
    t0=$SECONDS
    build_tree
    echo "$((SECONDS - t0))" >"$tree/.duplexnbd-build-seconds"
    built_now=1
    rm -rf "${results:?}"   # results of an older build are not comparable
    rm -rf "$cache/results" "$cache/probe" "$cache/build-logs"  # this harness's layout before recipe=3
    note "built libnbd $LIBNBD_VERSION in $tree in $((SECONDS - t0))s"
else
    note "using cached build in $tree"
fi
build_probe
fix_test_scripts

stock_real="$(realpath "$(libs_dir)/libnbd.so.0.0.0")"
if [ $run_ours = 1 ]; then
    [ -e "$ours_lib" ] || die "library not found: $ours_lib (build it, pass --lib PATH, or use --stock-only)"
    ours_src="$(realpath "$ours_lib")"
    # Test a snapshot: a run takes minutes, and a rebuild of the library in
    # the meantime would otherwise mix two libraries in one result.  The copy
    # is 0755 because tests/dlopen skips unless access(X_OK) allows the file,
    # and Debian ships its own libraries 0644.
    if readelf -d "$ours_src" 2>/dev/null | grep -q 'ORIGIN'; then
        note "warning: $ours_src uses \$ORIGIN; its snapshot may not find its neighbours"
    fi
    mkdir -p "$cache/lib-under-test"
    install -m 0755 "$ours_src" "$cache/lib-under-test/libnbd.so.0.tmp"
    mv -f "$cache/lib-under-test/libnbd.so.0.tmp" "$cache/lib-under-test/libnbd.so.0"
    ours_real="$cache/lib-under-test/libnbd.so.0"
    ours_sum="$(sha256sum "$ours_real" | cut -c1-16)"
    note "ours: $ours_src (sha256 $ours_sum...), tested as the snapshot $ours_real"
fi

mkdir -p "$results"
[ $run_stock = 1 ] && run_suite stock "$stock_real"
[ $run_ours = 1 ] && run_suite ours "$ours_real"

mkdir -p "$(dirname "$report")"
write_report >"$report.tmp"
mv "$report.tmp" "$report"
cat "$report"
echo
note "report written to $report; total $((SECONDS - start_time))s"

if [ $strict = 1 ] && [ "$(cat "$results/regressions")" -gt 0 ]; then
    exit 1
fi
exit 0
