# SPDX-License-Identifier: LGPL-2.1-or-later
"""Emit man/man3/<call>.3 (one roff page per call) and man/man3/duplexnbd.3 (the overview).

The pages are man(7) roff written here, not converted from the Markdown reference, but
they say the same things: the prose comes from the table, and the return value, error
and argument notes are the Markdown emitter's own helpers rendered as roff, so the two
references cannot disagree.  Calls the table marks `extension=True` are duplexnbd's own:
their pages name <duplexnbd.h> and the extension version node instead of a libnbd
release.
"""

from __future__ import annotations

import re

import model as M

from emit_docs import _arg_notes, _errors_text, _paragraphs, _return_text
from emit_header import GENERATED_NOTE, c_params, have_macro, wrapped_prototype
from emit_version_script import EXTENSION_NODE, is_extension

MAN_DIR = "man/man3"
OVERVIEW = "duplexnbd"

# man(1) indents the body by 7 columns; at 80 columns a synopsis line has 73.
_SYNOPSIS_WIDTH = 72

_STATE_NAMES = {
    M.CREATED: "created",
    M.CONNECTING: "connecting",
    M.NEGOTIATING: "negotiating",
    M.CONNECTED: "connected",
    M.CLOSED: "closed",
    M.DEAD: "dead",
}
_STATE_WORDS = {
    M.CREATED: "created, before connecting",
    M.CONNECTING: "connecting (the handshake is running)",
    M.NEGOTIATING: "negotiating (the handshake stopped in option mode)",
    M.CONNECTED: "connected (the transmission phase)",
    M.CLOSED: "closed (shut down cleanly)",
    M.DEAD: "dead (the connection failed)",
}


def page_name(call: M.Call) -> str:
    return call.c_name


def page_path(call: M.Call) -> str:
    return f"{MAN_DIR}/{page_name(call)}.3"


def header_of(call: M.Call) -> str:
    return "duplexnbd.h" if is_extension(call) else "libnbd.h"


def abi_level(api) -> str:
    v = max(api.version_nodes)
    return f"{v[0]}.{v[1]}"


# ---------------------------------------------------------------------------
# roff text.

def escape(text: str) -> str:
    """Plain text to roff: backslashes escaped, non-ASCII characters as \\[uXXXX] so
    that the page renders the same whatever input encoding groff assumes."""
    out = []
    for ch in text.replace("\\", "\\e"):
        out.append(ch if ord(ch) < 128 else f"\\[u{ord(ch):04X}]")
    return "".join(out)


def code(text: str) -> str:
    """Literal text (C, commands): bold, and '-' as the ASCII minus so that it can be
    copied from the rendered page."""
    return "\\fB" + breakable(escape(text).replace("-", "\\-")) + "\\fP"


def breakable(name: str) -> str:
    """Identifiers may break after an underscore (no hyphen is added there); pages are
    not hyphenated (.nh), so long names would otherwise stick out of the line."""
    return re.sub(r"_(?=[A-Za-z])", "_\\\\:", name)


def safe_lines(text: str) -> str:
    """A text line that begins with '.' or "'" would be read as a request."""
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line
                     for line in text.split("\n"))


def inline(text: str, names: set[str], self_name: str) -> str:
    """Table or helper prose to roff: `code` spans, mentions of other calls (nbd_foo,
    optionally already followed by "(3)") as cross references, macro names bold."""
    def words(piece: str) -> str:
        def ref(m: re.Match) -> str:
            name = m.group(1)
            if name in names and f"nbd_{name}" != self_name:
                return "\\fB" + breakable("nbd_" + escape(name)) + "\\fP(3)"
            return code(m.group(0).removesuffix("(3)"))
        pieces = re.split(r"(\bnbd_[a-z0-9_]+\b(?:\(3\))?|\b(?:LIBNBD|NBD)_[A-Z0-9_]+\b)", piece)
        out = []
        for i, p in enumerate(pieces):
            if i % 2 == 0:
                out.append(escape(p))
            elif p.startswith("nbd_"):
                out.append(re.sub(r"^nbd_([a-z0-9_]+)(?:\(3\))?$", ref, p))
            else:
                out.append(code(p))
        return "".join(out)

    def span(s: str) -> str:
        # A code span that is just a call's name is still a cross reference.
        if re.fullmatch(r"nbd_[a-z0-9_]+(?:\(3\))?", s):
            return words(s)
        m = re.fullmatch(r"([a-z0-9_]+)\(([1-8])\)", s)
        if m:  # another page, e.g. free(3)
            return code(m.group(1)) + f"({m.group(2)})"
        return code(s)

    spans = re.split(r"(`[^`]*`)", text)
    return "".join(span(s[1:-1]) if i % 2 else words(s) for i, s in enumerate(spans))


