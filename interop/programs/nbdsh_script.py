# SPDX-License-Identifier: LGPL-2.1-or-later
# nbdsh script for run.sh: sync and aio calls, callbacks, opt mode and errors, printing only deterministic facts.
#
# Run as `nbdsh -n -c - < nbdsh_script.py` (the nbd module is imported, no
# implicit handle) with these Unix sockets in the environment:
#   NBDSH_MEM   nbdkit memory 1M (read-write)
#   NBDSH_RO    nbdkit -r data (read-only, known content)
#   NBDSH_LIST  nbdkit exportname filter: exports "a" and "b", strict
#   NBDSH_EIO   nbdkit error filter: every read fails with EIO
#   NBDSH_MISSING  a socket path nobody listens on
# Concurrent aio commands touch disjoint ranges and results are printed in
# issue order, never arrival order, so the output does not depend on
# scheduling.
import hashlib
import os
import select


def uri(name, export=""):
    return "nbd+unix:///%s?socket=%s" % (export, os.environ["NBDSH_" + name])


def digest(b):
    return hashlib.sha256(bytes(b)).hexdigest()[:16]


def show(label, fn, *args):
    """Prints fn(*args), or the nbd.Error it raised with its errno name."""
    try:
        v = fn(*args)
    except nbd.Error as e:
        print("%s: nbd.Error errno=%s: %s" % (label, e.errno, e.string))
        return None
    print("%s: %r" % (label, v))
    return v


def section(title):
    print("\n## " + title)


def wait_all(h):
    while h.aio_in_flight() > 0:
        h.poll(-1)


# ---------------------------------------------------------------------------
section("handle defaults before connecting")
h = nbd.NBD()
for getter in ("get_export_name", "get_tls", "get_tls_verify_peer",
               "get_request_structured_replies", "get_handshake_flags",
               "get_pread_initialize", "get_opt_mode",
               "get_full_info", "get_request_block_size", "get_debug",
               "supports_tls", "supports_uri", "aio_is_created",
               "aio_is_connecting", "aio_is_ready", "aio_is_closed",
               "aio_is_dead", "aio_in_flight", "get_nr_meta_contexts"):
    show(getter, getattr(h, getter))
# The default strict mode is every flag the library defines (LIBNBD_STRICT_MASK),
# and later libnbd versions define more: 1.14 has 0x1f, 1.22 adds STRICT_PAYLOAD
# (0x20) and STRICT_AUTO_FLAG (0x40).  Print the flags these bindings know about,
# and whether any other bit set is one of those two.
strict = h.get_strict_mode()
print("get_strict_mode & STRICT_MASK: %d" % (strict & nbd.STRICT_MASK))
print("get_strict_mode: other bits are only 0x20/0x40:",
      strict & ~nbd.STRICT_MASK & ~0x60 == 0)
show("set_handle_name", h.set_handle_name, "interop-handle")
show("get_handle_name", h.get_handle_name)
show("get_size before connect", h.get_size)
show("get_protocol before connect", h.get_protocol)
show("pread before connect", h.pread, 512, 0)
show("get_meta_context out of range", h.get_meta_context, 0)
show("add_meta_context", h.add_meta_context, nbd.CONTEXT_BASE_ALLOCATION)
show("add_meta_context qemu", h.add_meta_context, "qemu:dirty-bitmap:none")
show("get_nr_meta_contexts", h.get_nr_meta_contexts)
show("get_meta_context 1", h.get_meta_context, 1)
show("set_export_name too long", h.set_export_name, "x" * 5000)
show("set_strict_mode bad flags", h.set_strict_mode, 1 << 20)
show("set_handshake_flags bad flags", h.set_handshake_flags, 1 << 20)

# ---------------------------------------------------------------------------
section("connect and query (memory, read-write)")
show("connect_uri", h.connect_uri, uri("MEM"))
for getter in ("get_protocol", "get_structured_replies_negotiated",
               "get_tls_negotiated", "get_size", "is_read_only",
               "is_rotational", "can_flush", "can_fua", "can_trim",
               "can_zero", "can_fast_zero", "can_df", "can_multi_conn",
               "can_cache", "aio_is_ready", "get_export_name", "get_uri"):
    show(getter, getattr(h, getter))
