# SPDX-License-Identifier: LGPL-2.1-or-later
"""Shorthands shared by the call modules: state sets, closure and flag arguments."""

from __future__ import annotations

from model import (CLOSED, CONNECTED, CONNECTING, CREATED, DEAD, NEGOTIATING, Closure,
                   ClosureType, OClosure, OFlags)

from .constants import CMD_FLAG, COMPLETION

# Permitted-state sets, as the man pages' HANDLE STATE tables list them.
ONLY_CREATED = (CREATED,)
CREATED_OR_NEGOTIATING = (CREATED, NEGOTIATING)
ONLY_NEGOTIATING = (NEGOTIATING,)
# After the handshake has produced export details (opt_info, or connected), and after
# a clean shutdown.
HAS_EXPORT_INFO = (NEGOTIATING, CONNECTED, CLOSED)
ONLY_CONNECTED = (CONNECTED,)
NEGOTIATING_OR_CONNECTED = (NEGOTIATING, CONNECTED)
CONNECTED_OR_FINISHED = (CONNECTED, CLOSED, DEAD)
NOT_CREATED = (CONNECTING, NEGOTIATING, CONNECTED, CLOSED, DEAD)


def cb(closure: ClosureType) -> Closure:
    """A required callback parameter, named <name>_callback as in libnbd."""
    return Closure(f"{closure.name}_callback", closure=closure)


def completion() -> OClosure:
    """The optional completion callback of the aio_* calls."""
    return OClosure("completion_callback", closure=COMPLETION)


def cmd_flags(*permitted: str) -> OFlags:
    """The command flags optarg; `permitted` lists what this command accepts."""
    return OFlags("flags", flags=CMD_FLAG, permitted=tuple(permitted))
