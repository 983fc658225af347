# SPDX-License-Identifier: LGPL-2.1-or-later
"""Manual option negotiation in option mode: the nbd_opt_* calls and their aio_ forms."""

from __future__ import annotations

from model import RBool, RErr, RInt, Call, StringList

from ._common import ONLY_NEGOTIATING, cb, completion
from .constants import CONTEXT, LIST

_OPT_MODE_ONLY = (
    " It is only usable while option mode (nbd_set_opt_mode) holds the handle in "
    "negotiation.")

_BOOL_REPLY = (
    " It returns true when the server accepts, false when the server refuses, and "
    "fails only when no reply arrives (for instance the connection is lost).")

_CALLBACK_NOTE = (
    " The callback must not call nbd_* functions on this handle, must copy any "
    "string it wants to keep, and its return value is currently ignored (avoid -1).")

_COUNT_NOTE = (
    " On success the number of server replies is returned. Servers may not "
    "understand the request, may answer nothing, or may fail after partial "
    "results, so success with no replies and failure after some replies are both "
    "possible.")

_AIO_TAIL = (
    " The request is only sent: completion is seen when nbd_aio_is_connecting "
    "becomes false, or through the optional completion callback, which is retired "
    "automatically whatever it returns; only that callback learns whether the "
    "server reported an error.")


def _aio_of(sync: str) -> str:
    return f" It is the non-blocking form of nbd_{sync}." + _AIO_TAIL


