# SPDX-License-Identifier: LGPL-2.1-or-later
"""Driver: turn the API table (generator/api) into every generated file.

Usage:
    generate.py OUTDIR            write all outputs under OUTDIR (only those that changed)
    generate.py --list-outputs    print the outputs' paths relative to OUTDIR, one a line
    generate.py --check OUTDIR    exit 1 if any output on disk differs from what would
                                  be generated (nothing is written)
    generate.py --stamp FILE OUTDIR   also touch FILE after a successful run, for build
                                  systems that want one always-updated output (the
                                  real outputs keep their mtimes when unchanged)

Emitters.  Each emitter is a module `generator/emit_*.py` with a function
`emit(api) -> dict[str, str]` mapping a path relative to OUTDIR to the file's full
text.  The built-in ones are emit_header, emit_version_script, emit_cxx, emit_docs,
emit_man (the man pages) and emit_call_states (the every-call-in-every-state driver);
`emit_entry_points` is picked up too when it exists (the core's C entry points).  A
path produced by two emitters is an error, so emitters cannot silently clobber each
other.

The `api` object every emitter receives (class `Api` below), all fields read-only:
    calls          tuple[model.Call, ...]        table order (= header order), then the
                                                 duplexnbd extensions (call.extension)
    extension_constants tuple[model.Constant, ...]  DUPLEXNBD_TIMEOUT_<name> values
    enums          tuple[model.Enum, ...]
    flags          tuple[model.Flags, ...]
    int_constants  tuple[model.Constant, ...]    plain LIBNBD_<name> integer macros
    str_constants  tuple[..., ...]               objects with .name / .value (str),
                                                 LIBNBD_<name> string macros
    closures       tuple[model.ClosureType, ...]
    version_nodes  tuple[tuple[int, int], ...]   model.VERSION_NODES
    extent_struct  whatever constants.py defines for nbd_extent (or None); emitters
                   that need it fall back to libnbd's {uint64_t length, flags}
    model          the model module the table was built from: compare return kinds
                   with `call.ret is api.model.RBool` etc. (RErr, RBool, RInt... are
                   equal as values, only identity tells them apart)
    call(name)     the Call named `name` (without nbd_), KeyError if absent

Outputs are written atomically (temp file + rename) and only when the text differs,
so the mtimes of unchanged files stay put and make/ninja rebuild only what depends on
the files that really changed.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

# Builds run the generator from the source tree; keep it free of __pycache__ litter.
sys.dont_write_bytecode = True

GENERATOR_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(GENERATOR_DIR)

# Built-in emitters, plus the optional core one; order only matters for error messages.
BUILTIN_EMITTERS = ("emit_header", "emit_version_script", "emit_cxx", "emit_docs", "emit_man",
                    "emit_call_states")
OPTIONAL_EMITTERS = ("emit_entry_points",)


@dataclass(frozen=True)
class Api:
    calls: tuple
    enums: tuple
    flags: tuple
    int_constants: tuple
    str_constants: tuple
    closures: tuple
    version_nodes: tuple
    model: types.ModuleType
    extent_struct: Any = None
    extension_constants: tuple = ()
    _by_name: dict = field(default_factory=dict, repr=False, compare=False)

    def call(self, name: str):
        return self._by_name[name]


def _setup_path() -> None:
    # The table and the emitters import `model` (and `api`) as top-level modules,
    # from generator/.  The repo root is added too in case the table imports
    # `generator.model`; _unify_model() then makes both names one module.
    for p in (REPO_ROOT, GENERATOR_DIR):
        if p in sys.path:
            sys.path.remove(p)
        sys.path.insert(0, p)


def _unify_model(calls) -> types.ModuleType:
    """Return the model module the table's objects come from, registered as `model`.

    Return kinds are compared by identity, so the emitters must see the very module
    the table used, whatever name the table imported it under."""
    modname = None
    for c in calls:
        modname = type(c).__module__
        break
    if modname is None or modname not in sys.modules:
        import model as m  # noqa: E402  (empty table: any model will do)
        return m
    m = sys.modules[modname]
    sys.modules.setdefault("model", m)
    if sys.modules["model"] is not m:
        raise SystemExit(f"generate.py: the table's model ({modname}) is not generator/model.py")
    return m


def load_api() -> Api:
    """Import generator/api and wrap it in an Api."""
    _setup_path()
    table = importlib.import_module("api")
    calls = tuple(table.CALLS) + tuple(getattr(table, "EXTENSION_CALLS", ()))
    m = _unify_model(calls)

    def opt(name):
        v = getattr(table, name, None)
        if v is None:
            consts = sys.modules.get("api.constants")
            v = getattr(consts, name, None) if consts else None
        return v

    by_name = {}
    for c in calls:
        if c.name in by_name:
            raise SystemExit(f"generate.py: call {c.name} is defined twice")
        by_name[c.name] = c
    return Api(
        calls=calls,
        enums=tuple(opt("ENUMS") or ()),
        flags=tuple(opt("FLAGS") or ()),
        int_constants=tuple(opt("INT_CONSTANTS") or ()),
        str_constants=tuple(opt("STR_CONSTANTS") or ()),
        closures=tuple(opt("CLOSURES") or ()),
        version_nodes=tuple(m.VERSION_NODES),
        model=m,
        extent_struct=opt("EXTENT_STRUCT") or opt("NBD_EXTENT"),
        extension_constants=tuple(getattr(table, "EXTENSION_CONSTANTS", ())),
        _by_name=by_name,
    )


def _emitters() -> list[tuple[str, Callable]]:
    _setup_path()
    found = []
    for name in BUILTIN_EMITTERS:
        found.append((name, importlib.import_module(name).emit))
    for name in OPTIONAL_EMITTERS:
        if os.path.exists(os.path.join(GENERATOR_DIR, name + ".py")):
            found.append((name, importlib.import_module(name).emit))
    return found


def generate(api: Optional[Api] = None) -> dict[str, str]:
    """All outputs: relative path -> text."""
    if api is None:
        api = load_api()
    out: dict[str, str] = {}
    owner: dict[str, str] = {}
    for name, fn in _emitters():
        for path, text in fn(api).items():
            if path in out:
                raise SystemExit(f"generate.py: {path} produced by both {owner[path]} and {name}")
            if os.path.isabs(path) or ".." in path.split("/"):
                raise SystemExit(f"generate.py: {name} produced a bad path {path!r}")
            out[path] = text
            owner[path] = name
    return dict(sorted(out.items()))


def _read(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return f.read()
    except FileNotFoundError:
        return None


def write_if_changed(path: str, text: str) -> bool:
    if _read(path) == text:
        return False
    d = os.path.dirname(path)
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".gen-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return True


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="Generate libnbd.h, libnbd.map, nbd.hpp, docs ...")
    ap.add_argument("--list-outputs", action="store_true",
                    help="print the relative paths of all outputs and exit")
    ap.add_argument("--check", action="store_true",
                    help="compare OUTDIR with what would be generated; exit 1 on differences")
    ap.add_argument("-q", "--quiet", action="store_true", help="do not report written files")
    ap.add_argument("--stamp", metavar="FILE", help="touch FILE after writing the outputs")
    ap.add_argument("outdir", nargs="?")
    args = ap.parse_args(argv)

    outputs = generate()
    if args.list_outputs:
        for p in outputs:
            print(p)
        return 0
    if not args.outdir:
        ap.error("OUTDIR is required")

    if args.check:
        bad = [p for p, t in outputs.items() if _read(os.path.join(args.outdir, p)) != t]
        for p in bad:
            print(f"generate.py: out of date: {p}", file=sys.stderr)
        return 1 if bad else 0

    written = [p for p, t in outputs.items() if write_if_changed(os.path.join(args.outdir, p), t)]
    if not args.quiet:
        print(f"generate.py: {len(written)} of {len(outputs)} outputs updated in {args.outdir}")
    if args.stamp:
        os.makedirs(os.path.dirname(os.path.abspath(args.stamp)), exist_ok=True)
        with open(args.stamp, "a", encoding="utf-8"):
            pass
        os.utime(args.stamp, None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
