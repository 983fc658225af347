# SPDX-License-Identifier: LGPL-2.1-or-later
"""Enums, flag sets, plain and string constants, callback types and nbd_extent of libnbd 1.24
(unchanged since 1.22)."""

from __future__ import annotations

from dataclasses import dataclass

from model import CallbackArg, ClosureType, Constant, Enum, Flags

# ---------------------------------------------------------------------------
# Small extra vocabulary, local to the table (model.py stays unchanged).


@dataclass(frozen=True)
class StrConstant:
    """A string macro LIBNBD_<name> "value"."""
    name: str                       # without the LIBNBD_ prefix, e.g. "CONTEXT_BASE_ALLOCATION"
    value: str
    first_version: tuple[int, int] = (1, 0)


@dataclass(frozen=True)
class StructField:
    name: str
    c_type: str
    comment: str = ""


@dataclass(frozen=True)
class StructType:
    """A plain C struct typedef exposed in the header (only nbd_extent so far)."""
    c_name: str                     # e.g. "nbd_extent"
    fields: tuple[StructField, ...]
    first_version: tuple[int, int] = (1, 0)


@dataclass(frozen=True)
class MetaContext:
    """One well-known metadata context: LIBNBD_CONTEXT_<NS>_<MACRO> "<ns>:<name>"."""
    name: str                       # part after "<namespace>:", e.g. "allocation"
    macro: str                      # e.g. "ALLOCATION"
    constants: tuple[Constant, ...] = ()   # LIBNBD_<name> status bits of this context
    first_version: tuple[int, int] = (1, 0)


@dataclass(frozen=True)
class MetaNamespace:
    name: str                       # e.g. "base" -> LIBNBD_NAMESPACE_BASE "base:"
    contexts: tuple[MetaContext, ...]
    first_version: tuple[int, int] = (1, 0)


# ---------------------------------------------------------------------------
# Enums (values carry their full name after LIBNBD_).

TLS = Enum("tls", (
    Constant("TLS_DISABLE", 0),
    Constant("TLS_ALLOW", 1),
    Constant("TLS_REQUIRE", 2),
), (1, 0))

BLOCK_SIZE = Enum("block_size", (
    Constant("SIZE_MINIMUM", 0),
    Constant("SIZE_PREFERRED", 1),
    Constant("SIZE_MAXIMUM", 2),
    Constant("SIZE_PAYLOAD", 3),        # 1.18
), (1, 4))

ENUMS: list[Enum] = [TLS, BLOCK_SIZE]

# ---------------------------------------------------------------------------
# Flag sets (values named without the prefix).

CMD_FLAG = Flags("cmd_flag", "CMD_FLAG", (
    Constant("FUA", 0x01),
    Constant("NO_HOLE", 0x02),
    Constant("DF", 0x04),
    Constant("REQ_ONE", 0x08),
    Constant("FAST_ZERO", 0x10),        # 1.2
    Constant("PAYLOAD_LEN", 0x20),      # 1.18
), (1, 0))

HANDSHAKE_FLAG = Flags("handshake_flag", "HANDSHAKE_FLAG", (
    Constant("FIXED_NEWSTYLE", 0x01),
    Constant("NO_ZEROES", 0x02),
), (1, 2))

STRICT = Flags("strict", "STRICT", (
    Constant("COMMANDS", 0x01),
    Constant("FLAGS", 0x02),
    Constant("BOUNDS", 0x04),
    Constant("ZERO_SIZE", 0x08),
    Constant("ALIGN", 0x10),
    Constant("PAYLOAD", 0x20),          # 1.18
    Constant("AUTO_FLAG", 0x40),        # 1.18
), (1, 6))

ALLOW_TRANSPORT = Flags("allow_transport", "ALLOW_TRANSPORT", (
    Constant("TCP", 0x01),
    Constant("UNIX", 0x02),
    Constant("VSOCK", 0x04),
    Constant("SSH", 0x08),              # 1.22
), (1, 2))

SHUTDOWN = Flags("shutdown", "SHUTDOWN", (
    Constant("ABANDON_PENDING", 0x10000),
), (1, 6))

FLAGS: list[Flags] = [CMD_FLAG, HANDSHAKE_FLAG, STRICT, ALLOW_TRANSPORT, SHUTDOWN]

# Only the command flags are gated by LIBNBD_STRICT_FLAGS (and the 16-bit wire limit);
# an unknown bit of every other flag set is always rejected with EINVAL.
STRICT_GATED_FLAGS: frozenset[str] = frozenset({CMD_FLAG.name})

# ---------------------------------------------------------------------------
# Plain integer constants.

AIO_DIRECTION_CONSTANTS = (
    Constant("AIO_DIRECTION_READ", 1),
    Constant("AIO_DIRECTION_WRITE", 2),
    Constant("AIO_DIRECTION_BOTH", 3),
)

READ_CONSTANTS = (                      # the `status` of a chunk callback
    Constant("READ_DATA", 1),
    Constant("READ_HOLE", 2),
    Constant("READ_ERROR", 3),
)

