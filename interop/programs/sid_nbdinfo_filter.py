#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
# Puts nbdinfo 1.24's output into the form Debian 12's nbdinfo (1.14) prints, checking the fields only 1.24 has against expected values.
#
# Usage: sid_nbdinfo_filter.py info|version OUTFILE [--sid] [--expect KEY=VALUE]...
#
# The "sid-1.24" program set runs each step twice: Debian 12's nbdinfo on
# stock libnbd 1.14.2 (the reference) and Debian sid's nbdinfo 1.24.4 on
# ours.  Their formats agree except for fields 1.24 added, so:
#   info:    every line naming a 1.24-only field (text "\tKEY: VALUE" or
#            JSON "\"KEY\": VALUE,") is taken out of the output, which is
#            then printed for comparison.  With --sid (the 1.24 program ran)
#            each taken-out field must have been given an --expect and have
#            that value in every place it appears, and each --expect must
#            have been seen; without --sid none may appear at all.  Anything
#            else is printed as a "1.24 field" line, which makes the two
#            transcripts differ.  The line both print when all is well
#            lists the expected keys (the same arguments on both sides).
#            1.24 also writes block sizes as "4096 (4K)": the part in
#            brackets must be the number in 1.24's units and is then dropped.
#   version: `nbdinfo --version`: the reference must print "nbdinfo V" and
#            "libnbd V" with one V; sid's program "nbdinfo 1.24.4" and our
#            library's "duplexnbd 1.24.N".  Only the verdict is printed.
import re
import sys

ONLY_124 = ["can_block_status_payload", "extended"]
FIELD = re.compile(r'^\s*"?(%s)"?:\s*(.*?),?\s*$' % "|".join(map(re.escape, ONLY_124)))
SID_PROGRAM = "nbdinfo 1.24.4"
OUR_LIBRARY = re.compile(r"^duplexnbd 1\.24\.\d+$")
BLOCK_SIZE = re.compile(r"^(\s*block_size_\w+: )(\d+) \(([^)]*)\)$")


def human(n):
    """n in the largest unit (K, M, G, ... of 1024) that divides it exactly."""
    units = ["", "K", "M", "G", "T", "P", "E"]
    i = 0
    while n and n % 1024 == 0 and i < len(units) - 1:
        n //= 1024
        i += 1
    return "%d%s" % (n, units[i])


def main():
    mode, path = sys.argv[1], sys.argv[2]
    args = sys.argv[3:]
    sid = "--sid" in args
    expect = {}
    i = 0
    while i < len(args):
        if args[i] == "--expect":
            key, _, value = args[i + 1].partition("=")
            expect[key] = value
            i += 2
        else:
            i += 1
    with open(path, encoding="utf-8", errors="backslashreplace") as f:
        lines = f.read().split("\n")

    if mode == "version":
        got = [l for l in lines if l]
        if sid:
            ok = len(got) == 2 and got[0] == SID_PROGRAM and OUR_LIBRARY.match(got[1])
        else:
            ok = (len(got) == 2 and got[0].startswith("nbdinfo ") and got[1].startswith("libnbd ")
                  and got[0].split(" ", 1)[1] == got[1].split(" ", 1)[1])
        print("version lines as expected for this program set: %s" % ("yes" if ok else "NO: %r" % got))
        return

    seen = {}
    out = []
    problems = []
    for line in lines:
        b = BLOCK_SIZE.match(line)
        if b:
            if not sid or human(int(b.group(2))) != b.group(3):
                problems.append("1.24 block size %r: bracket does not match" % line)
            line = b.group(1) + b.group(2)
        m = FIELD.match(line)
        if m:
            seen.setdefault(m.group(1), []).append(m.group(2))
        else:
            out.append(line)
    sys.stdout.write("\n".join(out))
    if out and out[-1] != "":
        sys.stdout.write("\n")
    for key, values in sorted(seen.items()):
        if not sid:
            problems.append("1.24 field %s in the reference's output: %s" % (key, values))
        elif key not in expect:
            problems.append("1.24 field %s has no expected value: %s" % (key, values))
        elif any(v != expect[key] for v in values):
            problems.append("1.24 field %s: got %s, expected %s" % (key, values, expect[key]))
    if sid:
        for key in sorted(expect):
            if key not in seen:
                problems.append("1.24 field %s: missing (expected %s)" % (key, expect[key]))
    for p in problems:
        print(p)
    print("--- 1.24-only fields set aside, with expected values: %s"
          % (", ".join("%s=%s" % kv for kv in sorted(expect.items())) or "none"))


main()
