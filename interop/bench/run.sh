#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# run.sh: benchmark one nbd_bench binary on libnbd and on duplexnbd, alternating, and report.
set -euo pipefail

# The whole script is one brace group, so bash reads it completely before running it and an edit
# to this file during a 10-minute run cannot change what the run executes.
{

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

usage() {
  cat <<EOF
usage: interop/bench/run.sh [options]
  --ours PATH      our libnbd.so.0, or a directory holding it (default: $repo/build/lib)
  --system PATH    reference library (default: /usr/lib/x86_64-linux-gnu/libnbd.so.0)
  --quick          reduced matrix (null + memory, read/mixed, 4 KiB + 256 KiB): 100 points,
                   about 2 min on a quiet machine (the full one: 444 points, 7-8 min)
  --reps N         repetitions per library and point (default 3, at least 3 for the report)
  --scale F        multiply every per-run duration by F (default 1)
  --doc FILE       Markdown report to update (default: docs/performance-matrix.md)
  --png FILE       ratio plot (default: docs/performance-ratio.png)
  --no-doc         measure and print the summary, but leave docs/ alone
  --results DIR    where raw results go (default: build-bench/results-<time>)
  --wait-quiet S   first wait up to S seconds for the 1-minute load average to drop below 1
  --warmup S       untimed warm-up of each run's workload before timing (default 0.03 x scale)
  --pin-server     run every server thread on CPU 0, the client free (default: no pinning;
                   see docs/performance.md, "Limits of a 2-core machine")
  --pin-client     run the benchmark (every client thread) on CPU 1; with --pin-server the
                   scheduler's placement, the largest source of noise here, is fixed
  --recheck DIR    instead of the matrix, measure again, with longer runs, the points that an
                   earlier run (its results directory) had below 0.98 or with more client CPU
                   per GiB than libnbd, plus the target points; the report compares the two
  --seconds S      length of each recheck run (default 1; --scale multiplies it too)
Library A is the system library, B is ours; both are loaded by the same binary through
LD_LIBRARY_PATH, runs alternate A B A B per point. Pointing --ours at the system library
is the harness check: every ratio should then be close to 1.0.
EOF
}

ours=$repo/build/lib
system=/usr/lib/x86_64-linux-gnu/libnbd.so.0
quick=0
reps=3
scale=1
doc=$repo/docs/performance-matrix.md
png=$repo/docs/performance-ratio.png
write_doc=1
results=
wait_quiet=0
warmup=
pin=0
pin_client=0
recheck=
recheck_secs=1
while [ $# -gt 0 ]; do
  case $1 in
    --ours) ours=$2; shift 2 ;;
    --ours=*) ours=${1#*=}; shift ;;
    --system) system=$2; shift 2 ;;
    --system=*) system=${1#*=}; shift ;;
    --quick) quick=1; shift ;;
    --reps) reps=$2; shift 2 ;;
    --reps=*) reps=${1#*=}; shift ;;
    --scale) scale=$2; shift 2 ;;
    --scale=*) scale=${1#*=}; shift ;;
    --doc) doc=$2; shift 2 ;;
    --png) png=$2; shift 2 ;;
    --no-doc) write_doc=0; shift ;;
    --results) results=$2; shift 2 ;;
    --wait-quiet) wait_quiet=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --pin-server) pin=1; shift ;;
    --pin-client) pin_client=1; shift ;;
    --recheck) recheck=$(cd "$2" && pwd); shift 2 ;;
    --seconds) recheck_secs=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done

if [ -n "$recheck" ]; then
  [ -f "$recheck/results.tsv" ] || { echo "run.sh: $recheck holds no results.tsv" >&2; exit 2; }
  quick=0
  # Long runs settle longer: server threads, socket buffers and the scheduler's placement.
  [ -n "$warmup" ] || warmup=$(awk -v b="$scale" 'BEGIN { printf "%.3f", 0.1 * b }')
fi
[ -n "$warmup" ] || warmup=$(awk -v b="$scale" 'BEGIN { printf "%.3f", 0.03 * b }')
t_begin=$(date +%s)
log() { printf '[%4ds] %s\n' $(( $(date +%s) - t_begin )) "$*" >&2; }

# ---- tools: install what is missing when we can (root on Debian), else say what is needed ----
need_pkgs=()
command -v gcc >/dev/null || need_pkgs+=(gcc)
[ -f /usr/include/libnbd.h ] || need_pkgs+=(libnbd-dev)
command -v nbdkit >/dev/null || need_pkgs+=(nbdkit)
command -v qemu-nbd >/dev/null || need_pkgs+=(qemu-utils)
command -v gnuplot >/dev/null || need_pkgs+=(gnuplot-nox)
command -v python3 >/dev/null || need_pkgs+=(python3)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing ${need_pkgs[*]}"
    apt-get install -y -qq "${need_pkgs[@]}" >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null && apt-get install -y -qq "${need_pkgs[@]}" >/dev/null; }
  else
    echo "run.sh: missing packages: ${need_pkgs[*]}" >&2
    exit 1
  fi
