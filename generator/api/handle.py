# SPDX-License-Identifier: LGPL-2.1-or-later
"""Handle lifetime, error retrieval, debugging, naming, private data and build facts."""

from __future__ import annotations

from model import (RBool, RErr, RSizeT, RStaticString, RString, RUIntPtr, RVoid, Bool, Call,
                   Ret, String, UIntPtr)

from ._common import cb
from .constants import DEBUG

# Return kinds only the handle-less calls use.
RHandle = Ret("struct nbd_handle *", "NULL")   # nbd_create
RErrno = Ret("int", None)                      # nbd_get_errno: cannot fail

CALLS: list[Call] = [
    Call(
        "create", [], RHandle, (1, 0),
        "allocate a new NBD handle",
        "Allocates a handle in the created state, with default settings and no "
        "connection. On failure it returns NULL and the reason is available through "
        "nbd_get_error and nbd_get_errno. The handle must eventually be released with "
        "nbd_close.",
        handle=False,
        see_also=("close", "get_error", "get_errno"),
    ),
    Call(
        "close", [], RVoid, (1, 0),
        "close the connection and free the handle",
        "Releases the handle and everything it owns; the connection is dropped "
        "without a graceful disconnect (use nbd_shutdown first for that) and the "
        "outcome of commands not yet retired is lost. It may block while waiting for "
        "a server subprocess started by e.g. nbd_connect_command to exit. NULL is "
        "accepted and ignored; no other thread may be using the handle.",
        may_set_error=False,
        # handle=True, but this is the one call where the handle may be NULL.
        see_also=("create", "shutdown"),
    ),
    Call(
        "get_error", [], RStaticString, (1, 0),
        "return the message of the last error in this thread",
        "Returns a human-readable description of the most recent error raised by a "
        "libnbd call in the calling thread; right after a failed call it is never "
        "NULL. The string belongs to the library and is only valid until the next "
        "libnbd call in the same thread, so copy it to keep it.",
        may_set_error=False, handle=False,
        see_also=("get_errno",),
    ),
    Call(
        "get_errno", [], RErrno, (1, 0),
        "return the errno of the last error in this thread",
        "Returns the errno value recorded with the most recent error in the calling "
        "thread, or 0 if there is none or the failure had no meaningful errno. It "
        "does not read the C library's errno variable.",
        may_set_error=False, handle=False,
        see_also=("get_error",),
    ),
    Call(
        "set_debug", [Bool("debug")], RErr, (1, 0),
        "turn debug messages on or off",
        "Enables or disables debug output for the handle. Messages go to stderr, or "
        "to the callback installed with nbd_set_debug_callback. New handles start "
        "with debugging off unless LIBNBD_DEBUG=1 is in the environment.",
        see_also=("get_debug", "set_debug_callback", "set_handle_name"),
    ),
    Call(
        "get_debug", [], RBool, (1, 0),
        "report whether debug messages are on",
        "Returns the handle's current debug flag.",
        may_set_error=False,
        see_also=("set_debug",),
    ),
    Call(
        "set_debug_callback", [cb(DEBUG)], RErr, (1, 0),
        "route debug messages to a function",
        "Installs a callback that receives every debug message of the handle, with "
        "the name of the emitting libnbd function as `context` and the text as "
        "`msg`; without one, messages are written to stderr. Messages are produced "
        "only while debugging is enabled. The callback may run with the handle lock "
        "held, so it must not call nbd_* functions on the same handle.",
        see_also=("clear_debug_callback", "set_debug"),
    ),
    Call(
        "clear_debug_callback", [], RErr, (1, 0),
        "remove the debug callback",
        "Drops any debug callback installed earlier (its free function runs), so "
        "debug messages go back to stderr. Doing this when no callback is installed "
        "is harmless.",
        see_also=("set_debug_callback",),
    ),
    Call(
        "set_handle_name", [String("handle_name")], RErr, (1, 0),
        "give the handle a name for debug output",
        "Replaces the name that prefixes this handle's debug messages. By default "
        "each handle gets a generated name such as \"nbd1\", \"nbd2\" and so on; a "
        "custom name can make logs of applications with several handles easier to "
        "follow.",
        see_also=("get_handle_name", "set_debug"),
    ),
    Call(
        "get_handle_name", [], RString, (1, 0),
        "return the handle's name",
        "Returns a copy of the handle's name (the one set with nbd_set_handle_name, "
        "or the generated default like \"nbd1\"), which the caller must free.",
        see_also=("set_handle_name",),
    ),
    Call(
        "set_private_data", [UIntPtr("private_data")], RUIntPtr, (1, 8),
        "store an application value in the handle",
        "Stores an arbitrary uintptr_t (an integer or a pointer) in the handle for "
        "the application's own use, returning the value it replaces (0 if none was "
        "set). libnbd never interprets it.",
        may_set_error=False,
        see_also=("get_private_data",),
    ),
    Call(
        "get_private_data", [], RUIntPtr, (1, 8),
        "fetch the application value stored in the handle",
        "Returns the value last stored with nbd_set_private_data, or 0 if nothing "
        "was stored.",
        may_set_error=False,
        see_also=("set_private_data",),
    ),
    Call(
        "get_handle_size", [], RSizeT, (1, 24),
        "estimate the memory the handle occupies",
        "Returns roughly how many bytes of memory the handle holds at the moment: the "
        "handle itself, the strings and lists stored in its settings, and, once a "
        "connect call has been made, the connection with its receive buffer, queued "
        "requests and the commands that have not been retired yet. Memory that belongs "
        "to the caller (read and write buffers) is not counted. The figure changes as "
        "the handle is used; it is meant for garbage-collected language bindings, "
        "which can weigh it when deciding how soon to close an unreachable handle. It "
        "may be called in any state.",
        see_also=("create", "close"),
    ),
    Call(
        "get_package_name", [], RStaticString, (1, 0),
        "return the library's package name",
        "Returns a static string naming the library package; it is \"libnbd\" "
        "unless the build changed it.",
        may_set_error=False,
        see_also=("get_version", "get_version_extra"),
    ),
    Call(
        "get_version", [], RStaticString, (1, 0),
        "return the library's version string",
        "Returns a static string \"major.minor.release\". Major is 1 for the stable "
        "API; an even minor number denotes a stable series and an odd one a "
        "development series whose new calls may still change; release counts "
        "updates within a series.",
        may_set_error=False,
        see_also=("get_package_name", "get_version_extra"),
    ),
    Call(
        "get_version_extra", [], RStaticString, (1, 24),
        "return extra version information chosen at build time",
        "Returns a static string, never freed by the caller, that whoever built the "
        "library may set to identify the build more precisely than nbd_get_version "
        "does (a distribution's package revision, for instance). It is the empty "
        "string unless the build set it; with this library the CMake cache variable "
        "DUPLEXNBD_VERSION_EXTRA sets it.",
        may_set_error=False,
        see_also=("get_version", "get_package_name"),
    ),
    Call(
        "supports_tls", [], RBool, (1, 0),
        "report whether TLS support was built in",
        "Returns true if this build of the library can use TLS (it was compiled "
        "against GnuTLS), false otherwise.",
        may_set_error=False,
        see_also=("set_tls",),
    ),
    Call(
        "supports_vsock", [], RBool, (1, 16),
        "report whether AF_VSOCK support was built in",
        "Returns true if this build can create AF_VSOCK sockets, false otherwise. "
        "Compile-time support does not guarantee that every vsock feature works at "
        "run time; on Linux, for instance, connecting to the local CID needs the "
        "vsock_loopback kernel module.",
        may_set_error=False,
        see_also=("connect_vsock", "connect_uri"),
    ),
    Call(
        "supports_uri", [], RBool, (1, 0),
        "report whether NBD URI support was built in",
        "Returns true if this build can parse NBD URIs (it was compiled against "
        "libxml2), false otherwise.",
        may_set_error=False,
        see_also=("connect_uri", "aio_connect_uri", "get_uri", "is_uri"),
    ),
]