def paragraphs(text: str, names: set[str], self_name: str) -> list[str]:
    out: list[str] = []
    for p in _paragraphs(text):
        if any(line.startswith(("    ", "\t", "```")) for line in p.splitlines()):
            body = [line for line in p.splitlines() if not line.startswith("```")]
            out += [".PP", ".RS", ".nf", safe_lines("\n".join(escape(b) for b in body)),
                    ".fi", ".RE"]
        else:
            out += [".PP", safe_lines(inline(p, names, self_name))]
    return out


def bullets(items: list[str]) -> list[str]:
    out = []
    for item in items:
        out += [".IP \\(bu 2", safe_lines(item)]
    return out


def see_also_lines(refs: list[tuple[str, int]]) -> list[str]:
    """`.BR name (n),` lines, the last without a comma; left-aligned, as justifying a
    few long names would stretch the spaces between them."""
    out = [".ad l"]
    for i, (name, section) in enumerate(refs):
        comma = "," if i < len(refs) - 1 else ""
        out.append(f".BR {escape(name)} ({section}){comma}")
    return out


def th(title: str, api) -> str:
    # No hyphenation: identifiers split at a hyphen would read as something else.
    return (f'.TH {title.upper()} 3 "" "duplexnbd" '
            f'"duplexnbd (libnbd {abi_level(api)} ABI)"\n.nh')


def banner() -> list[str]:
    return [".\\\" SPDX-License-Identifier: LGPL-2.1-or-later",
            f".\\\" {GENERATED_NOTE} (generator/emit_man.py)"]


# ---------------------------------------------------------------------------
# One page per call.

def synopsis(call: M.Call) -> list[str]:
    proto = wrapped_prototype(call, prefix="", width=_SYNOPSIS_WIDTH) + ";"
    # Bold the function's name where it is declared; the columns do not move.
    proto = proto.replace(f"{call.c_name} (", f"\\fB{call.c_name}\\fP (", 1)
    lines = [".SH SYNOPSIS", ".nf", f".B #include <{header_of(call)}>", ".PP",
             safe_lines(proto), ".fi"]
    if is_extension(call):
        lines += [".PP", "Link with " + code("-lnbd") + " (duplexnbd's libnbd.so.0)."]
    else:
        lines += [".PP", "Link with " + code("-lnbd") + "."]
    return lines


def state_lines(call: M.Call) -> list[str]:
    if not call.handle:
        return ["This function does not take a handle; it may be called at any time."]
    if call.permitted_states is None:
        return ["The handle may be in any state."]
    ok = [_STATE_WORDS[s] for s in M.ALL_STATES if s in call.permitted_states]
    bad = [_STATE_NAMES[s] for s in M.ALL_STATES if s not in call.permitted_states]
    out = [f"{escape(page_name(call))} may be called when the handle is:"]
    out += bullets([escape(w) for w in ok])
    if bad:
        out += [".PP", "In any other state (" + escape(", ".join(bad)) + ") it fails; "
                "see ERRORS."]
    return out


