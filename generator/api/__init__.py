# SPDX-License-Identifier: LGPL-2.1-or-later
"""The API table: all 165 calls of libnbd 1.24 in header order, plus the constants."""

from __future__ import annotations

from model import Call

from . import aio, commands, connect, extensions, handle, info, negotiation, settings
from .constants import (CLOSURES, ENUMS, EXTENT_STRUCT, FLAGS, INT_CONSTANTS,
                        METADATA_NAMESPACES, OPTIONAL_CLOSURES, STR_CONSTANTS,
                        STRICT_GATED_FLAGS, VALUE_FIRST_VERSION, MetaContext, MetaNamespace,
                        StrConstant, StructField, StructType)

# The order of libnbd 1.24's <libnbd.h>: the four handle-less/handle lifetime calls,
# then the handle calls in generator order.
HEADER_ORDER: tuple[str, ...] = (
    "close", "create", "get_error", "get_errno",
    "set_debug", "get_debug", "set_debug_callback", "clear_debug_callback",
    "stats_bytes_sent", "stats_chunks_sent", "stats_bytes_received",
    "stats_chunks_received",
    "set_handle_name", "get_handle_name", "set_private_data", "get_private_data",
    "get_handle_size",
    "set_export_name", "get_export_name",
    "set_request_block_size", "get_request_block_size",
    "set_full_info", "get_full_info",
    "get_canonical_export_name", "get_export_description",
    "set_tls", "get_tls", "get_tls_negotiated", "set_tls_certificates",
    "set_tls_verify_peer", "get_tls_verify_peer",
    "set_tls_username", "get_tls_username", "set_tls_hostname", "get_tls_hostname",
    "set_tls_psk_file", "set_tls_priority", "get_tls_priority",
    "set_request_extended_headers", "get_request_extended_headers",
    "get_extended_headers_negotiated",
    "set_request_structured_replies", "get_request_structured_replies",
    "get_structured_replies_negotiated",
    "set_request_meta_context", "get_request_meta_context",
    "set_handshake_flags", "get_handshake_flags",
    "set_pread_initialize", "get_pread_initialize",
    "set_strict_mode", "get_strict_mode",
    "set_opt_mode", "get_opt_mode",
    "opt_go", "opt_abort", "opt_starttls", "opt_extended_headers",
    "opt_structured_reply", "opt_list", "opt_info", "opt_list_meta_context",
    "opt_list_meta_context_queries", "opt_set_meta_context",
    "opt_set_meta_context_queries",
    "add_meta_context", "get_nr_meta_contexts", "get_meta_context",
    "clear_meta_contexts",
    "set_uri_allow_transports", "set_uri_allow_tls", "set_uri_allow_tls_priority",
    "set_uri_allow_local_file",
    "connect_uri", "connect_unix", "connect_vsock", "connect_tcp", "connect_socket",
    "connect_command", "connect_systemd_socket_activation",
    "set_socket_activation_name", "get_socket_activation_name",
    "is_read_only", "can_flush", "can_fua", "is_rotational", "can_trim", "can_zero",
    "can_fast_zero", "can_block_status_payload", "can_df", "can_multi_conn",
    "can_cache", "can_meta_context",
    "get_protocol", "get_size", "get_block_size",
    "pread", "pread_structured", "pwrite", "shutdown", "flush", "trim", "cache",
    "zero", "block_status", "block_status_64", "block_status_filter",
    "poll", "poll2",
    "aio_connect", "aio_connect_uri", "aio_connect_unix", "aio_connect_vsock",
    "aio_connect_tcp", "aio_connect_socket", "aio_connect_command",
    "aio_connect_systemd_socket_activation",
    "aio_opt_go", "aio_opt_abort", "aio_opt_starttls", "aio_opt_extended_headers",
    "aio_opt_structured_reply", "aio_opt_list", "aio_opt_info",
    "aio_opt_list_meta_context", "aio_opt_list_meta_context_queries",
    "aio_opt_set_meta_context", "aio_opt_set_meta_context_queries",
    "aio_pread", "aio_pread_structured", "aio_pwrite", "aio_disconnect", "aio_flush",
    "aio_trim", "aio_cache", "aio_zero", "aio_block_status", "aio_block_status_64",
    "aio_block_status_filter",
    "aio_get_fd", "aio_get_direction", "aio_notify_read", "aio_notify_write",
    "aio_is_created", "aio_is_connecting", "aio_is_negotiating", "aio_is_ready",
    "aio_is_processing", "aio_is_dead", "aio_is_closed",
    "aio_command_completed", "aio_peek_command_completed", "aio_in_flight",
    "connection_state", "get_package_name", "get_version", "get_version_extra",
    "kill_subprocess", "get_subprocess_pid",
    "supports_tls", "supports_vsock", "supports_uri", "get_uri", "is_uri",
)

# Which module defines each call (by concern).
MODULES = (handle, settings, connect, negotiation, info, commands, aio)


def _ordered() -> list[Call]:
    by_name: dict[str, Call] = {}
    for mod in MODULES:
        for c in mod.CALLS:
            if c.name in by_name:
                raise ValueError(f"api: call {c.name} defined twice")
            by_name[c.name] = c
    missing = [n for n in HEADER_ORDER if n not in by_name]
    extra = [n for n in by_name if n not in HEADER_ORDER]
    if missing or extra or len(HEADER_ORDER) != len(set(HEADER_ORDER)):
        raise ValueError(f"api: HEADER_ORDER mismatch: missing={missing} extra={extra}")
    return [by_name[n] for n in HEADER_ORDER]


CALLS: list[Call] = _ordered()

# duplexnbd's own calls (duplexnbd.h), kept apart so that CALLS is exactly libnbd's API.
EXTENSION_CALLS: list[Call] = list(extensions.CALLS)
EXTENSION_CONSTANTS = extensions.TIMEOUT_POLICIES
if any(not c.extension for c in EXTENSION_CALLS) or any(c.extension for c in CALLS):
    raise ValueError("api: extension calls belong in extensions.py, and only there")

__all__ = [
    "CALLS", "HEADER_ORDER", "MODULES", "EXTENSION_CALLS", "EXTENSION_CONSTANTS",
    "ENUMS", "FLAGS", "INT_CONSTANTS", "STR_CONSTANTS", "CLOSURES", "EXTENT_STRUCT",
    "METADATA_NAMESPACES", "OPTIONAL_CLOSURES", "STRICT_GATED_FLAGS",
    "VALUE_FIRST_VERSION",
    "StrConstant", "StructField", "StructType", "MetaContext", "MetaNamespace",
]
