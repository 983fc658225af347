# SPDX-License-Identifier: LGPL-2.1-or-later
"""Driving the state machine from an event loop: fd, direction, notify, state tests, polling."""

from __future__ import annotations

from model import (RBool, RErr, RFd, RInt, RInt64, RStaticString, RUInt, Call, Fd, Int,
                   UInt64)

from ._common import CONNECTED_OR_FINISHED

_LOCKLESS_TEST = " It never fails and does not block."


def _state_test(name: str, version, summary: str, what: str,
                see_also: tuple[str, ...] = ()) -> Call:
    return Call(name, [], RBool, version, summary, what + _LOCKLESS_TEST,
                may_set_error=False, see_also=see_also)


CALLS: list[Call] = [
    Call(
        "poll", [Int("timeout")], RInt, (1, 0),
        "wait for and process one round of socket activity",
        "A simple poll(2)-based step of the kind the blocking calls use internally: "
        "it waits up to timeout milliseconds (-1 means forever) for the direction "
        "nbd_aio_get_direction wants, then notifies the state machine. It returns 1 "
        "if progress was made and 0 on timeout. An infinite timeout with nothing in "
        "flight can block for ever. It mainly illustrates how to integrate libnbd "
        "with a main loop.",
        see_also=("poll2", "aio_get_fd", "aio_get_direction"),
    ),
    Call(
        "poll2", [Fd("fd"), Int("timeout")], RInt, (1, 16),
        "like nbd_poll, also waking up when another descriptor is readable",
        "Behaves as nbd_poll, but additionally polls fd for POLLIN, so that e.g. an "
        "eventfd(2) can interrupt the wait.",
        see_also=("poll",),
    ),
    Call(
        "aio_get_fd", [], RFd, (1, 0),
        "return the connection's file descriptor",
        "Returns the descriptor of the connection to the server so a main loop can "
        "wait for it (in the direction given by nbd_aio_get_direction) and then call "
        "nbd_aio_notify_read or nbd_aio_notify_write. Use it for nothing else. It "
        "fails while there is no connection.",
        see_also=("aio_get_direction", "aio_notify_read", "aio_notify_write"),
    ),
    Call(
        "aio_get_direction", [], RUInt, (1, 0),
        "return which socket events the handle waits for",
        "Returns 0 when the current state needs no socket activity (progress must "
        "come from another call, such as nbd_aio_connect), "
        "LIBNBD_AIO_DIRECTION_READ (poll for POLLIN; notify read on POLLIN or "
        "POLLHUP), LIBNBD_AIO_DIRECTION_WRITE (POLLOUT) or LIBNBD_AIO_DIRECTION_BOTH; "
        "when both events fire, notify read first. Once ready, READ is returned "
        "even with nothing in flight, so a poller thread needs a way to be woken "
        "when another thread issues a command." + _LOCKLESS_TEST,
        may_set_error=False,
        see_also=("aio_get_fd", "aio_notify_read", "aio_notify_write", "aio_in_flight"),
    ),
    Call(
        "aio_notify_read", [], RErr, (1, 0),
        "tell the handle its socket is readable",
        "Lets the state machine consume what the server sent; call it when the "
        "descriptor from nbd_aio_get_fd is reported readable.",
        see_also=("aio_get_fd", "aio_get_direction", "aio_notify_write"),
    ),
    Call(
        "aio_notify_write", [], RErr, (1, 0),
        "tell the handle its socket is writable",
        "Lets the state machine send pending data; call it when the descriptor from "
        "nbd_aio_get_fd is reported writable.",
        see_also=("aio_get_fd", "aio_get_direction", "aio_notify_read"),
    ),
    _state_test(
        "aio_is_created", (1, 0),
        "report whether the handle has not started connecting",
        "Returns true while the handle is freshly created, before any connect call "
        "such as nbd_aio_connect has been made."),
    _state_test(
        "aio_is_connecting", (1, 0),
        "report whether connecting or handshaking is in progress",
        "Returns true while the connection is being set up or the handshake (option "
        "exchange) is running, i.e. before the handle is ready for commands.",
        see_also=("aio_is_ready", "aio_is_negotiating")),
    _state_test(
        "aio_is_negotiating", (1, 4),
        "report whether the handle awaits the next negotiation option",
        "Returns true when option mode (nbd_set_opt_mode) has paused the handshake "
        "so the next nbd_opt_* request can be issued; sending one moves back to "
        "connecting. Oldstyle servers never reach this state.",
        see_also=("aio_is_connecting", "aio_is_ready", "set_opt_mode")),
    _state_test(
        "aio_is_ready", (1, 0),
        "report whether the handle is idle in transmission phase",
        "Returns true when the handshake is complete and the handle is not in the "
        "middle of sending a request or reading a reply, so commands can be issued "
        "(earlier ones may still be in flight at the server).",
        see_also=("aio_is_processing", "aio_in_flight")),
    _state_test(
        "aio_is_processing", (1, 0),
        "report whether the handle is busy sending or receiving",
        "Returns true when the handshake is complete and the handle is part way "
        "through writing a request or reading a reply. The ready state is not "
        "included.",
        see_also=("aio_is_ready",)),
    _state_test(
        "aio_is_dead", (1, 0),
        "report whether the connection failed fatally",
        "Returns true after a fatal error; a dead handle cannot recover and can "
        "only be closed."),
    _state_test(
        "aio_is_closed", (1, 0),
        "report whether the connection has been closed",
        "Returns true once the connection has shut down. A closed handle cannot be "
        "reconnected; close it and create a new one.",
        see_also=("aio_disconnect", "shutdown")),
    Call(
        "aio_command_completed", [UInt64("cookie")], RBool, (1, 0),
        "check and retire a command by cookie",
        "For the cookie returned by an aio_ command: returns false while it is still "
        "in flight; returns true if it succeeded, retiring it; fails (also retiring "
        "it) if the command failed, with the command's error. Commands whose "
        "completion callback returned 1 are already retired.",
        see_also=("aio_peek_command_completed", "aio_in_flight", "aio_pread"),
    ),
    Call(
        "aio_peek_command_completed", [], RInt64, (1, 0),
        "find a completed but not yet retired command",
        "Returns the cookie of the oldest command that has completed but not been "
        "retired, 0 if commands are in flight but none has completed, and fails "
        "(-1) when nothing is in flight. The command still has to be retired with "
        "nbd_aio_command_completed, which also tells whether it succeeded.",
        see_also=("aio_command_completed", "aio_in_flight"),
    ),
    Call(
        "aio_in_flight", [], RInt, (1, 0),
        "return the number of commands awaiting a reply",
        "Returns how many aio commands have not yet been answered by the server. "
        "When a disconnect is requested (nbd_aio_disconnect, nbd_shutdown) with "
        "commands still outstanding, libnbd does not wait for them; commands the "
        "server never answers are reported as failed with ENOTCONN.",
        permitted_states=CONNECTED_OR_FINISHED,
        see_also=("aio_disconnect", "shutdown", "aio_command_completed"),
    ),
    Call(
        "connection_state", [], RStaticString, (1, 0),
        "describe the handle's internal state",
        "Returns a static human-readable description of the state machine's "
        "current state, for debugging. The text may change between versions, so "
        "programs must not depend on it.",
        see_also=("aio_is_created", "aio_is_connecting", "aio_is_ready"),
    ),
]
