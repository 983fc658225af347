# SPDX-License-Identifier: LGPL-2.1-or-later
"""The vocabulary of the API table: argument, return and closure kinds, handle states.

Every generator (header, entry points, version script, C++ bindings, docs) reads the
table through these classes only, so a new kind is added here once and handled by each
emitter explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

# ---------------------------------------------------------------------------
# Handle states, as the man pages' "HANDLE STATE" tables name them.

CREATED = "created"          # handle created, before connecting
CONNECTING = "connecting"    # connecting / handshaking, not in opt mode
NEGOTIATING = "negotiating"  # handshaking, stopped in opt mode
CONNECTED = "connected"      # transmission phase
CLOSED = "closed"            # connection shut down cleanly
DEAD = "dead"                # connection failed

ALL_STATES = (CREATED, CONNECTING, NEGOTIATING, CONNECTED, CLOSED, DEAD)

# ---------------------------------------------------------------------------
# Constants, enums and flag sets (the LIBNBD_* macros).


@dataclass(frozen=True)
class Constant:
    name: str            # without the LIBNBD_ prefix, e.g. "TLS_DISABLE"
    value: int


@dataclass(frozen=True)
class Enum:
    """A closed set of int values; an argument of this kind is rejected with EINVAL
    when it is not one of them."""
    name: str                     # e.g. "tls"
    values: tuple[Constant, ...]  # LIBNBD_<value.name>
    first_version: tuple[int, int] = (1, 0)


@dataclass(frozen=True)
class Flags:
    """A set of bits; the header also gets LIBNBD_<prefix>_MASK."""
    name: str                     # e.g. "cmd_flag"
    prefix: str                   # e.g. "CMD_FLAG" -> LIBNBD_CMD_FLAG_FUA
    values: tuple[Constant, ...]  # names without the prefix, e.g. Constant("FUA", 1)
    first_version: tuple[int, int] = (1, 0)

    @property
    def mask(self) -> int:
        m = 0
        for v in self.values:
            m |= v.value
        return m


# ---------------------------------------------------------------------------
# Callback (closure) types: a C struct {callback, user_data, free}.


@dataclass(frozen=True)
class CallbackArg:
    """One argument of a callback, after the leading void *user_data."""
    name: str
    c_type: str          # exact C type, e.g. "const void *", "uint64_t", "int *"


@dataclass(frozen=True)
class ClosureType:
    name: str            # e.g. "chunk" -> nbd_chunk_callback
    args: tuple[CallbackArg, ...]
    first_version: tuple[int, int] = (1, 0)

    @property
    def c_name(self) -> str:
        return f"nbd_{self.name}_callback"


# ---------------------------------------------------------------------------
# Argument kinds. Each maps to one or more C parameters.


@dataclass(frozen=True)
class Arg:
    name: str


@dataclass(frozen=True)
class Bool(Arg):
    pass


@dataclass(frozen=True)
class Int(Arg):
    pass


@dataclass(frozen=True)
class UInt(Arg):
    """unsigned int"""


@dataclass(frozen=True)
class UInt32(Arg):
    pass


@dataclass(frozen=True)
class UInt64(Arg):
    pass


@dataclass(frozen=True)
class Int64(Arg):
    pass


@dataclass(frozen=True)
class SizeT(Arg):
    pass


@dataclass(frozen=True)
class UIntPtr(Arg):
    pass


@dataclass(frozen=True)
class Fd(Arg):
    """A file descriptor (int); must be >= 0."""


@dataclass(frozen=True)
class String(Arg):
    """const char *, must not be NULL."""


@dataclass(frozen=True)
class Path(Arg):
    """const char * naming a file or socket, must not be NULL."""


@dataclass(frozen=True)
class StringList(Arg):
    """char **, NULL-terminated, must not be NULL."""


@dataclass(frozen=True)
class BytesIn(Arg):
    """const void *<name>, size_t <count>: read during the call."""
    count: str = "count"


@dataclass(frozen=True)
class BytesOut(Arg):
    """void *<name>, size_t <count>: written during the call."""
    count: str = "count"


@dataclass(frozen=True)
class BytesPersistIn(Arg):
    """const void *<name>, size_t <count>: must stay valid until the command retires."""
    count: str = "count"


@dataclass(frozen=True)
class BytesPersistOut(Arg):
    """void *<name>, size_t <count>: filled in before the command retires."""
    count: str = "count"


@dataclass(frozen=True)
class SockAddrAndLen(Arg):
    """const struct sockaddr *<name>, socklen_t <len>."""
    len: str = "addrlen"


@dataclass(frozen=True)
class Closure(Arg):
    """A callback struct passed by value; .free runs exactly once."""
    closure: ClosureType = None  # type: ignore[assignment]


@dataclass(frozen=True)
class EnumArg(Arg):
    """int that must be one of enum.values (EINVAL otherwise)."""
    enum: Enum = None  # type: ignore[assignment]


@dataclass(frozen=True)
class FlagsArg(Arg):
    """uint32_t bit set. Unknown bits are rejected with EINVAL; `strict` means only when
    LIBNBD_STRICT_FLAGS is set (command flags), as libnbd does."""
    flags: Flags = None  # type: ignore[assignment]
    strict: bool = False


# Optional arguments come after the required ones in C, always in this order.

@dataclass(frozen=True)
class OClosure(Arg):
    """An optional callback (callback may be NULL; NBD_NULL_<NAME> in the header)."""
    closure: ClosureType = None  # type: ignore[assignment]


@dataclass(frozen=True)
class OFlags(Arg):
    """uint32_t flags, optional in higher-level bindings (default 0).
    `permitted` lists the flag names this call accepts (None: the whole set); a bit
    outside it is rejected only in strict-flags mode, unless it is outside the whole
    flag set's 16-bit range."""
    flags: Flags = None  # type: ignore[assignment]
    permitted: Optional[tuple[str, ...]] = None


