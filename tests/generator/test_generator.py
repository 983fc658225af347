# SPDX-License-Identifier: LGPL-2.1-or-later
"""Checks that the API table and every generated output agree, and that the header is
a drop-in for libnbd's (prototypes, constants, C99/C++ compilation).

Run from anywhere:  python3 -m unittest discover -s tests/generator
The outputs checked are those in $DUPLEXNBD_GENERATED_DIR (default: build/generated
under the repository); if that directory does not exist they are generated into a
temporary directory instead, so the checks still run on a fresh checkout.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GENERATOR = REPO / "generator"
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, str(GENERATOR))

import generate  # noqa: E402

API = generate.load_api()
M = API.model
# libnbd's own calls (libnbd.h, LIBNBD_* nodes) and duplexnbd's extensions (duplexnbd.h).
LIBNBD_CALLS = [c for c in API.calls if not c.extension]
EXTENSION_CALLS = [c for c in API.calls if c.extension]
import emit_cxx  # noqa: E402  (after load_api: emitters import the table's model)
import emit_header  # noqa: E402

# libnbd 1.14 as packaged by Debian: an independent reference for 126 of the calls.
DEBIAN_HEADER = Path("/usr/include/libnbd.h")

_tmp_outdir: tempfile.TemporaryDirectory | None = None


def setUpModule() -> None:
    global OUTDIR, FROM_BUILD, _tmp_outdir
    env = os.environ.get("DUPLEXNBD_GENERATED_DIR")
    d = Path(env) if env else REPO / "build" / "generated"
    FROM_BUILD = d.is_dir()
    if FROM_BUILD:
        OUTDIR = d.resolve()
    else:
        _tmp_outdir = tempfile.TemporaryDirectory(prefix="duplexnbd-gen-")
        OUTDIR = Path(_tmp_outdir.name)
        generate.main(["-q", str(OUTDIR)])


def tearDownModule() -> None:
    if _tmp_outdir is not None:
        _tmp_outdir.cleanup()


def read(rel: str) -> str:
    return (OUTDIR / rel).read_text(encoding="utf-8")


def strip_c_comments(text: str) -> str:
    return re.sub(r"/\*.*?\*/", " ", text, flags=re.S)


def c_prototypes(text: str) -> dict[str, tuple[list[str], list[str]]]:
    """name -> (return type tokens, parameter tokens) of every `extern ... nbd_x (...)`
    in a header; attributes, comments and whitespace do not matter."""
    text = strip_c_comments(text)
    out = {}
    for m in re.finditer(r"\bextern\s+([^;(){}#]*?)\b((?:duplex)?nbd_\w+)\s*\(([^)]*)\)", text):
        out[m.group(2)] = (re.findall(r"\w+|\*", m.group(1)),
                           re.findall(r"\w+|\*|,", m.group(3)))
    return out


def c_defines(text: str) -> dict[str, str]:
    return dict(re.findall(r"^#define[ \t]+((?:LIBNBD|NBD|DUPLEXNBD)_\w+)[ \t]+(.*?)[ \t]*$", text, re.M))


def closure_typedefs(text: str) -> dict[str, list[str]]:
    text = strip_c_comments(text)
    return {m.group(2): re.findall(r"\w+|[*(),;]", m.group(1))
            for m in re.finditer(r"typedef\s+struct\s*\{([^{}]*)\}\s*(nbd_\w+_callback)\s*;", text)}


def compiler(*names: str) -> str | None:
    for n in names:
        p = shutil.which(n)
        if p:
            return p
    return None


def compile_snippet(test: unittest.TestCase, cmd: list[str], source: str, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / f"snippet{suffix}"
        src.write_text(source)
        r = subprocess.run(cmd + [str(src)], capture_output=True, text=True)
        test.assertEqual(r.returncode, 0, f"{' '.join(cmd)} failed:\n{r.stderr}")


# ---------------------------------------------------------------------------


class TableTest(unittest.TestCase):
    def test_names_unique_and_versions_known(self):
        names = [c.name for c in API.calls]
        self.assertEqual(len(names), len(set(names)))
        for c in API.calls:
            self.assertIn(c.first_version, API.version_nodes, c.name)

    def test_required_calls_present(self):
        for n in ("create", "close", "get_error", "get_errno", "block_status_64",
                  "poll2", "get_tls_hostname", "aio_pread", "connect_command"):
            API.call(n)


class DriverTest(unittest.TestCase):
    def test_outputs_on_disk_are_current(self):
        if not FROM_BUILD:
            self.skipTest("no build directory; outputs were generated just now")
        r = subprocess.run([sys.executable, str(GENERATOR / "generate.py"), "--check",
                            str(OUTDIR)], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_list_outputs(self):
        r = subprocess.run([sys.executable, str(GENERATOR / "generate.py"), "--list-outputs"],
                           capture_output=True, text=True, check=True)
        listed = r.stdout.split()
        self.assertEqual(listed, list(generate.generate(API)))
        for p in ("include/libnbd.h", "lib/libnbd.map", "bindings/cxx/nbd.hpp",
                  "docs/api/index.md"):
            self.assertIn(p, listed)

    def test_write_only_if_changed_and_check(self):
        with tempfile.TemporaryDirectory() as d:
            self.assertEqual(generate.main(["-q", d]), 0)
            hdr = Path(d) / "include/libnbd.h"
            os.utime(hdr, (1, 1))
            self.assertEqual(generate.main(["-q", d]), 0)
            self.assertEqual(hdr.stat().st_mtime, 1, "unchanged output was rewritten")
            self.assertEqual(generate.main(["--check", d]), 0)
            hdr.write_text(hdr.read_text() + "/* edited */\n")
            self.assertEqual(generate.main(["--check", d]), 1)
            self.assertEqual(generate.main(["-q", d]), 0)
            self.assertEqual(generate.main(["--check", d]), 0)

    def test_generated_banner(self):
        for rel in generate.generate(API):
            head = "\n".join(read(rel).splitlines()[:3])
            self.assertIn("SPDX-License-Identifier: LGPL-2.1-or-later", head, rel)
            self.assertRegex(head.lower(), r"generated", rel)


class HeaderTest(unittest.TestCase):
    def setUp(self):
        self.text = read("include/libnbd.h")
        self.protos = c_prototypes(self.text)
        self.defines = c_defines(self.text)

    def test_every_call_has_prototype_and_have_macro(self):
        self.assertEqual(set(self.protos), {c.c_name for c in LIBNBD_CALLS})
        for c in LIBNBD_CALLS:
            self.assertEqual(self.defines.get(f"LIBNBD_HAVE_NBD_{c.name.upper()}"), "1", c.name)

    def test_prototypes_match_table(self):
        for c in LIBNBD_CALLS:
            want = c_prototypes("extern " + emit_header.c_prototype(c) + ";")[c.c_name]
            self.assertEqual(self.protos[c.c_name], want, c.name)

    def test_constants(self):
        for e in API.enums:
            for v in e.values:
                self.assertEqual(self.defines[f"LIBNBD_{v.name}"], str(v.value))
        for f in API.flags:
            for v in f.values:
                self.assertEqual(int(self.defines[f"LIBNBD_{f.prefix}_{v.name}"].rstrip("U"), 16),
                                 v.value)
                self.assertTrue(self.defines[f"LIBNBD_{f.prefix}_{v.name}"].endswith("U"))
            self.assertEqual(int(self.defines[f"LIBNBD_{f.prefix}_MASK"].rstrip("U"), 16), f.mask)
        for c in API.int_constants:
            self.assertEqual(self.defines[f"LIBNBD_{c.name}"], str(c.value))
        for c in API.str_constants:
            self.assertEqual(self.defines[f"LIBNBD_{c.name}"], f'"{c.value}"')

    def test_closures_and_null_macros(self):
        tds = closure_typedefs(self.text)
        for ct in API.closures:
            self.assertIn(ct.c_name, tds)
            self.assertEqual(self.defines.get(f"LIBNBD_HAVE_{ct.c_name.upper()}"), "1")
        self.assertIn("NBD_NULL_COMPLETION", self.text)
        self.assertRegex(self.text, r"\}\s*nbd_extent\s*;")

    def test_attributes(self):
        body = strip_c_comments(self.text)
        # `extern ... nbd_x (...)` followed by its attributes, up to the semicolon.
        decls = {m.group(1): m.group(0) for m in
                 re.finditer(r"\bextern\s[^;]*?\b(nbd_\w+)\s*\([^)]*\)[^;]*;", body)}
        for c in LIBNBD_CALLS:
            d = decls[c.c_name]
            if c.name == "create":
                self.assertIn("LIBNBD_ATTRIBUTE_ALLOC_DEALLOC (nbd_close)", d)
            if c.ret is M.RString:
                self.assertIn("LIBNBD_ATTRIBUTE_ALLOC_DEALLOC (__builtin_free)", d, c.name)
            nn = emit_header.nonnull_indices(c)
            if c.name == "close" or not c.handle:
                self.assertNotIn("NONNULL", d, c.name)
            else:
                self.assertIn(f"LIBNBD_ATTRIBUTE_NONNULL ({', '.join(map(str, nn))})", d, c.name)
                self.assertEqual(nn[0], 1, c.name)
        # nbd_close is declared before nbd_create, whose attribute names it.
        self.assertLess(body.index("nbd_close ("), body.index("nbd_create ("))

    # -- libnbd 1.14 (Debian) as a reference -----------------------------------------

    def _debian(self) -> str:
        if not DEBIAN_HEADER.exists():
            self.skipTest(f"{DEBIAN_HEADER} not installed (apt-get install libnbd-dev)")
        return DEBIAN_HEADER.read_text()

    def test_debian_prototypes_match(self):
        deb = c_prototypes(self._debian())
        self.assertGreaterEqual(len(deb), 100)
        for name, proto in deb.items():
            self.assertIn(name, self.protos, f"{name} missing")
            self.assertEqual(self.protos[name], proto, f"{name} differs from libnbd's")

    def test_debian_constants_and_closures_match(self):
        text = self._debian()
        for name, value in c_defines(text).items():
            if name.startswith(("LIBNBD_ATTRIBUTE", "LIBNBD_GCC", "LIBNBD_H")) or \
                    name.endswith("_MASK"):
                continue  # masks grew with flags added since 1.14
            self.assertIn(name, self.defines)
            if name.startswith("NBD_NULL_"):
                continue  # C spelling checked by compilation, C++ one differs on purpose
            self.assertEqual(self.defines[name], value, name)
        ours = closure_typedefs(self.text)
        for name, toks in closure_typedefs(text).items():
            self.assertEqual(ours.get(name), toks, name)

    def test_debian_prototypes_compile_against_ours(self):
        """Redeclaring each of libnbd's prototypes after including ours is a compile
        error in C if any type differs, whatever the spelling."""
        text = strip_c_comments(self._debian())
        cc = compiler("cc", "gcc", "clang")
        if not cc:
            self.skipTest("no C compiler")
        decls = [f"extern {m.group(1)}{m.group(2)} ({m.group(3)});" for m in
                 re.finditer(r"\bextern\s+([^;(){}#]*?)\b(nbd_\w+)\s*\(([^)]*)\)", text)]
        src = "#include <libnbd.h>\n" + "\n".join(decls) + "\nint main (void) { return 0; }\n"
        compile_snippet(self, [cc, "-std=c99", "-Wall", "-Werror", "-pedantic-errors",
                               "-fsyntax-only", f"-I{OUTDIR / 'include'}"], src, ".c")

    # -- compilation -------------------------------------------------------------

    SNIPPET = r"""
