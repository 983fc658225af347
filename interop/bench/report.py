#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
# report.py: turn one run.sh results directory into medians, ratios, a Markdown section and a plot.
"""Usage: report.py RESULTS_DIR [--doc docs/performance-matrix.md] [--png docs/performance-ratio.png]
       report.py RESULTS_DIR --misses

--misses prints the points `run.sh --recheck` measures again: those below 0.98, those with more
client CPU per GiB than libnbd, and the target points. A recheck run's section sets its
long-run figures beside the earlier run's.

Without --doc it only prints a summary. With --doc it replaces (or adds) the section for this
run's kind and matrix (validation/duplexnbd x quick/full) and keeps the other runs' sections,
so a validation run and a duplexnbd run can sit side by side in one document.
"""

import argparse
import os
import re
import statistics
import sys

import ratio_plot  # beside this file

SIZE_NAMES = {4096: "4 KiB", 65536: "64 KiB", 262144: "256 KiB", 1048576: "1 MiB"}
SERVER_NAMES = {"null": "null", "memory": "memory", "qemu": "qemu-nbd", "delay": "delay 1 ms"}
DRIVERS = ["classic", "poll", "twothread", "sync"]
DRIVER_NOTES = {
    "classic": "(a) get_direction + poll + notify_read/notify_write, one thread",
    "poll": "(b) nbd_poll, one thread",
    "twothread": "(c) one thread POLLOUT + notify_write (and issuing), one POLLIN + notify_read",
    "sync": "(d) N threads of nbd_pread/nbd_pwrite; the in-flight column is N",
}
TARGETS_TEXT = """\
The targets (from the issue) are evaluated **only on a run against the real duplexnbd**, i.e. a
section titled "duplexnbd run" below. A validation run points both sides at Debian's libnbd; its
ratios only show how much the harness itself scatters, and its target table says "not evaluated".

| target | points |
|---|---|
| two-thread driver, mixed 256 KiB, 16 and 64 in flight: ratio ≥ 1.3 | twothread / mixed / 256 KiB / 16, 64 |
| 8 and 32 synchronous threads, server with 1 ms delay: ratio ≥ 4.0 | delay / sync / 8, 32 |
| no point below 0.98 | every point |
| client CPU per GiB moved never more than libnbd's | every point |
| 4 KiB, 64 in flight, classic loop: client CPU per request ≤ 0.5 × libnbd's, and ≥ 1.5 × its requests/s | classic / 4 KiB / 64 |

CPU per request at 1 and 16 in flight is in the tables too, but the target is set at 64.
"""
KIND_ORDER = ["duplexnbd-full", "duplexnbd-recheck", "duplexnbd-quick", "validation-full", "validation-quick"]


def kind_rank(key):
    """A section's place in the file and its claim on the plot: lower is better."""
    return KIND_ORDER.index(key) if key in KIND_ORDER else len(KIND_ORDER)


def read_meta(path):
    meta = {}
    with open(path) as f:
        for line in f:
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                meta[k] = v
    return meta


def other_jobs(meta):
    """Whether other jobs shared the machine during the run, and a line saying how much.

    The CPU time the machine spent outside the matrix's own processes is the measure; the
    load average cannot be one, since the matrix alone keeps it at 2 or more.  Runs recorded
    before that was measured fall back to the load average before the start."""
    try:
        other = float(meta["other_cpu_s"])
        machine = float(meta["machine_cpu_s"])
    except (KeyError, ValueError):
        try:
            before = float(meta.get("load_before", "").split()[0])
        except (IndexError, ValueError):
            return False, ""
        return before > 1.0, ""
    share = other / machine if machine > 0 else 0.0
    line = (f"CPU time of other jobs during the run (the machine's busy time minus the "
            f"matrix's client runs and servers): {other:.0f} s of the machine's {machine:.0f} s "
            f"({100 * share:.1f} %)")
    steal = meta.get("steal_cpu_s")
    if steal:
        line += f"; stolen by the hypervisor: {float(steal):.0f} s"
    return share > 0.10, line


def read_tsv(path):
    with open(path) as f:
        header = f.readline().rstrip("\n").split("\t")
        rows = [dict(zip(header, line.rstrip("\n").split("\t"))) for line in f if line.strip()]
    return header, rows


