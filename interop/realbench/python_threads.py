#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""N Python threads calling h.pread / h.pwrite on ONE handle (Debian's python3-libnbd,
unmodified; the library underneath is whichever libnbd.so.0 the loader picks).

    python_threads.py URI THREADS SECONDS [--size BYTES] [--write | --mixed] [--span BYTES]

--mixed alternates h.pread and h.pwrite in every thread.

Prints one line: "<ops/s> <MiB/s> <library> <version>"."""
import argparse
import random
import threading
import time

import nbd

p = argparse.ArgumentParser()
p.add_argument("uri")
p.add_argument("threads", type=int)
p.add_argument("seconds", type=float)
p.add_argument("--size", type=int, default=64 * 1024)
p.add_argument("--span", type=int, default=64 * 1024 * 1024)
p.add_argument("--write", action="store_true")
p.add_argument("--mixed", action="store_true")
a = p.parse_args()

h = nbd.NBD()
h.connect_uri(a.uri)
blocks = max(1, min(a.span, h.get_size()) // a.size)
done = [0] * a.threads
stop = threading.Event()
payload = bytes(a.size)


def worker(i):
    rng = random.Random(i)
    n = 0
    while not stop.is_set():
        off = rng.randrange(blocks) * a.size
        if a.write or (a.mixed and n & 1):
            h.pwrite(payload, off)
        else:
            h.pread(a.size, off)
        n += 1
    done[i] = n


ts = [threading.Thread(target=worker, args=(i,)) for i in range(a.threads)]
t0 = time.monotonic()
for t in ts:
    t.start()
time.sleep(a.seconds)
stop.set()
for t in ts:
    t.join()
elapsed = time.monotonic() - t0
ops = sum(done)
print(f"{ops / elapsed:.1f} {ops * a.size / elapsed / 2**20:.1f} {h.get_package_name()} {h.get_version()}")
h.shutdown()
