# SPDX-License-Identifier: LGPL-2.1-or-later
"""duplexnbd's own calls (duplexnbd.h, node DUPLEXNBD_1.0): timeouts, cancel, interrupt.

None of them exists in libnbd.  A program that does not call them sees libnbd's
behaviour exactly: every default below is "off".
"""

from __future__ import annotations

from model import Call, Constant, Int, RErr, RInt, RInt64, UInt32, UInt64

# The policies of duplexnbd_set_timeout_policy, as DUPLEXNBD_TIMEOUT_<name>.
TIMEOUT_POLICIES = (
    Constant("KEEP_CONNECTION", 0),
    Constant("CLOSE_CONNECTION", 1),
)

# Extension calls share the newest libnbd node as their "first version" for the table's
# checks; the version script puts them in DUPLEXNBD_1.0 whatever it says.
_V = (1, 24)

_LATE_REPLY = (
    " A command that times out completes at once: a blocking call returns -1 with errno "
    "ETIMEDOUT, and an aio command's completion callback is called with *error set to "
    "ETIMEDOUT (nbd_aio_command_completed then reports it). Its read or write buffer is "
    "the caller's again from that moment: if the server answers later, the reply is "
    "read and thrown away, and the connection stays usable (unless the timeout policy "
    "says otherwise, see duplexnbd_set_timeout_policy).")

_ENFORCED = (
    " Deadlines are enforced by the library's own waiting (blocking calls, nbd_poll, "
    "nbd_poll2) and at every call that drives the handle (nbd_aio_get_direction, "
    "nbd_aio_notify_read, nbd_aio_notify_write); a program that polls the descriptor "
    "itself should bound its poll timeout so that it calls back in time.")

CALLS = [
    Call(
        "set_request_timeout", [UInt32("ms")], RErr, _V,
        "give every command a deadline",
        "Sets how many milliseconds a command may wait for its reply, counted from the "
        "call that issues it; 0 (the default) means no limit, as in libnbd. The setting "
        "applies to commands issued afterwards, in any state." + _LATE_REPLY + _ENFORCED,
        see_also=("get_request_timeout", "set_timeout_policy", "aio_cancel",
                  "set_connect_timeout"),
        extension=True,
    ),
    Call(
        "get_request_timeout", [], RInt64, _V,
        "return the command deadline",
        "Returns the request timeout in milliseconds set with "
        "duplexnbd_set_request_timeout, 0 if none.",
        may_set_error=False,
        see_also=("set_request_timeout",),
        extension=True,
    ),
    Call(
        "set_connect_timeout", [UInt32("ms")], RErr, _V,
        "bound how long connecting may take",
        "Sets how many milliseconds a connect may take, counting the TCP or Unix "
        "connect, TLS and the NBD handshake together, from the connect call until the "
        "handle is connected (or, in opt mode, waits for the caller's first nbd_opt_* "
        "call); 0 (the default) means no limit. When it passes, the handle dies and the "
        "connect fails with ETIMEDOUT: a blocking connect call returns -1, and an aio "
        "connect driven by nbd_poll or the blocking calls reports it there. The setting "
        "applies to the next connect call." + _ENFORCED,
        see_also=("get_connect_timeout", "set_request_timeout"),
        extension=True,
    ),
    Call(
        "get_connect_timeout", [], RInt64, _V,
        "return the connect time limit",
        "Returns the connect timeout in milliseconds set with "
        "duplexnbd_set_connect_timeout, 0 if none.",
        may_set_error=False,
        see_also=("set_connect_timeout",),
        extension=True,
    ),
    Call(
        "set_timeout_policy", [Int("policy")], RErr, _V,
        "choose what a command timeout does to the connection",
        "DUPLEXNBD_TIMEOUT_KEEP_CONNECTION (0, the default): only the command that "
        "timed out fails; its late reply, if one comes, is thrown away and the "
        "connection goes on. DUPLEXNBD_TIMEOUT_CLOSE_CONNECTION (1): the first timeout "
        "kills the connection, the handle becomes dead, and every command still in "
        "flight fails with ETIMEDOUT; choose it when a server that missed one deadline "
        "is not to be trusted with more. Any other value fails with EINVAL.",
        see_also=("get_timeout_policy", "set_request_timeout"),
        extension=True,
    ),
    Call(
        "get_timeout_policy", [], RInt, _V,
        "return the timeout policy",
        "Returns the policy set with duplexnbd_set_timeout_policy.",
        may_set_error=False,
        see_also=("set_timeout_policy",),
        extension=True,
    ),
    Call(
        "aio_cancel", [UInt64("cookie")], RErr, _V,
        "give up on a command",
        "Completes the command with this cookie now, with ECANCELED. If its request has "
        "not been sent yet, it never is. If it is in flight, the caller's buffer is "
        "released at once and the server's reply, when it comes, is read and thrown "
        "away; the server may still have acted on the request (a write may have "
        "happened). Its completion callback runs exactly once, with *error set to "
        "ECANCELED, and its closures are freed once; without a callback, "
        "nbd_aio_command_completed reports ECANCELED. A cookie that is not a command in "
        "flight (unknown, already completed or retired) fails with EINVAL.",
        see_also=("set_request_timeout", "interrupt", "aio_command_completed"),
        extension=True,
    ),
    Call(
        "interrupt", [], RErr, _V,
        "wake every thread blocked on the handle",
        "Every thread blocked on this handle in a blocking call or in nbd_poll / "
        "nbd_poll2, when this is called, returns at once with -1 and errno EINTR. A "
        "blocking call's own command is cancelled (its buffer is the caller's again); "
        "aio commands stay in flight. Calls made afterwards are not affected. It may be "
        "called from any thread and is async-signal-safe: it only increments a counter "
        "and writes to the blocked threads' wake-up descriptors, so a SIGINT handler may "
        "call it. It records no error (it can only fail for a NULL handle, with -1).",
        may_set_error=False,
        signal_safe=True,
        see_also=("aio_cancel", "poll"),
        extension=True,
    ),
]