show("can_meta_context base:allocation", h.can_meta_context, nbd.CONTEXT_BASE_ALLOCATION)
show("can_meta_context qemu:dirty-bitmap:none", h.can_meta_context, "qemu:dirty-bitmap:none")
for which, name in ((nbd.SIZE_MINIMUM, "min"), (nbd.SIZE_PREFERRED, "preferred"),
                    (nbd.SIZE_MAXIMUM, "max")):
    show("get_block_size " + name, h.get_block_size, which)
show("get_export_description (none)", h.get_export_description)
show("add_meta_context after connect", h.add_meta_context, "x:y")
show("connect_uri twice", h.connect_uri, uri("MEM"))

# ---------------------------------------------------------------------------
section("synchronous I/O")
data = bytes((i * 7 + 3) & 0xFF for i in range(65536))
show("pwrite 64k @0", h.pwrite, data, 0)
show("pwrite 4k @128k FUA", h.pwrite, b"x" * 4096, 131072, nbd.CMD_FLAG_FUA)
print("pread 64k @0 matches:", bytes(h.pread(65536, 0)) == data)
print("pread 4k @128k digest:", digest(h.pread(4096, 131072)))
show("flush", h.flush)
show("zero 8k @4k", h.zero, 8192, 4096)
show("zero fast 4k @64k", h.zero, 4096, 65536, nbd.CMD_FLAG_FAST_ZERO)
show("trim 64k @256k", h.trim, 65536, 262144)
show("cache 64k @0", h.cache, 65536, 0)
print("pread after zero digest:", digest(h.pread(65536, 0)))

extents = []


def extent(metacontext, offset, entries, err):
    extents.append((metacontext, offset, list(entries), err.value))
    return 0


show("block_status 1M @0", h.block_status, 1 << 20, 0, extent)
for e in extents:
    print("  extent", e)
extents.clear()
show("block_status REQ_ONE", h.block_status, 1 << 20, 0, extent, nbd.CMD_FLAG_REQ_ONE)
for e in extents:
    print("  extent", e)

chunks = []


def chunk(subbuf, offset, status, err):
    chunks.append((offset, len(subbuf), status, err.value, digest(subbuf)))
    return 0


r = show("pread_structured 64k @0 returns data", lambda: digest(h.pread_structured(65536, 0, chunk)))
for c in sorted(chunks):
    print("  chunk", c)

# ---------------------------------------------------------------------------
section("asynchronous I/O with completion callbacks")
completed = {}


def completion(label):
    def cb(err):
        completed[label] = err.value
        return 0          # keep the command for aio_command_completed
    return cb


def completion_retire(label):
    def cb(err):
        completed[label] = err.value
        return 1          # auto-retire
    return cb


rbuf = nbd.Buffer(65536)
wbuf = nbd.Buffer.from_bytearray(bytearray(b"w" * 8192))
sbuf = nbd.Buffer(32768)
ext_async = []
chunks_async = []
cookies = []
cookies.append(("pread", h.aio_pread(rbuf, 0, completion=completion("pread"))))
cookies.append(("pwrite", h.aio_pwrite(wbuf, 300000, completion=completion("pwrite"))))
cookies.append(("zero", h.aio_zero(8192, 400000, completion=completion("zero"))))
cookies.append(("trim", h.aio_trim(8192, 500000, completion=completion("trim"))))
cookies.append(("cache", h.aio_cache(4096, 0, completion=completion("cache"))))
cookies.append(("block_status", h.aio_block_status(
    131072, 0, lambda m, o, e, err: ext_async.append((m, o, list(e))) or 0,
    completion=completion("block_status"))))
cookies.append(("pread_structured", h.aio_pread_structured(
    sbuf, 0, lambda b, o, s, err: chunks_async.append((o, len(b), s)) or 0,
    completion=completion("pread_structured"))))
cookies.append(("pwrite retire", h.aio_pwrite(
    nbd.Buffer.from_bytearray(bytearray(b"r" * 4096)), 600000,
    completion=completion_retire("pwrite retire"))))
