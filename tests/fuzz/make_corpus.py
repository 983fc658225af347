#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
# Writes the seed corpus of the fuzz targets (tests/fuzz/corpus/<target>/): well-formed server transcripts of the normal paths.
"""Seeds follow the input layouts documented at the top of handshake_fuzz.cpp and
reply_fuzz.cpp: configuration bytes, then exactly what a conforming (or deliberately
refusing) server would send for that configuration.  Run it again after changing either
layout: python3 tests/fuzz/make_corpus.py"""
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
OLDSTYLE = 0x0000420281861253
OPT_REPLY = 0x0003E889045565A9
SIMPLE, STRUCTURED, EXTENDED = 0x67446698, 0x668E33EF, 0x6E8A278C

OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_INFO, OPT_GO = 1, 2, 3, 6, 7
OPT_SR, OPT_LIST_META, OPT_SET_META, OPT_EH = 8, 9, 10, 11
REP_ACK, REP_SERVER, REP_INFO, REP_META = 1, 2, 3, 4
ERR = 1 << 31
ERR_UNSUP, ERR_POLICY, ERR_INVALID, ERR_UNKNOWN = ERR + 1, ERR + 2, ERR + 3, ERR + 6
EFLAGS = 0x1FFF & ~0x0202
SIZE = 1 << 20

T_NONE, T_DATA, T_HOLE, T_BS, T_BS_EXT = 0, 1, 2, 5, 6
T_ERROR, T_ERROR_OFFSET = (1 << 15) + 1, (1 << 15) + 2
DONE = 1


def be(fmt, *v):
    return struct.pack(">" + fmt, *v)


# ---- handshake pieces
def oldstyle(size=SIZE, eflags=EFLAGS):
    return be("QQQHH", NBDMAGIC, OLDSTYLE, size, 0, eflags) + bytes(124)


def newstyle(gflags=3):
    return be("QQH", NBDMAGIC, IHAVEOPT, gflags)


def orep(opt, typ, payload=b""):
    return be("QIII", OPT_REPLY, opt, typ, len(payload)) + payload


def info_export(opt, size=SIZE, eflags=EFLAGS):
    return orep(opt, REP_INFO, be("HQH", 0, size, eflags))


def info_text(opt, kind, text):
    return orep(opt, REP_INFO, be("H", kind) + text)


def info_block(opt, mn=1, pref=4096, mx=32 << 20):
    return orep(opt, REP_INFO, be("HIII", 3, mn, pref, mx))


def meta(opt, cid, name):
    return orep(opt, REP_META, be("I", cid) + name)


def server(name, desc=b""):
    return orep(OPT_LIST, REP_SERVER, be("I", len(name)) + name + desc)


def go_ok(opt=OPT_GO, full=False):
    out = info_export(opt) + info_block(opt)
    if full:
        out += info_text(opt, 1, b"canonical") + info_text(opt, 2, b"a description")
    return out + orep(opt, REP_ACK)


def hs_cfg(sr=True, eh=True, meta_=False, opt=False, full=False, bs=True, chunk=7, name=False,
           ops=(), debug=False):
    c0 = sr | eh << 1 | meta_ << 2 | opt << 3 | full << 4 | bs << 5 | debug << 7
    c1 = chunk | name << 3
    script = 0
    for i, op in enumerate(ops):
        script |= op << (3 * i)
    # ops beyond those given: abort (7) keeps the script explicit
    for i in range(len(ops), 5):
        script |= 7 << (3 * i)
    return bytes([c0, c1, script & 0xFF, script >> 8])


