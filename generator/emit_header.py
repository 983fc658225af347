# SPDX-License-Identifier: LGPL-2.1-or-later
"""Emit include/libnbd.h, and the C-signature helpers the other emitters share.

The header must be a drop-in for libnbd 1.24's: same includes, macro names and values,
type names and prototypes, so that a program written against libnbd compiles unchanged
in C99 and C++.  The wording (comments, layout) is ours.
"""

from __future__ import annotations

from dataclasses import dataclass

import model as M

GENERATED_NOTE = "generated from generator/ (the API table); do not edit, edit the table"

# Column at which constant values start, so the macro block stays readable.
_VALUE_COLUMN = 49
_WRAP = 79


# ---------------------------------------------------------------------------
# C signature helpers (also used by emit_cxx and emit_docs).


@dataclass(frozen=True)
class CParam:
    c_type: str        # e.g. "const void *", "size_t"
    name: str
    nonnull: bool      # listed in LIBNBD_ATTRIBUTE_NONNULL
    arg: object        # the table Arg this parameter comes from (None for h)

    def decl(self) -> str:
        return join_type_name(self.c_type, self.name)


def join_type_name(c_type: str, name: str) -> str:
    """`const char *` + `p` -> `const char *p`; `int` + `x` -> `int x`."""
    return f"{c_type}{name}" if c_type.endswith("*") else f"{c_type} {name}"


def closure_param_name(arg) -> str:
    """C name of a closure parameter: libnbd spells it <cbname>_callback.  The table may
    give the argument either as "completion" or already as "completion_callback"."""
    return arg.name if arg.name.endswith("_callback") else f"{arg.name}_callback"


def arg_params(arg) -> list[CParam]:
    """The C parameter(s) one table argument turns into, in order."""
    n = arg.name
    simple = {
        M.Bool: "bool", M.Int: "int", M.UInt: "unsigned", M.UInt32: "uint32_t",
        M.UInt64: "uint64_t", M.Int64: "int64_t", M.SizeT: "size_t",
        M.UIntPtr: "uintptr_t", M.Fd: "int", M.EnumArg: "int", M.FlagsArg: "uint32_t",
        M.OFlags: "uint32_t",
    }
    t = simple.get(type(arg))
    if t is not None:
        return [CParam(t, n, False, arg)]
    if isinstance(arg, (M.String, M.Path)):
        return [CParam("const char *", n, True, arg)]
    if isinstance(arg, M.StringList):
        return [CParam("char **", n, True, arg)]
    if isinstance(arg, (M.BytesIn, M.BytesPersistIn)):
        return [CParam("const void *", n, True, arg), CParam("size_t", arg.count, False, arg)]
    if isinstance(arg, (M.BytesOut, M.BytesPersistOut)):
        return [CParam("void *", n, True, arg), CParam("size_t", arg.count, False, arg)]
    if isinstance(arg, M.SockAddrAndLen):
        return [CParam("const struct sockaddr *", n, True, arg),
                CParam("socklen_t", arg.len, False, arg)]
    if isinstance(arg, (M.Closure, M.OClosure)):
        return [CParam(arg.closure.c_name, closure_param_name(arg), False, arg)]
    raise TypeError(f"emit_header: unknown argument kind {type(arg).__name__} ({n})")


def handle_param() -> CParam:
    return CParam("struct nbd_handle *", "h", True, None)


def c_params(call: M.Call) -> list[CParam]:
    """All C parameters of a call, including h, in order."""
    ps: list[CParam] = []
    if call.handle:
        # nbd_close accepts NULL, like free(); every other handle must be non-NULL.
        h = handle_param()
        if call.name == "close":
            h = CParam(h.c_type, h.name, False, None)
        ps.append(h)
    for a in list(call.args) + list(call.optargs):
        ps.extend(arg_params(a))
    return ps


def ret_type(call: M.Call) -> str:
    return call.ret.c_type


def nonnull_indices(call: M.Call) -> list[int]:
    return [i + 1 for i, p in enumerate(c_params(call)) if p.nonnull]


