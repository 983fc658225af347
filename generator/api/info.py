# SPDX-License-Identifier: LGPL-2.1-or-later
"""What the handshake learned (export flags, sizes, names, negotiated features) and stats."""

from __future__ import annotations

from model import (RBool, RInt64, RSizeT, RStaticString, RString, RUInt64, Call, EnumArg,
                   SizeT, String)

from ._common import HAS_EXPORT_INFO
from .constants import BLOCK_SIZE

_NO_BLOCK = (
    " It answers from what the handshake recorded, without talking to the server.")


def _flag_call(name: str, summary: str, what: str, version=(1, 0),
               see_also: tuple[str, ...] = ()) -> Call:
    return Call(
        name, [], RBool, version, summary,
        what + " The value is known once nbd_opt_info or a connection has "
        "completed." + _NO_BLOCK,
        permitted_states=HAS_EXPORT_INFO,
        see_also=("opt_info",) + see_also,
    )


CALLS: list[Call] = [
    # --- export flags -------------------------------------------------------------
    _flag_call(
        "is_read_only", "report whether the export is read-only",
        "Returns true if the server marked the export read-only, in which case "
        "writes, trims and zeroes will fail."),
    _flag_call(
        "can_flush", "report whether the server supports flush",
        "Returns true if the server accepts the flush command (nbd_flush, "
        "nbd_aio_flush).", see_also=("flush", "aio_flush")),
    _flag_call(
        "can_fua", "report whether the server supports the FUA flag",
        "Returns true if the server honours LIBNBD_CMD_FLAG_FUA on writes, trims and "
        "zeroes.", see_also=("pwrite", "zero", "trim")),
    _flag_call(
        "is_rotational", "report whether the export behaves like a spinning disk",
        "Returns true if the server says the storage has a seek penalty like a hard "
        "disk, false if random access is cheap as on an SSD or RAM disk."),
    _flag_call(
        "can_trim", "report whether the server supports trim",
        "Returns true if the server accepts the trim (discard) command (nbd_trim, "
        "nbd_aio_trim).", see_also=("trim", "aio_trim")),
    _flag_call(
        "can_zero", "report whether the server supports write zeroes",
        "Returns true if the server accepts the write zeroes command (nbd_zero, "
        "nbd_aio_zero).", see_also=("zero", "aio_zero", "can_fast_zero")),
    _flag_call(
        "can_fast_zero", "report whether the server supports the fast zero flag",
        "Returns true if the server accepts LIBNBD_CMD_FLAG_FAST_ZERO on write "
        "zeroes requests.", (1, 2), see_also=("zero", "aio_zero", "can_zero")),
    _flag_call(
        "can_block_status_payload",
        "report whether the server accepts filtered block status",
        "Returns true if the server allows block status requests carrying a payload "
        "(LIBNBD_CMD_FLAG_PAYLOAD_LEN), as nbd_block_status_filter sends. It is "
        "never true without extended headers.", (1, 18),
        see_also=("block_status_filter", "get_extended_headers_negotiated")),
    _flag_call(
        "can_df", "report whether the server supports the don't-fragment flag",
        "Returns true if structured replies are in use and the server accepts "
        "LIBNBD_CMD_FLAG_DF, asking for a read to be answered in one piece.",
        see_also=("pread_structured", "aio_pread_structured")),
    _flag_call(
        "can_multi_conn", "report whether the server supports multi-conn",
        "Returns true if the server promises consistency across several connections "
        "to the same export. Without that promise, opening more than one connection "
        "and writing is unsafe; check this on a first connection before opening "
        "others."),
    _flag_call(
        "can_cache", "report whether the server supports cache",
        "Returns true if the server accepts the cache (prefetch) command (nbd_cache, "
        "nbd_aio_cache).", see_also=("cache", "aio_cache")),
    Call(
        "can_meta_context", [String("metacontext")], RBool, (1, 0),
        "report whether the server agreed to a meta context",
        "Returns true if the named metadata context (for example "
        "LIBNBD_CONTEXT_BASE_ALLOCATION) was negotiated, false otherwise. It can "
        "fail when contexts were requested but the NBD_OPT_SET_META_CONTEXT exchange "
        "was missing or failed. When filtering is supported, every name passed to "
        "nbd_block_status_filter must be one for which this is true." + _NO_BLOCK,
        permitted_states=HAS_EXPORT_INFO,
        see_also=("add_meta_context", "opt_info", "block_status_64",
                  "set_request_meta_context", "opt_set_meta_context"),
    ),
    # --- protocol and sizes -----------------------------------------------------------
    Call(
        "get_protocol", [], RStaticString, (1, 2),
        "return the NBD protocol flavour in use",
        "Returns a static string naming the handshake style: currently \"oldstyle\", "
        "\"newstyle\" or \"newstyle-fixed\" (the usual one today); other values may "
        "appear in future." + _NO_BLOCK,
        permitted_states=HAS_EXPORT_INFO,
        see_also=("get_handshake_flags", "get_structured_replies_negotiated",
                  "get_tls_negotiated", "get_block_size"),
    ),
    Call(
        "get_size", [], RInt64, (1, 0),
        "return the export size in bytes",
        "Returns the size of the export as advertised by the server. It fails with "
        "EOVERFLOW if the advertised size does not fit in a signed 64-bit value."
        + _NO_BLOCK,
        permitted_states=HAS_EXPORT_INFO,
        see_also=("opt_info", "get_block_size"),
    ),
    Call(
        "get_block_size", [EnumArg("size_type", enum=BLOCK_SIZE)], RInt64, (1, 4),
        "return one of the server's block size constraints",
        "Returns the constraint selected by size_type, or 0 if the server gave none: "
        "LIBNBD_SIZE_MINIMUM (alignment in 1..64k; enforced client-side unless "
        "LIBNBD_STRICT_ALIGN is cleared), LIBNBD_SIZE_PREFERRED (efficient I/O size), "
        "LIBNBD_SIZE_MAXIMUM (largest read or write payload the server takes), or "
        "LIBNBD_SIZE_PAYLOAD (libnbd's own limit on outgoing payloads, between 1M "
        "and 64M, never 0, matching the maximum when possible). Constraints are "
        "hints; unknown size types fail with EINVAL." + _NO_BLOCK,
        permitted_states=HAS_EXPORT_INFO,
        see_also=("get_size", "set_request_block_size", "set_strict_mode",
                  "get_protocol", "opt_info"),
    ),
    # --- names ------------------------------------------------------------------------
    Call(
        "get_canonical_export_name", [], RString, (1, 4),
        "return the server's canonical name for the export",
        "Returns a copy (to be freed by the caller) of the export name the server "
        "reported as canonical, which may differ from the requested name, "
        "especially when the default export \"\" was requested. Servers usually "
        "only report it when nbd_set_full_info asked for it; it fails when none was "
        "reported.",
        permitted_states=HAS_EXPORT_INFO,
        see_also=("set_full_info", "get_export_name", "opt_info"),
    ),
    Call(
        "get_export_description", [], RString, (1, 4),
        "return the server's description of the export",
        "Returns a copy (to be freed by the caller) of the free-form description "
        "the server sent for the export (qemu-nbd sets one with -D). Servers usually "
        "only send it when nbd_set_full_info asked for it; it fails when none was "
        "sent.",
        permitted_states=HAS_EXPORT_INFO,
        see_also=("set_full_info", "opt_info"),
    ),
    # --- requested meta contexts -----------------------------------------------------
    Call(
        "get_nr_meta_contexts", [], RSizeT, (1, 6),
        "return how many meta contexts are in the request list",
        "Returns the number of context names added with nbd_add_meta_context (and "
        "not cleared since). These are requests; what the server agreed to is "
        "reported by nbd_can_meta_context.",
        see_also=("add_meta_context", "get_meta_context", "clear_meta_contexts",
                  "can_meta_context"),
    ),
    Call(
        "get_meta_context", [SizeT("i")], RString, (1, 6),
        "return one name from the meta context request list",
        "Returns a copy (to be freed by the caller) of the i'th name added with "
        "nbd_add_meta_context; i must be below nbd_get_nr_meta_contexts, otherwise "
        "the call fails.",
        see_also=("add_meta_context", "get_nr_meta_contexts", "clear_meta_contexts"),
    ),
    # --- negotiated features ---------------------------------------------------------
    Call(
        "get_tls_negotiated", [], RBool, (1, 2),
        "report whether the connection uses TLS",
        "Returns true if TLS is active on the connection. This mostly matters with "
        "LIBNBD_TLS_ALLOW, which may fall back to plaintext, or with "
        "LIBNBD_TLS_DISABLE against a server whose optional TLS was started by hand "
        "with nbd_opt_starttls; with LIBNBD_TLS_REQUIRE a connection without TLS "
        "would have failed.",
        permitted_states=HAS_EXPORT_INFO,
        see_also=("set_tls", "get_tls", "opt_starttls"),
    ),
    Call(
        "get_extended_headers_negotiated", [], RBool, (1, 18),
        "report whether extended headers are in use",
        "Returns true once the server accepted extended headers; this sticks even if "
        "a later repeated request is refused. Without them, request lengths are "
        "limited to 32 bits even where the API takes 64-bit values; with them, "
        "nbd_block_status_64 should be preferred for contexts with 64-bit status.",
        permitted_states=HAS_EXPORT_INFO,
        see_also=("set_request_extended_headers", "opt_extended_headers",
                  "block_status_64", "get_block_size",
                  "get_structured_replies_negotiated"),
    ),
    Call(
        "get_structured_replies_negotiated", [], RBool, (1, 2),
        "report whether structured replies are in use",
        "Returns true once structured replies are in effect, either accepted "
        "directly (sticky even if a later repeat is refused) or implied by extended "
        "headers.",
        permitted_states=HAS_EXPORT_INFO,
        see_also=("set_request_structured_replies", "opt_structured_reply",
                  "get_extended_headers_negotiated", "get_protocol"),
    ),
    # --- statistics -----------------------------------------------------------------
    Call(
        "stats_bytes_sent", [], RUInt64, (1, 16),
        "return the number of bytes sent so far",
        "Returns how many bytes of NBD protocol data the client has sent on this "
        "handle. The count is taken before any TLS encryption, so it can differ from "
        "the bytes on the wire.",
        may_set_error=False,
        see_also=("stats_chunks_sent", "stats_bytes_received", "stats_chunks_received"),
    ),
    Call(
        "stats_chunks_sent", [], RUInt64, (1, 16),
        "return the number of protocol chunks sent so far",
        "Returns how many protocol units (each starting with a magic number: "
        "option requests, command requests) the client has sent. This relates "
        "neither to the number of API calls nor to network packets.",
        may_set_error=False,
        see_also=("stats_bytes_sent", "stats_bytes_received", "stats_chunks_received"),
    ),
    Call(
        "stats_bytes_received", [], RUInt64, (1, 16),
        "return the number of bytes received so far",
        "Returns how many bytes of NBD protocol data the client has received on this "
        "handle, counted after TLS decryption.",
        may_set_error=False,
        see_also=("stats_chunks_received", "stats_bytes_sent", "stats_chunks_sent"),
    ),
    Call(
        "stats_chunks_received", [], RUInt64, (1, 16),
        "return the number of protocol chunks received so far",
        "Returns how many protocol units, each introduced by a magic number (option "
        "replies, simple replies, structured reply chunks), the client has received. "
        "This relates neither to the number of API calls nor to network packets.",
        may_set_error=False,
        see_also=("stats_bytes_received", "stats_bytes_sent", "stats_chunks_sent"),
    ),
]
