#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# run.sh: unmodified programs (nbdcopy, nbdkit's nbd plugin, nbdfuse, Python, an nbd_poll loop)
# on Debian's libnbd and on ours, alternating A B A B, and the ratios with their spread.
set -euo pipefail

# One brace group: bash reads the whole script before running it, so editing the file during
# a run cannot change what the run executes.
{

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

usage() {
  cat <<EOF
usage: interop/realbench/run.sh [options]
  --quick          a few seconds per row, smaller copies, fewer rows: checks the script (2-3 min)
  --ours PATH      our libnbd.so.0, or a directory holding it (default: $repo/build/lib)
  --system PATH    reference library, A (default: /usr/lib/x86_64-linux-gnu/libnbd.so.0);
                   point it at an older build of ours to A/B two of our versions
  --pairs N        A B pairs per row (default 5; --quick 3)
  --only LIST      comma-separated sections: nbdcopy,proxy,nbdfuse,python,poll (default: all)
  --doc FILE       Markdown file whose generated section is replaced (default: docs/performance.md)
  --png FILE       the plot (default: docs/realbench-ratio.png)
  --no-doc         measure and print the table, leave docs/ alone
  --results DIR    where raw results go (default: build-bench/real-<time>)
Every row runs A B A B ... with the same command line; only LD_LIBRARY_PATH differs (for the
nbd-plugin proxy it is set on nbdkit, the server, and the client stays on Debian's libnbd).
Each row reports the median of the per-pair ratios B/A (higher is better for B) and their
minimum and maximum: the spread is the noise the claim has to beat.
EOF
}

ours=$repo/build/lib
system=/usr/lib/x86_64-linux-gnu/libnbd.so.0
quick=0
pairs=
only=nbdcopy,proxy,nbdfuse,python,poll
doc=$repo/docs/performance.md
png=$repo/docs/realbench-ratio.png
write_doc=1
results=
while [ $# -gt 0 ]; do
  case $1 in
    --quick) quick=1; shift ;;
    --ours) ours=$2; shift 2 ;;
    --ours=*) ours=${1#*=}; shift ;;
    --system) system=$2; shift 2 ;;
    --system=*) system=${1#*=}; shift ;;
    --pairs) pairs=$2; shift 2 ;;
    --pairs=*) pairs=${1#*=}; shift ;;
    --only) only=$2; shift 2 ;;
    --only=*) only=${1#*=}; shift ;;
    --doc) doc=$2; shift 2 ;;
    --png) png=$2; shift 2 ;;
    --no-doc) write_doc=0; shift ;;
    --results) results=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done
[ -n "$pairs" ] || { if [ $quick = 1 ]; then pairs=3; else pairs=5; fi; }
want() { case ",$only," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

t_begin=$(date +%s)
log() { printf '[%4ds] %s\n' $(( $(date +%s) - t_begin )) "$*" >&2; }

# ---- tools: install what is missing when we can (root on Debian), else say what is needed ----
need=()
command -v gcc >/dev/null || need+=(gcc)
[ -f /usr/include/libnbd.h ] || need+=(libnbd-dev)
command -v nbdkit >/dev/null || need+=(nbdkit)
command -v qemu-nbd >/dev/null || need+=(qemu-utils)
command -v nbdcopy >/dev/null || need+=(libnbd-bin)
command -v nbdfuse >/dev/null || need+=(nbdfuse)
command -v fusermount3 >/dev/null || need+=(fuse3)
command -v fio >/dev/null || need+=(fio)
command -v gnuplot >/dev/null || need+=(gnuplot-nox)
/usr/bin/python3 -c 'import nbd' 2>/dev/null || need+=(python3-libnbd)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; }
  else
    echo "run.sh: missing packages: ${need[*]}" >&2
    exit 1
  fi
fi

build=$repo/build-bench
mkdir -p "$build"
gcc -std=c11 -Wall -Wextra -Werror -O2 -pthread "$repo/interop/bench/nbd_bench.c" -o "$build/nbd_bench" -lnbd
bench=$build/nbd_bench
[ -n "$results" ] || results=$build/real-$(date +%Y%m%d-%H%M%S)
mkdir -p "$results"

# ---- the two libraries, copied so that a rebuild during the run changes nothing ----
[ -f "$system" ] || { echo "run.sh: no reference library at $system" >&2; exit 1; }
if [ -d "$ours" ]; then ours_file=$ours/libnbd.so.0; else ours_file=$ours; fi
[ -e "$ours_file" ] || { echo "run.sh: no library at $ours_file (build it first, or use --ours)" >&2; exit 1; }
mkdir -p "$results/lib/A" "$results/lib/B"
cp "$(readlink -f "$system")" "$results/lib/A/libnbd.so.0"
cp "$(readlink -f "$ours_file")" "$results/lib/B/libnbd.so.0"
libdir() { echo "$results/lib/$1"; }

