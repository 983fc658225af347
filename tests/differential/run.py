#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
# Differential runner: each hostile case (cases.txt) played to one driver on libnbd 1.22.2 and on ours; records compared.
"""Runs every case in cases.txt twice: hostile_tests serves the case's scripted server
(HOSTILE_SERVE_FD, one end of a socketpair) and nbd_diff_driver, given the other end,
performs the case's client actions, once with LD_LIBRARY_PATH at the reference libnbd
and once at ours. The two outcome records (the driver's output plus what the client
sent, as the server saw it) must be equal, unless the difference is listed in
known-differences.txt (docs/hostile-servers.md explains each).

Exit status: 0 all agree (or differ only as listed), 1 an unlisted difference, 77 the
reference library is missing (DUPLEXNBD_REFERENCE_LIBNBD or --reference)."""
import argparse
import difflib
import fnmatch
import os
import re
import socket
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_REFERENCE = os.path.expanduser("~/.cache/duplexnbd/libnbd-1.22.2/lib/.libs")


def reference_dir(arg):
    """The directory holding the reference libnbd.so.0 (a path to the file also works)."""
    path = arg or os.environ.get("DUPLEXNBD_REFERENCE_LIBNBD") or DEFAULT_REFERENCE
    if os.path.isfile(path):
        path = os.path.dirname(path)
    return path if os.path.isfile(os.path.join(path, "libnbd.so.0")) else None


def read_cases(path):
    cases = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, setup, actions = (x.strip() for x in line.split(" | "))
            cases.append((name, setup, actions))
    return cases


def read_known(path):
    """known-differences.txt: 'CASES | LIBNBD | OURS | REASON' rules (see its header)."""
    rules = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = [x.strip() for x in line.split(" | ")]
            if len(parts) != 4 or not parts[3]:
                sys.exit(f"{path}:{n}: want 'CASES | LIBNBD | OURS | REASON'")
            cases, theirs, ours, reason = parts
            rules.append({"line": n, "cases": cases.split(","), "reason": reason, "used": False,
                          "theirs": None if theirs == "-" else re.compile(theirs),
                          "ours": None if ours == "-" else re.compile(ours)})
    return rules


def accepted(rules, name, side, line):
    """The rule that accepts `line` (found only on `side`) for case `name`, or None."""
    for r in rules:
        if r[side] and any(fnmatch.fnmatchcase(name, c) for c in r["cases"]) \
                and r[side].fullmatch(line.strip()):
            return r
    return None


def play(args, libdir, name, setup, actions):
    """One run of a case on the library in libdir: the outcome record as a list of lines."""
    server_end, client_end = socket.socketpair()
    env = dict(os.environ, HOSTILE_SERVE_FD=str(server_end.fileno()))
    server = subprocess.Popen(
        [args.server, f"--gtest_filter={name}"], env=env, pass_fds=[server_end.fileno()],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    server_end.close()
    denv = dict(os.environ, LD_LIBRARY_PATH=libdir)
    denv.pop("LD_PRELOAD", None)
    try:
        driver = subprocess.run(
            [args.driver, str(client_end.fileno()), setup, actions], env=denv,
            pass_fds=[client_end.fileno()], capture_output=True, text=True, timeout=60)
        drv_out, drv_err, drv_rc = driver.stdout, driver.stderr, driver.returncode
    except subprocess.TimeoutExpired as e:
        drv_out, drv_err, drv_rc = (e.stdout or b"").decode(), "driver timed out", "timeout"
    client_end.close()
    try:
        srv_out, _ = server.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        srv_out, _ = server.communicate()
    record = drv_out.splitlines()
    record.append(f"driver exit {drv_rc}")
    sent = [l for l in srv_out.splitlines() if l.startswith("client-sent ")]
    record.append(sent[0] if sent else "client-sent (server did not report; did the case run?)")
    if drv_err.strip():
        record.append("driver stderr: " + drv_err.strip().replace("\n", " / "))
    return record


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--driver", required=True)
    ap.add_argument("--server", required=True, help="hostile_tests")
    ap.add_argument("--ours", required=True, help="directory of our libnbd.so.0")
    ap.add_argument("--reference", help="reference libnbd.so.0 or its directory "
                    "(default: $DUPLEXNBD_REFERENCE_LIBNBD, else " + DEFAULT_REFERENCE + ")")
    ap.add_argument("--cases", default=os.path.join(HERE, "cases.txt"))
    ap.add_argument("--known", default=os.path.join(HERE, "known-differences.txt"))
    ap.add_argument("--filter", default="", help="only cases whose name contains this")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every record")
    args = ap.parse_args()

    ref = reference_dir(args.reference)
    if ref is None:
        print("SKIP: reference libnbd not found (build it with interop/libnbd-testsuite.sh, or "
              "set DUPLEXNBD_REFERENCE_LIBNBD / --reference)", file=sys.stderr)
        return 77
    known = read_known(args.known)
    cases = [c for c in read_cases(args.cases) if args.filter in c[0]]
    print(f"reference: {ref}\nours:      {args.ours}\n{len(cases)} cases")
    failed = []
    for name, setup, actions in cases:
        theirs = play(args, ref, name, setup, actions)
        ours = play(args, args.ours, name, setup, actions)
        if args.verbose:
            print(f"== {name}\n  " + "\n  ".join(theirs))
        if theirs == ours:
            print(f"same     {name}")
            continue
        # Every line found on one side only must be accepted by a rule for this case.
        diff = list(difflib.unified_diff(theirs, ours, "libnbd", "duplexnbd", lineterm="", n=1))
        unlisted, used = [], []
        for l in diff:
            if l.startswith(("---", "+++")) or not l[:1] in "+-":
                continue
            r = accepted(known, name, "theirs" if l[0] == "-" else "ours", l[1:])
            if r:
                used.append(r)
            else:
                unlisted.append(l)
        if unlisted:
            failed.append(name)
            print(f"DIFFERS  {name}\n    " + "\n    ".join(diff))
            print("    not accepted by known-differences.txt:\n      " + "\n      ".join(unlisted))
        else:
            for r in used:
                r["used"] = True
            tags = sorted({t for r in used for t in re.findall(r"\[[\w-]+\]", r["reason"])})
            print(f"listed   {name} {' '.join(tags)}")
            if args.verbose:
                print("    " + "\n    ".join(diff))
    if not args.filter:
        # A rule for a race may go unused in a run; any other unused rule is stale.
        stale = [r for r in known if not r["used"] and not r["reason"].startswith("[race]")]
        for r in stale:
            print(f"known-differences.txt:{r['line']}: no case differs this way any more: {r['reason']}")
        if stale:
            failed.append("(stale rules)")
    print(f"{len(cases) - len(failed)} of {len(cases)} agree or differ only as listed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