fi

# ---- build: the same binary serves both libraries ----
build=$repo/build-bench
mkdir -p "$build"
cflags=(-std=c11 -Wall -Wextra -Werror -O2 -pthread)
gcc "${cflags[@]}" "$here/nbd_bench.c" -o "$build/nbd_bench" -lnbd
gcc "${cflags[@]}" "$here/sockpair_ceiling.c" -o "$build/sockpair_ceiling"
bench=$build/nbd_bench

[ -n "$results" ] || results=$build/results-$(date +%Y%m%d-%H%M%S)
mkdir -p "$results"

# ---- library directories: LD_LIBRARY_PATH needs a directory holding libnbd.so.0 ----
# Both sides go through LD_LIBRARY_PATH so the two environments differ only in the library,
# and both are copied first: a rebuild of ours during the run must not change what is measured.
[ -f "$system" ] || { echo "run.sh: no system library at $system" >&2; exit 1; }
if [ -d "$ours" ]; then ours_file=$ours/libnbd.so.0; else ours_file=$ours; fi
[ -e "$ours_file" ] || { echo "run.sh: no library at $ours_file (build it first, or use --ours)" >&2; exit 1; }
libdirs=$results/lib
mkdir -p "$libdirs/system" "$libdirs/ours"
cp "$(readlink -f "$system")" "$libdirs/system/libnbd.so.0"
cp "$(readlink -f "$ours_file")" "$libdirs/ours/libnbd.so.0"
if [ "$(readlink -f "$ours_file")" = "$(readlink -f "$system")" ]; then
  kind=validation
else
  kind=duplexnbd
fi
mode=full; [ $quick = 1 ] && mode=quick; [ -n "$recheck" ] && mode=recheck
dir_for() { if [ "$1" = A ]; then echo "$libdirs/system"; else echo "$libdirs/ours"; fi; }

# ---- servers: all on Unix sockets in a tmpfs directory, all ours to stop ----
tmp=$(mktemp -d /dev/shm/nbd-bench.XXXXXX)
server_pids=()
cleanup() {
  local pid
  for pid in "${server_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${server_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_socket() {
  local i
  for i in $(seq 100); do
    [ -S "$1" ] && return 0
    sleep 0.05
  done
  echo "run.sh: server socket $1 did not appear" >&2
  exit 1
}