STATE_HOLE = Constant("STATE_HOLE", 1)      # base:allocation
STATE_ZERO = Constant("STATE_ZERO", 2)      # base:allocation
STATE_DIRTY = Constant("STATE_DIRTY", 1)    # qemu:dirty-bitmap:

# ---------------------------------------------------------------------------
# Metadata namespaces and contexts (drive the string macros and STATE_* bits).

METADATA_NAMESPACES: list[MetaNamespace] = [
    MetaNamespace("base", (
        MetaContext("allocation", "ALLOCATION", (STATE_HOLE, STATE_ZERO)),
    )),
    MetaNamespace("qemu", (
        MetaContext("dirty-bitmap:", "DIRTY_BITMAP", (STATE_DIRTY,), (1, 16)),
        MetaContext("allocation-depth", "ALLOCATION_DEPTH", (), (1, 16)),
    ), (1, 16)),
]

INT_CONSTANTS: list[Constant] = [
    *AIO_DIRECTION_CONSTANTS,
    *READ_CONSTANTS,
    *(c for ns in METADATA_NAMESPACES for ctx in ns.contexts for c in ctx.constants),
]


def _str_constants() -> list[StrConstant]:
    out: list[StrConstant] = []
    for ns in METADATA_NAMESPACES:
        out.append(StrConstant(f"NAMESPACE_{ns.name.upper()}", f"{ns.name}:", ns.first_version))
        for ctx in ns.contexts:
            out.append(StrConstant(f"CONTEXT_{ns.name.upper()}_{ctx.macro}",
                                   f"{ns.name}:{ctx.name}", ctx.first_version))
    return out


# NAMESPACE_BASE "base:", CONTEXT_BASE_ALLOCATION "base:allocation",
# NAMESPACE_QEMU "qemu:", CONTEXT_QEMU_DIRTY_BITMAP "qemu:dirty-bitmap:",
# CONTEXT_QEMU_ALLOCATION_DEPTH "qemu:allocation-depth".
STR_CONSTANTS: list[StrConstant] = _str_constants()

# The first release of individual values added after their set (everything else
# dates from its Enum/Flags/namespace first_version).  Header macros are not
# versioned symbols, so this is informational (docs).
VALUE_FIRST_VERSION: dict[str, tuple[int, int]] = {
    "CMD_FLAG_FAST_ZERO": (1, 2),
    "SIZE_PAYLOAD": (1, 18),
    "CMD_FLAG_PAYLOAD_LEN": (1, 18),
    "STRICT_PAYLOAD": (1, 18),
    "STRICT_AUTO_FLAG": (1, 18),
    "ALLOW_TRANSPORT_SSH": (1, 22),
    "STATE_DIRTY": (1, 16),
}

# ---------------------------------------------------------------------------
# nbd_extent: the element type of an extent64 callback's array (1.18).

EXTENT_STRUCT = StructType("nbd_extent", (
    StructField("length", "uint64_t", "Will not exceed INT64_MAX"),
    StructField("flags", "uint64_t"),
), (1, 18))

# ---------------------------------------------------------------------------
# Callback types; each argument follows the leading void *user_data.

CHUNK = ClosureType("chunk", (
    CallbackArg("subbuf", "const void *"),
    CallbackArg("count", "size_t"),
    CallbackArg("offset", "uint64_t"),
    CallbackArg("status", "unsigned"),
    CallbackArg("error", "int *"),
), (1, 0))

COMPLETION = ClosureType("completion", (
    CallbackArg("error", "int *"),
), (1, 0))

DEBUG = ClosureType("debug", (
    CallbackArg("context", "const char *"),
    CallbackArg("msg", "const char *"),
), (1, 0))

EXTENT = ClosureType("extent", (
    CallbackArg("metacontext", "const char *"),
    CallbackArg("offset", "uint64_t"),
    CallbackArg("entries", "uint32_t *"),
    CallbackArg("nr_entries", "size_t"),
    CallbackArg("error", "int *"),
), (1, 0))

EXTENT64 = ClosureType("extent64", (
    CallbackArg("metacontext", "const char *"),
    CallbackArg("offset", "uint64_t"),
    CallbackArg("entries", "nbd_extent *"),
    CallbackArg("nr_entries", "size_t"),
    CallbackArg("error", "int *"),
), (1, 18))

LIST = ClosureType("list", (
    CallbackArg("name", "const char *"),
    CallbackArg("description", "const char *"),
), (1, 4))

CONTEXT = ClosureType("context", (
    CallbackArg("name", "const char *"),
), (1, 6))

# Header order.
CLOSURES: list[ClosureType] = [CHUNK, COMPLETION, DEBUG, EXTENT, EXTENT64, LIST, CONTEXT]

# Callbacks that may be omitted (NBD_NULL_<NAME> macro in the header).
OPTIONAL_CLOSURES: frozenset[str] = frozenset({COMPLETION.name})
