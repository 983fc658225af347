# SPDX-License-Identifier: LGPL-2.1-or-later
"""Transmission-phase commands (I/O, block status, disconnect), blocking and aio_ forms."""

from __future__ import annotations

from model import (RCookie, RErr, BytesIn, BytesOut, BytesPersistIn, BytesPersistOut, Call,
                   OFlags, StringList, UInt64)

from ._common import NEGOTIATING_OR_CONNECTED, ONLY_CONNECTED, cb, cmd_flags, completion
from .constants import CHUNK, EXTENT, EXTENT64, SHUTDOWN

_STRICT = (
    " Requests the server would likely reject (unadvertised commands or flags, "
    "out-of-bounds or misaligned ranges, ...) are refused client-side according to "
    "nbd_set_strict_mode.")

_BIG_COUNT = (
    " A count of 4GiB or more needs a server that negotiated extended headers "
    "(nbd_get_extended_headers_negotiated); servers may impose smaller limits.")

_SANITIZE = (
    " Unless nbd_set_pread_initialize turned it off, whatever part of the buffer the "
    "server did not write is zeroed by the time the call fails or the command "
    "completes, so after a failure it holds zeroes or partial data, never stale "
    "memory; otherwise its contents are undefined on failure.")

_CALLBACK_ERRORS = (
    " If the callback returns -1 and no earlier error is known, the command fails "
    "with the value the callback stored in *error (EPROTO if none); later chunks "
    "still reach the callback. The callback runs with the handle locked and must "
    "not call nbd_* functions on it.")

_AIO = (
    " It returns a cookie at once; the command's outcome is collected with "
    "nbd_aio_command_completed, or delivered to the optional completion callback.")

_PERSIST = " The buffer must stay valid until the command has completed."


def _aio_of(sync: str) -> str:
    return _AIO + f" Otherwise it behaves like nbd_{sync}." + _STRICT


