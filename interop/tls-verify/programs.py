# SPDX-License-Identifier: LGPL-2.1-or-later
# Prints gcc commands building libnbd 1.22's TLS test programs with the flags their Makefile.am gives.
import re
import sys

src, work, header_dir, lib_dir = sys.argv[1:5]
PROGRAMS = {
    "interop": ["interop-nbdkit-tls-certs", "interop-nbdkit-tls-certs-allow-enabled",
                "interop-nbdkit-tls-certs-allow-fallback", "interop-nbdkit-tls-certs-bad-CA",
                "interop-nbdkit-tls-certs-bad-hostname", "interop-nbdkit-tls-psk",
                "interop-nbdkit-tls-psk-allow-enabled", "interop-nbdkit-tls-psk-allow-fallback",
                "interop-qemu-nbd-tls-certs", "interop-qemu-nbd-tls-psk", "interop-nbd-server-tls"],
    "tests": ["connect-tls-certs", "connect-tls-psk", "opt-starttls", "connect-uri-nbds-certs",
              "connect-uri-nbds-unix-certs", "connect-uri-nbds-unix-tls-hostname",
              "connect-uri-nbds-unix-tls-verify-peer-false", "connect-uri-nbds-psk",
              "connect-uri-nbds-unix-psk"],
}
MAKE_VARS = {"$(NBDKIT)": "nbdkit", "$(QEMU_NBD)": "qemu-nbd", "$(NBD_SERVER)": "nbd-server",
             "$(abs_top_builddir)": work, "$(top_srcdir)": src, "$(srcdir)": src,
             "$(AM_CPPFLAGS)": "", "$(NULL)": ""}

for directory, programs in PROGRAMS.items():
    makefile = open(f"{src}/{directory}/Makefile.am").read().replace("\\\n", " ")
    for program in programs:
        var = program.replace("-", "_")
        sources = re.search(rf"^{var}_SOURCES\s*=(.*)$", makefile, re.M)
        if sources is None:
            sys.exit(f"{program}: not in {directory}/Makefile.am")
        flags = re.search(rf"^{var}_CPPFLAGS\s*=(.*)$", makefile, re.M)
        flags = flags.group(1) if flags else ""
        for name, value in MAKE_VARS.items():
            flags = flags.replace(name, value)
        files = []
        for f in sources.group(1).split():
            if not f.endswith(".c"):
                continue
            f = f.replace("../tests/", "")
            shared = f in ("requires.c", "pick-a-port.c")
            files.append(f"{src}/tests/{f}" if shared or directory == "tests" else f"{src}/{directory}/{f}")
        print(f"gcc -w -o {work}/{directory}/{program} -I{src} -I{src}/common/include -I{header_dir} "
              f"-I{src}/tests {flags} {' '.join(files)} -L{lib_dir} -lnbd -lgnutls -lpthread")
