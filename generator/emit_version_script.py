# SPDX-License-Identifier: LGPL-2.1-or-later
"""Emit lib/libnbd.map, the GNU ld version script that fixes libnbd.so.0's exports.

Binaries linked against real libnbd record versioned references such as
nbd_pread@LIBNBD_1.0 or nbd_block_status_64@LIBNBD_1.18, so each symbol must sit in
the node of the release that introduced it, and the nodes must form libnbd's chain
(each naming its predecessor).  `local: *;` appears once, in the first node: it hides
every other symbol of the C++ implementation, so only the table's calls are exported.
"""

from __future__ import annotations

import model as M

from emit_header import GENERATED_NOTE

# Future duplexnbd-only calls (Call attribute `extension=True`) go in their own node so
# they can never be mistaken for libnbd symbols; it inherits from the newest libnbd
# node.  No call uses it today, and then the node is not emitted at all.
EXTENSION_NODE = "DUPLEXNBD_1.0"


def is_extension(call: M.Call) -> bool:
    return bool(getattr(call, "extension", False))


def symbols_by_node(api) -> dict[str, list[str]]:
    """Node name -> sorted symbol list, every node of api.version_nodes present (in
    order, possibly empty), then EXTENSION_NODE if any call needs it."""
    nodes: dict[str, list[str]] = {M.node_name(v): [] for v in api.version_nodes}
    for c in api.calls:
        if is_extension(c):
            nodes.setdefault(EXTENSION_NODE, []).append(c.c_name)
            continue
        node = M.node_name(c.first_version)
        if node not in nodes:
            raise SystemExit(f"emit_version_script: {c.c_name}: first_version "
                             f"{c.first_version} is not one of VERSION_NODES")
        nodes[node].append(c.c_name)
    if EXTENSION_NODE in nodes:  # keep it last whatever dict order setdefault gave
        nodes[EXTENSION_NODE] = nodes.pop(EXTENSION_NODE)
    return {k: sorted(v) for k, v in nodes.items()}


def render(api) -> str:
    out = [f"# {GENERATED_NOTE}",
           "# SPDX-License-Identifier: LGPL-2.1-or-later",
           "#",
           "# Symbol versions of libnbd.so.0; node names and membership match libnbd.",
           ""]
    parent = None
    for node, syms in symbols_by_node(api).items():
        out.append(f"{node} {{")
        if syms:
            out.append("  global:")
            out.extend(f"    {s};" for s in syms)
        if parent is None:
            out.append("  # Everything not listed in some node stays hidden.")
            out.append("  local: *;")
        out.append(f"}} {parent};" if parent else "};")
        out.append("")
        parent = node
    return "\n".join(out)


def emit(api) -> dict[str, str]:
    return {"lib/libnbd.map": render(api)}