def error_items(call: M.Call) -> list[tuple[str, str]]:
    """(errno, when) pairs the entry point's own checks produce, in the order they run."""
    items: list[tuple[str, str]] = []
    if call.handle and call.permitted_states is not None:
        if M.CREATED not in call.permitted_states:
            items.append(("ENOTCONN", "The handle has not been connected yet."))
        if set(M.ALL_STATES) - set(call.permitted_states) - {M.CREATED}:
            items.append(("EINVAL", "The handle is in a state in which this call is not "
                                    "permitted (see HANDLE STATE)."))
    pointers, values = [], []
    for a in list(call.args) + list(call.optargs):
        if isinstance(a, (M.String, M.Path, M.StringList, M.SockAddrAndLen)):
            pointers.append(code(a.name))
        elif isinstance(a, (M.BytesIn, M.BytesOut, M.BytesPersistIn, M.BytesPersistOut)):
            pointers.append(code(a.name) + " (with a non-zero " + code(a.count) + ")")
        elif isinstance(a, (M.EnumArg, M.FlagsArg, M.OFlags)):
            values.append(code(a.name))
    if pointers:
        items.append(("EFAULT", "A NULL pointer was passed for " + ", ".join(pointers) + "."))
    if values:
        items.append(("EINVAL", "An unknown value or flag was passed in "
                                + ", ".join(values) + " (see DESCRIPTION)."))
    return items


def errors_lines(call: M.Call, names: set[str]) -> list[str]:
    out = [_md(_errors_text(call), names, call.c_name)]
    if call.ret.error is None or not call.may_set_error:
        return out
    items = error_items(call)
    if items:
        out += [".PP", "The library itself reports these before doing anything:"]
        for errno, when in items:
            out += [".TP", f".B {errno}", when]
    out += [".PP", "Other values come from the system or, for commands, from the "
            "server's reply."]
    return out


def version_lines(call: M.Call) -> list[str]:
    macro = have_macro(call)
    if is_extension(call):
        out = [f"This function is a duplexnbd extension (symbol version "
               f"{code(EXTENSION_NODE)}); libnbd does not have it."]
    else:
        v = call.first_version
        out = [f"This function first appeared in libnbd {v[0]}.{v[1]} "
               f"(symbol version {code(M.node_name(v))})."]
    if is_extension(call) or call.first_version > (1, 0):
        out += [".PP", f"Whether <{header_of(call)}> declares it can be checked at compile "
                f"time with {code('#ifdef ' + macro)}."]
    return out


def _md(text: str, names: set[str], self_name: str) -> str:
    """One of emit_docs' Markdown-flavoured sentences (only `code` spans) as roff."""
    return safe_lines(inline(text, names, self_name))


def render_page(api, call: M.Call) -> str:
    names = {c.name for c in api.calls}
    me = call.c_name
    out = banner() + [th(page_name(call), api),
                      ".SH NAME",
                      f"{escape(page_name(call))} \\- {escape(' '.join(call.summary.split()))}"]
    out += synopsis(call)
    out += [".SH DESCRIPTION"] + paragraphs(call.description, names, me)
    notes = _arg_notes(call)
    if notes:
        out += [".PP", "Arguments:"]
        out += bullets([inline(n.removeprefix("- "), names, me) for n in notes])
    nonnull = [p.name for p in c_params(call) if p.nonnull]
    if nonnull:
        out += [".PP", "Must not be NULL: " + ", ".join(code(n) for n in nonnull) + "."]
    out += [".SH \"RETURN VALUE\"", _md(_return_text(call), names, me)]
    out += [".SH ERRORS"] + errors_lines(call, names)
    out += [".SH \"HANDLE STATE\""] + state_lines(call)
    out += [".SH VERSION"] + version_lines(call)
    cnames = {c.name: c.c_name for c in api.calls}
    refs = [(cnames[s], 3) for s in call.see_also if s != call.name and s in names]
    refs += [("nbd_get_error", 3), ("nbd_get_errno", 3)] if call.may_set_error and \
        call.ret.error is not None and call.name not in ("get_error", "get_errno") else []
    seen: set[str] = set()
    refs = [r for r in refs if not (r[0] in seen or seen.add(r[0]))]
    refs.append((OVERVIEW, 3))
    out += [".SH \"SEE ALSO\""] + see_also_lines(refs)
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------
# The overview page.