# --pin-server: servers on CPU 0 (when there is more than one and taskset exists), so the
# client and the server do not swap places between runs; the client may use every CPU.
server_cpu=()
if [ $pin = 1 ] && [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  server_cpu=(taskset -c 0)
else
  pin=0
fi
client_cpu=()
if [ $pin_client = 1 ] && [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  client_cpu=(taskset -c 1)
else
  pin_client=0
fi

start_servers() {
  "${server_cpu[@]}" nbdkit -f --exit-with-parent -U "$tmp/null.sock" null 1G &
  server_pids+=($!)
  "${server_cpu[@]}" nbdkit -f --exit-with-parent -U "$tmp/memory.sock" memory 1G &
  server_pids+=($!)
  # Enough server threads that 32 synchronous callers really have 32 requests sleeping at once.
  "${server_cpu[@]}" nbdkit -f --exit-with-parent --threads 64 -U "$tmp/delay.sock" --filter=delay memory 1G \
    delay-read=1ms delay-write=1ms &
  server_pids+=($!)
  wait_socket "$tmp/null.sock"
  wait_socket "$tmp/memory.sock"
  wait_socket "$tmp/delay.sock"
  if [ $quick = 0 ]; then
    truncate -s 256M "$tmp/disk.img"
    "${server_cpu[@]}" qemu-nbd -f raw -t -k "$tmp/qemu.sock" "$tmp/disk.img" 2>"$tmp/qemu-nbd.log" &
    server_pids+=($!)
    wait_socket "$tmp/qemu.sock"
  fi
}

# ---- one run: prints the result line, or a FAIL line so the report shows the gap ----
tsv=$results/results.tsv
{ printf 'server\tside\trep\t'; "$bench" --print-header; } >"$tsv"

failures=0
one_run() { # server side rep seconds driver op size inflight
  local server=$1 side=$2 rep=$3 secs=$4 driver=$5 op=$6 size=$7 q=$8 verify=pattern line rc
  [ "$server" = null ] && verify=zero
  local args=(-s "$tmp/$server.sock" -V "$verify" -l "$server" -d "$driver" -o "$op" -b "$size" -T "$secs"
              -W "$warmup")
  if [ "$driver" = sync ]; then args+=(-t "$q"); else args+=(-q "$q"); fi
  rc=0
  # A hung library must not stall the matrix: runs take well under a second, even on a busy
  # machine a few; past 15 s the run counts as failed.
  line=$(LD_LIBRARY_PATH=$(dir_for "$side") timeout 15 "${client_cpu[@]}" "$bench" "${args[@]}" 2>>"$results/stderr.log") || rc=$?
  if [ $rc -ne 0 ] && [ $rc -ne 3 ]; then
    failures=$((failures + 1))
    echo "FAIL rc=$rc: side $side: $bench ${args[*]}" >>"$results/stderr.log"
    line=$(printf -- '-\t-\t-\t%s\t%s\t%s\t%s\t%s\t-\t-\t-\t-\t-\t-\t-\t-\t-\tFAIL' "$server" "$driver" "$op" "$size" "$q")
  elif [ $rc -eq 3 ]; then
    failures=$((failures + 1))
  fi
  printf '%s\t%s\t%s\t%s\n' "$server" "$side" "$rep" "$line" >>"$tsv"
}

npoints=0
point() { # server seconds driver op size inflight
  local rep side secs
  secs=$(awk -v a="$2" -v b="$scale" 'BEGIN { printf "%.3f", a * b }')
  for rep in $(seq "$reps"); do
    for side in A B; do
      one_run "$1" "$side" "$rep" "$secs" "$3" "$4" "$5" "$6"
    done
  done
  npoints=$((npoints + 1))
}

# ---- other work on the machine shows up as noise; optionally wait for it to pass ----
if [ "$wait_quiet" != 0 ]; then
  deadline=$(( $(date +%s) + wait_quiet ))
  while awk '{ exit !($1 >= 1.0) }' /proc/loadavg && [ "$(date +%s)" -lt "$deadline" ]; do
    sleep 10
  done
  log "load average now $(cut -d' ' -f1-3 /proc/loadavg)"
fi
t_begin=$(date +%s)

# ---- CPU time of other jobs: the load average cannot tell them from the matrix's own
# client and server, which keep it at 2 or more; the machine's busy time minus ours can ----
# /proc/stat's cpu line: user nice system idle iowait irq softirq steal (clock ticks).
# One read, so that both figures are of the same instant: "busy steal".
cpu_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8, $9 }' /proc/stat; }
# Ours: the shell's reaped children (every client run) plus the servers still running.
# /proc/PID/stat after the command name: utime stime cutime cstime are fields 12-15.
own_ticks() {
  local t pid
  t=$(sed 's/.*) //' /proc/$$/stat | awk '{ print $14 + $15 }')
  for pid in "${server_pids[@]}"; do
    [ -r "/proc/$pid/stat" ] && t=$(( t + $(sed 's/.*) //' "/proc/$pid/stat" | awk '{ print $12 + $13 }') ))
  done
  echo "$t"
}
read -r busy0 steal0 < <(cpu_ticks); own0=$(own_ticks)

# ---- pre-flight: both libraries connect, move data and verify it ----
start_servers
for side in A B; do
  if ! out=$(LD_LIBRARY_PATH=$(dir_for $side) timeout 30 "$bench" -s "$tmp/memory.sock" -d classic -o mixed -b 64k -q 4 -T 0.05 2>&1); then
    echo "run.sh: library $side ($(dir_for $side)) failed the pre-flight run:" >&2
    echo "$out" >&2
    exit 1
  fi
  printf '%s\n' "$out" | cut -f1-3 >"$results/preflight-$side.txt"
done
log "A: $(cat "$results/preflight-A.txt" | tr '\t' ' ')"
log "B: $(cat "$results/preflight-B.txt" | tr '\t' ' ')"

# ---- socket ceiling ----
"$build/sockpair_ceiling" -T 0.5 >"$results/sockpair.tsv"
"$build/sockpair_ceiling" -b 4096 -T 0.3 | tail -n +2 >>"$results/sockpair.tsv"

# ---- machine description ----
{
  echo "kind=$kind"
  echo "mode=$mode"
  echo "reps=$reps"
  echo "scale=$scale"
  echo "warmup=$warmup"
  echo "servers_pinned=$( [ $pin = 1 ] && echo 'CPU 0' || echo no)"
  echo "client_pinned=$( [ $pin_client = 1 ] && echo 'CPU 1' || echo no)"
  echo "ours=$(readlink -f "$ours_file") (sha256 $(sha256sum "$libdirs/ours/libnbd.so.0" | cut -c1-12))"
  echo "system=$(readlink -f "$system") (sha256 $(sha256sum "$libdirs/system/libnbd.so.0" | cut -c1-12))"
  echo "ours_reports=$(cut -f1,2 "$results/preflight-B.txt" | tr '\t' ' ')"
  echo "system_reports=$(cut -f1,2 "$results/preflight-A.txt" | tr '\t' ' ')"
  echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') x $(grep -c '^processor' /proc/cpuinfo)"
  echo "mem=$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
  echo "uname=$(uname -srmv)"
  echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "load_before=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "nbdkit=$(nbdkit --version | head -1)"
  echo "qemu_nbd=$(qemu-nbd --version | head -1)"
  echo "commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')"
  [ -n "$recheck" ] && echo "recheck_of=$recheck" && echo "recheck_seconds=$recheck_secs"
  echo "command=interop/bench/run.sh$( [ -n "$recheck" ] && echo " --recheck $(basename "$recheck")")$( [ "$recheck_secs" != 1 ] && echo " --seconds $recheck_secs")$( [ $quick = 1 ] && echo ' --quick')$( [ "$reps" != 3 ] && echo " --reps $reps")$( [ "$scale" != 1 ] && echo " --scale $scale")$( [ $pin = 1 ] && echo ' --pin-server')$( [ $pin_client = 1 ] && echo ' --pin-client') --ours $ours"
} >"$results/meta.txt"

# ---- the matrix ----
# Per-run durations keep the full matrix under 10 minutes on 2 cores (about 2700 runs):
# null, where the client is the bottleneck, gets the longest runs; memory and qemu-nbd are
# server-bound on this machine; the delay server needs only enough requests for a median.
drivers=(classic poll twothread sync)
if [ -n "$recheck" ]; then
  servers=(); lat_ops=()
elif [ $quick = 1 ]; then
  servers=(null memory); ops=(read mixed); sizes=(4096 262144); depths=(1 16 64)
  declare -A dur=([null]=0.12 [memory]=0.1 [qemu]=0.1)
  lat_ops=(mixed); lat_size=65536; lat_dur=0.25
else
  servers=(null memory qemu); ops=(read write mixed); sizes=(4096 65536 262144 1048576)
  depths=(1 16 64)
  declare -A dur=([null]=0.15 [memory]=0.1 [qemu]=0.1)
  lat_ops=(read write mixed); lat_size=65536; lat_dur=0.25
fi

if [ -n "$recheck" ]; then
  # The earlier run's verdicts, as "server driver op size inflight" lines.
  mapfile -t recheck_points < <(python3 "$here/report.py" "$recheck" --misses)
  log "rechecking ${#recheck_points[@]} points of $recheck, ${recheck_secs} s per run"
  for line in "${recheck_points[@]}"; do
    read -r server driver op size q <<<"$line"
    point "$server" "$recheck_secs" "$driver" "$op" "$size" "$q"
  done
fi
for server in ${servers[@]+"${servers[@]}"}; do
  log "server $server"
  for driver in "${drivers[@]}"; do
    for op in "${ops[@]}"; do
      for size in "${sizes[@]}"; do
        for q in "${depths[@]}"; do
          point "$server" "${dur[$server]}" "$driver" "$op" "$size" "$q"
        done
      done
    done
  done
done
[ ${#lat_ops[@]} -gt 0 ] && log "latency case (1 ms delay)"
for driver in twothread sync; do
  for op in ${lat_ops[@]+"${lat_ops[@]}"}; do
    for q in 8 32; do
      point delay "$lat_dur" "$driver" "$op" "$lat_size" "$q"
    done
  done
done

elapsed=$(( $(date +%s) - t_begin ))
echo "elapsed=$elapsed" >>"$results/meta.txt"
echo "points=$npoints" >>"$results/meta.txt"
echo "failures=$failures" >>"$results/meta.txt"
echo "load_after=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$results/meta.txt"
hz=$(getconf CLK_TCK)
read -r busy1 steal1 < <(cpu_ticks)
awk -v b="$(( busy1 - busy0 ))" -v o="$(( $(own_ticks) - own0 ))" -v st="$(( steal1 - steal0 ))" \
    -v hz="$hz" -v e="$elapsed" -v n="$(nproc)" \
  'BEGIN { other = (b - o) / hz; if (other < 0) other = 0
           printf "other_cpu_s=%.1f\nown_cpu_s=%.1f\nsteal_cpu_s=%.1f\nmachine_cpu_s=%d\n", other, o / hz, st / hz, e * n }' \
  >>"$results/meta.txt"
log "$npoints points, $failures failed runs, ${elapsed}s; results in $results"

# ---- report ----
report_args=("$results")
[ $write_doc = 1 ] && report_args+=(--doc "$doc" --png "$png")
python3 "$here/report.py" "${report_args[@]}"
exit 0
}
