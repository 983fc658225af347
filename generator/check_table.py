# SPDX-License-Identifier: LGPL-2.1-or-later
"""Sanity-check the API table (generator/api) against libnbd 1.24 facts and an installed libnbd.

The reference libnbd is the installed one (Debian 12's 1.14) unless LIBNBD_REF_LIB,
LIBNBD_REF_HEADER and LIBNBD_REF_MAN_DIR name another's libnbd.so.0, libnbd.h and man3
directory (for instance an unpacked Debian sid package of libnbd 1.24).
"""

from __future__ import annotations

import glob
import gzip
import keyword
import os
import re
import subprocess
import sys
from collections import Counter

GENERATOR_DIR = os.path.dirname(os.path.abspath(__file__))
if GENERATOR_DIR not in sys.path:
    sys.path.insert(0, GENERATOR_DIR)

import model as m  # noqa: E402
import api  # noqa: E402
from api import constants as k  # noqa: E402

# Facts about libnbd 1.24: how many symbols each version node holds.
EXPECTED_TOTAL = 165
EXPECTED_PER_NODE = {
    (1, 0): 79, (1, 2): 17, (1, 4): 16, (1, 6): 7, (1, 8): 3, (1, 12): 4,
    (1, 16): 20, (1, 18): 10, (1, 22): 4, (1, 24): 5,
}
HANDLELESS = {"create", "get_error", "get_errno"}

LIB_CANDIDATES = tuple(p for p in (os.environ.get("LIBNBD_REF_LIB"),) if p) + (
    "/usr/lib/x86_64-linux-gnu/libnbd.so.0",
    "/usr/lib64/libnbd.so.0",
    "/usr/lib/libnbd.so.0",
)
HEADER = os.environ.get("LIBNBD_REF_HEADER", "/usr/include/libnbd.h")
MAN_DIR = os.environ.get("LIBNBD_REF_MAN_DIR", "/usr/share/man/man3")

errors: list[str] = []
notes: list[str] = []


def err(msg: str) -> None:
    errors.append(msg)


def note(msg: str) -> None:
    notes.append(msg)


# ---------------------------------------------------------------------------
# Rendering the C parameters of a call (for duplicate-name and header checks).

_SIMPLE = {
    m.Bool: "bool", m.Int: "int", m.UInt: "unsigned", m.UInt32: "uint32_t",
    m.UInt64: "uint64_t", m.Int64: "int64_t", m.SizeT: "size_t", m.UIntPtr: "uintptr_t",
    m.Fd: "int", m.String: "const char *", m.Path: "const char *",
    m.StringList: "char **", m.EnumArg: "int", m.FlagsArg: "uint32_t", m.OFlags: "uint32_t",
}

_POINTERISH = (m.String, m.Path, m.StringList, m.BytesIn, m.BytesOut, m.BytesPersistIn,
               m.BytesPersistOut, m.SockAddrAndLen, m.Closure, m.EnumArg, m.FlagsArg)

_MODEL_RETS = {name: getattr(m, name) for name in (
    "RErr", "RBool", "RInt", "RFd", "RInt64", "RCookie", "RSizeT", "RString",
    "RStaticString", "REnum", "RFlags", "RUInt", "RUInt64", "RUIntPtr", "RVoid")}


def c_params(call: m.Call) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if call.handle:
        out.append(("struct nbd_handle *", "h"))
    for a in list(call.args) + list(call.optargs):
        t = type(a)
        if t in _SIMPLE:
            out.append((_SIMPLE[t], a.name))
        elif t in (m.BytesIn, m.BytesPersistIn):
            out += [("const void *", a.name), ("size_t", a.count)]
        elif t in (m.BytesOut, m.BytesPersistOut):
            out += [("void *", a.name), ("size_t", a.count)]
        elif t is m.SockAddrAndLen:
            out += [("const struct sockaddr *", a.name), ("socklen_t", a.len)]
        elif t in (m.Closure, m.OClosure):
            out.append((a.closure.c_name, a.name))
        else:
            raise TypeError(f"{call.name}: unknown argument kind {t.__name__}")
    return out