def handshake_seeds():
    s = {}
    s["oldstyle"] = hs_cfg() + oldstyle()
    s["oldstyle-bytewise"] = hs_cfg(chunk=0) + oldstyle()
    s["newstyle-eh-go"] = hs_cfg() + newstyle() + orep(OPT_EH, REP_ACK) + go_ok()
    s["newstyle-eh-meta-go-full"] = (
        hs_cfg(meta_=True, full=True, debug=True) + newstyle() + orep(OPT_EH, REP_ACK)
        + meta(OPT_SET_META, 1, b"base:allocation") + meta(OPT_SET_META, 2, b"qemu:dirty-bitmap:fuzz")
        + orep(OPT_SET_META, REP_ACK) + go_ok(full=True))
    s["newstyle-eh-refused-sr-go"] = (
        hs_cfg(meta_=True, chunk=1) + newstyle() + orep(OPT_EH, ERR_UNSUP) + orep(OPT_SR, REP_ACK)
        + meta(OPT_SET_META, 7, b"base:allocation") + orep(OPT_SET_META, REP_ACK) + go_ok())
    s["newstyle-sr-only"] = hs_cfg(eh=False) + newstyle() + orep(OPT_SR, REP_ACK) + go_ok()
    s["newstyle-nothing-requested"] = hs_cfg(sr=False, eh=False, name=True) + newstyle() + go_ok()
    s["newstyle-go-unsupported-export-name"] = (
        hs_cfg(sr=False, eh=False, name=True) + newstyle() + orep(OPT_GO, ERR_UNSUP)
        + be("QH", SIZE, EFLAGS))
    s["newstyle-not-fixed-export-name"] = (
        hs_cfg(sr=False, eh=False) + newstyle(gflags=0) + be("QH", SIZE, EFLAGS) + bytes(124))
    s["newstyle-go-unknown-export"] = (
        hs_cfg(sr=False, eh=False, name=True) + newstyle()
        + orep(OPT_GO, ERR_UNKNOWN, b"no such export"))
    s["newstyle-go-policy-error"] = (
        hs_cfg(eh=False) + newstyle() + orep(OPT_SR, REP_ACK) + orep(OPT_GO, ERR_POLICY, b"denied"))
    s["newstyle-meta-refused"] = (
        hs_cfg(eh=False, meta_=True) + newstyle() + orep(OPT_SR, REP_ACK)
        + orep(OPT_SET_META, ERR_INVALID) + go_ok())
    s["opt-list-info-go"] = (
        hs_cfg(eh=False, opt=True, ops=(2, 1, 0)) + newstyle() + orep(OPT_SR, REP_ACK)
        + server(b"a", b"first") + server(b"b") + server(b"", b"default") + orep(OPT_LIST, REP_ACK)
        + go_ok(OPT_INFO) + go_ok())
    s["opt-meta-calls"] = (
        hs_cfg(eh=False, opt=True, meta_=True, ops=(3, 4, 1, 0)) + newstyle() + orep(OPT_SR, REP_ACK)
        + meta(OPT_LIST_META, 0, b"base:allocation") + meta(OPT_LIST_META, 0, b"qemu:dirty-bitmap:fuzz")
        + orep(OPT_LIST_META, REP_ACK)
        + meta(OPT_SET_META, 3, b"base:allocation") + orep(OPT_SET_META, REP_ACK)
        # info with contexts wanted: SET_META again first, then INFO
        + meta(OPT_SET_META, 4, b"base:allocation") + orep(OPT_SET_META, REP_ACK) + go_ok(OPT_INFO)
        + meta(OPT_SET_META, 5, b"base:allocation") + orep(OPT_SET_META, REP_ACK) + go_ok())
    s["opt-sr-eh-refusals-abort"] = (
        hs_cfg(sr=False, eh=False, opt=True, ops=(5, 6, 2)) + newstyle() + orep(OPT_SR, ERR_UNSUP)
        + orep(OPT_EH, REP_ACK) + orep(OPT_LIST, ERR_POLICY, b"no listing"))
    s["opt-list-error-then-go-fails"] = (
        hs_cfg(eh=False, opt=True, ops=(2, 0, 0)) + newstyle() + orep(OPT_SR, REP_ACK)
        + orep(OPT_LIST, ERR_UNSUP) + orep(OPT_GO, ERR_UNKNOWN, b"gone") + go_ok())
    s["bad-magic"] = hs_cfg() + b"NBDMAGIC" + b"XXXXXXXX" + bytes(8)
    s["truncated-option-reply"] = hs_cfg() + newstyle() + orep(OPT_EH, REP_ACK) + info_export(OPT_GO)[:11]
    s["wrong-option-in-reply"] = hs_cfg() + newstyle() + orep(OPT_SR, REP_ACK) + go_ok()
    s["oversized-info-name"] = (
        hs_cfg(eh=False, full=True) + newstyle() + orep(OPT_SR, REP_ACK) + info_export(OPT_GO)
        + info_text(OPT_GO, 1, b"n" * 5000) + orep(OPT_GO, REP_ACK))
    return s


# ---- reply pieces
def simple(cookie, error=0, data=b""):
    return be("IIQ", SIMPLE, error, cookie) + data