def returns_heap_string(call: M.Call) -> bool:
    return call.ret is M.RString


def have_macro(call: M.Call) -> str:
    if call.extension:
        return f"DUPLEXNBD_HAVE_{call.name.upper()}"
    return f"LIBNBD_HAVE_NBD_{call.name.upper()}"


def c_prototype(call: M.Call) -> str:
    """One-line C prototype without extern/attributes/semicolon, e.g.
    `int nbd_pread (struct nbd_handle *h, void *buf, ...)`."""
    ps = c_params(call)
    inner = ", ".join(p.decl() for p in ps) if ps else "void"
    return f"{join_type_name(ret_type(call), call.c_name)} ({inner})"


def wrapped_prototype(call: M.Call, prefix: str = "extern ", width: int = _WRAP) -> str:
    """The prototype wrapped at `width`, continuation lines aligned after '('."""
    head = prefix + join_type_name(ret_type(call), call.c_name) + " ("
    params = [p.decl() for p in c_params(call)] or ["void"]
    return "\n".join(_wrap_params(head, params, ")", width))


def closure_callback_signature(ct: M.ClosureType, name: str = "(*callback)") -> str:
    params = ["void *user_data"] + [join_type_name(a.c_type, a.name) for a in ct.args]
    return f"int {name} ({', '.join(params)})"


def optional_closures(api) -> list[M.ClosureType]:
    """Closure types used by an OClosure somewhere: those get NBD_NULL_<NAME>."""
    seen: dict[str, M.ClosureType] = {}
    for c in api.calls:
        for a in c.optargs:
            if isinstance(a, M.OClosure):
                seen.setdefault(a.closure.name, a.closure)
    order = [ct.name for ct in api.closures]
    return sorted(seen.values(), key=lambda ct: order.index(ct.name) if ct.name in order else 1 << 30)


def extent_fields(api) -> list[tuple[str, str, str]]:
    """(c_type, name, comment) of nbd_extent's members.  The table describes the struct
    (constants.EXTENT_STRUCT); without it, libnbd's {uint64_t length, flags} is used."""
    st = getattr(api, "extent_struct", None)
    fields = getattr(st, "fields", None) if st is not None else None
    if not fields:
        return [("uint64_t", "length", ""), ("uint64_t", "flags", "")]
    return [(f.c_type, f.name, getattr(f, "comment", "") or "") for f in fields]


# ---------------------------------------------------------------------------
# The header itself.


def _define(name: str, value: str) -> str:
    left = f"#define {name}"
    pad = max(1, _VALUE_COLUMN - len(left))
    return left + " " * pad + value


def _flag_value(v: int) -> str:
    # Same spelling as libnbd: at least two hex digits, lower case, U suffix.
    return f"0x{v:02x}U"


def _c_comment(text: str) -> str:
    text = " ".join(text.split()).replace("*/", "* /")
    return f"/* {text} */"