CALLS: list[Call] = [
    # --- blocking -----------------------------------------------------------------
    Call(
        "pread", [BytesOut("buf"), UInt64("offset")], RErr, (1, 0),
        "read data from the export",
        "Reads count bytes starting at offset into buf and returns once all of it "
        "has arrived, or fails as a whole. Buffers over 64MiB fail with ERANGE (the "
        "server may allow less, see nbd_get_block_size). No flags are accepted yet; "
        "use nbd_pread_structured for LIBNBD_CMD_FLAG_DF or per-chunk visibility."
        + _SANITIZE + _STRICT,
        optargs=[cmd_flags()],
        permitted_states=ONLY_CONNECTED,
        see_also=("aio_pread", "pread_structured", "get_block_size",
                  "set_pread_initialize", "set_strict_mode"),
    ),
    Call(
        "pread_structured", [BytesOut("buf"), UInt64("offset"), cb(CHUNK)], RErr,
        (1, 0),
        "read data from the export, observing each reply chunk",
        "Reads count bytes at offset into buf like nbd_pread, but calls the chunk "
        "callback as each piece of the reply lands (possibly out of order): subbuf "
        "and count give the filled part of buf, offset its position in the export, "
        "and status is LIBNBD_READ_DATA, LIBNBD_READ_HOLE (zeroes) or "
        "LIBNBD_READ_ERROR (count 0, *error holds the server's errno for that "
        "offset). A successful read has called the callback at least once; libnbd "
        "does not check that chunks cover the request without overlap. "
        "LIBNBD_CMD_FLAG_DF asks for a single unfragmented reply (see nbd_can_df)."
        + _CALLBACK_ERRORS + _SANITIZE + _STRICT,
        optargs=[cmd_flags("DF")],
        permitted_states=ONLY_CONNECTED,
        see_also=("aio_pread_structured", "pread", "can_df", "get_block_size",
                  "set_pread_initialize", "set_strict_mode"),
    ),
    Call(
        "pwrite", [BytesIn("buf"), UInt64("offset")], RErr, (1, 0),
        "write data to the export",
        "Writes count bytes from buf at offset and returns once the server has "
        "acknowledged all of it, or fails as a whole (normally so on read-only "
        "exports). Payloads above 64MiB or the server's advertised maximum fail "
        "client-side with ERANGE. LIBNBD_CMD_FLAG_FUA asks for the data to be on "
        "stable storage before the reply (see nbd_can_fua); "
        "LIBNBD_CMD_FLAG_PAYLOAD_LEN is managed by libnbd unless "
        "LIBNBD_STRICT_AUTO_FLAG is cleared." + _STRICT,
        optargs=[cmd_flags("FUA", "PAYLOAD_LEN")],
        permitted_states=ONLY_CONNECTED,
        see_also=("aio_pwrite", "can_fua", "is_read_only", "get_block_size",
                  "set_strict_mode"),
    ),
    Call(
        "shutdown", [], RErr, (1, 0),
        "disconnect gracefully from the server",
        "Tells the server the client is leaving (NBD_CMD_DISC in transmission "
        "phase, NBD_OPT_ABORT while negotiating) and waits for the connection to "
        "close; compared with just calling nbd_close this is only polite. Queued "
        "commands are normally sent first; LIBNBD_SHUTDOWN_ABANDON_PENDING drops "
        "those not yet sent. Bits outside LIBNBD_SHUTDOWN_MASK fail with EINVAL.",
        optargs=[OFlags("flags", flags=SHUTDOWN, permitted=None)],
        permitted_states=NEGOTIATING_OR_CONNECTED,
        see_also=("close", "aio_disconnect", "aio_opt_abort"),
    ),
    Call(
        "flush", [], RErr, (1, 0),
        "ask the server to commit completed writes",
        "Returns once every write the server has already acknowledged is on stable "
        "storage. It normally fails if nbd_can_flush is false. No flags are "
        "accepted yet." + _STRICT,
        optargs=[cmd_flags()],
        permitted_states=ONLY_CONNECTED,
        see_also=("aio_flush", "can_flush", "set_strict_mode"),
    ),
    Call(
        "trim", [UInt64("count"), UInt64("offset")], RErr, (1, 0),
        "discard a range of the export",
        "Asks the server to punch a hole over count bytes at offset and returns once "
        "it has acknowledged. It normally fails if nbd_can_trim is false or the "
        "export is read-only. LIBNBD_CMD_FLAG_FUA asks for the change to be "
        "persistent before the reply." + _BIG_COUNT + _STRICT,
        optargs=[cmd_flags("FUA")],
        permitted_states=ONLY_CONNECTED,
        see_also=("aio_trim", "can_trim", "can_fua", "is_read_only",
                  "set_strict_mode"),
    ),
    Call(
        "cache", [UInt64("count"), UInt64("offset")], RErr, (1, 0),
        "ask the server to prefetch a range",
        "Hints that count bytes at offset will be read soon so the server can load "
        "them into faster storage; the server may ignore it. It normally fails if "
        "nbd_can_cache is false. No flags are accepted yet." + _BIG_COUNT + _STRICT,
        optargs=[cmd_flags()],
        permitted_states=ONLY_CONNECTED,
        see_also=("aio_cache", "can_cache", "set_strict_mode"),
    ),
    Call(
        "zero", [UInt64("count"), UInt64("offset")], RErr, (1, 0),
        "write zeroes efficiently over a range",
        "Asks the server to make count bytes at offset read as zero without sending "
        "the data, returning once acknowledged; it normally fails if nbd_can_zero is "
        "false or the export is read-only. Flags: LIBNBD_CMD_FLAG_FUA (persist "
        "before replying), LIBNBD_CMD_FLAG_NO_HOLE (allocate rather than punch a "
        "hole), LIBNBD_CMD_FLAG_FAST_ZERO (fail quickly unless zeroing beats a "
        "plain write; see nbd_can_fast_zero). Some servers only take large requests "
        "with FAST_ZERO." + _BIG_COUNT + _STRICT,
        optargs=[cmd_flags("FUA", "NO_HOLE", "FAST_ZERO")],
        permitted_states=ONLY_CONNECTED,
        see_also=("aio_zero", "can_zero", "can_fast_zero", "can_fua",
                  "is_read_only", "set_strict_mode"),
    ),
    Call(
        "block_status", [UInt64("count"), UInt64("offset"), cb(EXTENT)], RErr,
        (1, 0),
        "query allocation or other metadata, 32-bit callback",
        "Asks for the status of the range starting at offset for every negotiated "
        "meta context (count is a hint; replies may be shorter or run past it). The "
        "extent callback runs once per context with its name and an array of "
        "nr_entries uint32_t values forming (length, status flags) pairs, "
        "interpreted e.g. with the LIBNBD_STATE_* constants; it may be called more "
        "or fewer times than expected. With 64-bit replies, over-long extents are "
        "truncated (the rest dropped) and 64-bit status values give EOVERFLOW; "
        "nbd_block_status_64 avoids that. LIBNBD_CMD_FLAG_REQ_ONE asks for one "
        "extent per context." + _CALLBACK_ERRORS + _BIG_COUNT + _STRICT,
        optargs=[cmd_flags("REQ_ONE")],
        permitted_states=ONLY_CONNECTED,
        see_also=("aio_block_status", "block_status_64", "add_meta_context",
                  "can_meta_context", "set_strict_mode"),
    ),
    Call(
        "block_status_64", [UInt64("count"), UInt64("offset"), cb(EXTENT64)], RErr,
        (1, 18),
        "query allocation or other metadata, 64-bit callback",
        "Like nbd_block_status, but the extent64 callback receives an array of "
        "nr_entries nbd_extent structs (64-bit length and flags), so large extents "
        "and 64-bit status values from extended-header servers are passed on "
        "intact. LIBNBD_CMD_FLAG_REQ_ONE asks for one extent per context."
        + _CALLBACK_ERRORS + _BIG_COUNT + _STRICT,
        optargs=[cmd_flags("REQ_ONE")],
        permitted_states=ONLY_CONNECTED,
        see_also=("aio_block_status_64", "block_status", "block_status_filter",
                  "add_meta_context", "can_meta_context", "set_strict_mode"),
    ),
    Call(
        "block_status_filter",
        [UInt64("count"), UInt64("offset"), StringList("contexts"), cb(EXTENT64)],
        RErr, (1, 18),
        "query metadata for a chosen subset of meta contexts",
        "Like nbd_block_status_64, but only the contexts named in the "
        "NULL-terminated `contexts` list are reported; each must be negotiated (see "
        "nbd_can_meta_context) and the server must support payloads on block status "
        "(nbd_can_block_status_payload). LIBNBD_CMD_FLAG_PAYLOAD_LEN is managed by "
        "libnbd unless LIBNBD_STRICT_AUTO_FLAG is cleared; LIBNBD_CMD_FLAG_REQ_ONE "
        "works as for nbd_block_status_64." + _STRICT,
        optargs=[cmd_flags("REQ_ONE", "PAYLOAD_LEN")],
        permitted_states=ONLY_CONNECTED,
        see_also=("aio_block_status_filter", "block_status_64",
                  "can_block_status_payload", "can_meta_context", "set_strict_mode"),
    ),
    # --- asynchronous -------------------------------------------------------------
    Call(
        "aio_pread", [BytesPersistOut("buf"), UInt64("offset")], RCookie, (1, 0),
        "start a read",
        "Queues a read of count bytes at offset into buf." + _PERSIST
        + " If it fails and read buffers are pre-initialized (the default), buf "
        "holds zeroes or partial data." + _aio_of("pread"),
        optargs=[completion(), cmd_flags()],
        permitted_states=ONLY_CONNECTED,
        see_also=("pread", "aio_pread_structured", "aio_command_completed",
                  "set_pread_initialize", "set_strict_mode"),
    ),
    Call(
        "aio_pread_structured",
        [BytesPersistOut("buf"), UInt64("offset"), cb(CHUNK)], RCookie, (1, 0),
        "start a read, observing each reply chunk",
        "Queues a read whose reply chunks are reported to the chunk callback."
        + _PERSIST + " On failure with pre-initialized buffers (the default), buf "
        "holds zeroes or partial data." + _aio_of("pread_structured"),
        optargs=[completion(), cmd_flags("DF")],
        permitted_states=ONLY_CONNECTED,
        see_also=("pread_structured", "aio_pread", "aio_command_completed",
                  "set_pread_initialize", "set_strict_mode"),
    ),
    Call(
        "aio_pwrite", [BytesPersistIn("buf"), UInt64("offset")], RCookie, (1, 0),
        "start a write",
        "Queues a write of count bytes from buf at offset." + _PERSIST
        + _aio_of("pwrite"),
        optargs=[completion(), cmd_flags("FUA", "PAYLOAD_LEN")],
        permitted_states=ONLY_CONNECTED,
        see_also=("pwrite", "is_read_only", "aio_command_completed",
                  "set_strict_mode"),
    ),
    Call(
        "aio_disconnect", [], RErr, (1, 0),
        "send the disconnect request",
        "Queues NBD_CMD_DISC; no further commands can be issued afterwards. The "
        "server does not answer it, so wait for nbd_aio_is_closed to become true. "
        "The protocol advises waiting until nbd_aio_in_flight is 0 first, though "
        "libnbd does not insist. No flags are accepted yet; nbd_shutdown uses this "
        "when appropriate.",
        optargs=[cmd_flags()],
        permitted_states=ONLY_CONNECTED,
        see_also=("shutdown", "aio_in_flight", "aio_is_closed"),
    ),
    Call(
        "aio_flush", [], RCookie, (1, 0),
        "start a flush",
        "Queues a flush command." + _aio_of("flush"),
        optargs=[completion(), cmd_flags()],
        permitted_states=ONLY_CONNECTED,
        see_also=("flush", "can_flush", "aio_command_completed", "set_strict_mode"),
    ),
    Call(
        "aio_trim", [UInt64("count"), UInt64("offset")], RCookie, (1, 0),
        "start a trim",
        "Queues a trim of count bytes at offset." + _aio_of("trim"),
        optargs=[completion(), cmd_flags("FUA")],
        permitted_states=ONLY_CONNECTED,
        see_also=("trim", "can_trim", "aio_command_completed", "set_strict_mode"),
    ),
    Call(
        "aio_cache", [UInt64("count"), UInt64("offset")], RCookie, (1, 0),
        "start a cache (prefetch) request",
        "Queues a cache request for count bytes at offset." + _aio_of("cache"),
        optargs=[completion(), cmd_flags()],
        permitted_states=ONLY_CONNECTED,
        see_also=("cache", "can_cache", "aio_command_completed", "set_strict_mode"),
    ),
    Call(
        "aio_zero", [UInt64("count"), UInt64("offset")], RCookie, (1, 0),
        "start a write zeroes request",
        "Queues a write zeroes request for count bytes at offset." + _aio_of("zero"),
        optargs=[completion(), cmd_flags("FUA", "NO_HOLE", "FAST_ZERO")],
        permitted_states=ONLY_CONNECTED,
        see_also=("zero", "can_zero", "can_fast_zero", "aio_command_completed",
                  "set_strict_mode"),
    ),
    Call(
        "aio_block_status", [UInt64("count"), UInt64("offset"), cb(EXTENT)], RCookie,
        (1, 0),
        "start a block status query, 32-bit callback",
        "Queues a block status request whose extents go to the 32-bit extent "
        "callback, with the truncation and EOVERFLOW limits of nbd_block_status; "
        "nbd_aio_block_status_64 has none." + _aio_of("block_status"),
        optargs=[completion(), cmd_flags("REQ_ONE")],
        permitted_states=ONLY_CONNECTED,
        see_also=("block_status", "aio_block_status_64", "can_meta_context",
                  "aio_command_completed", "set_strict_mode"),
    ),
    Call(
        "aio_block_status_64", [UInt64("count"), UInt64("offset"), cb(EXTENT64)],
        RCookie, (1, 18),
        "start a block status query, 64-bit callback",
        "Queues a block status request whose extents go to the extent64 callback."
        + _aio_of("block_status_64"),
        optargs=[completion(), cmd_flags("REQ_ONE")],
        permitted_states=ONLY_CONNECTED,
        see_also=("block_status_64", "aio_block_status", "can_meta_context",
                  "aio_command_completed", "set_strict_mode"),
    ),
    Call(
        "aio_block_status_filter",
        [UInt64("count"), UInt64("offset"), StringList("contexts"), cb(EXTENT64)],
        RCookie, (1, 18),
        "start a block status query for chosen meta contexts",
        "Queues a filtered block status request limited to the named contexts."
        + _aio_of("block_status_filter"),
        optargs=[completion(), cmd_flags("REQ_ONE", "PAYLOAD_LEN")],
        permitted_states=ONLY_CONNECTED,
        see_also=("block_status_filter", "aio_block_status_64",
                  "can_block_status_payload", "can_meta_context",
                  "aio_command_completed", "set_strict_mode"),
    ),
]