def _call_list(calls: list[M.Call]) -> list[str]:
    out = []
    for c in calls:
        out += [".TP", f".BR {escape(c.c_name)} (3)", escape(" ".join(c.summary.split()))]
    return out


def render_overview(api) -> str:
    level = abi_level(api)
    nodes = ", ".join(code(M.node_name(v)) for v in api.version_nodes)
    base = [c for c in api.calls if not is_extension(c)]
    ext = [c for c in api.calls if is_extension(c)]
    out = banner() + [th(OVERVIEW, api), ".SH NAME",
                      "duplexnbd \\- full-duplex drop-in replacement for the libnbd NBD "
                      "client library"]
    out += [".SH SYNOPSIS", ".nf", ".B #include <libnbd.h>", ".PP",
            code("cc prog.c -o prog $(pkg-config --cflags --libs libnbd)"),
            ".PP",
            code("find_package(duplexnbd REQUIRED)"),
            code("target_link_libraries(prog PRIVATE duplexnbd::nbd)"),
            ".fi"]
    out += [".SH DESCRIPTION", ".PP",
            "duplexnbd is a client library for the Network Block Device protocol.  It "
            "implements libnbd's C API and ABI: it is installed as " + code("libnbd.so.0")
            + ", exports the same " + str(len(base)) + " functions under the same symbol "
            "versions (" + nodes + "), and ships a " + code("<libnbd.h>") + " with the "
            "same declarations and " + code("LIBNBD_*") + " macros.  A program built "
            "against libnbd " + level + " or older runs on duplexnbd without being "
            "rebuilt, and one built against duplexnbd that calls no extension function runs "
            "on libnbd " + level + ".",
            ".PP",
            "Each function has its own page, for example " + "\\fBnbd_create\\fP(3), "
            "\\fBnbd_connect_uri\\fP(3), \\fBnbd_pread\\fP(3) and \\fBnbd_aio_pread\\fP(3).  "
            "They are listed under FUNCTIONS below.  This page says what is different "
            "from libnbd; everything else behaves as libnbd documents it."]
    out += [".SH \"DIFFERENCES FROM LIBNBD\"",
            ".SS \"The duplex engine\"",
            ".PP",
            "libnbd drives a handle with one state machine under one lock, so at any "
            "moment a handle is either sending a request or reading a reply.  duplexnbd "
            "splits each connection into two machines, one per direction of the socket: "
            "a writer that sends requests and a reader that receives replies, each "
            "under its own lock.  While one thread is blocked reading a large reply, "
            "another can send the next requests, and the socket is kept busy in both "
            "directions.",
            ".SS \"Several threads on one handle\"",
            ".PP",
            "As with libnbd, every function may be called from any thread.  With libnbd, "
            "synchronous calls such as \\fBnbd_pread\\fP(3) from several threads on one "
            "handle wait for each other; with duplexnbd they are in flight together, "
            "and one of the blocked threads reads the replies for all of them.  A "
            "program that opened one handle per thread to get parallelism can share one "
            "handle instead (the server then needs only one connection).",
            ".PP",
            "Programs that run their own event loop with \\fBnbd_aio_get_fd\\fP(3), "
            "\\fBnbd_aio_get_direction\\fP(3), \\fBnbd_aio_notify_read\\fP(3) and "
            "\\fBnbd_aio_notify_write\\fP(3) work unchanged.  Completion callbacks are "
            "never called before the aio function that started the command has "
            "returned, as with libnbd.",
            ".SS \"Extension functions\""]
    if ext:
        out += [".PP",
                "duplexnbd also has functions libnbd lacks, declared in "
                + code("<duplexnbd.h>") + " and exported under the symbol version "
                + code(EXTENSION_NODE) + ".  A program that calls them needs duplexnbd; "
                "test for each with its " + code("LIBNBD_HAVE_*") + " macro to keep "
                "building against libnbd:"]
        out += _call_list(ext)
    else:
        out += [".PP",
                "This version has no functions of its own: everything it exports is "
                "libnbd's API.  Functions that only duplexnbd has will be declared in a "
                "separate header, " + code("<duplexnbd.h>") + ", under their own symbol "
                "version, and listed here."]
    out += [".SS \"Package name\"", ".PP",
            "\\fBnbd_get_package_name\\fP(3) returns " + code('"duplexnbd"') + " where "
            "libnbd returns " + code('"libnbd"') + ".  \\fBnbd_get_version\\fP(3) returns "
            "the duplexnbd version, whose major and minor numbers are those of the libnbd "
            "release whose API it implements."]
    out += [".SH \"SWITCHING A PROGRAM OVER\"",
            ".PP",
            "Because the ABI is libnbd's, a program switches library without any change "
            "to its source.  There are three ways:",
            ".TP",
            ".B System-wide, from the Debian package",
            "Install " + code("libnbd0-duplexnbd") + " (and " + code("libnbd-duplexnbd-dev")
            + " to build programs).  It takes the place of Debian's " + code("libnbd0")
            + ", so every installed program that uses libnbd (nbdinfo, nbdcopy, nbdkit's "
            "nbd plugin, the Python module, fio's nbd engine) runs on duplexnbd.  To go "
            "back:",
            ".RS",
            ".PP",
            code("apt-get install --reinstall libnbd0"),
            ".RE",
            ".TP",
            ".B Relinking",
            "Build against duplexnbd's " + code("<libnbd.h>") + " and library: "
            + code("pkg-config libnbd") + " and the CMake package " + code("duplexnbd")
            + " (targets " + code("duplexnbd::nbd") + " and, for the C++ header "
            + code("<nbd.hpp>") + ", " + code("duplexnbd::nbdxx") + ") point to wherever "
            "it was installed.",
            ".TP",
            ".B Without relinking",
            "Point the dynamic linker at duplexnbd's " + code("libnbd.so.0") + " for one "
            "program: " + code("LD_LIBRARY_PATH=/path/to/lib nbdinfo ...") + ", or "
            + code("LD_PRELOAD=/path/to/libnbd.so.0") + "."]
    out += [".SH \"WHICH LIBRARY IS RUNNING\"",
            ".PP",
            "A program can ask at run time:",
            ".PP",
            ".RS",
            ".nf",
            safe_lines(escape(
                'struct nbd_handle *h = nbd_create ();\n'
                'if (h && strcmp (nbd_get_package_name (h), "duplexnbd") == 0)\n'
                '  printf ("duplexnbd %s\\n", nbd_get_version (h));')),
            ".fi",
            ".RE",
            ".PP",
            "From the shell, " + code("nbdinfo --version") + " prints the name and "
            "version of the library it runs on, and in Python "
            + code("nbd.NBD().get_package_name()") + " does the same."]
    out += [".SH ENVIRONMENT",
            ".TP",
            ".B LIBNBD_DEBUG",
            "When set to " + code("1") + ", handles start with debugging enabled, as with "
            "libnbd (see \\fBnbd_set_debug\\fP(3))."]
    out += [".SH FUNCTIONS"]
    by_version: dict[tuple[int, int], list[M.Call]] = {}
    for c in base:
        by_version.setdefault(c.first_version, []).append(c)
    for v in sorted(by_version):
        out += [f".SS \"Since libnbd {v[0]}.{v[1]}\""]
        out += _call_list(sorted(by_version[v], key=lambda c: c.name))
    out += [".SH \"SEE ALSO\""]
    out += see_also_lines([("nbd_create", 3), ("nbd_get_package_name", 3),
                           ("nbd_get_version", 3), ("nbdinfo", 1), ("nbdcopy", 1),
                           ("pkg-config", 1)])
    out += [".PP", "libnbd's overview: " + code("https://libguestfs.org/libnbd.3.html")]
    return "\n".join(out) + "\n"


def emit(api) -> dict[str, str]:
    out = {page_path(c): render_page(api, c) for c in api.calls}
    out[f"{MAN_DIR}/{OVERVIEW}.3"] = render_overview(api)
    return out
