# SPDX-License-Identifier: LGPL-2.1-or-later
"""Calls whose behaviour is not built yet: their entry points fail with ENOTSUP.

This list may only shrink. `unit_tests --gtest_filter=PendingCalls.*` prints it.
"""

# Everything the protocol engine provides (issue: the duplex protocol engine) and TLS.
PENDING: frozenset[str] = frozenset()
