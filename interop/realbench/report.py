#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""report.py: the table, targets and plot of one interop/realbench/run.sh results directory.

    report.py RESULTS_DIR [--doc docs/performance.md --png docs/realbench-ratio.png]

Without --doc the Markdown goes to stdout. With --doc the text between
"<!-- realbench begin -->" and "<!-- realbench end -->" is replaced (appended if absent)."""
import argparse
import os
import re
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
import ratio_plot  # noqa: E402  (interop/bench/ratio_plot.py)

BEGIN = "<!-- realbench begin -->"
END = "<!-- realbench end -->"

SECTIONS = {
    "nbdcopy": "Debian's `nbdcopy`",
    "proxy": "nbdkit `nbd` plugin as a proxy (our library in the server; fio on Debian's libnbd)",
    "nbdfuse": "`nbdfuse` mount, 4 parallel `dd` with O_DIRECT",
    "python": "Python (Debian's python3-libnbd), N threads on one handle",
    "poll": "`nbd_poll` + completion callbacks (`nbd_bench -d poll`, nbdkit memory)",
}

# (section, regular expression on the row name, minimum median ratio, what the issue asks)
TARGETS = [
    ("proxy", r"^4 KiB random", 1.5, "nbd-plugin proxy, 4 KiB mixed ≥ 1.5"),
    ("python", r"^16 threads.*1 ms delay", 12.0, "Python 16 threads, 1 ms delay ≥ 12"),
    ("python", r"^4 threads.*no delay", 2.0, "Python 4 threads, no delay ≥ 2"),
    ("python", r"^1 thread,", 0.98, "Python 1 thread ≥ 0.98"),
    ("poll", r"^read seq 64k, 16 in flight", 1.05, "nbd_poll 64 KiB sequential reads, 16 in flight ≥ 1.05"),
]


def read_meta(d):
    meta = {}
    with open(os.path.join(d, "meta.txt")) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("=")
            meta[k] = v
    return meta


def read_rows(d):
    rows = {}
    order = []
    with open(os.path.join(d, "runs.tsv")) as f:
        next(f)
        for line in f:
            section, name, side, pair, value, unit, load = line.rstrip("\n").split("\t")
            key = (section, name)
            if key not in rows:
                rows[key] = {"unit": unit, "A": {}, "B": {}, "load": [], "fail": 0}
                order.append(key)
            r = rows[key]
            r["load"].append(float(load))
            if value == "FAIL":
                r["fail"] += 1
            else:
                r[side][int(pair)] = float(value)
    out = []
    for key in order:
        r = rows[key]
        ratios = [r["B"][p] / r["A"][p] for p in sorted(r["A"]) if p in r["B"] and r["A"][p] > 0]
        a = list(r["A"].values())
        b = list(r["B"].values())
        out.append({
            "section": key[0], "name": key[1], "unit": r["unit"], "fail": r["fail"],
            "a": statistics.median(a) if a else None,
            "b": statistics.median(b) if b else None,
            # The noise of the reference alone: how far its own runs scatter.
            "a_spread": (max(a) - min(a)) / statistics.median(a) if len(a) > 1 and statistics.median(a) > 0 else None,
            "ratio": statistics.median(ratios) if ratios else None,
            "lo": min(ratios) if ratios else None,
            "hi": max(ratios) if ratios else None,
            "n": len(ratios),
            "load": (min(r["load"]), max(r["load"])),
        })
    return out


def fmt(v, unit):
    if v is None:
        return "–"
    if unit == "ops/s" or v >= 100:
        return f"{v:,.0f}"
    return f"{v:.1f}"


def verdict(r):
    if r["ratio"] is None:
        return "failed"
    if r["lo"] > 1.0:
        return "faster"
    if r["hi"] < 1.0:
        return "**slower**"
    if r["ratio"] < 0.98:
        return "**below 0.98** (within noise)"
    return "same (within noise)"


def markdown(d, meta, rows, png_name):
    out = [BEGIN, ""]
    out.append(f"### Measured {meta.get('date', '?')} ({meta.get('mode', '?')} run, commit "
               f"{meta.get('commit', '?')})")
    out.append("")
    out.append(f"A = {meta.get('A_reports', '?')} (`{meta.get('A', '?')}`), "
               f"B = {meta.get('B_reports', '?')} (`{meta.get('B', '?')}`); "
               f"{meta.get('pairs', '?')} A B pairs per row, alternating. "
               f"Machine: {meta.get('cpu', '?')}; load average {meta.get('load_before', '?')} "
               f"before the run, {meta.get('load_after', '?')} after, machine busy "
               f"{meta.get('machine_busy', '?')} over the {meta.get('elapsed', '?')} s of the run "
               f"(this benchmark itself keeps about one core busy; the rest was other jobs). "
               f"Failed runs: {meta.get('failures', '?')}. Command: `{meta.get('command', '?')}`.")
    if meta.get("nbdfuse_skipped"):
        out.append("")
        out.append(f"nbdfuse rows skipped: {meta['nbdfuse_skipped']}.")
    out.append("")
    out.append("Ratio = B / A throughput of the same pair (higher: ours faster); the table gives "
               "the median of the per-pair ratios and, as the noise, their minimum–maximum. "
               "\"A spread\" is how far the reference's own runs scatter ((max − min) / median). "
               "A verdict of faster or slower needs every pair on the same side of 1.")
    out.append("")
    # --system may point at an older build of ours: name the columns after what each side reports.
    out.append(f"| # | program | case | A ({meta.get('A_reports') or 'reference'}) | "
               f"B ({meta.get('B_reports') or 'ours'}) | unit | ratio B/A | pairs min–max | A spread | load | verdict |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for i, r in enumerate(rows, 1):
        ratio = f"**{r['ratio']:.2f}**" if r["ratio"] is not None else "–"
        rng = f"{r['lo']:.2f}–{r['hi']:.2f}" if r["lo"] is not None else "–"
        spread = f"{100 * r['a_spread']:.0f} %" if r["a_spread"] is not None else "–"
        load = f"{r['load'][0]:.1f}–{r['load'][1]:.1f}"
        fail = f" ({r['fail']} failed)" if r["fail"] else ""
        out.append(f"| {i} | {r['section']} | {r['name']} | {fmt(r['a'], r['unit'])} | "
                   f"{fmt(r['b'], r['unit'])} | {r['unit']} | {ratio} | {rng} | {spread} | {load} | "
                   f"{verdict(r)}{fail} |")
    out.append("")
    out.append("Targets (from the issue), same run:")
    out.append("")
    out.append("| target | rows | median ratios | pairs min–max | status |")
    out.append("|---|---|---|---|---|")
    for section, pat, want, desc in TARGETS:
        hits = [(i, r) for i, r in enumerate(rows, 1)
                if r["section"] == section and re.search(pat, r["name"]) and r["ratio"] is not None]
        if not hits:
            out.append(f"| {desc} | – | – | – | not measured in this run |")
            continue
        meds = ", ".join(f"{r['ratio']:.2f}" for _, r in hits)
        rngs = ", ".join(f"{r['lo']:.2f}–{r['hi']:.2f}" for _, r in hits)
        ok = all(r["ratio"] >= want for _, r in hits)
        robust = all(r["lo"] >= want for _, r in hits)
        status = "met, every pair" if robust else ("met (median)" if ok else "**missed**")
        out.append(f"| {desc} | {', '.join(str(i) for i, _ in hits)} | {meds} | {rngs} | {status} |")
    usable = [r for r in rows if r["ratio"] is not None]
    below = [(i, r) for i, r in enumerate(rows, 1) if r["ratio"] is not None and r["ratio"] < 0.98]
    out.append(f"| no program row below 0.98 | all {len(usable)} | lowest "
               f"{min(r['ratio'] for r in usable):.2f} | – | "
               + ("met" if not below else "**missed**: rows " + ", ".join(str(i) for i, _ in below))
               + " |" if usable else "| no program row below 0.98 | – | – | – | nothing measured |")
    out.append("")
    if png_name:
        out.append(f"![ratio ours/libnbd per row]({png_name})")
        out.append("")
        out.append("The plot: one point per table row (median ratio, bars from the lowest to the "
                   "highest pair), log scale; the dashed line is 0.98.")
        out.append("")
    out.append(END)
    return "\n".join(out)


def plot(rows, png, title):
    usable = [(i, r) for i, r in enumerate(rows, 1) if r["ratio"] is not None]
    if not usable:
        return False
    sections = list(dict.fromkeys(r["section"] for r in rows))
    series = [(s, [(i, r["ratio"], r["lo"], r["hi"]) for i, r in usable if r["section"] == s])
              for s in sections]
    lo = max(min(min(r["lo"] for _, r in usable), 0.8), 0.1)
    hi = min(max(max(r["hi"] for _, r in usable), 1.5), 64)
    extra = [f"set xrange [0:{len(rows) + 1}]", 'set xlabel "table row"', "set xtics 5",
             "set mxtics 5"]
    return ratio_plot.draw(png, title, "throughput ratio B / A", series, lo, hi, extra)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--doc")
    ap.add_argument("--png")
    a = ap.parse_args()
    meta = read_meta(a.results)
    rows = read_rows(a.results)
    png_name = None
    if a.png:
        if plot(rows, a.png, f"Real programs: {meta.get('B_reports', 'B')} / {meta.get('A_reports', 'A')} ({meta.get('date', '')}, "
                             f"{meta.get('mode', '')} run)"):
            png_name = os.path.basename(a.png)
    md = markdown(a.results, meta, rows, png_name)
    with open(os.path.join(a.results, "report.md"), "w") as f:
        f.write(md + "\n")
    if not a.doc:
        print(md)
        return
    text = open(a.doc).read() if os.path.exists(a.doc) else ""
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + md + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + md + "\n"
    with open(a.doc, "w") as f:
        f.write(text)
    print(md)


if __name__ == "__main__":
    main()
