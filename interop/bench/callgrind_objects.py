#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
# callgrind_objects.py FILE REQUESTS [TOP]: exclusive instructions per request, summed per
# object file (libnbd.so, libc, the benchmark), then the TOP most expensive functions.
# callgrind_annotate cannot group by object; this reads callgrind's format directly.
import collections
import re
import sys


def main():
    path, nreq = sys.argv[1], float(sys.argv[2])
    top = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    names = {"ob": {}, "fn": {}}
    ob = fn = None
    per_ob, per_fn = collections.Counter(), collections.Counter()
    after_calls = False

    def resolve(kind, val):
        # Compressed names: "(id) name" the first time, "(id)" after.
        m = re.match(r"\((\d+)\)(?:\s+(.*))?", val)
        if not m:
            return val
        if m.group(2) is not None:
            names[kind][m.group(1)] = m.group(2)
        return names[kind].get(m.group(1), "?")

    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            if line[0].isdigit() or line[0] in "+-*":
                # The cost line after calls= is the callee's inclusive cost: not ours.
                if after_calls:
                    after_calls = False
                    continue
                parts = line.split()
                if len(parts) >= 2:
                    per_ob[ob] += int(parts[1])
                    per_fn[(ob, fn)] += int(parts[1])
            elif line.startswith("ob="):
                ob = resolve("ob", line[3:])
            elif line.startswith("fn="):
                fn = resolve("fn", line[3:])
            elif line.startswith("cob="):
                resolve("ob", line[4:])
            elif line.startswith("cfn="):
                resolve("fn", line[4:])
            elif line.startswith("calls="):
                after_calls = True
    print(f"instructions/request {sum(per_ob.values()) / nreq:.0f}")
    for o, v in per_ob.most_common(6):
        print(f"  {v / nreq:10.0f}  {o}")
    for (o, f), v in per_fn.most_common(top):
        print(f"  {v / nreq:10.0f}  {f}  [{(o or '?').rsplit('/', 1)[-1]}]")


main()