#include <libnbd.h>
#include <stddef.h>
#if !defined (LIBNBD_HAVE_NBD_BLOCK_STATUS_64) || !defined (LIBNBD_HAVE_NBD_POLL2) \
    || !defined (LIBNBD_HAVE_NBD_GET_TLS_HOSTNAME) || !defined (LIBNBD_HAVE_NBD_EXTENT64_CALLBACK)
#error "missing LIBNBD_HAVE_* macro"
#endif
static int on_extents (void *user_data, const char *metacontext, uint64_t offset,
                       nbd_extent *entries, size_t nr_entries, int *error)
{
  (void) user_data; (void) metacontext; (void) offset; (void) error;
  return entries[0].length > 0 && nr_entries > 0 ? 0 : -1;
}
int main (void)
{
  struct nbd_handle *h = nbd_create ();
  char buf[512];
  nbd_extent64_callback cb = { on_extents, NULL, NULL };
  int64_t cookie = nbd_aio_pread (h, buf, sizeof buf, 0, NBD_NULL_COMPLETION, 0);
  nbd_completion_callback none = NBD_NULL_COMPLETION;
  (void) none;
  if (cookie == -1 || nbd_block_status_64 (h, 512, 0, cb, LIBNBD_CMD_FLAG_REQ_ONE) == -1
      || nbd_poll2 (h, -1, 0) == -1)
    return 1;
  char *name = nbd_get_tls_hostname (h);
  (void) name;
  nbd_close (h);
  return LIBNBD_CMD_FLAG_MASK == 0;
}
"""

    def _compile(self, cmd: list[str], suffix: str) -> None:
        compile_snippet(self, cmd + ["-fsyntax-only", f"-I{OUTDIR / 'include'}"],
                        self.SNIPPET, suffix)

    def test_compiles_as_c99(self):
        cc = compiler("cc", "gcc", "clang")
        if not cc:
            self.skipTest("no C compiler")
        self._compile([cc, "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic-errors"], ".c")

    def test_compiles_as_cxx17_and_cxx20(self):
        cxx = compiler("c++", "g++", "clang++")
        if not cxx:
            self.skipTest("no C++ compiler")
        for std in ("c++17", "c++20"):
            with self.subTest(std=std):
                self._compile([cxx, f"-std={std}", "-Wall", "-Wextra", "-Werror",
                               "-pedantic-errors"], ".cpp")


class VersionScriptTest(unittest.TestCase):
    def setUp(self):
        text = re.sub(r"#[^\n]*", "", read("lib/libnbd.map"))
        self.text = text
        self.nodes = []  # (name, symbols, has_local, parent)
        for m in re.finditer(r"([A-Z_]+_[0-9.]+)\s*\{(.*?)\}\s*([A-Z_]+_[0-9.]+)?\s*;", text, re.S):
            body = m.group(2)
            syms = re.findall(r"\b((?:duplex)?nbd_\w+)\s*;", body)
            has_local = re.search(r"\blocal\s*:", body) is not None
            self.nodes.append((m.group(1), syms, has_local, m.group(3)))

    def test_node_chain(self):
        names = [n[0] for n in self.nodes]
        libnbd = [M.node_name(v) for v in API.version_nodes]
        self.assertEqual(names[:len(libnbd)], libnbd)
        for i, (name, _, _, parent) in enumerate(self.nodes):
            self.assertEqual(parent, None if i == 0 else names[i - 1], name)
        self.assertEqual(len(names), len(set(names)))

    def test_local_star_once_in_first_node(self):
        self.assertEqual(len(re.findall(r"\blocal\s*:\s*\*\s*;", self.text)), 1)
        self.assertTrue(self.nodes[0][2])
        self.assertFalse(any(n[2] for n in self.nodes[1:]))

    def test_symbols_in_first_version_node(self):
        where = {}
        for name, syms, _, _ in self.nodes:
            for s in syms:
                self.assertNotIn(s, where, f"{s} in two nodes")
                where[s] = name
        self.assertEqual(set(where), {c.c_name for c in API.calls})
        for c in API.calls:
            want = "DUPLEXNBD_1.0" if getattr(c, "extension", False) else M.node_name(c.first_version)
            self.assertEqual(where[c.c_name], want, c.name)

    def test_links_and_hides_everything_else(self):
        """Link a stub library with the script: every call exported at its version,
        nothing else exported."""
        cc = compiler("cc", "gcc")
        readelf = compiler("readelf")
        if not cc or not readelf or not sys.platform.startswith("linux"):
            self.skipTest("needs cc, readelf and GNU ld")
        with tempfile.TemporaryDirectory() as d:
            src = Path(d) / "stub.c"
            src.write_text("".join(f"void {c.c_name} (void) {{}}\n" for c in API.calls) +
                           "void duplexnbd_internal_helper (void) {}\n")
            so = Path(d) / "libstub.so"
            subprocess.run([cc, "-shared", "-fPIC", "-o", str(so), str(src),
                            f"-Wl,--version-script={OUTDIR / 'lib/libnbd.map'}"],
                           check=True, capture_output=True)
            out = subprocess.run([readelf, "--dyn-syms", "-W", str(so)], check=True,
                                 capture_output=True, text=True).stdout
        exported = {}
        for line in out.splitlines():
            f = line.split()
            if len(f) >= 8 and f[6] != "UND" and f[4] == "GLOBAL" and "@" in f[7]:
                sym, _, ver = f[7].partition("@@")
                exported[sym] = ver
        self.assertNotIn("duplexnbd_internal_helper", exported)
        self.assertEqual({s for s in exported if s.startswith("nbd_")},
                         {c.c_name for c in LIBNBD_CALLS})
        for c in API.calls:
            want = "DUPLEXNBD_1.0" if c.extension else M.node_name(c.first_version)
            self.assertEqual(exported[c.c_name], want, c.name)


class DocsTest(unittest.TestCase):
    def test_page_per_call(self):
        for c in API.calls:
            page = read(f"docs/api/{c.c_name}.md")
            self.assertIn(f"# {c.c_name}", page)
            self.assertIn(emit_header.have_macro(c), page)
            header = "include/duplexnbd.h" if c.extension else "include/libnbd.h"
            if c.extension:
                self.assertIn("DUPLEXNBD_1.0", page)
            else:
                self.assertIn(f"{c.first_version[0]}.{c.first_version[1]}", page)
            synopsis = page.split("```c", 1)[1].split("```", 1)[0]
            synopsis = re.sub(r"#include <\w+\.h>", "", synopsis)
            self.assertEqual(c_prototypes("extern " + synopsis)[c.c_name],
                             c_prototypes(read(header))[c.c_name], c.name)

    def test_index_lists_all(self):
        index = read("docs/api/index.md")
        for c in API.calls:
            self.assertIn(f"({c.c_name}.md)", index)
        pages = {p.name for p in (OUTDIR / "docs/api").glob("*.md")} - {"index.md"}
        self.assertEqual(pages, {f"{c.c_name}.md" for c in API.calls})


class ExtensionHeaderTest(unittest.TestCase):
    """duplexnbd.h holds the extensions and only them; libnbd.h never mentions them."""

    def test_extensions_only_in_their_header(self):
        ext = read("include/duplexnbd.h")
        protos = c_prototypes(ext)
        self.assertEqual(set(protos), {c.c_name for c in EXTENSION_CALLS})
        defines = c_defines(ext)
        for c in EXTENSION_CALLS:
            self.assertTrue(c.c_name.startswith("duplexnbd_"), c.name)
            self.assertEqual(defines.get(emit_header.have_macro(c)), "1", c.name)
            self.assertTrue(emit_header.have_macro(c).startswith("DUPLEXNBD_HAVE_"))
        for k in API.extension_constants:
            self.assertEqual(defines[f"DUPLEXNBD_TIMEOUT_{k.name}"], str(k.value))
        self.assertIn("#include <libnbd.h>", ext)
        libnbd = read("include/libnbd.h")
        self.assertNotIn("duplexnbd_", libnbd)
        self.assertNotIn("DUPLEXNBD_", libnbd)

    def test_extension_header_compiles_in_c99_and_cxx(self):
        for cc, std in ((compiler("cc", "gcc"), "-std=c99"), (compiler("c++", "g++"), "-std=c++11")):
            if not cc:
                continue
            with tempfile.TemporaryDirectory() as d:
                src = Path(d) / ("t.c" if std == "-std=c99" else "t.cpp")
                src.write_text("#include <duplexnbd.h>\nint f(struct nbd_handle *h) "
                               "{ return duplexnbd_interrupt(h) + DUPLEXNBD_TIMEOUT_CLOSE_CONNECTION; }\n")
                r = subprocess.run([cc, std, "-Wall", "-Werror", "-pedantic-errors",
                                    "-fsyntax-only", f"-I{OUTDIR / 'include'}", str(src)],
                                   capture_output=True, text=True)
                self.assertEqual(r.returncode, 0, r.stderr)


class CxxTest(unittest.TestCase):
    def setUp(self):
        self.text = read("bindings/cxx/nbd.hpp")

    def test_method_per_call(self):
        for c in API.calls:
            has = re.search(rf"^  [^\n/]*\b{re.escape(c.name)}\(", self.text, re.M)
            if c.name in ("create", "close", "get_error", "get_errno"):
                continue
            self.assertTrue(has, f"no method for {c.c_name}")
            self.assertIn(f"::{c.c_name}(", self.text)

    def test_compiles_with_example(self):
        cxx = compiler("c++", "g++", "clang++")
        if not cxx:
            self.skipTest("no C++ compiler")
        example = REPO / "bindings/cxx/examples/cxx_example.cpp"
        cmd = [cxx, "-std=c++20", "-Wall", "-Wextra", "-Wshadow", "-Werror", "-pedantic-errors",
               "-fsyntax-only", f"-I{OUTDIR / 'include'}", f"-I{OUTDIR / 'bindings/cxx'}"]
        r = subprocess.run(cmd + [str(example)], capture_output=True, text=True)
        if r.returncode != 0 and "span" in r.stderr and "No such file" in r.stderr:
            self.skipTest("C++ compiler without C++20 <span>")
        self.assertEqual(r.returncode, 0, r.stderr)
        # Every method instantiated: take the address of each one.
        names = [c.name for c in emit_cxx.method_calls(API)]
        # The timeouts are overloaded with std::chrono forms: take the C-shaped one, and
        # instantiate the chrono ones by calling them.
        overloaded = {"set_request_timeout", "set_connect_timeout"}
        src = "#include <nbd.hpp>\n#include <chrono>\nint main() {\n" + "".join(
            f"  (void)static_cast<void (nbd::Handle::*)(uint32_t)>(&nbd::Handle::{n});\n"
            if n in overloaded else f"  (void)&nbd::Handle::{n};\n" for n in names)
        if overloaded <= set(names):
            src += ("  nbd::Handle h;\n  h.set_request_timeout(std::chrono::seconds(2));\n"
                    "  h.set_connect_timeout(std::chrono::microseconds(1500));\n"
                    "  (void)h.request_timeout();\n  (void)h.connect_timeout();\n")
        src += "  return 0;\n}\n"
        compile_snippet(self, cmd, src, ".cpp")


if __name__ == "__main__":
    unittest.main()