def _str_literal(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


PREAMBLE = """\
/* {note}
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * duplexnbd: public C interface, ABI- and source-compatible with libnbd 1.24.
 */

#ifndef LIBNBD_H
#define LIBNBD_H

/* The same three system headers as libnbd's, no more: programs that (wrongly) rely on
 * what libnbd.h drags in keep compiling, and nothing new leaks into their namespace.
 * <sys/socket.h> supplies socklen_t and struct sockaddr (nbd_aio_connect), and with
 * them size_t and ssize_t.
 */
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#ifdef __cplusplus
extern "C" {{
#endif

/* Attribute helpers, enabled for GCC >= 12 only, as in libnbd, so that a given
 * compiler sees the same attributes with either library.  Code that must keep its
 * own NULL checks (the library's entry points) predefines LIBNBD_ATTRIBUTE_NONNULL
 * as empty: otherwise the compiler may assume the pointers non-NULL and drop them.
 */
#if defined (__GNUC__)
#define LIBNBD_GCC_VERSION \\
    (__GNUC__ * 10000 + __GNUC_MINOR__ * 100 + __GNUC_PATCHLEVEL__)
#endif

#ifndef LIBNBD_ATTRIBUTE_NONNULL
#if defined (__GNUC__) && LIBNBD_GCC_VERSION >= 120000
#define LIBNBD_ATTRIBUTE_NONNULL(...) __attribute__ ((__nonnull__ (__VA_ARGS__)))
#else
#define LIBNBD_ATTRIBUTE_NONNULL(...)
#endif
#endif

#if defined (__GNUC__) && LIBNBD_GCC_VERSION >= 120000
#define LIBNBD_ATTRIBUTE_ALLOC_DEALLOC(fn) \\
    __attribute__ ((__malloc__, __malloc__ (fn, 1)))
#else
#define LIBNBD_ATTRIBUTE_ALLOC_DEALLOC(fn)
#endif

/* Opaque: only ever handled through a pointer. */
struct nbd_handle;
"""

POSTAMBLE = """\
#ifdef __cplusplus
}
#endif

#endif /* LIBNBD_H */
"""


def _constants(api) -> list[str]:
    out: list[str] = []
    for e in api.enums:
        out.append(f"/* enum {e.name} */")
        for v in e.values:
            out.append(_define(f"LIBNBD_{v.name}", str(v.value)))
        out.append("")
    for f in api.flags:
        out.append(f"/* flags {f.name} */")
        for v in f.values:
            out.append(_define(f"LIBNBD_{f.prefix}_{v.name}", _flag_value(v.value)))
        out.append(_define(f"LIBNBD_{f.prefix}_MASK", _flag_value(f.mask)))
        out.append("")
    if api.int_constants:
        out.append("/* Other integer constants (aio direction bits, chunk and extent states) */")
        for c in api.int_constants:
            out.append(_define(f"LIBNBD_{c.name}", str(c.value)))
        out.append("")
    return out


def _extent_struct(api) -> list[str]:
    out = ["/* One extent as nbd_extent64_callback reports it: the 64-bit block status",
           " * replies (extended headers) need 64-bit lengths.",
           " */",
           "typedef struct {"]
    for t, n, comment in extent_fields(api):
        out.append(f"  {join_type_name(t, n)};" + (f"  {_c_comment(comment)}" if comment else ""))
    out += ["} nbd_extent;", ""]
    return out


def _closures(api) -> list[str]:
    out = ["/* Callbacks are passed by value as {callback, user_data, free}.  free (may be",
           " * NULL) runs exactly once, when the library no longer needs user_data.",
           " */"]
    for ct in api.closures:
        # Long callback signatures wrap after a comma, aligned after '('.
        lines = _wrap_params("  int (*callback) (", ["void *user_data"] +
                             [join_type_name(a.c_type, a.name) for a in ct.args], ");")
        out.append("typedef struct {")
        out.extend(lines)
        out.append("  void *user_data;")
        out.append("  void (*free) (void *user_data);")
        out.append(f"}} {ct.c_name};")
        out.append(f"#define LIBNBD_HAVE_{ct.c_name.upper()} 1")
        out.append("")
    return out


def _wrap_params(head: str, params: list[str], tail: str, width: int = _WRAP) -> list[str]:
    lines, cur, indent = [], head, " " * len(head)
    for i, p in enumerate(params):
        piece = p + ("," if i < len(params) - 1 else tail)
        sep = "" if cur in (head, indent) else " "
        if len(cur + sep + piece) > width and cur not in (head, indent):
            lines.append(cur)
            cur = indent + piece
        else:
            cur = cur + sep + piece
    lines.append(cur)
    return lines


def _null_closures(api) -> list[str]:
    opt = optional_closures(api)
    if not opt:
        return []
    out = ["/* NBD_NULL_<NAME>: \"no callback\" for optional callback parameters.  C gets",
           " * libnbd's compound literal; C++ has no compound literals (and designated",
           " * initializers only from C++20), so there it is a value-initialized temporary,",
           " * which is all-NULL just the same and works in every C++ dialect.",
           " */",
           "#ifdef __cplusplus"]
    for ct in opt:
        out.append(f"#define NBD_NULL_{ct.name.upper()} ({ct.c_name} ())")
    out.append("#else")
    for ct in opt:
        out.append(f"#define NBD_NULL_{ct.name.upper()} (({ct.c_name}) {{ .callback = NULL }})")
    out += ["#endif", ""]
    return out


def prototype_block(call: M.Call) -> list[str]:
    out = [_c_comment(f"{call.c_name}: {call.summary}")]
    proto = wrapped_prototype(call)
    attrs = []
    if call.name == "create":
        attrs.append("LIBNBD_ATTRIBUTE_ALLOC_DEALLOC (nbd_close)")
    elif returns_heap_string(call):
        attrs.append("LIBNBD_ATTRIBUTE_ALLOC_DEALLOC (__builtin_free)")
    nn = nonnull_indices(call)
    if nn:
        attrs.append(f"LIBNBD_ATTRIBUTE_NONNULL ({', '.join(map(str, nn))})")
    if attrs:
        out.append(proto)
        for i, a in enumerate(attrs):
            out.append("    " + a + (";" if i == len(attrs) - 1 else ""))
    else:
        out.append(proto + ";")
    out.append(f"#define {have_macro(call)} 1")
    out.append("")
    return out


def _str_constants(api) -> list[str]:
    if not api.str_constants:
        return []
    out = ["/* Metadata context namespaces and names (for nbd_add_meta_context etc.) */"]
    for c in api.str_constants:
        out.append(f"#define LIBNBD_{c.name} {_str_literal(c.value)}")
    out.append("")
    return out


# Declared first, in this order: nbd_create's ALLOC_DEALLOC attribute names nbd_close,
# which must therefore already be declared.
_LIFECYCLE = ("close", "create", "get_error", "get_errno")


def header_order(api) -> list[M.Call]:
    """libnbd's calls in libnbd.h's order (the extensions go to duplexnbd.h)."""
    calls = [c for c in api.calls if not c.extension]
    first = [c for n in _LIFECYCLE for c in calls if c.name == n]
    return first + [c for c in calls if c.name not in _LIFECYCLE]


EXTENSION_PREAMBLE = """\
/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* {note} */

/* duplexnbd.h: duplexnbd's own calls, beyond libnbd's API (see duplexnbd(3) and
 * docs/extensions.md).  They live in symbol version DUPLEXNBD_1.0 and are never part
 * of <libnbd.h>: a program that includes only <libnbd.h> is a plain libnbd program.
 * Test for each call with its DUPLEXNBD_HAVE_* macro, or for the header with
 * DUPLEXNBD_H.
 */

#ifndef DUPLEXNBD_H
#define DUPLEXNBD_H

#include <libnbd.h>

#ifdef __cplusplus
extern "C" {{
#endif

"""

EXTENSION_POSTAMBLE = """\
#ifdef __cplusplus
}}
#endif

#endif /* DUPLEXNBD_H */
"""


def render_extensions(api) -> str:
    parts = [EXTENSION_PREAMBLE.format(note=GENERATED_NOTE)]
    if api.extension_constants:
        parts.append("/* duplexnbd_set_timeout_policy */")
        for c in api.extension_constants:
            parts.append(_define(f"DUPLEXNBD_TIMEOUT_{c.name}", str(c.value)))
        parts.append("")
    for call in api.calls:
        if call.extension:
            parts += prototype_block(call)
    return "\n".join(parts) + "\n" + EXTENSION_POSTAMBLE.format()


def render(api) -> str:
    parts = [PREAMBLE.format(note=GENERATED_NOTE)]
    parts += _constants(api)
    parts += _extent_struct(api)
    parts += _closures(api)
    parts += _null_closures(api)
    for call in header_order(api):
        parts += prototype_block(call)
    parts += _str_constants(api)
    return "\n".join(parts) + "\n" + POSTAMBLE


def emit(api) -> dict[str, str]:
    out = {"include/libnbd.h": render(api)}
    if any(c.extension for c in api.calls):
        out["include/duplexnbd.h"] = render_extensions(api)
    return out
