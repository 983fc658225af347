# SPDX-License-Identifier: LGPL-2.1-or-later
"""Compares the call_states records of libnbd 1.22.2 and of duplexnbd; a difference fails
unless a line of expected-differences.txt matches it (docs/call-states.md)."""

import argparse
import fnmatch
import sys


def records(path):
    out = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            key, _, rec = line.partition(": ")
            if not rec and line.endswith(":"):
                key, rec = line[:-1], ""
            out[key] = rec.strip()
    return out


def expected(path):
    """Lines `PATTERN | KIND | reason`; PATTERN is an fnmatch glob over `call state args`."""
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = [p.strip() for p in line.split("|")]
            if len(parts) != 3 or parts[1] not in ("libnbd-bug", "open") or not parts[2]:
                sys.exit(f"{path}:{n}: want `PATTERN | libnbd-bug|open | reason`")
            out.append((parts[0], parts[1], parts[2], n))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("expected")
    ap.add_argument("ref")
    ap.add_argument("ours")
    ap.add_argument("--report")
    a = ap.parse_args()
    ref, ours, exp = records(a.ref), records(a.ours), expected(a.expected)
    used = set()
    unlisted, listed = [], []
    for key in sorted(set(ref) | set(ours)):
        r, o = ref.get(key, "(missing)"), ours.get(key, "(missing)")
        if r == o:
            continue
        hit = next((e for e in exp if fnmatch.fnmatchcase(key, e[0])), None)
        if hit is None:
            unlisted.append((key, r, o))
        else:
            used.add(hit[3])
            listed.append((key, r, o, hit))
    lines = [f"# call_states: {len(ref)} cases; {len(ref) - len(listed) - len(unlisted)} equal, "
             f"{len(listed)} listed differences, {len(unlisted)} unlisted", ""]
    for key, r, o in unlisted:
        lines += [f"UNLISTED {key}", f"  libnbd 1.22.2: {r}", f"  duplexnbd:     {o}"]
    for key, r, o, (pat, kind, why, n) in listed:
        lines += [f"{kind.upper()} {key}  (line {n}: {why})", f"  libnbd 1.22.2: {r}",
                  f"  duplexnbd:     {o}"]
    for pat, kind, why, n in exp:
        if n not in used:
            lines.append(f"NOTE: expected-differences.txt line {n} matched nothing: {pat}")
    text = "\n".join(lines) + "\n"
    if a.report:
        with open(a.report, "w", encoding="utf-8") as f:
            f.write(text)
    n_open = sum(1 for x in listed if x[3][1] == "open")
    summary = [lines[0]]
    if n_open:
        summary.append(f"# {n_open} of the listed differences are OPEN (ours to fix):")
        summary += [f"OPEN {key}" for key, _, _, hit in listed if hit[1] == "open"]
    summary += [ln for ln in lines if ln.startswith("NOTE")]
    print(text if unlisted else "\n".join(summary))
    return 1 if unlisted else 0


if __name__ == "__main__":
    sys.exit(main())