def norm_type(t: str) -> str:
    t = re.sub(r"\s+", " ", t).strip()
    return re.sub(r"\s*\*\s*", "*", t)


# ---------------------------------------------------------------------------
# Checks of the table on its own.

def is_ident(s: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", s or "")) and not keyword.iskeyword(s)


def check_constants() -> None:
    for e in k.ENUMS:
        if not isinstance(e, m.Enum):
            err(f"ENUMS: {e!r} is not a model.Enum")
            continue
        vals = [v.value for v in e.values]
        if len(set(vals)) != len(vals) or len({v.name for v in e.values}) != len(vals):
            err(f"enum {e.name}: duplicate values or names")
        if e.first_version not in m.VERSION_NODES:
            err(f"enum {e.name}: first_version {e.first_version} not a version node")
    for f in k.FLAGS:
        if not isinstance(f, m.Flags):
            err(f"FLAGS: {f!r} is not a model.Flags")
            continue
        bits = 0
        for v in f.values:
            if v.value <= 0 or v.value & (v.value - 1):
                err(f"flags {f.name}: {v.name} = {v.value:#x} is not a single bit")
            if bits & v.value:
                err(f"flags {f.name}: {v.name} overlaps another flag")
            bits |= v.value
            if v.name.startswith(f.prefix + "_"):
                err(f"flags {f.name}: value {v.name} must not repeat the prefix")
        if f.first_version not in m.VERSION_NODES:
            err(f"flags {f.name}: first_version {f.first_version} not a version node")
    names = Counter()
    for e in k.ENUMS:
        names.update(v.name for v in e.values)
    for f in k.FLAGS:
        names.update(f"{f.prefix}_{v.name}" for v in f.values)
        names.update([f"{f.prefix}_MASK"])
    names.update(c.name for c in k.INT_CONSTANTS)
    names.update(s.name for s in k.STR_CONSTANTS)
    for n, cnt in names.items():
        if cnt > 1:
            err(f"constant LIBNBD_{n} defined {cnt} times")
    for n in k.VALUE_FIRST_VERSION:
        if n not in names:
            err(f"VALUE_FIRST_VERSION names unknown constant {n}")
    for c in k.CLOSURES:
        if not isinstance(c, m.ClosureType):
            err(f"CLOSURES: {c!r} is not a model.ClosureType")
            continue
        an = [a.name for a in c.args]
        if len(set(an)) != len(an) or "user_data" in an:
            err(f"closure {c.name}: bad argument names {an}")
        if c.first_version not in m.VERSION_NODES:
            err(f"closure {c.name}: first_version not a version node")
    if k.EXTENT_STRUCT.c_name != "nbd_extent" or \
            [(f.name, f.c_type) for f in k.EXTENT_STRUCT.fields] != \
            [("length", "uint64_t"), ("flags", "uint64_t")]:
        err("EXTENT_STRUCT is not {uint64_t length; uint64_t flags;} nbd_extent")
    want_str = {
        "NAMESPACE_BASE": "base:", "CONTEXT_BASE_ALLOCATION": "base:allocation",
        "NAMESPACE_QEMU": "qemu:", "CONTEXT_QEMU_DIRTY_BITMAP": "qemu:dirty-bitmap:",
        "CONTEXT_QEMU_ALLOCATION_DEPTH": "qemu:allocation-depth",
    }
    have_str = {s.name: s.value for s in k.STR_CONSTANTS}
    if have_str != want_str:
        err(f"STR_CONSTANTS differ from libnbd 1.24: {have_str}")


def check_call(c: m.Call, by_name: dict[str, m.Call], closures: set, enums: set,
               flags: set) -> None:
    where = f"nbd_{c.name}"
    if not isinstance(c, m.Call):
        err(f"{c!r} is not a model.Call")
        return
    if not is_ident(c.name) or c.name.startswith("nbd_"):
        err(f"{where}: bad name")
    if c.first_version not in m.VERSION_NODES:
        err(f"{where}: first_version {c.first_version} is not a version node")
    # Handle.
    if c.handle != (c.name not in HANDLELESS):
        err(f"{where}: handle should be {c.name not in HANDLELESS}")
    # Return kind.
    if c.name == "create":
        if c.ret.c_type != "struct nbd_handle *" or c.ret.error != "NULL":
            err(f"{where}: must return struct nbd_handle * (NULL on error)")
    elif c.name == "get_errno":
        if c.ret.c_type != "int":
            err(f"{where}: must return int")
    elif not any(c.ret is r for r in _MODEL_RETS.values()):
        err(f"{where}: return kind is not one of model's R* objects")
    # Arguments.
    for a in c.args:
        if isinstance(a, (m.OClosure, m.OFlags)):
            err(f"{where}: optional kind {type(a).__name__} in args")
        if not isinstance(a, m.Arg):
            err(f"{where}: {a!r} is not a model.Arg")
    kinds = [type(a) for a in c.optargs]
    if any(t not in (m.OClosure, m.OFlags) for t in kinds):
        err(f"{where}: optargs may only hold OClosure and OFlags")
    if kinds not in ([], [m.OClosure], [m.OFlags], [m.OClosure, m.OFlags]):
        err(f"{where}: optargs must be [OClosure][, OFlags] in that order")
    try:
        params = c_params(c)
    except TypeError as e:
        err(str(e))
        return
    pnames = [n for _, n in params]
    for n in pnames:
        if not is_ident(n):
            err(f"{where}: parameter name {n!r} is not a C identifier")
    if len(set(pnames)) != len(pnames):
        err(f"{where}: duplicate C parameter names {pnames}")
    persist = 0
    for a in list(c.args) + list(c.optargs):
        if isinstance(a, (m.BytesIn, m.BytesOut, m.BytesPersistIn, m.BytesPersistOut)):
            if a.count != "count":
                err(f"{where}: buffer {a.name} pairs with {a.count!r}, libnbd uses 'count'")
            if isinstance(a, (m.BytesPersistIn, m.BytesPersistOut)):
                persist += 1
        if isinstance(a, m.SockAddrAndLen) and (a.name, a.len) != ("addr", "addrlen"):
            err(f"{where}: sockaddr parameters must be addr/addrlen")
        if isinstance(a, (m.Closure, m.OClosure)):
            if a.closure not in closures:
                err(f"{where}: closure {a.closure.name} not in CLOSURES")
            if a.name != f"{a.closure.name}_callback":
                err(f"{where}: closure parameter {a.name} should be "
                    f"{a.closure.name}_callback")
            if a.closure.first_version > c.first_version:
                err(f"{where}: uses closure {a.closure.name} newer than the call")
        if isinstance(a, m.OClosure) and a.closure.name not in k.OPTIONAL_CLOSURES:
            err(f"{where}: optional closure {a.closure.name} is not optional in libnbd")
        if isinstance(a, m.EnumArg):
            if a.enum not in enums:
                err(f"{where}: enum {a.enum and a.enum.name} not in ENUMS")
            elif a.enum.first_version > c.first_version:
                err(f"{where}: enum {a.enum.name} newer than the call")
        if isinstance(a, (m.FlagsArg, m.OFlags)):
            if a.flags not in flags:
                err(f"{where}: flags {a.flags and a.flags.name} not in FLAGS")
                continue
            # (An OFlags parameter may predate its named bits: nbd_shutdown's flags
            # existed in 1.0, LIBNBD_SHUTDOWN_* came later.)
            if isinstance(a, m.FlagsArg) and a.flags.first_version > c.first_version:
                err(f"{where}: flag set {a.flags.name} newer than the call")
            if isinstance(a, m.OFlags) and a.permitted is not None:
                known = {v.name for v in a.flags.values}
                bad = [p for p in a.permitted if p not in known]
                if bad:
                    err(f"{where}: permitted flags {bad} not in {a.flags.name}")
                if len(set(a.permitted)) != len(a.permitted):
                    err(f"{where}: duplicate permitted flags")
            if isinstance(a, m.FlagsArg) and a.strict:
                err(f"{where}: only command flags are strict-gated, and they are OFlags")
    if persist > 1:
        err(f"{where}: more than one persistent buffer")
    if persist:
        if not any(isinstance(a, m.OClosure) and a.closure.name == "completion"
                   for a in c.optargs):
            err(f"{where}: a persistent buffer needs the completion callback")
        if c.ret is not m.RCookie:
            err(f"{where}: a persistent buffer call must return a cookie")
    if c.name.startswith("aio_") and any(isinstance(a, m.OClosure) for a in c.optargs) \
            and c.ret not in (m.RCookie, m.RErr, m.RInt):
        err(f"{where}: odd return kind for an aio call")
    # Errors and states.
    if c.ret.error is None and c.may_set_error:
        err(f"{where}: return kind cannot signal an error, may_set_error must be False")
    if not c.may_set_error:
        if c.permitted_states is not None:
            err(f"{where}: a call that cannot fail cannot have a state check")
        if any(isinstance(a, _POINTERISH) for a in c.args) or \
                any(isinstance(a, m.OFlags) for a in c.optargs):
            err(f"{where}: arguments that are validated imply may_set_error")
    if c.permitted_states is not None:
        ps = c.permitted_states
        if not isinstance(ps, tuple) or not ps:
            err(f"{where}: permitted_states must be None or a non-empty tuple")
        elif any(s not in m.ALL_STATES for s in ps) or len(set(ps)) != len(ps):
            err(f"{where}: bad permitted_states {ps}")
        elif tuple(s for s in m.ALL_STATES if s in ps) != ps:
            err(f"{where}: permitted_states not in model.ALL_STATES order")
        elif set(ps) == set(m.ALL_STATES):
            err(f"{where}: every state permitted: use None")
        if not c.handle:
            err(f"{where}: handle-less call with a state check")
    # Text.
    if not c.summary or "\n" in c.summary or c.summary.endswith(".") or \
            len(c.summary) > 80:
        err(f"{where}: summary must be one short line without a final period")
    if not c.description or len(c.description) < 20:
        err(f"{where}: description missing")
    if c.description and not c.description.rstrip().endswith((".", ")")):
        err(f"{where}: description should end with a full stop")
    for s in c.see_also:
        if s not in by_name:
            err(f"{where}: see_also names unknown call {s}")
        if s == c.name:
            err(f"{where}: see_also names itself")


def check_table() -> dict[str, m.Call]:
    calls = api.CALLS
    names = [c.name for c in calls]
    if len(calls) != EXPECTED_TOTAL:
        err(f"{len(calls)} calls, expected {EXPECTED_TOTAL}")
    dup = [n for n, cnt in Counter(names).items() if cnt > 1]
    if dup:
        err(f"duplicate calls: {dup}")
    if tuple(names) != tuple(api.HEADER_ORDER):
        err("CALLS is not in HEADER_ORDER")
    by_name = {c.name: c for c in calls}
    per_node = Counter(c.first_version for c in calls)
    for node in m.VERSION_NODES:
        if per_node.get(node, 0) != EXPECTED_PER_NODE.get(node, 0):
            err(f"{m.node_name(node)}: {per_node.get(node, 0)} calls, "
                f"expected {EXPECTED_PER_NODE.get(node, 0)}")
    closures, enums, flags = set(k.CLOSURES), set(k.ENUMS), set(k.FLAGS)
    for c in calls:
        check_call(c, by_name, closures, enums, flags)
    return by_name


# ---------------------------------------------------------------------------
# Checks against the installed libnbd (Debian's 1.14): symbols, header, man pages.

def check_symbols(by_name: dict[str, m.Call]) -> None:
    lib = next((p for p in LIB_CANDIDATES if os.path.exists(p)), None)
    if lib is None:
        note("no installed libnbd.so.0: symbol version check skipped")
        return
    try:
        out = subprocess.run(["objdump", "-T", lib], check=True, capture_output=True,
                             text=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        note(f"objdump failed ({e}): symbol version check skipped")
        return
    syms: dict[str, str] = {}
    for line in out.splitlines():
        mt = re.search(r"\s\(?(LIBNBD_\d+\.\d+)\)?\s+(nbd_\w+)\s*$", line)
        if mt:
            syms[mt.group(2)] = mt.group(1)
    if not syms:
        err(f"no versioned nbd_* symbols found in {lib}")
        return
    for sym, node in sorted(syms.items()):
        c = by_name.get(sym[len("nbd_"):])
        if c is None:
            err(f"{sym} ({node}) from {lib} is missing from the table")
        elif m.node_name(c.first_version) != node:
            err(f"{sym}: table says {m.node_name(c.first_version)}, {lib} says {node}")
    newest = max(tuple(int(x) for x in n[len("LIBNBD_"):].split(".")) for n in syms.values())
    for c in by_name.values():
        if c.first_version <= newest and c.c_name not in syms:
            err(f"{c.c_name}: first_version {c.first_version} but absent from {lib}")
    note(f"{len(syms)} symbols of {lib} match the table (nodes up to "
         f"{m.node_name(newest)})")


def _parse_header(text: str) -> tuple[dict, dict, dict, dict]:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    protos: dict[str, tuple[str, list[tuple[str, str]]]] = {}
    for mt in re.finditer(r"extern\s+([^;(]*?)\b(nbd_\w+)\s*\(([^)]*)\)", text):
        ret, name, plist = mt.group(1), mt.group(2), mt.group(3).strip()
        params = []
        if plist != "void":
            for p in plist.split(","):
                p = p.strip()
                pm = re.fullmatch(r"(.*?)(\w+)", p, flags=re.S)
                params.append((norm_type(pm.group(1)), pm.group(2)))
        protos[name] = (norm_type(ret), params)
    ints: dict[str, int] = {}
    strs: dict[str, str] = {}
    for mt in re.finditer(r"#define\s+LIBNBD_(\w+)\s+(\S.*)", text):
        name, val = mt.group(1), mt.group(2).strip()
        if re.fullmatch(r"0x[0-9a-fA-F]+U?|\d+U?", val):
            ints[name] = int(val.rstrip("U"), 0)
        elif re.fullmatch(r'"[^"]*"', val):
            strs[name] = val[1:-1]
    cbs: dict[str, list[tuple[str, str]]] = {}
    for mt in re.finditer(r"typedef struct \{\s*int \(\*callback\) \(([^)]*)\);"
                          r"[^}]*\}\s*(nbd_\w+_callback);", text):
        params = []
        for p in mt.group(1).split(","):
            pm = re.fullmatch(r"(.*?)(\w+)", p.strip(), flags=re.S)
            params.append((norm_type(pm.group(1)), pm.group(2)))
        cbs[mt.group(2)] = params
    return protos, ints, strs, cbs


def check_header(by_name: dict[str, m.Call]) -> None:
    if not os.path.exists(HEADER):
        note(f"no {HEADER}: header comparison skipped")
        return
    with open(HEADER, encoding="utf-8") as f:
        protos, ints, strs, cbs = _parse_header(f.read())
    for fn, (ret, params) in sorted(protos.items()):
        c = by_name.get(fn[len("nbd_"):])
        if c is None:
            err(f"{fn} declared in {HEADER} but missing from the table")
            continue
        mine = [(norm_type(t), n) for t, n in c_params(c)]
        if mine != params:
            err(f"{fn}: parameters {mine} differ from {HEADER}: {params}")
        if norm_type(c.ret.c_type) != ret:
            err(f"{fn}: returns {c.ret.c_type!r}, {HEADER} says {ret!r}")
    # Macros: every one in the old header must exist here with the same value.
    mine_ints: dict[str, int] = {}
    for e in k.ENUMS:
        mine_ints.update((v.name, v.value) for v in e.values)
    for fl in k.FLAGS:
        mine_ints.update((f"{fl.prefix}_{v.name}", v.value) for v in fl.values)
        mine_ints[f"{fl.prefix}_MASK"] = fl.mask
    mine_ints.update((c.name, c.value) for c in k.INT_CONSTANTS)
    for name, val in ints.items():
        if name.startswith("HAVE_") or name in ("H", "GCC_VERSION"):
            continue
        if name.endswith("_MASK"):
            continue     # masks grow with new flags
        if mine_ints.get(name) != val:
            err(f"LIBNBD_{name}: {HEADER} has {val}, table has {mine_ints.get(name)}")
    mine_strs = {s.name: s.value for s in k.STR_CONSTANTS}
    for name, val in strs.items():
        if mine_strs.get(name) != val:
            err(f"LIBNBD_{name}: {HEADER} has {val!r}, table has {mine_strs.get(name)!r}")
    mine_cbs = {c.c_name: c for c in k.CLOSURES}
    for cname, params in cbs.items():
        ct = mine_cbs.get(cname)
        if ct is None:
            err(f"{cname} from {HEADER} missing from CLOSURES")
            continue
        mine = [("void*", "user_data")] + [(norm_type(a.c_type), a.name) for a in ct.args]
        if mine != params:
            err(f"{cname}: arguments {mine} differ from {HEADER}: {params}")
    nmacros = len([n for n in ints if not n.startswith("HAVE_")]) + len(strs)
    note(f"{len(protos)} prototypes, {nmacros} constant macros and {len(cbs)} "
         f"callback types of {HEADER} agree with the table")


def _man_text(path: str) -> str:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        return f.read()


def check_man_pages(by_name: dict[str, m.Call]) -> None:
    pages = glob.glob(os.path.join(MAN_DIR, "nbd_*.3*"))
    if not pages:
        note(f"no nbd_*(3) pages in {MAN_DIR}: may_set_error comparison skipped")
        return
    checked = 0
    for p in sorted(pages):
        name = os.path.basename(p).split(".")[0][len("nbd_"):]
        c = by_name.get(name)
        if c is None or not c.handle or name == "close":
            continue          # nbd_create(3) covers the lifetime/error calls together
        text = _man_text(p)
        if ".so " in text[:200]:
            continue
        no_fail = "does not fail" in text
        if no_fail == c.may_set_error:
            err(f"nbd_{name}: may_set_error={c.may_set_error} but {p} "
                f"{'says' if no_fail else 'does not say'} it does not fail")
        checked += 1
    note(f"may_set_error agrees with {checked} installed man pages")


def main() -> int:
    check_constants()
    by_name = check_table()
    check_symbols(by_name)
    check_header(by_name)
    check_man_pages(by_name)
    per_node = Counter(c.first_version for c in api.CALLS)
    counts = ", ".join(f"{n[0]}.{n[1]}: {per_node[n]}" for n in m.VERSION_NODES)
    for n in notes:
        print(f"check_table: {n}")
    print(f"check_table: {len(api.CALLS)} calls ({counts})")
    if errors:
        for e in errors:
            print(f"check_table: ERROR: {e}", file=sys.stderr)
        print(f"check_table: {len(errors)} error(s)", file=sys.stderr)
        return 1
    print("check_table: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