# ---- scratch space and servers (Unix sockets in tmpfs; every process started here is ours) ----
tmp=$(mktemp -d /dev/shm/realbench.XXXXXX)
pids=()
cleanup() {
  local p
  if mountpoint -q "$tmp/fuse" 2>/dev/null; then fusermount3 -u "$tmp/fuse" 2>/dev/null || true; fi
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_socket() {
  local i
  for i in $(seq 200); do [ -S "$1" ] && return 0; sleep 0.05; done
  echo "run.sh: socket $1 did not appear" >&2
  exit 1
}
uri() { echo "nbd+unix:///?socket=$tmp/$1.sock"; }
serve() { # name nbdkit-args...: a server on the stock library, for the whole run
  local name=$1; shift
  nbdkit -f --exit-with-parent -U "$tmp/$name.sock" "$@" &
  pids+=($!)
  wait_socket "$tmp/$name.sock"
}

if [ $quick = 1 ]; then
  copy_size=256M; secs=1; poll_secs=0.3; fuse_mib=32
else
  copy_size=1G; secs=3; poll_secs=0.5; fuse_mib=128
fi

# ---- results: one line per run ----
tsv=$results/runs.tsv
printf 'section\trow\tside\tpair\tvalue\tunit\tload1\n' >"$tsv"
failures=0
loadavg() { cut -d' ' -f1 /proc/loadavg; }

# row SECTION ROW UNIT FUNCTION ARGS...: FUNCTION SIDE ARGS... prints one number (higher is
# better); it runs A B A B ... $pairs times.
row() {
  local section=$1 name=$2 unit=$3 fn=$4 p side v
  shift 4
  for p in $(seq "$pairs"); do
    for side in A B; do
      local l; l=$(loadavg)
      if v=$("$fn" "$side" "$@" 2>>"$results/stderr.log") && [ -n "$v" ]; then
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$section" "$name" "$side" "$p" "$v" "$unit" "$l" >>"$tsv"
      else
        failures=$((failures + 1))
        echo "FAIL: $section / $name / side $side / pair $p" >>"$results/stderr.log"
        printf '%s\t%s\t%s\t%s\tFAIL\t%s\t%s\n' "$section" "$name" "$side" "$p" "$unit" "$l" >>"$tsv"
      fi
    done
  done
  log "$section / $name done"
}

now() { date +%s.%N; }
rate() { awk -v b="$1" -v t0="$2" -v t1="$3" 'BEGIN { printf "%.1f", b / 1048576 / (t1 - t0) }'; }
bytes_of() { numfmt --from=iec "$1"; }

read -r cpu0 < <(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 }' /proc/stat)
{
  echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "mode=$([ $quick = 1 ] && echo quick || echo full)"
  echo "pairs=$pairs"
  echo "A=$(readlink -f "$system") (sha256 $(sha256sum "$results/lib/A/libnbd.so.0" | cut -c1-12))"
  echo "B=$(readlink -f "$ours_file") (sha256 $(sha256sum "$results/lib/B/libnbd.so.0" | cut -c1-12))"
  echo "A_reports=$(LD_LIBRARY_PATH=$(libdir A) nbdinfo --version 2>/dev/null | sed -n 2p)"
  echo "B_reports=$(LD_LIBRARY_PATH=$(libdir B) nbdinfo --version 2>/dev/null | sed -n 2p)"
  echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') x $(nproc)"
  echo "load_before=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "nbdkit=$(nbdkit --version | head -1)"
  echo "nbdcopy=$(nbdcopy --version | head -1)"
  echo "fio=$(fio --version)"
  echo "commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo "command=interop/realbench/run.sh$([ $quick = 1 ] && echo ' --quick') --pairs $pairs --only $only"
} >"$results/meta.txt"
log "A: $(sed -n 's/^A_reports=//p' "$results/meta.txt"); B: $(sed -n 's/^B_reports=//p' "$results/meta.txt")"

# ==== 1. nbdcopy (Debian's binary) ============================================================
# Sources hold data, not holes: nbdcopy skips what extents call zero, so the memory source and
# the qemu-nbd image are filled from nbdkit's pattern plugin first (on the stock library).
nbdcopy_run() { # side src dst connections-option
  local t0 t1 extra=()
  [ "$4" = default ] || extra=("$4")
  t0=$(now)
  LD_LIBRARY_PATH=$(libdir "$1") nbdcopy "${extra[@]}" "$2" "$3" >/dev/null
  t1=$(now)
  rate "$(bytes_of "$copy_size")" "$t0" "$t1"
}
if want nbdcopy; then
  log "nbdcopy, $copy_size per copy"
  serve pattern pattern "$copy_size"
  serve srcmem memory "$copy_size"
  serve dstmem memory "$copy_size"
  serve null null "$copy_size"
  truncate -s "$copy_size" "$tmp/disk.img"
  qemu-nbd -f raw -t -e 8 -k "$tmp/qemu.sock" "$tmp/disk.img" 2>>"$results/stderr.log" &
  pids+=($!)
  wait_socket "$tmp/qemu.sock"
  nbdcopy "$(uri pattern)" "$(uri srcmem)"
  nbdcopy "$(uri pattern)" "$(uri qemu)"
  for conns in default --connections=1; do
    c=${conns#--}; [ "$c" = default ] && c="connections=default"
    row nbdcopy "memory→memory, $c" MiB/s nbdcopy_run "$(uri srcmem)" "$(uri dstmem)" "$conns"
    row nbdcopy "pattern→null, $c" MiB/s nbdcopy_run "$(uri pattern)" "$(uri null)" "$conns"
    row nbdcopy "qemu-nbd→memory, $c" MiB/s nbdcopy_run "$(uri qemu)" "$(uri dstmem)" "$conns"
  done
fi

# ==== 2. nbdkit's nbd plugin as a proxy, OUR library inside the server ========================
# fio's nbd engine (stock libnbd) -> nbdkit nbd plugin (library A or B) -> nbdkit memory.
proxy_run() { # side fio-args...
  local side=$1 ppid
  shift
  rm -f "$tmp/proxy.sock"
  LD_LIBRARY_PATH=$(libdir "$side") nbdkit -f --exit-with-parent -U "$tmp/proxy.sock" nbd \
    socket="$tmp/backend.sock" &
  ppid=$!
  wait_socket "$tmp/proxy.sock"
  # --output: the nbd engine prints a line of its own on stdout.
  rm -f "$tmp/fio.json"
  fio --name=proxy --ioengine=nbd --uri="$(uri proxy)" --size=256m --time_based \
      --runtime="$secs" --ramp_time=200ms --output-format=json --output="$tmp/fio.json" "$@" >/dev/null \
    || { kill $ppid; wait $ppid 2>/dev/null; return 1; }
  kill $ppid; wait $ppid 2>/dev/null || true
  /usr/bin/python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
if j["error"]: sys.exit(1)
print("%.1f" % ((j["read"]["bw_bytes"] + j["write"]["bw_bytes"]) / 1048576))' "$tmp/fio.json"
}
if want proxy; then
  log "nbd-plugin proxy"
  serve backend memory 1G
  # Prefill, so reads return data the backend really stores.
  nbdcopy -- "[" nbdkit pattern 256M "]" "$(uri backend)"
  row proxy "4 KiB random 50/50 r/w, depth 16" MiB/s proxy_run --rw=randrw --bs=4k --iodepth=16
  row proxy "64 KiB sequential read, depth 16" MiB/s proxy_run --rw=read --bs=64k --iodepth=16
  row proxy "64 KiB sequential write, depth 16" MiB/s proxy_run --rw=write --bs=64k --iodepth=16
  row proxy "256 KiB random 50/50 r/w, depth 8" MiB/s proxy_run --rw=randrw --bs=256k --iodepth=8
fi

# ==== 3. nbdfuse: a mounted export, parallel dd with O_DIRECT ================================
fuse_run() { # side read|write block-size processes
  local side=$1 op=$2 bs=$3 n=$4 fpid i t0 t1 count dd_pids=() ok=0
  mkdir -p "$tmp/fuse"
  rm -f "$tmp/fuse.pid"
  LD_LIBRARY_PATH=$(libdir "$side") nbdfuse -P "$tmp/fuse.pid" "$tmp/fuse" "$(uri fusemem)" &
  fpid=$!
  for i in $(seq 200); do [ -s "$tmp/fuse.pid" ] && break; sleep 0.05; done
  mountpoint -q "$tmp/fuse" || { kill $fpid 2>/dev/null; wait $fpid 2>/dev/null; return 1; }
  count=$(( fuse_mib * 1048576 / $(bytes_of "$bs") ))
  t0=$(now)
  for i in $(seq 0 $((n - 1))); do
    if [ "$op" = read ]; then
      dd if="$tmp/fuse/nbd" of=/dev/null bs="$bs" count="$count" skip=$((i * count)) iflag=direct status=none &
    else
      dd if=/dev/zero of="$tmp/fuse/nbd" bs="$bs" count="$count" seek=$((i * count)) oflag=direct conv=notrunc status=none &
    fi
    dd_pids+=($!)
  done
  for i in "${dd_pids[@]}"; do wait "$i" || ok=1; done
  t1=$(now)
  fusermount3 -u "$tmp/fuse"
  wait $fpid 2>/dev/null || true
  [ $ok = 0 ] || return 1
  rate $(( n * fuse_mib * 1048576 )) "$t0" "$t1"
}
if want nbdfuse; then
  if [ ! -c /dev/fuse ] || ! command -v fusermount3 >/dev/null; then
    log "nbdfuse: skipped (no /dev/fuse or fusermount3)"
    echo "nbdfuse_skipped=no /dev/fuse or fusermount3" >>"$results/meta.txt"
  else
    log "nbdfuse, 4 dd processes x $fuse_mib MiB"
    serve fusemem memory 1G
    # Writes first, so that the reads read back written blocks.
    row nbdfuse "write, 4 x dd 1 MiB O_DIRECT" MiB/s fuse_run write 1M 4
    row nbdfuse "read, 4 x dd 1 MiB O_DIRECT" MiB/s fuse_run read 1M 4
    row nbdfuse "write, 4 x dd 64 KiB O_DIRECT" MiB/s fuse_run write 64K 4
    row nbdfuse "read, 4 x dd 64 KiB O_DIRECT" MiB/s fuse_run read 64K 4
  fi
fi

# ==== 4. Python: N threads on ONE handle (Debian's python3-libnbd) ===========================
py_run() { # side server threads
  local ops
  read -r ops _ < <(LD_LIBRARY_PATH=$(libdir "$1") /usr/bin/python3 "$here/python_threads.py" \
                      "$(uri "$2")" "$3" "$secs" --mixed)
  echo "$ops"
}
if want python; then
  log "Python threads"
  serve pymem memory 1G
  serve pydelay --threads 64 --filter=delay memory 1G delay-read=1ms delay-write=1ms
  for server in pymem pydelay; do
    [ $server = pymem ] && lab="no delay" || lab="1 ms delay"
    for n in 1 4 16; do
      row python "$n thread$([ "$n" = 1 ] || echo s), 64 KiB pread/pwrite, $lab" ops/s py_run $server "$n"
    done
  done
fi

# ==== 5. A program driving the handle with nbd_poll and completion callbacks =================
poll_run() { # side op seq|rand size depth
  local r=() line
  [ "$3" = rand ] && r=(-r)
  line=$(LD_LIBRARY_PATH=$(libdir "$1") timeout 60 "$bench" -s "$tmp/pollmem.sock" -d poll \
           -o "$2" "${r[@]}" -b "$4" -q "$5" -T "$poll_secs" -W 0.05)
  printf '%s\n' "$line" | cut -f11
}
if want poll; then
  log "nbd_poll driver (interop/bench/nbd_bench -d poll)"
  serve pollmem memory 1G
  if [ $quick = 1 ]; then
    poll_rows=("read seq 64k 16" "write seq 64k 16" "read rand 64k 16" "write rand 4k 64" "read seq 4k 1")
  else
    poll_rows=()
    for op in read write; do for pat in seq rand; do for sz in 4k 64k 256k 1m; do for q in 1 16 64; do
      poll_rows+=("$op $pat $sz $q")
    done; done; done; done
  fi
  for r in "${poll_rows[@]}"; do
    read -r op pat sz q <<<"$r"
    row poll "$op $pat $sz, $q in flight" MiB/s poll_run "$op" "$pat" "$sz" "$q"
  done
fi

# ---- close: machine load over the run, then the report ----
read -r cpu1 < <(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 }' /proc/stat)
elapsed=$(( $(date +%s) - t_begin ))
{
  echo "elapsed=$elapsed"
  echo "failures=$failures"
  echo "load_after=$(cut -d' ' -f1-3 /proc/loadavg)"
  awk -v b="$((cpu1 - cpu0))" -v hz="$(getconf CLK_TCK)" -v e="$elapsed" -v n="$(nproc)" \
    'BEGIN { printf "machine_busy=%.0f%%\n", 100 * b / hz / (e * n) }'
} >>"$results/meta.txt"
log "$failures failed runs, ${elapsed}s; results in $results"
args=("$results")
[ $write_doc = 1 ] && args+=(--doc "$doc" --png "$png")
/usr/bin/python3 "$here/report.py" "${args[@]}"
exit 0
}