def num(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def size_name(s):
    s = int(s)
    return SIZE_NAMES.get(s, f"{s} B")


def collect(rows):
    """Group runs by point, in the order the matrix ran them."""
    points = {}
    for r in rows:
        key = (r["server"], r["driver"], r["op"], int(r["size"]), int(r["inflight"]))
        p = points.setdefault(key, {"A": [], "B": [], "fail": {"A": 0, "B": 0}})
        if r.get("verify") == "FAIL" or num(r.get("mib_s")) is None:
            p["fail"][r["side"]] += 1
        else:
            p[r["side"]].append(r)
    out = []
    for key, p in points.items():
        res = {"key": key, "fail": p["fail"]}
        for side in "AB":
            runs = p[side]
            if runs:
                res[side] = {m: statistics.median(num(r[m]) for r in runs)
                             for m in ("mib_s", "req_s", "cpu_s_per_gib", "cpu_us_per_req")}
                vals = [num(r["mib_s"]) for r in runs]
                res[side]["min"], res[side]["max"] = min(vals), max(vals)
                res[side]["n"] = len(runs)
            else:
                res[side] = None
        a, b = res["A"], res["B"]
        if a and b and a["mib_s"] > 0:
            res["ratio"] = b["mib_s"] / a["mib_s"]
            res["lo"] = b["min"] / a["max"] if a["max"] > 0 else res["ratio"]
            res["hi"] = b["max"] / a["min"] if a["min"] > 0 else res["ratio"]
            res["cpu_req_ratio"] = (b["cpu_us_per_req"] / a["cpu_us_per_req"]
                                    if a["cpu_us_per_req"] > 0 else None)
            res["best"] = b["max"] / a["max"] if a["max"] > 0 else None
            res["noise"] = max((s["max"] - s["min"]) / s["mib_s"] for s in (a, b) if s["mib_s"] > 0)
        else:
            res["ratio"] = res["lo"] = res["hi"] = res["cpu_req_ratio"] = None
            res["best"] = res["noise"] = None
        out.append(res)
    return out


def fmt(x, nd=1):
    return "–" if x is None else f"{x:.{nd}f}"


def point_name(key):
    server, driver, op, size, q = key
    return f"{server} / {driver} / {op} / {size_name(size)} / {q}"


def is_twothread_target(key):
    server, driver, op, size, q = key
    return driver == "twothread" and op == "mixed" and size == 262144 and q in (16, 64)


def is_latency_target(key):
    server, driver, op, size, q = key
    return server == "delay" and driver == "sync" and q in (8, 32)


def is_small_request_target(key):
    server, driver, op, size, q = key
    return driver == "classic" and size == 4096 and q == 64


def cpu_ratio(p):
    """Ours' client CPU per GiB over libnbd's (None without both, or for no point)."""
    if p is None or not (p["A"] and p["B"]) or p["A"]["cpu_s_per_gib"] <= 0:
        return None
    return p["B"]["cpu_s_per_gib"] / p["A"]["cpu_s_per_gib"]


def cpu_above(p):
    """Whether ours spent more client CPU per GiB than libnbd at this point."""
    r = cpu_ratio(p)
    return r is not None and r > 1


def below_floor(p):
    return p["ratio"] is None or p["ratio"] < 0.98


def misses(points):
    """The points a recheck measures again, in the matrix's order."""
    return [p for p in points
            if below_floor(p) or cpu_above(p) or is_twothread_target(p["key"])
            or is_latency_target(p["key"]) or is_small_request_target(p["key"])]


def targets(points, evaluated):
    """Rows of (target, point, value, status)."""
    rows = []

    def status(ok):
        if not evaluated:
            return "not evaluated (validation run)"
        return "met" if ok else "**missed**"

    for p in points:
        if is_twothread_target(p["key"]):
            r = p["ratio"]
            rows.append(("ratio ≥ 1.3", point_name(p["key"]), fmt(r, 2),
                         status(r is not None and r >= 1.3)))
    for p in points:
        if is_latency_target(p["key"]):
            r = p["ratio"]
            rows.append(("ratio ≥ 4.0", point_name(p["key"]), fmt(r, 2),
                         status(r is not None and r >= 4.0)))
    below = [p for p in points if below_floor(p)]
    rows.append(("no point below 0.98", f"{len(points)} points",
                 f"{len(below)} below (or failed)", status(not below)))
    cpu = [r for r in map(cpu_ratio, points) if r is not None]
    higher = sum(1 for r in cpu if r > 1)
    much = sum(1 for r in cpu if r > 1.1)
    rows.append(("client CPU per GiB never above libnbd's", f"{len(cpu)} points",
                 f"{higher} above ({much} by more than 10 %)", status(higher == 0)))
    for p in points:
        if is_small_request_target(p["key"]):
            r = p["cpu_req_ratio"]
            rows.append(("CPU/request ≤ 0.5 × libnbd", point_name(p["key"]), fmt(r, 2),
                         status(r is not None and r <= 0.5)))
            r = p["ratio"]
            rows.append(("requests/s ≥ 1.5 × libnbd", point_name(p["key"]), fmt(r, 2),
                         status(r is not None and r >= 1.5)))
    return rows, below


def ratio_stats(points):
    rs = [p["ratio"] for p in points if p["ratio"] is not None]
    if not rs:
        return None
    return {
        "n": len(rs),
        "median": statistics.median(rs),
        "min": min(rs),
        "max": max(rs),
        "within5": sum(1 for r in rs if 0.95 <= r <= 1.05),
        "within10": sum(1 for r in rs if 0.90 <= r <= 1.10),
        "noise": statistics.median(p["noise"] for p in points if p["noise"] is not None),
        "best_median": statistics.median(p["best"] for p in points if p["best"] is not None),
        "best_within10": sum(1 for p in points
                             if p["best"] is not None and 0.90 <= p["best"] <= 1.10),
    }


def section(meta, points, sockpair, run_key):
    kind = meta.get("kind", "?")
    mode = meta.get("mode", "?")
    evaluated = kind == "duplexnbd"
    L = []
    if evaluated:
        L.append(f"## duplexnbd run ({mode} matrix)")
    else:
        L.append(f"## Validation run: libnbd against itself ({mode} matrix)")
    L.append("")
    L.append(f"Produced by `{meta.get('command', '?')}` on {meta.get('date', '?')} "
             f"(commit {meta.get('commit', '?')}), {meta.get('reps', '?')} repetitions per "
             f"library and point, runs alternating A B A B; {meta.get('points', '?')} points in "
             f"{meta.get('elapsed', '?')} s, {meta.get('failures', '0')} failed runs.")
    L.append("")
    busy, lines = run_lines(meta)
    L += lines
    if not evaluated:
        L.append("- **Both sides are the same library**: this run checks the harness. Targets are "
                 "not evaluated here.")
    L.append(f"- Load average before / after: {meta.get('load_before', '?')} / "
             f"{meta.get('load_after', '?')} (the matrix's own client and server keep it at 2 "
             f"or more while it runs; the A/B alternation is there so that other load hits both "
             f"sides alike)")
    if busy:
        L.append("- **Measured on a busy machine**: single runs scatter widely and the ratios "
                 "below carry that noise; rerun with `--wait-quiet 600` on a quiet machine "
                 "before drawing conclusions.")
    L.append(f"- Servers: {meta.get('nbdkit', '?')}; {meta.get('qemu_nbd', '?')}; all on Unix "
             f"sockets, the qemu-nbd image on tmpfs")
    if "servers_pinned" in meta:
        pinned = meta["servers_pinned"]
        client = meta.get("client_pinned", "no")
        L.append(f"- Server threads pinned: {pinned}; client threads pinned: {client}"
                 + (" (the client is free to use every CPU)" if pinned != "no" and client == "no"
                    else "")
                 + f"; each run first warms up untimed for {meta.get('warmup', '?')} s")
    L.append("")

    if sockpair:
        L.append("Socket-level ceiling (bare AF_UNIX socketpair, a writer and a reader thread per "
                 "direction, no NBD):")
        L.append("")
        L.append("| mode | write size | MiB/s (total) | CPU s |")
        L.append("|---|---|---|---|")
        for r in sockpair:
            L.append(f"| {r['mode']} | {size_name(r['chunk'])} | {fmt(num(r['mib_s']), 0)} | "
                     f"{fmt(num(r['cpu_s']), 2)} |")
        L.append("")

    st = ratio_stats(points)
    if st:
        L.append(f"Ratios (B/A, median MiB/s): {st['n']} points, median {st['median']:.3f}, "
                 f"min {st['min']:.3f}, max {st['max']:.3f}; {st['within5']} within ±5 %, "
                 f"{st['within10']} within ±10 %. Median spread of a side's repetitions "
                 f"((max−min)/median): {100 * st['noise']:.0f} %. Best-run ratios (B max ÷ A "
                 f"max): median {st['best_median']:.3f}, {st['best_within10']} within ±10 %.")
        L.append("")

    # Per server and driver, the geometric mean of the point ratios: single points carry the
    # machine's noise, these aggregates show whether a side is systematically faster.
    groups = {}
    for p in points:
        if p["ratio"]:
            groups.setdefault((p["key"][0], p["key"][1]), []).append(p["ratio"])
    if groups:
        servers = list(dict.fromkeys(k[0] for k in groups))
        L.append("Geometric mean of the ratios per server and driver (number of points):")
        L.append("")
        L.append("| server | " + " | ".join(DRIVERS) + " |")
        L.append("|---|" + "---|" * len(DRIVERS))
        for sv in servers:
            cells = []
            for d in DRIVERS:
                rs = groups.get((sv, d))
                cells.append(f"{statistics.geometric_mean(rs):.3f} ({len(rs)})" if rs else "–")
            L.append(f"| {sv} | " + " | ".join(cells) + " |")
        L.append("")

    trows, below = targets(points, evaluated)
    L.append("Targets" + (" (busy machine: a \"missed\" here may be noise, see the best-run "
                          "column and the geometric means)" if busy and evaluated else "") + ":")
    L.append("")
    L += targets_table(trows)
    if below and evaluated:
        L.append("Points below 0.98: " + ", ".join(
            f"{point_name(p['key'])} ({fmt(p['ratio'], 2)})" for p in below) + ".")
        L.append("")

    L.append("All points (medians; ratio = B MiB/s ÷ A MiB/s; CPU is the client's, user + "
             "system, all threads; best = B's best run ÷ A's best run, less sensitive to other "
             "load on the machine; noise = larger (max−min)/median of the two sides):")
    L.append("")
    L.append("| server | driver | op | size | in flight / threads | A MiB/s | B MiB/s | ratio | best | "
             "A CPU s/GiB | B CPU s/GiB | A CPU µs/req | B CPU µs/req | noise |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for p in points:
        server, driver, op, size, q = p["key"]
        a, b = p["A"] or {}, p["B"] or {}
        L.append(f"| {server} | {driver} | {op} | {size_name(size)} | {q} | "
                 f"{fmt(a.get('mib_s'))} | {fmt(b.get('mib_s'))} | {fmt(p['ratio'], 3)}{fail_note(p)} | {fmt(p['best'], 3)} | "
                 f"{fmt(a.get('cpu_s_per_gib'), 3)} | {fmt(b.get('cpu_s_per_gib'), 3)} | "
                 f"{fmt(a.get('cpu_us_per_req'), 2)} | {fmt(b.get('cpu_us_per_req'), 2)} | "
                 f"{noise_cell(p)} |")
    L.append("")
    return "\n".join(L)


def fail_note(p):
    """What follows a point's ratio when some of its runs failed."""
    if p["fail"]["A"] or p["fail"]["B"]:
        return f" FAIL A×{p['fail']['A']} B×{p['fail']['B']}"
    return ""


def noise_cell(p):
    return f"{fmt(100 * p['noise'] if p['noise'] is not None else None, 0)} %"


def targets_table(trows):
    L = ["| target | point (server / driver / op / size / in flight) | value | status |",
         "|---|---|---|---|"]
    L += ["| " + " | ".join(t) + " |" for t in trows]
    return L + [""]


def run_lines(meta):
    """The lines saying where and how a run was made, common to every kind of section."""
    L = [f"- A (libnbd): `{meta.get('system', '?')}`, reports `{meta.get('system_reports', '?')}`",
         f"- B (\"ours\"): `{meta.get('ours', '?')}`, reports `{meta.get('ours_reports', '?')}`",
         f"- Machine: {meta.get('cpu', '?')}, {meta.get('mem', '?')}; `{meta.get('uname', '?')}`"]
    busy, why = other_jobs(meta)
    if why:
        L.append(f"- {why}")
    return busy, L


def recheck_section(meta, points, before):
    """The earlier run's misses measured again with long runs, beside what that run said."""
    by_key = {p["key"]: p for p in before}
    L = ["## duplexnbd run (recheck of the full matrix's misses)", ""]
    L.append(f"Produced by `{meta.get('command', '?')}` on {meta.get('date', '?')} "
             f"(commit {meta.get('commit', '?')}): every point of the earlier run "
             f"(`{os.path.basename(meta.get('recheck_of', '?'))}`) that was below 0.98 or "
             f"spent more client CPU per GiB than libnbd, and every target point, measured "
             f"again with runs of {meta.get('recheck_seconds', '?')} s (the matrix's runs last "
             f"0.1–0.25 s) after {meta.get('warmup', '?')} s of warm-up, "
             f"{meta.get('reps', '?')} repetitions per library, alternating A B; "
             f"{meta.get('points', '?')} points in {meta.get('elapsed', '?')} s, "
             f"{meta.get('failures', '0')} failed runs.")
    L.append("")
    busy, lines = run_lines(meta)
    L += lines
    if busy:
        L.append("- **Measured on a busy machine**: rerun before drawing conclusions.")
    L.append("")

    was_below = [p for p in points if p["key"] in by_key and below_floor(by_key[p["key"]])]
    still_below = [p for p in was_below if below_floor(p)]
    was_above = [p for p in points if p["key"] in by_key and cpu_above(by_key[p["key"]])]
    still_above = [p for p in was_above if cpu_above(p)]
    much = [p for p in still_above if cpu_ratio(p) > 1.1]
    new_below = [p for p in points if below_floor(p) and p not in was_below]
    new_above = [p for p in points if cpu_above(p) and p not in was_above]
    L.append(f"- Below 0.98 in the matrix: {len(was_below)} of the points; with long runs "
             f"{len(still_below)} of them still are"
             + (": " + ", ".join(f"{point_name(p['key'])} ({fmt(p['ratio'], 2)})"
                                 for p in still_below) if still_below else "")
             + ".")
    L.append(f"- More client CPU per GiB than libnbd in the matrix: {len(was_above)} of the points; "
             f"with long runs {len(still_above)} of them still are, {len(much)} by more than "
             f"10 %.")
    if new_below or new_above:
        L.append(f"- Rechecked for another reason and now below 0.98: {len(new_below)}; now "
                 f"above libnbd's CPU per GiB: {len(new_above)}.")
    L.append("")

    trows, _ = targets(points, True)
    L.append("Targets on the rechecked points (a point not rechecked was at least 0.98 and at "
             "most libnbd's CPU per GiB in the matrix):")
    L.append("")
    L += targets_table(trows)

    L.append("Each point (medians; matrix = the earlier run's 0.1–0.25 s runs; CPU ratio = "
             "B's client CPU per GiB ÷ A's; noise = larger (max−min)/median of the two sides):")
    L.append("")
    L.append("| server | driver | op | size | in flight / threads | rechecked for | matrix ratio | "
             "ratio | best | A MiB/s | B MiB/s | matrix CPU ratio | A CPU s/GiB | B CPU s/GiB | "
             "CPU ratio | noise |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for p in points:
        server, driver, op, size, q = p["key"]
        old = by_key.get(p["key"])
        why = []
        if old is not None and below_floor(old):
            why.append("below")
        if old is not None and cpu_above(old):
            why.append("CPU")
        if not why:
            why.append("target")
        a, b = p["A"] or {}, p["B"] or {}
        L.append(f"| {server} | {driver} | {op} | {size_name(size)} | {q} | {', '.join(why)} | "
                 f"{fmt(old['ratio'] if old else None, 2)} | {fmt(p['ratio'], 2)}{fail_note(p)} | "
                 f"{fmt(p['best'], 2)} | {fmt(a.get('mib_s'))} | {fmt(b.get('mib_s'))} | "
                 f"{fmt(cpu_ratio(old), 2)} | {fmt(a.get('cpu_s_per_gib'), 3)} | "
                 f"{fmt(b.get('cpu_s_per_gib'), 3)} | {fmt(cpu_ratio(p), 2)} | "
                 f"{noise_cell(p)} |")
    L.append("")
    return "\n".join(L)


def header(plot_key, plot_desc, kept=""):
    return f"""# Microbenchmark matrix: duplexnbd against libnbd

Generated by `interop/bench/run.sh` (do not edit by hand); the summary, the real programs and
where the time goes are in [performance.md](performance.md).

Measured with `interop/bench/`: **one** C program (`nbd_bench.c`, public libnbd API only, built
against `/usr/include/libnbd.h` and linked `-lnbd`) runs unchanged on Debian's libnbd (side A)
and on duplexnbd (side B), chosen with `LD_LIBRARY_PATH`. `run.sh` starts the servers itself
(nbdkit `null` and `memory`, qemu-nbd on a raw image in tmpfs, nbdkit `memory` behind the
`delay` filter with 1 ms per read and write), runs each point A B A B A B, takes medians, and
writes this file (`docs/performance-matrix.md`) and `performance-ratio.png`. Every run verifies data (a per-run pattern is
written and sampled on every read; whole blocks are read back after the run; against `null`,
reads must return zeros), so a library that skips work cannot look fast.

Run it:

    interop/bench/run.sh                 # full matrix, 444 points
    interop/bench/run.sh --quick         # reduced matrix, 100 points
    interop/bench/run.sh --quick --ours /usr/lib/x86_64-linux-gnu/libnbd.so.0   # harness check
    interop/bench/run.sh --recheck build-bench/results-DATE   # that run's misses again, 1 s runs
    build-bench/nbd_bench --help         # single runs, one TSV line each

Drivers: {"; ".join(f"`{d}` {DRIVER_NOTES[d]}" for d in DRIVERS)}.

Matrix (full): servers null, memory, qemu-nbd × ops read, write, mixed (50/50) × request sizes
4 KiB, 64 KiB, 256 KiB, 1 MiB × 1, 16, 64 in flight × the four drivers; plus the latency case
(1 ms delay, 64 KiB, drivers `twothread` and `sync` with N = 8 and 32). Quick: null and memory,
read and mixed, 4 KiB and 256 KiB, 1/16/64, plus the latency case for mixed. Runs last 0.1–0.25 s
each, after an untimed warm-up of 0.03 s with the same workload (`nbd_bench -W`: server threads,
socket buffers and caches settle first): the full matrix is 2664 runs with about 320 s of
measuring, 80 s of warm-up and about 0.05 s of process start, connection and prefill per run,
i.e. 9–10 minutes on a quiet 2-core machine (quick: 600 runs, about 3 minutes). Other work on
the machine stretches that (every run, and every wake-up inside a run, waits for a core): at a
load average of 15–25 from other jobs the full matrix took 33 minutes and the quick one 5–7.
Such load also scatters single runs by a factor of two or more, and so does the scheduler
alone: whether client and server share a core or not changes a latency-bound run up to 3× (see
"Limits of a 2-core machine" in performance.md). The A B alternation spreads both evenly over the two sides
and the medians, the best-run ratio and the per-driver geometric means absorb part of it; single
points of a 3-run median still move by ±20 % between runs of the matrix.

## Targets

{TARGETS_TEXT}
{kept}## Plot

![ratio ours/libnbd per point](performance-ratio.png)

<!-- bench-plot:{plot_key} -->
The plot shows: {plot_desc}. Each point is a matrix point (median ratio, bars from the worst
to the best pairing of single runs), grouped by server, coloured by driver.
"""


def plot(points, png, title):
    """Ratio per point with gnuplot: log y axis, servers separated, drivers coloured."""
    usable = [p for p in points if p["ratio"] is not None]
    if not usable:
        return False
    series = [(d, [(i, p["ratio"], p["lo"], p["hi"]) for i, p in enumerate(points)
                   if p["key"][1] == d and p["ratio"] is not None]) for d in DRIVERS]
    # Medians decide the range; single-run bars beyond it are clipped, not allowed to
    # squash the interesting band around 1.
    lo = max(min(min(p["ratio"] for p in usable), 0.8), 0.25)
    hi = min(max(max(p["ratio"] for p in usable), 1.4), 16)
    extra = [
        f"set xrange [-1:{len(points)}]",
        "set ytics (0.25, 0.5, 0.75, 1, 1.3, 2, 3, 4, 6, 8, 16)",
        "unset xtics",
        'set xlabel "matrix point (within a server: driver, op, size, in flight)"',
        'set arrow from graph 0, first 1.3 to graph 1, first 1.3 nohead dt 3 lc rgb "dark-green"',
    ]
    if hi * 1.1 > 4:
        extra.append('set arrow from graph 0, first 4 to graph 1, first 4 nohead dt 3 '
                     'lc rgb "dark-green"')
    prev = None
    for i, p in enumerate(points):
        server = p["key"][0]
        if server != prev:
            if i > 0:
                extra.append(f'set arrow from {i - 0.5}, graph 0 to {i - 0.5}, graph 1 nohead '
                             f'lc rgb "gray50"')
            extra.append(f'set label "{SERVER_NAMES.get(server, server)}" at {i}, graph 0.96 '
                         f'left font ",10"')
            prev = server
    return ratio_plot.draw(png, title, "throughput ratio B/A (median)", series, lo, hi, extra,
                           size="1400,650", point_size=0.6)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--doc")
    ap.add_argument("--png")
    ap.add_argument("--misses", action="store_true")
    args = ap.parse_args()

    meta = read_meta(os.path.join(args.results, "meta.txt"))
    _, rows = read_tsv(os.path.join(args.results, "results.tsv"))
    sp_path = os.path.join(args.results, "sockpair.tsv")
    sockpair = read_tsv(sp_path)[1] if os.path.exists(sp_path) else []
    points = collect(rows)
    run_key = f"{meta.get('kind', 'unknown')}-{meta.get('mode', 'unknown')}"
    if args.misses:
        print("\n".join(" ".join(map(str, p["key"])) for p in misses(points)))
        return
    recheck = meta.get("mode") == "recheck"
    if recheck:
        _, before_rows = read_tsv(os.path.join(meta["recheck_of"], "results.tsv"))
        make_section = lambda: recheck_section(meta, points, collect(before_rows))
    else:
        make_section = lambda: section(meta, points, sockpair, run_key)

    st = ratio_stats(points)
    print(f"{run_key}: {len(points)} points", file=sys.stderr)
    if st:
        print(f"ratio median {st['median']:.3f} min {st['min']:.3f} max {st['max']:.3f}, "
              f"{st['within5']}/{st['n']} within 5%, {st['within10']}/{st['n']} within 10%, "
              f"median run spread {100 * st['noise']:.0f}%", file=sys.stderr)

    if not args.doc:
        print(make_section())
        return

    text = open(args.doc).read() if os.path.exists(args.doc) else ""
    sections = dict(re.findall(r"<!-- bench-run:(\S+) begin -->\n(.*?)<!-- bench-run:\1 end -->",
                               text, re.S))
    m = re.search(r"<!-- bench-plot:(\S+) -->\nThe plot shows: (.*?)\. Each point", text, re.S)
    plot_key, plot_desc = (m.group(1), m.group(2)) if m else ("none", "nothing yet")
    # Hand-written analysis between the targets and the plot survives a rewrite.
    k = re.search(r"<!-- hand-written begin -->\n.*?<!-- hand-written end -->\n\n?", text, re.S)
    kept = k.group(0) if k else ""
    sections[run_key] = make_section() + "\n"

    # The plot shows the best kind of run the file holds: a quick run must not replace the
    # plot of a full one, nor a validation run that of a real duplexnbd run.
    outranked = any(kind_rank(k) < kind_rank(run_key) for k in sections)
    plotted = False
    if args.png and not outranked and not recheck:
        what = ("duplexnbd" if meta.get("kind") == "duplexnbd"
                else "validation: libnbd against itself")
        title = f"{what}, {meta.get('mode')} matrix, {meta.get('date')}"
        if plot(points, args.png, title):
            plotted = True
            plot_key = run_key
            plot_desc = f"the {meta.get('mode')} matrix of the section " + (
                "\"duplexnbd run\"" if meta.get("kind") == "duplexnbd"
                else "\"Validation run\" (both sides libnbd)") + f" ({meta.get('date')})"

    order = sorted(sections, key=lambda k: (kind_rank(k), k))
    out = [header(plot_key, plot_desc, kept)]
    for k in order:
        out.append(f"<!-- bench-run:{k} begin -->\n{sections[k]}<!-- bench-run:{k} end -->\n")
    with open(args.doc, "w") as f:
        f.write("\n".join(out))
    print(f"wrote {args.doc}" + (f" and {args.png}" if plotted else
                                 f" (the plot keeps the better-ranked run it shows)" if args.png else ""),
          file=sys.stderr)


if __name__ == "__main__":
    main()
