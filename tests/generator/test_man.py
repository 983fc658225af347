# SPDX-License-Identifier: LGPL-2.1-or-later
"""The man pages (generator/emit_man.py) against the table and the header: one page per
call with the header's prototype, the version it appeared in, and extension calls
handled; rendering each page without groff warnings is checked on the built pages by
tests/man/check_man_pages.sh.

Run from anywhere:  python3 -m unittest discover -s tests/generator
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys
import unittest
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.dont_write_bytecode = True
sys.path.insert(0, str(REPO / "generator"))

import generate  # noqa: E402

API = generate.load_api()
M = API.model
import emit_header  # noqa: E402  (after load_api: emitters import the table's model)
import emit_man  # noqa: E402

OUTPUTS = generate.generate(API)


def unroff(text: str) -> str:
    """Font changes and break points removed, escapes turned back into characters."""
    text = re.sub(r"\\f[BIRP]", "", text)
    return text.replace("\\:", "").replace("\\-", "-").replace("\\e", "\\").replace("\\&", "")


def section(page: str, name: str) -> str:
    m = re.search(rf'^\.SH "?{re.escape(name)}"?\n(.*?)(?=^\.SH |\Z)', page, re.M | re.S)
    assert m, f"no {name} section"
    return m.group(1)


def normalise_c(text: str) -> str:
    return " ".join(re.findall(r"\w+|[*(),;]", text))


def groff_warnings(page: str) -> str:
    r = subprocess.run(["groff", "-man", "-ww", "-z", "-Tutf8"], input=page,
                       capture_output=True, text=True, check=False)
    return r.stderr


def fake_extension() -> M.Call:
    """What another call added to the table as a duplexnbd extension would look like."""
    c = M.Call("set_duplex_window", [M.UInt("requests")], M.RErr, (1, 22),
               "limit requests in flight per direction",
               "Sets how many requests may wait for a reply at once.\n\n"
               ".leading dot and a back\\slash must survive.",
               permitted_states=(M.CREATED,), see_also=("get_size",))
    c.extension = True  # type: ignore[attr-defined]
    return c


class ManPagesTest(unittest.TestCase):
    def test_one_page_per_call_and_the_overview(self):
        pages = {p for p in OUTPUTS if p.startswith("man/")}
        expected = {f"man/man3/{c.c_name}.3" for c in API.calls} | {"man/man3/duplexnbd.3"}
        self.assertEqual(pages, expected)

    def test_name_synopsis_version(self):
        for c in API.calls:
            header = OUTPUTS["include/duplexnbd.h" if c.extension else "include/libnbd.h"]
            page = OUTPUTS[f"man/man3/{c.c_name}.3"]
            with self.subTest(c.c_name):
                self.assertRegex(page, re.compile(rf"^\.TH {c.c_name.upper()} 3 ", re.M))
                self.assertTrue(section(page, "NAME").startswith(f"{c.c_name} \\- "))
                syn = unroff(section(page, "SYNOPSIS"))
                self.assertIn("#include <duplexnbd.h>" if c.extension else "#include <libnbd.h>", syn)
                proto = syn.split(".PP\n", 1)[1].split(".fi", 1)[0]
                want = re.search(rf"^extern ([^;{{]*?\b{c.c_name} \([^;]*\));", header, re.S | re.M)
                self.assertIsNotNone(want)
                # The header's attributes follow the parameter list; the page has none.
                want_text = re.sub(r"\)\s*LIBNBD_ATTRIBUTE.*$", ")", want.group(1), flags=re.S)
                self.assertEqual(normalise_c(proto), normalise_c(want_text + ";"))
                ver = unroff(section(page, "VERSION"))
                v = f"{c.first_version[0]}.{c.first_version[1]}"
                macro = emit_header.have_macro(c)
                if c.extension:
                    self.assertIn("duplexnbd extension", ver)
                    self.assertIn("DUPLEXNBD_1.0", ver)
                    self.assertIn(macro, ver)
                    continue
                self.assertIn(f"This function first appeared in libnbd {v} ", ver)
                if c.first_version > (1, 0):
                    self.assertIn(macro, ver)
                else:
                    self.assertNotIn("LIBNBD_HAVE_", ver)
                for s in ("DESCRIPTION", "RETURN VALUE", "ERRORS", "SEE ALSO"):
                    self.assertTrue(section(page, s).strip(), s)
                self.assertIn(".BR duplexnbd (3)", section(page, "SEE ALSO"))

    def test_see_also_names_existing_pages_only(self):
        names = {c.c_name for c in API.calls} | {"duplexnbd"}
        for c in API.calls:
            refs = re.findall(r"^\.BR (\S+) \(3\)", section(OUTPUTS[f"man/man3/{c.c_name}.3"],
                                                         "SEE ALSO"), re.M)
            self.assertTrue(set(refs) <= names, (c.c_name, set(refs) - names))

    def test_error_numbers_follow_the_checks(self):
        pread = OUTPUTS["man/man3/nbd_pread.3"]
        errs = section(pread, "ERRORS")
        self.assertIn(".B ENOTCONN", errs)   # not permitted in the created state
        self.assertIn(".B EFAULT", errs)     # buf
        get_error = section(OUTPUTS["man/man3/nbd_get_error.3"], "ERRORS")
        self.assertNotIn(".B E", get_error)

    def test_overview_lists_every_call_and_no_extension(self):
        page = OUTPUTS["man/man3/duplexnbd.3"]
        funcs = section(page, "FUNCTIONS")
        for c in API.calls:
            if not c.extension:
                self.assertIn(f".BR {c.c_name} (3)", funcs)
        self.assertIn("duplexnbd.h", unroff(page))
        self.assertIn("nbd_get_package_name", unroff(section(page, "WHICH LIBRARY IS RUNNING"))
                      + unroff(section(page, "DIFFERENCES FROM LIBNBD")))

    def test_extension_call(self):
        ext = fake_extension()
        api = dataclasses.replace(API, calls=API.calls + (ext,),
                                  _by_name={**API._by_name, ext.name: ext})
        page = emit_man.render_page(api, ext)
        text = unroff(page)
        self.assertIn("#include <duplexnbd.h>", text)
        self.assertNotIn("libnbd.h", section(page, "SYNOPSIS"))
        self.assertIn("duplexnbd extension", text)
        self.assertIn("DUPLEXNBD_1.0", text)
        self.assertNotIn("first appeared in libnbd", text)
        self.assertIn("\n\\&.leading dot", page)
        self.assertNotIn("\n.leading", page)
        self.assertIn("back\\eslash", page)
        overview = emit_man.render_overview(api)
        ext_section = section(overview, "DIFFERENCES FROM LIBNBD")
        self.assertIn(f".BR {ext.c_name} (3)", ext_section)
        self.assertNotIn(f".BR {ext.c_name} (3)", section(overview, "FUNCTIONS"))
        out = emit_man.emit(api)
        self.assertIn(f"man/man3/{ext.c_name}.3", out)
        if shutil.which("groff"):
            self.assertEqual(groff_warnings(page), "")
            self.assertEqual(groff_warnings(overview), "")

    def test_escaping(self):
        self.assertEqual(emit_man.safe_lines(".x\n'y\nz"), "\\&.x\n\\&'y\nz")
        self.assertEqual(emit_man.escape("a\\b\u2014"), "a\\eb\\[u2014]")
        self.assertEqual(emit_man.code("-s"), "\\fB\\-s\\fP")


if __name__ == "__main__":
    unittest.main()
