# SPDX-License-Identifier: LGPL-2.1-or-later
"""Connecting (blocking and aio), NBD URIs, and the server subprocess."""

from __future__ import annotations

from model import (RBool, RErr, RInt64, RString, Call, Fd, Int, Path, SockAddrAndLen,
                   String, StringList, UInt32)

from ._common import NOT_CREATED, ONLY_CREATED

_SYNC_TAIL = (
    " It blocks until the connection reaches transmission phase, or, with "
    "nbd_set_opt_mode enabled, until it is ready for option negotiation.")

_AIO_TAIL = (
    " It only starts the work: nbd_aio_is_connecting stays true while it is in "
    "progress, after which nbd_aio_is_negotiating (option mode) or "
    "nbd_aio_is_ready becomes true.")

CALLS: list[Call] = [
    # --- blocking connects -------------------------------------------------------
    Call(
        "connect_uri", [String("uri")], RErr, (1, 0),
        "connect to the server named by an NBD URI",
        "Parses an NBD URI (nbd:, nbds:, nbd+unix:, nbds+unix:, nbd+vsock:, "
        "nbds+vsock:, nbd+ssh:, nbds+ssh:), applies the export name, TLS and other "
        "settings it carries (query parameters such as socket=, tls-certificates=, "
        "tls-psk-file=, tls-hostname=, tls-verify-peer=, and libnbd 1.24's "
        "nbd-port=, tls-username=, tls-priority=, compress=), and connects over the "
        "chosen transport. What a URI may do is limited by nbd_set_uri_allow_*; "
        "tls-priority= is refused with EPERM unless nbd_set_uri_allow_tls_priority "
        "allowed it. nbd-port= overrides the port (vsock: any 32-bit port) and "
        "tls-username= the user of the authority. It "
        "fails if URI support (libxml2) is not built in, or if a TLS URI is used "
        "without TLS support. An nbd+ssh: URI runs ssh(1) locally (the authority's "
        "user is ssh's login, -l, and must be a plain user name; compress=true adds "
        "-C), which runs "
        "`nc -U SOCKET` (or `nc localhost PORT`, PORT being nbd-port= or 10809, "
        "without socket=) on the remote "
        "host through the remote user's shell; the socket path is quoted for that "
        "shell, and one holding control characters (newline included) or starting "
        "with '-' is refused with EINVAL, as is a host starting with '-' and an "
        "nbd-port= that is not a number from 1 to 65535."
        + _SYNC_TAIL,
        permitted_states=ONLY_CREATED,
        see_also=("aio_connect_uri", "set_export_name", "set_tls", "set_opt_mode",
                  "get_uri", "is_uri", "supports_uri", "supports_vsock",
                  "set_uri_allow_transports", "set_uri_allow_tls",
                  "set_uri_allow_local_file", "set_uri_allow_tls_priority"),
    ),
    Call(
        "connect_unix", [Path("unixsocket")], RErr, (1, 0),
        "connect to a server on a Unix domain socket",
        "Connects to an NBD server listening on the local Unix domain socket at the "
        "given path." + _SYNC_TAIL,
        permitted_states=ONLY_CREATED,
        see_also=("aio_connect_unix", "set_opt_mode"),
    ),
    Call(
        "connect_vsock", [UInt32("cid"), UInt32("port")], RErr, (1, 2),
        "connect to a server over AF_VSOCK",
        "Connects from a virtual machine to an NBD server at AF_VSOCK address "
        "cid:port; cid 2 normally means the host. Whether vsock is available can be "
        "checked with nbd_supports_vsock." + _SYNC_TAIL,
        permitted_states=ONLY_CREATED,
        see_also=("aio_connect_vsock", "supports_vsock", "set_opt_mode"),
    ),
    Call(
        "connect_tcp", [String("hostname"), String("port")], RErr, (1, 0),
        "connect to a server over TCP",
        "Resolves hostname and port (a service name like \"nbd\" or a number as a "
        "string like \"10809\") and connects to the first address that answers."
        + _SYNC_TAIL,
        permitted_states=ONLY_CREATED,
        see_also=("aio_connect_tcp", "set_opt_mode"),
    ),
    Call(
        "connect_socket", [Fd("sock")], RErr, (1, 2),
        "talk to the server over an already connected socket",
        "Uses a socket the caller has already connected to the server. On success "
        "the handle owns the descriptor and closes it with the handle; the caller "
        "must not touch it any more." + _SYNC_TAIL,
        permitted_states=ONLY_CREATED,
        see_also=("aio_connect_socket", "connect_command", "set_opt_mode"),
    ),
    Call(
        "connect_command", [StringList("argv")], RErr, (1, 0),
        "run a server as a subprocess and talk to it over stdin/stdout",
        "Forks and executes argv (a NULL-terminated list) with one end of a socket "
        "pair as its standard input and output, suitable for servers such as "
        "`nbdkit -s` or nbd-server with port 0. For qemu-nbd use "
        "nbd_connect_systemd_socket_activation instead. The subprocess is killed "
        "when the handle is closed." + _SYNC_TAIL,
        permitted_states=ONLY_CREATED,
        see_also=("aio_connect_command", "connect_systemd_socket_activation",
                  "kill_subprocess", "get_subprocess_pid", "set_opt_mode"),
    ),
    Call(
        "connect_systemd_socket_activation", [StringList("argv")], RErr, (1, 2),
        "run a server as a subprocess using systemd socket activation",
        "Forks and executes argv, passing it a listening socket through the systemd "
        "LISTEN_* environment variables (LISTEN_FDNAMES carries the name from "
        "nbd_set_socket_activation_name), then connects to it. This suits qemu-nbd "
        "and nbdkit but not nbd-server. The subprocess is killed when the handle is "
        "closed." + _SYNC_TAIL,
        permitted_states=ONLY_CREATED,
        see_also=("aio_connect_systemd_socket_activation", "connect_command",
                  "kill_subprocess", "get_subprocess_pid", "set_opt_mode",
                  "set_socket_activation_name", "get_socket_activation_name"),
    ),
    # --- asynchronous connects -------------------------------------------------------
    Call(
        "aio_connect", [SockAddrAndLen("addr", len="addrlen")], RErr, (1, 0),
        "start connecting to a socket address",
        "Begins a non-blocking connection to the server at the given socket "
        "address." + _AIO_TAIL,
        permitted_states=ONLY_CREATED,
        see_also=("set_opt_mode", "aio_is_connecting"),
    ),
    Call(
        "aio_connect_uri", [String("uri")], RErr, (1, 0),
        "start connecting to an NBD URI",
        "Begins connecting to the server named by the URI, interpreted as for "
        "nbd_connect_uri." + _AIO_TAIL,
        permitted_states=ONLY_CREATED,
        see_also=("connect_uri", "set_opt_mode"),
    ),
    Call(
        "aio_connect_unix", [Path("unixsocket")], RErr, (1, 0),
        "start connecting to a Unix domain socket",
        "Begins connecting to the server on the given Unix domain socket, as "
        "nbd_connect_unix does." + _AIO_TAIL,
        permitted_states=ONLY_CREATED,
        see_also=("connect_unix", "set_opt_mode"),
    ),
    Call(
        "aio_connect_vsock", [UInt32("cid"), UInt32("port")], RErr, (1, 2),
        "start connecting over AF_VSOCK",
        "Begins connecting to the AF_VSOCK address cid:port, as nbd_connect_vsock "
        "does." + _AIO_TAIL,
        permitted_states=ONLY_CREATED,
        see_also=("connect_vsock", "set_opt_mode"),
    ),
    Call(
        "aio_connect_tcp", [String("hostname"), String("port")], RErr, (1, 0),
        "start connecting over TCP",
        "Begins connecting to hostname:port, as nbd_connect_tcp does." + _AIO_TAIL,
        permitted_states=ONLY_CREATED,
        see_also=("connect_tcp", "set_opt_mode"),
    ),
    Call(
        "aio_connect_socket", [Fd("sock")], RErr, (1, 2),
        "start talking over an already connected socket",
        "Begins the NBD handshake over a socket the caller has connected, which the "
        "handle then owns, as with nbd_connect_socket." + _AIO_TAIL,
        permitted_states=ONLY_CREATED,
        see_also=("connect_socket", "set_opt_mode"),
    ),
    Call(
        "aio_connect_command", [StringList("argv")], RErr, (1, 0),
        "start a server subprocess and begin talking to it",
        "Runs argv as a subprocess connected through stdin/stdout, as "
        "nbd_connect_command does, and begins the handshake." + _AIO_TAIL,
        permitted_states=ONLY_CREATED,
        see_also=("connect_command", "set_opt_mode"),
    ),
    Call(
        "aio_connect_systemd_socket_activation", [StringList("argv")], RErr, (1, 2),
        "start a socket-activated server subprocess and begin talking to it",
        "Runs argv with systemd socket activation, as "
        "nbd_connect_systemd_socket_activation does, and begins the handshake."
        + _AIO_TAIL,
        permitted_states=ONLY_CREATED,
        see_also=("connect_systemd_socket_activation", "set_opt_mode"),
    ),
    # --- URIs ---------------------------------------------------------------------
    Call(
        "is_uri", [String("uri")], RBool, (1, 22),
        "guess whether a string is an NBD URI",
        "Returns true if the string looks like an NBD URI and false otherwise, so "
        "programs can accept either a URI or, say, a file name. The test is a "
        "heuristic and does not promise that nbd_connect_uri will succeed.",
        see_also=("connect_uri", "aio_connect_uri", "supports_uri", "get_uri"),
    ),
    Call(
        "get_uri", [], RString, (1, 8),
        "build an NBD URI describing the current connection",
        "Makes a best effort to produce a URI (freed by the caller) that "
        "nbd_connect_uri could use to reach the same server and export. When the "
        "handle lacks the information, for example after nbd_connect_socket, it "
        "fails and returns NULL; a returned URI is not guaranteed to work.",
        permitted_states=NOT_CREATED,
        see_also=("connect_uri", "aio_connect_uri", "supports_uri", "is_uri"),
    ),
    # --- the server subprocess --------------------------------------------------
    Call(
        "kill_subprocess", [Int("signum")], RErr, (1, 0),
        "send a signal to the server subprocess",
        "Signals the server started by nbd_connect_command or socket activation; a "
        "signum of 0 means SIGTERM. It is rarely needed, only for servers that do "
        "not exit once their socket closes. It fails if there is no subprocess.",
        see_also=("connect_command", "get_subprocess_pid"),
    ),
    Call(
        "get_subprocess_pid", [], RInt64, (1, 22),
        "return the process ID of the server subprocess",
        "Returns the PID of the server process started by nbd_connect_command or "
        "socket activation, e.g. to attach a debugger to it. It fails when there is "
        "no subprocess or the platform cannot tell.",
        see_also=("connect_command", "kill_subprocess"),
    ),
]
