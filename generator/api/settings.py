# SPDX-License-Identifier: LGPL-2.1-or-later
"""Per-handle settings made before or during negotiation: export, TLS, requests, modes, URIs."""

from __future__ import annotations

from model import (RBool, REnum, RErr, RFlags, RString, Bool, Call, EnumArg, FlagsArg,
                   Path, String)

from ._common import CREATED_OR_NEGOTIATING, ONLY_CREATED
from .constants import ALLOW_TRANSPORT, HANDSHAKE_FLAG, STRICT, TLS

_TLS_ONLY_IF_ENABLED = (
    " It can be called whether or not TLS support is built in, but it only matters "
    "once nbd_set_tls asks for TLS.")

CALLS: list[Call] = [
    # --- export name ---------------------------------------------------------
    Call(
        "set_export_name", [String("export_name")], RErr, (1, 0),
        "choose the export to connect to",
        "Sets the name of the export requested from a newstyle server (oldstyle "
        "servers have no export names); the default is the empty string. Names are "
        "UTF-8 and the protocol caps them at 4096 bytes. Besides before connecting, "
        "it may be changed while negotiating in option mode, e.g. between nbd_opt_list "
        "or nbd_opt_info and nbd_opt_go; nbd_connect_uri sets it from the URI. "
        "Changing it while negotiating forgets what was learnt about the previous "
        "export: nbd_get_size, the flag calls and nbd_can_meta_context fail until "
        "the next successful nbd_opt_info or nbd_opt_go (setting the same name again "
        "changes nothing).",
        permitted_states=CREATED_OR_NEGOTIATING,
        see_also=("get_export_name", "connect_uri", "set_opt_mode", "opt_go",
                  "opt_list", "opt_info"),
    ),
    Call(
        "get_export_name", [], RString, (1, 0),
        "return the export name that will be requested",
        "Returns a copy (to be freed by the caller) of the export name the client "
        "asks for. The server may know the export under another canonical name; see "
        "nbd_get_canonical_export_name.",
        see_also=("set_export_name", "connect_uri", "get_canonical_export_name"),
    ),
    # --- what NBD_OPT_GO / NBD_OPT_INFO ask for -------------------------------
    Call(
        "set_request_block_size", [Bool("request")], RErr, (1, 12),
        "choose whether to ask the server for block size limits",
        "Controls whether the client's NBD_OPT_GO/NBD_OPT_INFO asks the server for "
        "its block size constraints (default true). Servers may send them anyway, "
        "and some refuse clients that do not ask, so clearing this mostly serves to "
        "imitate older clients when testing servers. Advertised sizes are enforced "
        "client-side unless nbd_set_strict_mode relaxes that.",
        permitted_states=CREATED_OR_NEGOTIATING,
        see_also=("get_request_block_size", "set_full_info", "get_block_size",
                  "set_strict_mode"),
    ),
    Call(
        "get_request_block_size", [], RBool, (1, 12),
        "report whether block size limits are requested",
        "Returns the flag set by nbd_set_request_block_size.",
        see_also=("set_request_block_size",),
    ),
    Call(
        "set_full_info", [Bool("request")], RErr, (1, 4),
        "choose whether to ask the server for optional export details",
        "When true, the client hints during NBD_OPT_GO/NBD_OPT_INFO that it wants "
        "optional information such as the export's canonical name and description "
        "(default false). The server may still omit it, and unknown items are "
        "ignored. Block size requests are governed separately by "
        "nbd_set_request_block_size.",
        permitted_states=CREATED_OR_NEGOTIATING,
        see_also=("get_full_info", "get_canonical_export_name",
                  "get_export_description", "set_request_block_size"),
    ),
    Call(
        "get_full_info", [], RBool, (1, 4),
        "report whether optional export details are requested",
        "Returns the flag set by nbd_set_full_info.",
        see_also=("set_full_info",),
    ),
    # --- TLS -----------------------------------------------------------------
    Call(
        "set_tls", [EnumArg("tls", enum=TLS)], RErr, (1, 0),
        "choose whether TLS is off, optional or mandatory",
        "LIBNBD_TLS_DISABLE (the default, unless a URI says otherwise) never starts "
        "TLS; LIBNBD_TLS_ALLOW tries TLS but may silently fall back to plaintext; "
        "LIBNBD_TLS_REQUIRE fails the connection unless an authenticated, encrypted "
        "session is set up. Other values fail with EINVAL, and anything but DISABLE "
        "fails if TLS support is not built in (see nbd_supports_tls). Certificates, "
        "username or PSK file may also need setting.",
        permitted_states=ONLY_CREATED,
        see_also=("get_tls", "get_tls_negotiated", "opt_starttls", "supports_tls",
                  "set_tls_certificates", "set_tls_username", "set_tls_psk_file"),
    ),
    Call(
        "get_tls", [], REnum, (1, 0),
        "return the TLS setting",
        "Returns the requested TLS mode (one of LIBNBD_TLS_*). Whether a given "
        "connection actually uses TLS is reported by nbd_get_tls_negotiated.",
        may_set_error=False,
        see_also=("set_tls", "get_tls_negotiated"),
    ),
    Call(
        "set_tls_certificates", [Path("dir")], RErr, (1, 0),
        "set the directory holding TLS certificates",
        "Names the directory where the X.509 certificates and keys are looked up. "
        "Without it a built-in search is used (/etc/pki/libnbd for root, "
        "$HOME/.pki/libnbd or $HOME/.config/pki/libnbd otherwise), falling back to "
        "the system's trusted CAs. The directory counts when it holds ca-cert.pem; "
        "client-cert.pem with client-key.pem, and the pairs client-cert-N.pem with "
        "client-key-N.pem for N = 0, 1, ... (libnbd 1.24; numbering stops at the first "
        "missing N, and half a pair is an error at connect), are the client's "
        "certificates: GnuTLS offers the server the one that suits the CAs it names, "
        "so one directory can serve servers that trust different CAs." + _TLS_ONLY_IF_ENABLED,
        permitted_states=ONLY_CREATED,
        see_also=("set_tls",),
    ),
    Call(
        "set_tls_verify_peer", [Bool("verify")], RErr, (1, 0),
        "choose whether the server's identity is checked",
        "Controls whether the server certificate is verified against the CA. It "
        "defaults to true for certificate-based TLS over TCP and to false otherwise."
        + _TLS_ONLY_IF_ENABLED,
        permitted_states=ONLY_CREATED,
        see_also=("get_tls_verify_peer", "set_tls"),
    ),
    Call(
        "get_tls_verify_peer", [], RBool, (1, 0),
        "report whether the server's identity is checked",
        "Returns the flag set by nbd_set_tls_verify_peer.",
        may_set_error=False,
        see_also=("set_tls_verify_peer",),
    ),
    Call(
        "set_tls_username", [String("username")], RErr, (1, 0),
        "set the username for TLS-PSK",
        "Sets the username presented when authenticating with a pre-shared key; "
        "without it the local user's login name is used." + _TLS_ONLY_IF_ENABLED,
        permitted_states=ONLY_CREATED,
        see_also=("get_tls_username", "set_tls_psk_file", "set_tls_hostname",
                  "set_tls"),
    ),
    Call(
        "get_tls_username", [], RString, (1, 0),
        "return the TLS-PSK username",
        "Returns a copy (to be freed by the caller) of the username used for PSK "
        "authentication.",
        see_also=("set_tls_username",),
    ),
    Call(
        "set_tls_hostname", [String("hostname")], RErr, (1, 22),
        "override the hostname checked against the server certificate",
        "Sets the server name used for TLS verification instead of the one given "
        "when connecting, or when the transport has none (a Unix socket, say). This "
        "helps when talking through a proxy to a server whose certificate carries "
        "another name." + _TLS_ONLY_IF_ENABLED,
        permitted_states=ONLY_CREATED,
        see_also=("get_tls_hostname", "set_tls_username", "set_tls"),
    ),
    Call(
        "get_tls_hostname", [], RString, (1, 22),
        "return the TLS hostname override",
        "Returns a copy (to be freed by the caller) of the hostname set with "
        "nbd_set_tls_hostname; when none was set the result is an empty string, "
        "not an error.",
        see_also=("set_tls_hostname",),
    ),
    Call(
        "set_tls_psk_file", [Path("filename")], RErr, (1, 0),
        "set the file of TLS pre-shared keys",
        "Names the file holding pre-shared keys for TLS-PSK authentication. There is "
        "no default, so PSK authentication is impossible until this is set."
        + _TLS_ONLY_IF_ENABLED,
        permitted_states=ONLY_CREATED,
        see_also=("set_tls", "set_tls_username"),
    ),
    Call(
        "set_tls_priority", [String("priority")], RErr, (1, 24),
        "choose the GnuTLS priority string",
        "Replaces the GnuTLS priority string used when TLS is negotiated, which "
        "decides the protocol versions, ciphers, key exchanges and MACs offered and "
        "their order (see \"Priority strings\" in the GnuTLS manual). Without it the "
        "build's default is used: \"NORMAL\" unless the CMake cache variable "
        "DUPLEXNBD_TLS_PRIORITY chose another. The string is not checked here; a "
        "string GnuTLS rejects makes the TLS handshake fail. Leave it alone unless "
        "you have a reason: a priority string can weaken the connection's security, "
        "and one starting with @ makes GnuTLS read a local configuration file, so it "
        "should not come from an untrusted source." + _TLS_ONLY_IF_ENABLED,
        permitted_states=ONLY_CREATED,
        see_also=("get_tls_priority", "set_tls", "set_uri_allow_tls_priority"),
    ),
    Call(
        "get_tls_priority", [], RString, (1, 24),
        "return the GnuTLS priority string",
        "Returns a copy, which the caller must free, of the priority string set with "
        "nbd_set_tls_priority, or of the build's default (\"NORMAL\" unless changed "
        "at build time) when none was set.",
        see_also=("set_tls_priority",),
    ),
    # --- protocol extensions requested automatically ---------------------------
    Call(
        "set_request_extended_headers", [Bool("request")], RErr, (1, 18),
        "choose whether extended headers are negotiated",
        "Controls whether connecting automatically asks for NBD extended headers, "
        "which allow 64-bit lengths for zero, trim, cache and block status (default "
        "true). Turning it off is mainly for testing servers. The setting has no "
        "effect when nbd_set_request_structured_replies is false, since extended "
        "headers imply structured replies.",
        permitted_states=ONLY_CREATED,
        see_also=("get_request_extended_headers", "opt_extended_headers",
                  "get_extended_headers_negotiated", "set_request_structured_replies",
                  "set_handshake_flags", "set_strict_mode", "block_status_64"),
    ),
    Call(
        "get_request_extended_headers", [], RBool, (1, 18),
        "report whether extended headers are requested",
        "Returns the flag set by nbd_set_request_extended_headers; whether they "
        "were actually agreed is told by nbd_get_extended_headers_negotiated.",
        may_set_error=False,
        see_also=("set_request_extended_headers", "get_extended_headers_negotiated"),
    ),
    Call(
        "set_request_structured_replies", [Bool("request")], RErr, (1, 2),
        "choose whether structured replies are negotiated",
        "Controls whether connecting automatically asks for structured replies "
        "(default true); they are needed before meta contexts or the DF flag can be "
        "used. Clearing it is useful for testing servers, or together with option "
        "mode to send nbd_opt_structured_reply by hand. Clearing it also stops the "
        "automatic request for extended headers.",
        permitted_states=ONLY_CREATED,
        see_also=("get_request_structured_replies", "opt_structured_reply",
                  "get_structured_replies_negotiated", "set_request_extended_headers",
                  "set_handshake_flags", "set_strict_mode", "can_meta_context", "can_df"),
    ),
    Call(
        "get_request_structured_replies", [], RBool, (1, 2),
        "report whether structured replies are requested",
        "Returns the flag set by nbd_set_request_structured_replies; whether they "
        "were actually agreed is told by nbd_get_structured_replies_negotiated.",
        may_set_error=False,
        see_also=("set_request_structured_replies", "get_structured_replies_negotiated",
                  "get_request_extended_headers"),
    ),
    Call(
        "set_request_meta_context", [Bool("request")], RErr, (1, 16),
        "choose whether connecting also selects meta contexts",
        "When true (the default), finishing a connection (the connect calls outside "
        "option mode, or nbd_opt_go and nbd_opt_info inside it) also sends "
        "NBD_OPT_SET_META_CONTEXT for the contexts added with nbd_add_meta_context, "
        "provided structured replies or extended headers are in use. Turning it off "
        "allows manual control with nbd_opt_set_meta_context, but block status may "
        "then fail.",
        permitted_states=CREATED_OR_NEGOTIATING,
        see_also=("get_request_meta_context", "add_meta_context",
                  "opt_set_meta_context", "opt_list_meta_context", "set_opt_mode",
                  "opt_go", "opt_info", "can_meta_context"),
    ),
    Call(
        "get_request_meta_context", [], RBool, (1, 16),
        "report whether connecting also selects meta contexts",
        "Returns the flag set by nbd_set_request_meta_context.",
        see_also=("set_request_meta_context",),
    ),
    # --- handshake and strictness ----------------------------------------------
    Call(
        "set_handshake_flags", [FlagsArg("flags", flags=HANDSHAKE_FLAG)], RErr, (1, 2),
        "limit the handshake flags the client offers",
        "Sets which LIBNBD_HANDSHAKE_FLAG_* bits the client is willing to use "
        "(FIXED_NEWSTYLE, needed for TLS and other extensions; NO_ZEROES, which "
        "trims padding when NBD_OPT_EXPORT_NAME is used). By default all are "
        "offered; reducing them is for testing servers against old clients. Unknown "
        "bits fail with EINVAL; to drop a single flag, modify the value from "
        "nbd_get_handshake_flags.",
        permitted_states=ONLY_CREATED,
        see_also=("get_handshake_flags", "set_request_structured_replies"),
    ),
    Call(
        "get_handshake_flags", [], RFlags, (1, 2),
        "return the handshake flags",
        "Before connecting, returns the flags the client will offer; once the "
        "connection is up, returns the flags both sides agreed on. A newer library "
        "may report bits unknown when the caller was compiled.",
        may_set_error=False,
        see_also=("set_handshake_flags", "get_protocol", "set_strict_mode",
                  "aio_is_created", "aio_is_ready"),
    ),
    Call(
        "set_pread_initialize", [Bool("request")], RErr, (1, 12),
        "choose whether read buffers are zeroed where the server wrote nothing",
        "By default no read call leaves the caller's buffer holding what it held "
        "before: a read refused before it is sent zeroes the whole buffer, and an issued "
        "read zeroes whatever the server did not write by the time it completes, before "
        "its completion callback runs (or when nbd_close abandons it). So an application "
        "that ignores a read error cannot leak old memory contents (compare "
        "CVE-2022-0485). libnbd zeroes the whole buffer when the call starts; what a "
        "caller may look at, a completed or failed read's buffer, is the same. Passing "
        "false skips the zeroing for callers that never use a buffer after a failed read.",
        see_also=("get_pread_initialize", "set_strict_mode", "pread",
                  "pread_structured", "aio_pread", "aio_pread_structured"),
    ),
    Call(
        "get_pread_initialize", [], RBool, (1, 12),
        "report whether read buffers are zeroed where the server wrote nothing",
        "Returns the flag set by nbd_set_pread_initialize.",
        may_set_error=False,
        see_also=("set_pread_initialize", "pread", "aio_pread"),
    ),
    Call(
        "set_strict_mode", [FlagsArg("flags", flags=STRICT)], RErr, (1, 6),
        "choose which client-side sanity checks are enforced",
        "Each LIBNBD_STRICT_* bit enables a client-side check that rejects a request "
        "before it reaches the server: COMMANDS (commands or flags the server did not "
        "advertise), FLAGS (command flags unknown or unrelated to the command), "
        "BOUNDS (beyond the export size), ZERO_SIZE (zero length), ALIGN (an offset "
        "or length that is not a multiple of the advertised minimum block size; a "
        "ragged length is still allowed for a request that ends exactly at the end "
        "of an image whose size is itself not such a multiple), PAYLOAD (writes over the payload limit) "
        "and AUTO_FLAG (libnbd manages CMD_FLAG_PAYLOAD_LEN itself). Clearing bits is "
        "for stress-testing servers; bits outside LIBNBD_STRICT_MASK fail with "
        "EINVAL, and command flags beyond 16 bits are always refused.",
        see_also=("get_strict_mode", "set_handshake_flags", "stats_bytes_sent",
                  "stats_bytes_received"),
    ),
    Call(
        "get_strict_mode", [], RFlags, (1, 6),
        "return the enabled client-side checks",
        "Returns the LIBNBD_STRICT_* bits currently enforced. A newer library may "
        "report bits unknown when the caller was compiled.",
        may_set_error=False,
        see_also=("set_strict_mode",),
    ),
    Call(
        "set_opt_mode", [Bool("enable")], RErr, (1, 4),
        "choose whether connecting stops for manual option negotiation",
        "When enabled, connecting to a newstyle server stops in the negotiating "
        "state instead of going straight to transmission, so the nbd_opt_* calls "
        "can be used; nbd_opt_go proceeds (a failed attempt stays negotiating), and "
        "nbd_opt_abort or nbd_shutdown give up. STARTTLS, extended headers and "
        "structured replies are still requested automatically first unless disabled "
        "beforehand. Oldstyle servers are unaffected.",
        permitted_states=ONLY_CREATED,
        see_also=("get_opt_mode", "aio_is_negotiating", "opt_go", "opt_abort",
                  "opt_list", "opt_info", "opt_starttls", "opt_structured_reply",
                  "set_tls", "set_request_structured_replies", "shutdown"),
    ),
    Call(
        "get_opt_mode", [], RBool, (1, 4),
        "report whether option mode is enabled",
        "Returns the flag set by nbd_set_opt_mode.",
        may_set_error=False,
        see_also=("set_opt_mode",),
    ),
    # --- the list of meta contexts to request ---------------------------------
    Call(
        "add_meta_context", [String("name")], RErr, (1, 0),
        "add a metadata context to request",
        "Appends a context name (e.g. LIBNBD_CONTEXT_BASE_ALLOCATION, or a server "
        "specific one such as \"qemu:dirty-bitmap:NAME\") to the list negotiated "
        "when connecting; block status then reports on the agreed contexts. The list "
        "starts empty; names are UTF-8 and at most 4096 bytes. Use "
        "nbd_can_meta_context after connecting to see what the server accepted.",
        permitted_states=CREATED_OR_NEGOTIATING,
        see_also=("get_nr_meta_contexts", "get_meta_context", "clear_meta_contexts",
                  "can_meta_context", "block_status_64"),
    ),
    Call(
        "clear_meta_contexts", [], RErr, (1, 6),
        "empty the list of metadata contexts to request",
        "Removes every name added with nbd_add_meta_context. This is chiefly useful "
        "in option mode, to query or select a different set of contexts between "
        "negotiation steps.",
        permitted_states=CREATED_OR_NEGOTIATING,
        see_also=("add_meta_context", "get_nr_meta_contexts", "get_meta_context",
                  "set_opt_mode"),
    ),
    # --- limits on what a URI may do ------------------------------------------
    Call(
        "set_uri_allow_transports", [FlagsArg("mask", flags=ALLOW_TRANSPORT)], RErr,
        (1, 2),
        "restrict the transports NBD URIs may use",
        "Sets the LIBNBD_ALLOW_TRANSPORT_* bits (TCP, UNIX, VSOCK, SSH) that a URI "
        "passed to nbd_connect_uri may select; all are allowed by default. Unknown "
        "bits fail with EINVAL.",
        permitted_states=ONLY_CREATED,
        see_also=("connect_uri", "set_uri_allow_tls", "set_uri_allow_local_file"),
    ),
    Call(
        "set_uri_allow_tls", [EnumArg("tls", enum=TLS)], RErr, (1, 2),
        "restrict whether NBD URIs may or must use TLS",
        "LIBNBD_TLS_DISABLE refuses nbds:// style URIs, LIBNBD_TLS_REQUIRE accepts "
        "only them, and LIBNBD_TLS_ALLOW (the default) accepts both.",
        permitted_states=ONLY_CREATED,
        see_also=("connect_uri", "set_uri_allow_transports"),
    ),
    Call(
        "set_uri_allow_tls_priority", [Bool("allow")], RErr, (1, 24),
        "allow NBD URIs to set the TLS priority string",
        "Decides whether nbd_connect_uri accepts a tls-priority=PRIORITY query "
        "parameter, which overrides the TLS priority string for that connection. It "
        "is refused by default, because a priority string can weaken the "
        "connection's security and can make GnuTLS read local configuration files, "
        "which a URI from an untrusted source should not be able to do.",
        permitted_states=ONLY_CREATED,
        see_also=("connect_uri", "set_tls_priority", "set_uri_allow_tls",
                  "set_uri_allow_local_file"),
    ),
    Call(
        "set_uri_allow_local_file", [Bool("allow")], RErr, (1, 2),
        "allow NBD URIs to refer to local files",
        "Permits URIs to name files on the local machine, which is off by default. "
        "At present this only governs the tls-psk-file query parameter.",
        permitted_states=ONLY_CREATED,
        see_also=("connect_uri", "set_uri_allow_transports"),
    ),
    # --- socket activation ------------------------------------------------------
    Call(
        "set_socket_activation_name", [String("socket_name")], RErr, (1, 16),
        "name the socket passed by systemd socket activation",
        "Sets the name handed to the server through LISTEN_FDNAMES by "
        "nbd_connect_systemd_socket_activation; a short alphanumeric string is "
        "expected. Most servers ignore it; an empty string (the default) makes the "
        "server see \"unknown\".",
        permitted_states=ONLY_CREATED,
        see_also=("get_socket_activation_name", "connect_systemd_socket_activation"),
    ),
    Call(
        "get_socket_activation_name", [], RString, (1, 16),
        "return the socket activation name",
        "Returns a copy (to be freed by the caller) of the name set with "
        "nbd_set_socket_activation_name, an empty string by default.",
        see_also=("set_socket_activation_name", "connect_systemd_socket_activation"),
    ),
]