values = [c for _, c in cookies]
print("cookies positive, distinct, increasing:",
      all(c > 0 for c in values), len(set(values)) == len(values), values == sorted(values))
wait_all(h)
# The flush goes last so it covers the writes above.
fc = h.aio_flush(completion=completion("flush"))
wait_all(h)
cookies.append(("flush", fc))
for label, c in cookies:
    print("completion %s: error=%s" % (label, completed.get(label)))
    if label != "pwrite retire":
        show("  aio_command_completed " + label, h.aio_command_completed, c)
show("aio_command_completed on a retired cookie", h.aio_command_completed, cookies[-2][1])
show("aio_peek_command_completed (none left)", h.aio_peek_command_completed)
print("aio pread matches:", bytes(rbuf.to_bytearray()) == bytes(h.pread(65536, 0)))
print("aio pread_structured digest:", digest(sbuf.to_bytearray()), sorted(chunks_async))
print("aio block_status:", ext_async)
print("aio pwrite landed:", bytes(h.pread(8192, 300000)) == b"w" * 8192)
print("aio zero landed:", bytes(h.pread(8192, 400000)) == bytes(8192))

# Without callbacks: retire by peeking.
c = h.aio_pread(nbd.Buffer(512), 1024)
wait_all(h)
show("aio_peek_command_completed", lambda: h.aio_peek_command_completed() == c)
show("aio_command_completed", h.aio_command_completed, c)

# ---------------------------------------------------------------------------
section("classic event loop: aio_get_fd / aio_get_direction / aio_notify_*")
buf = nbd.Buffer(131072)
c = h.aio_pread(buf, 0)
rounds = 0
while not h.aio_command_completed(c):
    rounds += 1
    fd = h.aio_get_fd()
    d = h.aio_get_direction()
    r = [fd] if d & nbd.AIO_DIRECTION_READ else []
    w = [fd] if d & nbd.AIO_DIRECTION_WRITE else []
    rr, ww, _ = select.select(r, w, [], 10)
    if rr:
        h.aio_notify_read()
    elif ww:
        h.aio_notify_write()
    if rounds > 10000:
        print("classic loop did not finish")
        break
print("classic loop read matches:", bytes(buf.to_bytearray()) == bytes(h.pread(131072, 0)))

# ---------------------------------------------------------------------------
section("request errors")
show("pread beyond the end", h.pread, 512, 1 << 20)
show("pread zero length", h.pread, 0, 0)
show("pwrite unknown flag", h.pwrite, b"a", 0, 1 << 15)
show("zero with FUA and NO_HOLE", h.zero, 512, 0, nbd.CMD_FLAG_FUA | nbd.CMD_FLAG_NO_HOLE)
show("block_status beyond the end", h.block_status, 512, 1 << 20, extent)
show("aio_command_completed bogus cookie", h.aio_command_completed, 1 << 40)

# ---------------------------------------------------------------------------
section("read-only server")
ro = nbd.NBD()
ro.connect_uri(uri("RO"))
show("is_read_only", ro.is_read_only)
show("pread 512 @0x1b8 digest", lambda: digest(ro.pread(512, 0x1B8)))
show("pwrite on read-only", ro.pwrite, b"a", 0)
show("trim on read-only", ro.trim, 512, 0)
show("zero on read-only", ro.zero, 512, 0)
show("set_strict_mode 0", ro.set_strict_mode, 0)
show("pwrite on read-only, not strict (server says)", ro.pwrite, b"a", 0)
show("pread beyond the end, not strict (server says)", ro.pread, 512, 1 << 20)
show("pread the string", lambda: bytes(ro.pread(10, 0x10000)))
show("shutdown", ro.shutdown)
show("aio_is_closed after shutdown", ro.aio_is_closed)
show("pread after shutdown", ro.pread, 512, 0)

# ---------------------------------------------------------------------------
section("server errors (every read fails with EIO)")
e = nbd.NBD()
e.connect_uri(uri("EIO"))
show("pread", e.pread, 512, 0)
ch = []
show("pread_structured", e.pread_structured, 512, 0,
     lambda b, o, s, err: ch.append((o, len(b), s, err.value)) or 0)
