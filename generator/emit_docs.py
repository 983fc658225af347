# SPDX-License-Identifier: LGPL-2.1-or-later
"""Emit docs/api/nbd_<call>.md (one page per call, man-page shaped) and docs/api/index.md.

Everything on a page is derived from the table, so the reference cannot drift from
the header: the synopsis is the same prototype emit_header writes.
"""

from __future__ import annotations

import re

import model as M

from emit_header import (GENERATED_NOTE, arg_params, closure_callback_signature,
                         have_macro, nonnull_indices, c_params, wrapped_prototype)

_STATE_LABELS = {
    M.CREATED: "created (before connecting)",
    M.CONNECTING: "connecting (handshake in progress)",
    M.NEGOTIATING: "negotiating (handshake stopped in option mode)",
    M.CONNECTED: "connected (transmission phase)",
    M.CLOSED: "closed (shut down cleanly)",
    M.DEAD: "dead (connection failed)",
}


def page_path(call: M.Call) -> str:
    return f"docs/api/{call.c_name}.md"


def _version(v: tuple[int, int]) -> str:
    return f"{v[0]}.{v[1]}"


def _linkify(text: str, names: set[str], self_name: str) -> str:
    """Turn bare mentions of other calls (nbd_foo, optionally with "(3)") into links
    and bare LIBNBD_* macro names into code; text already in backticks is left alone."""
    def call(m: re.Match) -> str:
        name = m.group(1)
        if name in names and name != self_name:
            return f"[nbd_{name}](nbd_{name}.md)"
        return m.group(0)
    pieces = re.split(r"(`[^`]*`)", text)
    for i in range(0, len(pieces), 2):  # even indices are outside code spans
        p = re.sub(r"\b(?:LIBNBD|NBD)_[A-Z0-9_]+\b", lambda m: f"`{m.group(0)}`", pieces[i])
        pieces[i] = re.sub(r"\bnbd_([a-z0-9_]+)\b(?:\(3\))?", call, p)
    return "".join(pieces)