CALLS: list[Call] = [
    # --- blocking ---------------------------------------------------------------
    Call(
        "opt_go", [], RErr, (1, 4),
        "finish negotiation and enter transmission phase",
        "Sends NBD_OPT_GO for the current export name, also selecting the meta "
        "contexts from nbd_add_meta_context unless nbd_set_request_meta_context is "
        "false. On success the handle is ready for commands; if the server refuses, "
        "the handle usually stays negotiating so another export name can be tried, "
        "although older servers drop the connection." + _OPT_MODE_ONLY,
        permitted_states=ONLY_NEGOTIATING,
        see_also=("aio_opt_go", "set_opt_mode", "opt_abort", "set_export_name",
                  "opt_info", "add_meta_context", "set_request_meta_context"),
    ),
    Call(
        "opt_abort", [], RErr, (1, 4),
        "end negotiation and close the connection",
        "Sends NBD_OPT_ABORT to end the session without entering transmission "
        "phase, closing the connection as gracefully as the server allows."
        + _OPT_MODE_ONLY,
        permitted_states=ONLY_NEGOTIATING,
        see_also=("aio_opt_abort", "set_opt_mode", "opt_go", "shutdown"),
    ),
    Call(
        "opt_starttls", [], RBool, (1, 16),
        "ask the server to switch the connection to TLS",
        "Sends NBD_OPT_STARTTLS and, if accepted, performs the TLS handshake; a "
        "handshake failure such as rejected credentials counts as a lost "
        "connection. Meant for testing servers (misuse can expose them to attacks "
        "like CVE-2021-3716); normally nbd_set_tls does this automatically, in which "
        "case it has already happened. It is refused without TLS support. A second "
        "request is a protocol error but does not undo an existing TLS session."
        + _BOOL_REPLY + _OPT_MODE_ONLY,
        permitted_states=ONLY_NEGOTIATING,
        see_also=("aio_opt_starttls", "set_opt_mode", "set_tls",
                  "get_tls_negotiated", "supports_tls"),
    ),
    Call(
        "opt_extended_headers", [], RBool, (1, 18),
        "ask the server to use extended headers",
        "Sends NBD_OPT_EXTENDED_HEADERS; connecting does this automatically unless "
        "nbd_set_request_extended_headers or nbd_set_request_structured_replies was "
        "cleared, so this is mainly for testing servers. Once accepted, extended "
        "headers (and with them structured replies) stay in effect even if a later "
        "repeat is refused." + _BOOL_REPLY + _OPT_MODE_ONLY,
        permitted_states=ONLY_NEGOTIATING,
        see_also=("aio_opt_extended_headers", "set_opt_mode", "opt_go",
                  "set_request_extended_headers", "set_request_structured_replies",
                  "get_extended_headers_negotiated"),
    ),
    Call(
        "opt_structured_reply", [], RBool, (1, 16),
        "ask the server to use structured replies",
        "Sends NBD_OPT_STRUCTURED_REPLY; connecting does this automatically unless "
        "nbd_set_request_structured_replies was cleared, so this is mainly for "
        "testing servers. Once accepted, structured replies stay in effect even if a "
        "later repeat is refused, and a server may refuse it when extended headers "
        "are already on." + _BOOL_REPLY + _OPT_MODE_ONLY,
        permitted_states=ONLY_NEGOTIATING,
        see_also=("aio_opt_structured_reply", "set_opt_mode", "opt_go",
                  "set_request_structured_replies", "get_structured_replies_negotiated"),
    ),
    Call(
        "opt_list", [cb(LIST)], RInt, (1, 4),
        "ask the server for its list of exports",
        "Sends NBD_OPT_LIST and calls the list callback once per export with its "
        "name and description (empty when the server gives none), then returns the "
        "number of exports. Servers may refuse, send an empty list, stop part way "
        "or send a very long list; nbd-server needs allowlist=true for it. Calling "
        "nbd_set_export_name from the callback is not allowed." + _CALLBACK_NOTE
        + _OPT_MODE_ONLY,
        permitted_states=ONLY_NEGOTIATING,
        see_also=("aio_opt_list", "set_opt_mode", "opt_go", "set_export_name"),
    ),
    Call(
        "opt_info", [], RErr, (1, 4),
        "ask the server about the current export without entering it",
        "Sends NBD_OPT_INFO for the current export name; on success nbd_get_size, "
        "nbd_is_read_only and the other flag calls describe that export, and so "
        "does nbd_can_meta_context when meta contexts were requested automatically "
        "(see nbd_set_request_meta_context). A later nbd_opt_go will usually, but "
        "not always, see the same details; some servers refuse this request even "
        "when going would succeed." + _OPT_MODE_ONLY,
        permitted_states=ONLY_NEGOTIATING,
        see_also=("aio_opt_info", "set_opt_mode", "opt_go", "set_export_name",
                  "set_request_meta_context", "opt_list_meta_context"),
    ),
    Call(
        "opt_list_meta_context", [cb(CONTEXT)], RInt, (1, 6),
        "ask which meta contexts the server offers, for the stored query list",
        "Sends NBD_OPT_LIST_META_CONTEXT for the current export, using the names "
        "added with nbd_add_meta_context as queries (an empty list usually asks for "
        "everything), and calls the context callback with each name the server "
        "returns. A reply may summarise several contexts, so nbd_can_meta_context "
        "is still the authority after connecting. The request is sent even when "
        "structured replies were not negotiated; the server then decides whether to "
        "answer or refuse. Listing changes nothing nbd_can_meta_context reports. "
        "Adding contexts from the callback is not allowed." + _CALLBACK_NOTE + _COUNT_NOTE + _OPT_MODE_ONLY,
        permitted_states=ONLY_NEGOTIATING,
        see_also=("aio_opt_list_meta_context", "opt_list_meta_context_queries",
                  "add_meta_context", "clear_meta_contexts", "opt_set_meta_context",
                  "set_opt_mode", "opt_go"),
    ),
    Call(
        "opt_list_meta_context_queries", [StringList("queries"), cb(CONTEXT)], RInt,
        (1, 16),
        "ask which meta contexts the server offers, for an explicit query list",
        "Like nbd_opt_list_meta_context, but the queries come from the "
        "NULL-terminated `queries` array instead of the handle's stored list."
        + _CALLBACK_NOTE + _COUNT_NOTE + _OPT_MODE_ONLY,
        permitted_states=ONLY_NEGOTIATING,
        see_also=("aio_opt_list_meta_context_queries", "opt_list_meta_context",
                  "set_opt_mode", "opt_go"),
    ),
    Call(
        "opt_set_meta_context", [cb(CONTEXT)], RInt, (1, 16),
        "select meta contexts from the stored list",
        "Sends NBD_OPT_SET_META_CONTEXT for the current export with the names added "
        "by nbd_add_meta_context, and calls the context callback for each context "
        "the server agrees to; those stay visible through nbd_can_meta_context until "
        "the export name changes or contexts are negotiated again. nbd_opt_go "
        "normally does this by itself, so this is for testing servers (often with "
        "nbd_set_request_meta_context off); an empty list or missing structured "
        "replies are deliberately not rejected." + _CALLBACK_NOTE + _COUNT_NOTE
        + _OPT_MODE_ONLY,
        permitted_states=ONLY_NEGOTIATING,
        see_also=("aio_opt_set_meta_context", "opt_set_meta_context_queries",
                  "add_meta_context", "clear_meta_contexts", "set_request_meta_context",
                  "can_meta_context", "opt_go"),
    ),
    Call(
        "opt_set_meta_context_queries", [StringList("queries"), cb(CONTEXT)], RInt,
        (1, 16),
        "select meta contexts from an explicit list",
        "Like nbd_opt_set_meta_context, but the names come from the NULL-terminated "
        "`queries` array instead of the handle's stored list." + _CALLBACK_NOTE
        + _COUNT_NOTE + _OPT_MODE_ONLY,
        permitted_states=ONLY_NEGOTIATING,
        see_also=("aio_opt_set_meta_context_queries", "opt_set_meta_context",
                  "opt_list_meta_context_queries", "set_request_meta_context",
                  "can_meta_context"),
    ),
    # --- asynchronous --------------------------------------------------------------
    Call(
        "aio_opt_go", [], RErr, (1, 4),
        "start finishing negotiation",
        "Sends NBD_OPT_GO without waiting." + _AIO_TAIL
        + " A refusal can also be noticed when nbd_aio_is_negotiating becomes true "
        "again.",
        optargs=[completion()],
        permitted_states=ONLY_NEGOTIATING,
        see_also=("opt_go", "set_opt_mode"),
    ),
    Call(
        "aio_opt_abort", [], RErr, (1, 4),
        "start ending negotiation",
        "Sends NBD_OPT_ABORT without waiting; completion is seen when "
        "nbd_aio_is_connecting becomes false.",
        permitted_states=ONLY_NEGOTIATING,
        see_also=("opt_abort", "set_opt_mode"),
    ),
    Call(
        "aio_opt_starttls", [], RErr, (1, 16),
        "start asking for TLS",
        "Sends NBD_OPT_STARTTLS without waiting." + _aio_of("opt_starttls"),
        optargs=[completion()],
        permitted_states=ONLY_NEGOTIATING,
        see_also=("opt_starttls", "set_opt_mode"),
    ),
    Call(
        "aio_opt_extended_headers", [], RErr, (1, 18),
        "start asking for extended headers",
        "Sends NBD_OPT_EXTENDED_HEADERS without waiting."
        + _aio_of("opt_extended_headers"),
        optargs=[completion()],
        permitted_states=ONLY_NEGOTIATING,
        see_also=("opt_extended_headers", "set_opt_mode"),
    ),
    Call(
        "aio_opt_structured_reply", [], RErr, (1, 16),
        "start asking for structured replies",
        "Sends NBD_OPT_STRUCTURED_REPLY without waiting."
        + _aio_of("opt_structured_reply"),
        optargs=[completion()],
        permitted_states=ONLY_NEGOTIATING,
        see_also=("opt_structured_reply", "set_opt_mode"),
    ),
    Call(
        "aio_opt_list", [cb(LIST)], RErr, (1, 4),
        "start asking for the list of exports",
        "Sends NBD_OPT_LIST without waiting; the list callback runs per export as "
        "replies arrive." + _aio_of("opt_list"),
        optargs=[completion()],
        permitted_states=ONLY_NEGOTIATING,
        see_also=("opt_list", "set_opt_mode"),
    ),
    Call(
        "aio_opt_info", [], RErr, (1, 4),
        "start asking about the current export",
        "Sends NBD_OPT_INFO without waiting." + _aio_of("opt_info"),
        optargs=[completion()],
        permitted_states=ONLY_NEGOTIATING,
        see_also=("opt_info", "set_opt_mode", "is_read_only"),
    ),
    Call(
        "aio_opt_list_meta_context", [cb(CONTEXT)], RInt, (1, 6),
        "start asking which meta contexts are offered, stored query list",
        "Sends NBD_OPT_LIST_META_CONTEXT with the stored query list without "
        "waiting." + _aio_of("opt_list_meta_context"),
        optargs=[completion()],
        permitted_states=ONLY_NEGOTIATING,
        see_also=("opt_list_meta_context", "aio_opt_list_meta_context_queries",
                  "set_opt_mode"),
    ),
    Call(
        "aio_opt_list_meta_context_queries", [StringList("queries"), cb(CONTEXT)],
        RInt, (1, 16),
        "start asking which meta contexts are offered, explicit query list",
        "Sends NBD_OPT_LIST_META_CONTEXT with the given queries without waiting."
        + _aio_of("opt_list_meta_context_queries"),
        optargs=[completion()],
        permitted_states=ONLY_NEGOTIATING,
        see_also=("opt_list_meta_context_queries", "aio_opt_list_meta_context",
                  "set_opt_mode"),
    ),
    Call(
        "aio_opt_set_meta_context", [cb(CONTEXT)], RInt, (1, 16),
        "start selecting meta contexts, stored list",
        "Sends NBD_OPT_SET_META_CONTEXT with the stored list without waiting."
        + _aio_of("opt_set_meta_context"),
        optargs=[completion()],
        permitted_states=ONLY_NEGOTIATING,
        see_also=("opt_set_meta_context", "aio_opt_set_meta_context_queries",
                  "set_opt_mode"),
    ),
    Call(
        "aio_opt_set_meta_context_queries", [StringList("queries"), cb(CONTEXT)],
        RInt, (1, 16),
        "start selecting meta contexts, explicit list",
        "Sends NBD_OPT_SET_META_CONTEXT with the given names without waiting."
        + _aio_of("opt_set_meta_context_queries"),
        optargs=[completion()],
        permitted_states=ONLY_NEGOTIATING,
        see_also=("opt_set_meta_context_queries", "aio_opt_set_meta_context",
                  "set_opt_mode"),
    ),
]