class Replies:
    def __init__(self, extended):
        self.extended = extended

    def chunk(self, cookie, typ, payload, flags=0, offset=0):
        if self.extended:
            return be("IHHQQQ", EXTENDED, flags, typ, cookie, offset, len(payload)) + payload
        return be("IHHQI", STRUCTURED, flags, typ, cookie, len(payload)) + payload

    def done(self, cookie, offset=0):
        return self.chunk(cookie, T_NONE, b"", DONE, offset)

    def data(self, cookie, offset, data, flags=0):
        return self.chunk(cookie, T_DATA, be("Q", offset) + data, flags, offset)

    def hole(self, cookie, offset, length, flags=0):
        return self.chunk(cookie, T_HOLE, be("QI", offset, length), flags, offset)

    def error(self, cookie, err, msg=b"", flags=DONE):
        return self.chunk(cookie, T_ERROR, be("IH", err, len(msg)) + msg, flags)

    def error_offset(self, cookie, err, offset, msg=b"", flags=0):
        return self.chunk(cookie, T_ERROR_OFFSET, be("IH", err, len(msg)) + msg + be("Q", offset), flags)

    def block_status(self, cookie, ctx, extents, flags=DONE):
        if self.extended:
            p = be("II", ctx, len(extents)) + b"".join(be("QQ", l, f) for l, f in extents)
            return self.chunk(cookie, T_BS_EXT, p, flags)
        p = be("I", ctx) + b"".join(be("II", l, f) for l, f in extents)
        return self.chunk(cookie, T_BS, p, flags)


# commands in the order reply_fuzz.cpp issues them: (bit, [(kind, offset, length)])
COMMANDS = [
    (0x01, [("read", 0, 512)]),
    (0x02, [("sread", 4096, 4096)]),
    (0x04, [("bs", 0, 65536)]),
    (0x08, [("bs64", 0, 131072)]),
    (0x10, [("write", 1024, 512)]),
    (0x20, [("flush", 0, 0), ("trim", 8192, 4096), ("zero", 12288, 4096)]),
    (0x40, [("cache", 0, 4096)]),
    (0x80, [("sread", 65536, 65536)]),
]


def issued(c1, mode, meta_):
    out = []
    for bit, cmds in COMMANDS:
        if not c1 & bit:
            continue
        for kind, off, length in cmds:
            if kind.startswith("bs") and not meta_:
                continue  # refused by the library: no cookie
            out.append((kind, off, length))
    return [(i + 1, k, o, l) for i, (k, o, l) in enumerate(out)]


def pattern(n, seed):
    return bytes((seed + i * 7) & 0xFF for i in range(n))


