#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
# Normalises a scenario transcript so that runs on different libraries compare equal unless behaviour differs.
#
# Usage: normalise.py RUNDIR [--across-versions] < raw > normalised
#
# Only fields that vary between two runs of the SAME library are rewritten:
# the per-run temp dir, TCP ports the scenario picked, libnbd's own
# socket-activation temp dirs, pids, timings, and the intermediate states of progress bars (how many updates a
# copy prints depends on its speed; the final 100% line is kept).
import re
import sys

rundir = sys.argv[1].rstrip("/")
# Debian 12's programs run on libnbd 1.14.2 as the reference, and we follow libnbd 1.22
# where the two differ on purpose.  Only these wordings are rewritten then, on both sides
# alike, into one neutral form; every other difference still shows.
across_versions = "--across-versions" in sys.argv[2:]

# NBD_OPT_GO / NBD_OPT_INFO refused by the server: 1.14 said "server replied with error to
# opt_go request" in opt mode and "handshake: server ..." otherwise; 1.22 decodes the
# NBD_REP_ERR_* into a sentence (plus the server's own message, which nbdkit leaves empty).
# The errno, and so the strerror text after the message, is the same in both.
REFUSAL = re.compile(
    r"server replied with error to opt_(go|info) request"
    r"|handshake: server (policy prevents NBD_OPT_GO|rejected NBD_OPT_GO as invalid"
    r"|requires TLS encryption first|has no export named '[^']*'|is shutting down"
    r"|requires specific block sizes)"
    r"|the operation is not supported by the server( platform)?"
    r"|server policy prevents the operation|the server rejected this operation as invalid"
    r"|the operation is too large to process|the server requires TLS encryption first"
    r"|the server has no export named '[^']*'|the server is shutting down"
    r"|the server requires specific block sizes")

# Values a scenario chose at run time (a free TCP port) and recorded in
# RUNDIR/volatile as "value<TAB>placeholder" lines.
VOLATILE = []
try:
    with open(rundir + "/volatile") as f:
        for entry in f:
            value, _, placeholder = entry.rstrip("\n").partition("\t")
            if value and placeholder:
                VOLATILE.append((value, placeholder))
except FileNotFoundError:
    pass

PROGRESS_BAR = re.compile(r"^\W*\s*(\d+)% \[[*-]*\]\s*$")
PROGRESS_FD = re.compile(r"^(\d+)/100$")
SUBS = [
    # libnbd's subprocess helpers create /tmp/libnbdXXXXXX directories.
    (re.compile(r"/tmp/libnbd[A-Za-z0-9]{6}"), "$LIBNBDTMP"),
    (re.compile(r"\b(pid|PID)([ =:]+)\d+"), r"\1\2N"),
    (re.compile(r"\[\d+\]:"), "[N]:"),
    (re.compile(r"\b\d+(\.\d+)? ?(s|sec|secs|seconds|ms|us)\b"), "N s"),
    (re.compile(r"\b\d+(\.\d+)? ?[KMGT]i?B/s(ec)?\b"), "N B/s"),
]


def progress_line(line):
    """Collapses a progress line: keeps the last \\r-separated state only,
    and drops it unless it is the final (100%) one."""
    if "\r" in line:
        parts = [p for p in line.split("\r") if p.strip()]
        line = parts[-1] if parts else ""
    m = PROGRESS_BAR.match(line)
    if m:
        # Strip the spinner glyph, which depends on the update count.
        return None if int(m.group(1)) < 100 else line[line.index(m.group(1)):]
    m = PROGRESS_FD.match(line)
    if m and int(m.group(1)) < 100:
        return None
    return line


def main():
    data = sys.stdin.buffer.read().decode("utf-8", "backslashreplace")
    out = []
    for line in data.split("\n"):
        line = line.replace(rundir, "$TMP")
        for value, placeholder in VOLATILE:
            line = line.replace(value, placeholder)
        line = progress_line(line)
        if line is None:
            continue
        for pattern, repl in SUBS:
            line = pattern.sub(repl, line)
        if across_versions:
            line = REFUSAL.sub("[option refused by the server]", line)
        out.append(line)
    sys.stdout.write("\n".join(out))


main()