print("chunks seen:", ch)
completed.clear()
c = e.aio_pread(nbd.Buffer(512), 0, completion=completion("eio"))
wait_all(e)
print("completion error value:", completed.get("eio"))
show("aio_command_completed", e.aio_command_completed, c)
show("pwrite still works", e.pwrite, b"ok", 0)
show("handle still ready", e.aio_is_ready)

# ---------------------------------------------------------------------------
section("opt mode")
o = nbd.NBD()
show("set_opt_mode", o.set_opt_mode, True)
show("connect_uri (no export)", o.connect_uri, uri("LIST"))
show("aio_is_negotiating", o.aio_is_negotiating)
names = []
show("opt_list", o.opt_list, lambda name, desc: names.append((name, desc)) or 0)
print("exports:", names)
ctxs = []
show("opt_list_meta_context", o.opt_list_meta_context, lambda name: ctxs.append(name) or 0)
print("contexts:", sorted(ctxs))
show("set_full_info", o.set_full_info, True)
show("set_export_name a", o.set_export_name, "a")
show("opt_info a", o.opt_info)
show("get_size", o.get_size)
show("get_export_description", o.get_export_description)
show("get_canonical_export_name", o.get_canonical_export_name)
show("set_export_name nosuch", o.set_export_name, "nosuch")
show("opt_info nosuch", o.opt_info)
show("aio_is_negotiating after failed info", o.aio_is_negotiating)
show("set_export_name b", o.set_export_name, "b")
show("opt_go b", o.opt_go)
show("aio_is_ready", o.aio_is_ready)
show("get_export_name", o.get_export_name)
show("get_size", o.get_size)
show("opt_info after go", o.opt_info)
show("pwrite/pread on b", lambda: (o.pwrite(b"opt", 0), bytes(o.pread(3, 0))))
show("shutdown", o.shutdown)

a = nbd.NBD()
a.set_opt_mode(True)
a.connect_uri(uri("LIST"))
show("opt_abort", a.opt_abort)
show("aio_is_closed after abort", a.aio_is_closed)
show("opt_go after abort", a.opt_go)

q = nbd.NBD()
q.set_opt_mode(True)
q.connect_uri(uri("LIST"))
listed = []
done = {}
c = q.aio_opt_list(lambda name, desc: listed.append(name) or 0,
                   completion=lambda err: done.setdefault("list", err.value) or 0)
while not done:
    q.poll(-1)
print("aio_opt_list: names", listed, "error", done["list"])
q.set_export_name("a")
c = q.aio_opt_go(completion=lambda err: done.setdefault("go", err.value) or 0)
while "go" not in done:
    q.poll(-1)
print("aio_opt_go error", done["go"])
show("aio_is_ready", q.aio_is_ready)

n = nbd.NBD()
n.set_opt_mode(True)
n.connect_uri(uri("LIST"))
n.set_export_name("nosuch")
show("opt_go missing export (strict server)", n.opt_go)
show("still negotiating", n.aio_is_negotiating)
show("opt_abort", n.opt_abort)

# ---------------------------------------------------------------------------
section("connection errors")
x = nbd.NBD()
show("connect to missing socket", x.connect_uri, uri("MISSING"))
show("aio_is_dead", x.aio_is_dead)
y = nbd.NBD()
show("connect_uri bad scheme", y.connect_uri, "http://example.com/")
show("connect_uri tls on non-tls socket", y.connect_uri,
     "nbds+unix:///?socket=" + os.environ["NBDSH_MEM"])
z = nbd.NBD()
show("connect_unix missing", z.connect_unix, os.environ["NBDSH_MISSING"])
w = nbd.NBD()
show("set_uri_allow_transports tcp only", w.set_uri_allow_transports, nbd.ALLOW_TRANSPORT_TCP)
show("connect_uri unix when only tcp allowed", w.connect_uri, uri("MEM"))

# ---------------------------------------------------------------------------
section("shutdown")
show("shutdown", h.shutdown)
show("aio_is_closed", h.aio_is_closed)
show("aio_in_flight", h.aio_in_flight)
show("pread after shutdown", h.pread, 512, 0)
print("done")