def _paragraphs(text: str) -> list[str]:
    """The table's description: blank lines separate paragraphs; inside a paragraph
    line breaks are just wrapping."""
    paras = [p.strip() for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    out = []
    for p in paras:
        lines = p.splitlines()
        # Keep indented blocks (examples) verbatim, reflow everything else.
        if any(line.startswith(("    ", "\t", "```")) for line in lines):
            out.append(p)
        else:
            out.append(" ".join(" ".join(lines).split()))
    return out


def _return_text(call: M.Call) -> str:
    r = call.ret
    table = [
        (M.RErr, "0 on success, -1 on error."),
        (M.RBool, "1 for true, 0 for false, or -1 on error."),
        (M.RInt, "A non-negative `int`, or -1 on error."),
        (M.RFd, "A file descriptor, or -1 on error."),
        (M.RInt64, "A non-negative 64-bit value, or -1 on error."),
        (M.RCookie, "The command's cookie (a positive 64-bit number, for "
                    "nbd_aio_command_completed and friends), or -1 on error."),
        (M.RSizeT, "A non-negative count, or -1 on error."),
        (M.RString, "A newly allocated string which the caller must release with "
                    "`free(3)`, or NULL on error."),
        (M.RStaticString, "A string owned by the library; do not free or modify it. "
                          "NULL on error."),
        (M.REnum, "One of the `LIBNBD_*` values listed in the description, or -1 on "
                  "error."),
        (M.RFlags, "A bit mask (`uint32_t`) of `LIBNBD_*` flags."),
        (M.RUInt, "An `unsigned` value."),
        (M.RUInt64, "An unsigned 64-bit value."),
        (M.RUIntPtr, "A `uintptr_t` value."),
        (M.RVoid, "Nothing."),
    ]
    for kind, text in table:
        if r is kind:
            return text
    if r.c_type == "void":
        return "Nothing."
    if r.error is None:
        return f"A `{r.c_type.strip()}`."
    return f"A `{r.c_type.strip()}`, or {r.error} on error."


def _errors_text(call: M.Call) -> str:
    if call.ret.error is None:
        return "This call cannot fail."
    if not call.may_set_error:
        return ("This call does not record an error: `nbd_get_error` and "
                "`nbd_get_errno` are left unchanged.")
    return (f"On failure the call returns {call.ret.error}; `nbd_get_error(3)` then "
            "describes the problem and `nbd_get_errno(3)` gives the errno value, both "
            "for the calling thread.")


def _arg_notes(call: M.Call) -> list[str]:
    """Bullets for arguments whose accepted values or shape need spelling out."""
    out = []
    for a in list(call.args) + list(call.optargs):
        names = ", ".join(f"`{p.name}`" for p in arg_params(a))
        if isinstance(a, M.EnumArg):
            vals = ", ".join(f"`LIBNBD_{v.name}`" for v in a.enum.values)
            out.append(f"- {names}: one of {vals}; anything else fails with `EINVAL`.")
        elif isinstance(a, M.FlagsArg):
            vals = ", ".join(f"`LIBNBD_{a.flags.prefix}_{v.name}`" for v in a.flags.values)
            out.append(f"- {names}: a bitwise-or of {vals}.")
        elif isinstance(a, M.OFlags):
            permitted = a.permitted if a.permitted is not None else tuple(v.name for v in a.flags.values)
            if permitted:
                vals = ", ".join(f"`LIBNBD_{a.flags.prefix}_{n}`" for n in permitted)
                out.append(f"- {names}: 0 or a bitwise-or of {vals} (0 in bindings "
                           "that make it optional).")
            else:
                out.append(f"- {names}: must be 0 (reserved for future flags).")
        elif isinstance(a, (M.Closure, M.OClosure)):
            ct = a.closure
            opt = (f" May be `NBD_NULL_{ct.name.upper()}` for none."
                   if isinstance(a, M.OClosure) else "")
            out.append(f"- {names}: callback struct `{ct.c_name}`, whose function is "
                       f"`{closure_callback_signature(ct, 'callback')}`; its `free` hook, "
                       f"if set, runs exactly once, whether or not the call succeeds.{opt}")
        elif isinstance(a, (M.BytesPersistIn, M.BytesPersistOut)):
            out.append(f"- {names}: the buffer must stay valid, and must not be touched, "
                       "until the command has completed and been retired.")
        elif isinstance(a, M.StringList):
            out.append(f"- {names}: a NULL-terminated array of strings; it is copied.")
    return out


def _state_table(call: M.Call) -> list[str]:
    if not call.handle:
        return ["This call does not take a handle, so it works at any time."]
    if call.permitted_states is None:
        return ["The call is permitted in every handle state."]
    rows = ["| Handle state | |", "|---|---|"]
    for s in M.ALL_STATES:
        ok = s in call.permitted_states
        rows.append(f"| {_STATE_LABELS.get(s, s)} | {'allowed' if ok else 'error'} |")
    return rows


def render_page(api, call: M.Call) -> str:
    names = {c.name: c.c_name for c in api.calls}
    link = lambda t: _linkify(t, names, call.name)  # noqa: E731
    out = [f"<!-- {GENERATED_NOTE} -->",
           "<!-- SPDX-License-Identifier: LGPL-2.1-or-later -->",
           "",
           f"# {call.c_name}",
           "",
           f"{call.c_name} — {link(' '.join(call.summary.split()))}",
           "",
           "## Synopsis",
           "",
           "```c",
           "#include <duplexnbd.h>" if call.extension else "#include <libnbd.h>",
           "",
           wrapped_prototype(call, prefix="") + ";",
           "```",
           ""]
    nn = nonnull_indices(call)
    if nn:
        ps = c_params(call)
        out.append("Must not be NULL: " + ", ".join(f"`{ps[i - 1].name}`" for i in nn) + ".")
        out.append("")
    out += ["## Description", ""]
    for p in _paragraphs(call.description):
        out += [link(p), ""]
    notes = _arg_notes(call)
    if notes:
        out += ["### Arguments", ""] + [link(n) for n in notes] + [""]
    out += ["## Return value", "", link(_return_text(call)), ""]
    out += ["## Errors", "", _errors_text(call), ""]
    out += ["## Handle state", ""] + _state_table(call) + [""]
    added = (f"A duplexnbd extension, declared in `<duplexnbd.h>` (symbol version "
             "`DUPLEXNBD_1.0`); libnbd has no such call." if call.extension else
             f"Added in libnbd {_version(call.first_version)} (symbol version "
             f"`{M.node_name(call.first_version)}`).")
    out += ["## Version", "",
            added + "  To check for it at compile time:",
            "",
            "```c",
            f"#ifdef {have_macro(call)}",
            "```",
            ""]
    see = [s for s in call.see_also if s != call.name]
    if see:
        def cname(n: str) -> str:
            return names[n] if n in names else f"nbd_{n}"
        items = [f"[{cname(s)}]({cname(s)}.md)" if s in names else cname(s) for s in see]
        out += ["## See also", "", ", ".join(items) + ", [index](index.md)", ""]
    else:
        out += ["## See also", "", "[index](index.md)", ""]
    return "\n".join(out)


def render_index(api) -> str:
    out = [f"<!-- {GENERATED_NOTE} -->",
           "<!-- SPDX-License-Identifier: LGPL-2.1-or-later -->",
           "",
           "# libnbd API reference",
           "",
           f"{sum(not c.extension for c in api.calls)} calls of libnbd, grouped by the "
           "release that introduced them (which is also their symbol version), then "
           "duplexnbd's own extensions.",
           ""]
    by_version: dict[tuple[int, int], list[M.Call]] = {}
    for c in api.calls:
        if not c.extension:
            by_version.setdefault(c.first_version, []).append(c)
    for v in sorted(by_version):
        out += [f"## libnbd {_version(v)}", ""]
        for c in sorted(by_version[v], key=lambda c: c.name):
            out.append(f"- [{c.c_name}]({c.c_name}.md) — {' '.join(c.summary.split())}")
        out.append("")
    ext = [c for c in api.calls if c.extension]
    if ext:
        out += ["## duplexnbd extensions (`<duplexnbd.h>`, `DUPLEXNBD_1.0`)", ""]
        for c in sorted(ext, key=lambda c: c.name):
            out.append(f"- [{c.c_name}]({c.c_name}.md) — {' '.join(c.summary.split())}")
        out.append("")
    return "\n".join(out)


def emit(api) -> dict[str, str]:
    out = {page_path(c): render_page(api, c) for c in api.calls}
    out["docs/api/index.md"] = render_index(api)
    return out