def normal_reply(mode, cookie, kind, off, length, variant=0):
    """A conforming reply for one command."""
    if mode < 2:
        return simple(cookie, 0, pattern(length, cookie) if kind in ("read", "sread") else b"")
    r = Replies(mode == 3)
    if kind in ("read", "sread"):
        if variant == 1 and length >= 1024:
            half = length // 2
            return (r.hole(cookie, off + half, length - half) + r.data(cookie, off, pattern(half, cookie))
                    + r.done(cookie, off))
        if variant == 2:
            return r.error_offset(cookie, 5, off + 1, b"bad sector") + r.data(cookie, off, pattern(length, 1)) + r.done(cookie)
        return r.data(cookie, off, pattern(length, cookie), DONE)
    if kind.startswith("bs"):
        ex = [(length // 2, 0), (length - length // 2, 3)]
        return r.block_status(cookie, 1, ex, 0) + r.block_status(cookie, 2, [(length, 0)], DONE)
    return r.done(cookie, off)


def reply_cfg(mode, meta_=False, cb_err=False, debug=False, chunk=7, c1=0xFF, c2=0):
    c0 = mode | meta_ << 2 | cb_err << 3 | debug << 4 | chunk << 5
    return bytes([c0, c1, c2])


def reply_seeds():
    s = {}
    for mode, name in ((0, "oldstyle"), (1, "newstyle-simple"), (2, "structured"), (3, "extended")):
        for meta_ in ((False, True) if mode >= 2 else (False,)):
            for c1 in (0x7F, 0x13):
                cmds = issued(c1, mode, meta_)
                tag = f"{name}{'-meta' if meta_ else ''}-cmds{c1:02x}"
                s[tag + "-in-order"] = reply_cfg(mode, meta_, c1=c1) + b"".join(
                    normal_reply(mode, *c) for c in cmds)
                s[tag + "-reversed-retire"] = reply_cfg(mode, meta_, c1=c1, c2=0x04, chunk=3) + b"".join(
                    normal_reply(mode, *c, variant=1) for c in reversed(cmds))
                if mode >= 2:
                    s[tag + "-errors"] = reply_cfg(mode, meta_, cb_err=True, c1=c1, c2=0x11) + b"".join(
                        normal_reply(mode, *c, variant=2) for c in cmds)
    # simple error replies, and a read whose data is cut off by the end of the stream
    cmds = issued(0x31, 1, False)
    s["newstyle-simple-eio"] = reply_cfg(1, c1=0x31) + b"".join(simple(c[0], 5) for c in cmds)
    s["newstyle-simple-truncated"] = reply_cfg(1, c1=0x01) + simple(1, 0, bytes(100))
    r = Replies(False)
    s["structured-error-chunk-only"] = reply_cfg(2, c1=0x02) + r.error(1, 22, b"invalid")
    s["structured-unknown-cookie"] = reply_cfg(2, c1=0x02) + r.done(99)
    s["structured-data-after-done"] = reply_cfg(2, c1=0x03) + r.done(2) + r.data(2, 4096, bytes(16)) + simple(1, 0, bytes(512))
    s["structured-disconnect"] = reply_cfg(2, c1=0x12, c2=0x40) + r.data(1, 4096, bytes(4096), DONE) + r.done(2)
    s["structured-second-batch"] = reply_cfg(2, c1=0x10, c2=0x08) + r.done(1)
    s["structured-early-issue-debug"] = reply_cfg(2, True, debug=True, c1=0x06, c2=0x80) + normal_reply(2, 1, "sread", 4096, 4096) + normal_reply(2, 2, "bs", 0, 65536)
    x = Replies(True)
    s["extended-block-status-req-one"] = reply_cfg(3, True, c1=0x08, c2=0x10) + x.block_status(1, 1, [(4096, 1)], 0) + x.block_status(1, 2, [(131072, 0)], DONE)
    s["extended-large-read-split"] = reply_cfg(3, c1=0x80, chunk=5) + x.data(1, 65536, pattern(40000, 3)) + x.data(1, 65536 + 40000, pattern(25536, 4)) + x.done(1)
    s["structured-large-read-holes"] = reply_cfg(2, c1=0x81) + r.hole(2, 65536, 32768) + r.data(2, 98304, pattern(32768, 9), DONE) + r.done(1)
    return s


def diff_seeds():
    """diff_fuzz.cpp: byte 0 the reply form, then the replies to its fixed commands:
    structured reads 512@0 and 512@512 (cookies 1, 2), block status 4096@0 (cookie 3, with
    structured replies only), a write 512@1024 (the next cookie)."""
    s = {}
    s["simple-in-order"] = bytes([1]) + simple(1, 0, pattern(512, 1)) + simple(2, 0, pattern(512, 2)) + simple(3, 0)
    s["simple-errors-reversed"] = bytes([1]) + simple(3, 28) + simple(2, 5) + simple(1, 0, pattern(512, 1))
    class Echoing(Replies):
        """Extended headers echo the request's offset, whatever the chunk's own offset."""
        REQUEST = {1: 0, 2: 512, 3: 0, 4: 1024}

        def chunk(self, cookie, typ, payload, flags=0, offset=0):
            return super().chunk(cookie, typ, payload, flags, self.REQUEST.get(cookie, 0))

    for mode, name in ((2, "structured"), (3, "extended")):
        r = Echoing(mode == 3)
        s[name + "-in-order"] = bytes([mode]) + (
            r.data(1, 0, pattern(512, 1), DONE) + r.data(2, 512, pattern(512, 2), DONE)
            + r.block_status(3, 1, [(1024, 0), (3072, 3)]) + r.done(4))
        s[name + "-split-holes"] = bytes([mode]) + (
            r.hole(2, 512, 256) + r.data(1, 256, pattern(256, 5)) + r.data(2, 768, pattern(256, 6), DONE)
            + r.hole(1, 0, 256) + r.done(1) + r.done(4) + r.block_status(3, 1, [(4096, 1)]))
        s[name + "-errors"] = bytes([mode]) + (
            r.error_offset(1, 5, 100, b"bad") + r.data(1, 0, pattern(512, 1)) + r.done(1)
            + r.error(2, 28, b"") + r.error(3, 22, b"x") + r.error(4, 1, b"ro"))
        s[name + "-bad-extents"] = bytes([mode]) + (
            r.data(1, 0, pattern(512, 1), DONE) + r.block_status(3, 1, [(2048, 0), (0, 3)])
            + r.data(2, 512, pattern(512, 2), DONE) + r.done(4))
    return s


def write(target, seeds):
    d = os.path.join(HERE, "corpus", target)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    for name, data in sorted(seeds.items()):
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    print(f"{target}: {len(seeds)} seeds in {d}")


if __name__ == "__main__":
    write("handshake_fuzz", handshake_seeds())
    write("reply_fuzz", reply_seeds())
    write("diff_fuzz", diff_seeds())