# ---------------------------------------------------------------------------
# Return kinds. `error` is the C expression returned on failure (None: cannot fail).


@dataclass(frozen=True)
class Ret:
    c_type: str
    error: Optional[str]


RErr = Ret("int", "-1")                   # 0 on success
RBool = Ret("int", "-1")                  # 0 or 1
RInt = Ret("int", "-1")                   # >= 0
RFd = Ret("int", "-1")
RInt64 = Ret("int64_t", "-1")
RCookie = Ret("int64_t", "-1")            # command cookie, >= 1
RSizeT = Ret("ssize_t", "-1")
RString = Ret("char *", "NULL")           # caller frees
RStaticString = Ret("const char *", "NULL")
REnum = Ret("int", "-1")                  # one of an Enum's values
RFlags = Ret("uint32_t", None)            # cannot fail
RUInt = Ret("unsigned", None)             # cannot fail
RUInt64 = Ret("uint64_t", None)           # cannot fail
RUIntPtr = Ret("uintptr_t", None)         # cannot fail
RVoid = Ret("void", None)


# ---------------------------------------------------------------------------
# One API call.


@dataclass
class Call:
    name: str                          # without the nbd_ prefix
    args: list[Arg]
    ret: Ret
    first_version: tuple[int, int]     # e.g. (1, 16): lands in node LIBNBD_1.16
    summary: str                       # one line, own words
    description: str                   # a paragraph or more, own words
    optargs: list[Arg] = field(default_factory=list)   # OClosure / OFlags only
    # States in which the call is permitted. None: any state, no check.
    permitted_states: Optional[tuple[str, ...]] = None
    may_set_error: bool = True
    # Does not take a handle (nbd_create, nbd_get_error, nbd_get_errno); nbd_close
    # takes a handle that may be NULL.
    handle: bool = True
    # Calls sharing a man-page "SEE ALSO".
    see_also: tuple[str, ...] = ()
    # A duplexnbd-only call (duplexnbd.h, duplexnbd_<name>, version node DUPLEXNBD_1.0,
    # DUPLEXNBD_HAVE_* macro); never part of libnbd's header or nodes.
    extension: bool = False
    # May be called from a signal handler: its entry point traces nothing, records no
    # error, takes no lock and allocates nothing.
    signal_safe: bool = False

    @property
    def c_name(self) -> str:
        return f"duplexnbd_{self.name}" if self.extension else f"nbd_{self.name}"


# Symbol version nodes, oldest first; each node's parent is the one before it.
VERSION_NODES = ((1, 0), (1, 2), (1, 4), (1, 6), (1, 8), (1, 12), (1, 16), (1, 18), (1, 22),
                 (1, 24))


def node_name(version: tuple[int, int]) -> str:
    return f"LIBNBD_{version[0]}.{version[1]}"
