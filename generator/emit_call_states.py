# SPDX-License-Identifier: LGPL-2.1-or-later
"""Emits differential/call_states.c: a C driver calling every libnbd <= 1.22 call in every
handle state, with valid and boundary arguments, printing one canonical record per case.

The same binary is run on libnbd 1.22.2 and on duplexnbd (LD_LIBRARY_PATH) and the records
are diffed by tests/differential/call_states/run.sh (docs/call-states.md).  Each case runs in
its own forked child with its own handle, so destructive calls (close, shutdown, connect_*)
and crashes stay confined to that case.
"""

from __future__ import annotations

import model as M
from emit_header import arg_params

# Only calls libnbd 1.22.2 has can be compared with it.
REFERENCE_VERSION = (1, 22)

STATES = ("created", "connecting", "negotiating", "ready", "server_error", "dead", "closed")

# Returns whose value is not deterministic across libraries or runs: only a class is printed.
CLASS_ONLY = {
    "get_version": "string-class",
    "get_package_name": "string-class",
    "connection_state": "string-class",   # the man page says not to rely on its text
    "get_error": "string-class",          # wording may differ; presence is compared
    "aio_get_fd": "nonneg-class",
    "get_subprocess_pid": "nonneg-class",
    "stats_bytes_sent": "zero-class",     # counts depend on the handshake's option order
    "stats_chunks_sent": "zero-class",
    "stats_bytes_received": "zero-class",
    "stats_chunks_received": "zero-class",
}

_U64_MAX = "UINT64_MAX"
_BIG_COUNT = "((size_t) 64 * 1024 * 1024 + 1)"   # one past libnbd's largest request


def _c_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _str_label(v: str) -> str:
    return f"str:{v!r}" if len(v) <= 40 else f"str:{v[0]!r}*{len(v)}"


def _strings(valid: list[str], extra: tuple[str, ...] = ()) -> list[tuple[str, list[str]]]:
    out = [(_str_label(v), [_c_str(v)]) for v in valid]
    out += [("str:NULL", ["NULL"]), ("str:''", ['""'])]
    out += [(_str_label(v), [_c_str(v)]) for v in extra]
    return out


def _string_values(call: M.Call, arg: M.Arg) -> list[tuple[str, list[str]]]:
    n, c = arg.name, call.name
    if n == "uri" and c == "is_uri":
        return _strings(["nbd://localhost/e"], ("nbd+unix:///?socket=s", "nbds://h:1/e",
                                                "http://x/", "nbd+vsock://1:2", "nbd://[::1"))
    if n == "uri":
        return _strings(["nbd+unix:///?socket=nbdkit.sock"],
                        ("nbd://", "http://x/", "nbd+unix:///"))
    if n == "unixsocket":
        return _strings(["nbdkit.sock"], ("no-such.sock",))
    if n == "hostname" and c.startswith(("connect_tcp", "aio_connect_tcp")):
        return _strings(["127.0.0.1"])
    if n == "port":
        return _strings(["1"], ("notaport",))
    if n in ("name", "metacontext"):
        return _strings(["base:allocation"], ("qemu:no-such-context", "nocolon"))
    if n == "socket_name":
        return _strings(["name"], ("bad:name", "x" * 300))
    if n == "dir":
        return _strings(["/nonexistent-dir"])
    if n == "filename":
        return _strings(["/nonexistent-file"])
    if n == "export_name":
        return _strings(["exp"], ("x" * 5000,))
    if n == "handle_name":
        return _strings(["named"])
    return _strings(["user"])


def _string_list_values(call: M.Call, arg: M.Arg) -> list[tuple[str, list[str]]]:
    if arg.name == "argv":
        if "systemd" in call.name:
            first = ("argv:nbdkit", "sl_nbdkit_activation")
        else:
            first = ("argv:nbdkit", "sl_nbdkit_stdio")
        return [(first[0], [first[1]]), ("argv:NULL", ["NULL"]), ("argv:empty", ["sl_empty"]),
                ("argv:missing-program", ["sl_missing"])]
    return [("list:base", ["sl_base"]), ("list:NULL", ["NULL"]), ("list:empty", ["sl_empty"]),
            ("list:two", ["sl_two"])]


def _flag_values(fl: M.Flags, permitted=None) -> list[tuple[str, list[str]]]:
    allowed = [v for v in fl.values if permitted is None or v.name in permitted]
    out = [("flags:0", ["0"])]
    for v in allowed:
        out.append((f"flags:{v.name}", [f"{v.value:#x}"]))
    all_bits = 0
    for v in allowed:
        all_bits |= v.value
    if len(allowed) > 1:
        out.append(("flags:all", [f"{all_bits:#x}"]))
    unknown = 1
    while unknown & fl.mask:
        unknown <<= 1
    out.append((f"flags:unknown-{unknown:#x}", [f"{unknown:#x}"]))
    if permitted is not None:
        outside = [v for v in fl.values if v.name not in permitted]
        if outside:
            out.append((f"flags:not-permitted-{outside[0].name}", [f"{outside[0].value:#x}"]))
    out.append(("flags:0x80000000", ["0x80000000u"]))
    out.append(("flags:0xffffffff", ["0xffffffffu"]))
    return out


def _closure_values(arg, optional: bool) -> list[tuple[str, list[str]]]:
    ct = arg.closure
    real = f"(({ct.c_name}) {{ .callback = cb_{ct.name}, .user_data = NULL, .free = cb_free }})"
    null_cb = f"(({ct.c_name}) {{ .callback = NULL, .user_data = NULL, .free = cb_free }})"
    if optional:
        return [("cb:real", [real]), ("cb:none", [f"(({ct.c_name}) {{ 0 }})"]),
                ("cb:null-with-free", [null_cb])]
    return [("cb:real", [real]), ("cb:null-with-free", [null_cb])]


def arg_values(call: M.Call, arg: M.Arg) -> list[tuple[str, list[str]]]:
    """Each value an argument takes, valid first: (label, C expressions, one per C param)."""
    n = arg.name
    if isinstance(arg, M.Bool):
        return [("true", ["true"]), ("false", ["false"])]
    if isinstance(arg, M.Int):
        if n == "timeout":   # -1 would block for ever in the ready state
            return [("0", ["0"]), ("10", ["10"])]
        return [("0", ["0"]), ("-1", ["-1"]), ("1000", ["1000"])]
    if isinstance(arg, M.UInt32):
        return [("1", ["1"]), ("0", ["0"]), ("max", ["UINT32_MAX"])]
    if isinstance(arg, M.UInt64):
        if n == "count":
            return [("512", ["512"]), ("0", ["0"]), ("2^32", ["(UINT64_C(1) << 32)"]),
                    ("max", [_U64_MAX])]
        if n == "offset":
            return [("0", ["0"]), ("end-256", ["(UINT64_C(1048576) - 256)"]),
                    ("end", ["UINT64_C(1048576)"]), ("max", [_U64_MAX])]
        return [("1", ["1"]), ("0", ["0"]), ("max", [_U64_MAX])]
    if isinstance(arg, M.SizeT):
        return [("0", ["0"]), ("1", ["1"]), ("max", ["SIZE_MAX"])]
    if isinstance(arg, M.UIntPtr):
        return [("42", ["42"]), ("0", ["0"]), ("max", ["UINTPTR_MAX"])]
    if isinstance(arg, M.Fd):
        valid = "fd_nbdkit ()" if "connect_socket" in call.name else "fd_idle ()"
        return [("fd:valid", [valid]), ("fd:-1", ["-1"]), ("fd:closed", ["1000"])]
    if isinstance(arg, (M.String, M.Path)):
        return _string_values(call, arg)
    if isinstance(arg, M.StringList):
        return _string_list_values(call, arg)
    if isinstance(arg, (M.BytesIn, M.BytesOut, M.BytesPersistIn, M.BytesPersistOut)):
        return [("buf:512", ["bigbuf", "512"]), ("buf:NULL,0", ["NULL", "0"]),
                ("buf:NULL,512", ["NULL", "512"]), ("buf:0", ["bigbuf", "0"]),
                ("buf:64M+1", ["bigbuf", _BIG_COUNT]), ("buf:SIZE_MAX", ["bigbuf", "SIZE_MAX"])]
    if isinstance(arg, M.SockAddrAndLen):
        return [("addr:nbdkit", ["(const struct sockaddr *) &sa_nbdkit", "sizeof sa_nbdkit"]),
                ("addr:NULL", ["NULL", "0"]),
                ("addr:len0", ["(const struct sockaddr *) &sa_nbdkit", "0"]),
                ("addr:tcp-refused", ["(const struct sockaddr *) &sa_refused",
                                      "sizeof sa_refused"])]
    if isinstance(arg, M.EnumArg):
        out = [(f"enum:{v.name}", [str(v.value)]) for v in arg.enum.values]
        return out + [("enum:-1", ["-1"]), ("enum:1000", ["1000"])]
    if isinstance(arg, M.FlagsArg):
        return _flag_values(arg.flags)
    if isinstance(arg, M.OFlags):
        return _flag_values(arg.flags, arg.permitted)
    if isinstance(arg, M.Closure):
        return _closure_values(arg, False)
    if isinstance(arg, M.OClosure):
        return _closure_values(arg, True)
    raise TypeError(f"emit_call_states: no values for {type(arg).__name__} ({call.name}.{n})")


def arg_sets(call: M.Call) -> list[tuple[str, list[str]]]:
    """Every argument valid, then one argument at a time at each of its other values."""
    if call.name == "close":   # the only call taking a handle that may be NULL
        return [("-", ["h"]), ("h=NULL", ["NULL"])]
    all_args = list(call.args) + list(call.optargs)
    values = [arg_values(call, a) for a in all_args]
    for a, vs in zip(all_args, values):
        nparams = len(arg_params(a))
        for label, exprs in vs:
            assert len(exprs) == nparams, (call.name, a.name, label)
    base = [vs[0] for vs in values]
    sets = [(",".join(f"{a.name}={v[0]}" for a, v in zip(all_args, base)) or "-",
             [e for v in base for e in v[1]])]
    for i, (a, vs) in enumerate(zip(all_args, values)):
        for v in vs[1:]:
            chosen = list(base)
            chosen[i] = v
            sets.append((",".join(f"{x.name}={c[0]}" for x, c in zip(all_args, chosen)),
                         [e for c in chosen for e in c[1]]))
    return sets


def compared_calls(api) -> list[M.Call]:
    return [c for c in api.calls if not c.extension and c.first_version <= REFERENCE_VERSION]


def _record_ret(call: M.Call) -> list[str]:
    """C statements storing the call's result `r` in the record."""
    cls = CLASS_ONLY.get(call.name)
    ret = call.ret
    if call.name == "create":
        return ["rec_text (rec, \"ret\", r != NULL ? \"non-NULL\" : \"NULL\");",
                "nbd_close (r);"]
    if ret is M.RVoid:
        return ["rec_text (rec, \"ret\", \"void\");"]
    if cls == "string-class":
        return ["rec_text (rec, \"ret\", r == NULL ? \"NULL\" : r[0] ? \"non-empty\" : \"empty\");"]
    if cls == "nonneg-class":
        return ["rec_text (rec, \"ret\", r >= 0 ? \">=0\" : r == -1 ? \"-1\" : \"<-1\");"]
    if cls == "zero-class":
        return ["rec_text (rec, \"ret\", r == 0 ? \"0\" : \">0\");"]
    if ret is M.RString:
        return ["rec_string (rec, r);", "free (r);"]
    if ret is M.RStaticString:
        return ["rec_string (rec, r);"]
    if ret.c_type in ("uint32_t", "unsigned", "uint64_t", "uintptr_t"):
        return ["rec_uint (rec, (uint64_t) r);"]
    return ["rec_int (rec, (int64_t) r);"]


def _failed(call: M.Call) -> str:
    """C condition for "the call reported failure"; errno and the message are only
    meaningful then (libnbd leaves them stale after a success)."""
    if not call.may_set_error or call.ret.error is None:
        return "false"
    return f"r == {call.ret.error}"


def _case_function(call: M.Call, sets) -> list[str]:
    out = [f"static void case_{call.name} (struct nbd_handle *h, int set, struct record *rec)",
           "{"]
    out.append("  (void) h;")
    pre = "" if call.ret is M.RVoid else f"{call.ret.c_type} r = "
    if call.ret.c_type.endswith("*"):
        pre = f"{call.ret.c_type}r = "
    out.append("  switch (set) {")
    for i, (label, exprs) in enumerate(sets):
        args = (["h"] if call.handle and call.name != "close" else []) + exprs
        out.append(f"  case {i}: {{  /* {label} */")
        if call.name in ("get_error", "get_errno"):
            # What they report must be the latest failure, not whatever the setup left.
            out.append("    nbd_set_handle_name (h, NULL);")
        out.append(f"    {pre}{call.c_name} ({', '.join(args)});")
        out.append(f"    rec_error (rec, {_failed(call)});")
        out += ["    " + s for s in _record_ret(call)]
        out.append("    break;")
        out.append("  }")
    out.append("  }")
    out.append("}")
    out.append("")
    return out


_PRELUDE = r"""/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Generated by generator/emit_call_states.py from the API table: do not edit.
 * Calls every libnbd <= 1.22 call in every handle state with valid and boundary arguments
 * and prints one record per case: see docs/call-states.md. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <arpa/inet.h>

/* NULL is passed on purpose where the header says non-NULL: the library's check is tested. */
#define LIBNBD_ATTRIBUTE_NONNULL(...)
#include <libnbd.h>

struct record { char text[1024]; };

static void rec_text (struct record *rec, const char *key, const char *val)
{
  size_t n = strlen (rec->text);
  snprintf (rec->text + n, sizeof rec->text - n, " %s=%s", key, val);
}

static void rec_int (struct record *rec, int64_t v)
{
  char b[32];
  snprintf (b, sizeof b, "%" PRId64, v);
  rec_text (rec, "ret", b);
}

static void rec_uint (struct record *rec, uint64_t v)
{
  char b[32];
  snprintf (b, sizeof b, "%" PRIu64, v);
  rec_text (rec, "ret", b);
}

static void rec_string (struct record *rec, const char *s)
{
  char b[200];
  if (s == NULL) {
    rec_text (rec, "ret", "NULL");
    return;
  }
  size_t j = 0;
  b[j++] = '"';
  for (size_t i = 0; s[i] && j < sizeof b - 8; i++) {
    unsigned char ch = (unsigned char) s[i];
    if (ch < 0x21 || ch > 0x7e || ch == '"' || ch == '\\')
      j += (size_t) snprintf (b + j, sizeof b - j, "\\x%02x", ch);
    else
      b[j++] = (char) ch;
  }
  b[j++] = '"';
  b[j] = '\0';
  rec_text (rec, "ret", b);
}

/* errno and the presence of a message, read right after a call that failed. */
static void rec_error (struct record *rec, bool failed)
{
  if (!failed) {
    rec_text (rec, "errno", "-");
    return;
  }
  int e = nbd_get_errno ();
  const char *name = e ? strerrorname_np (e) : "0";
  char b[64];
  snprintf (b, sizeof b, "%d(%s)", e, name ? name : "?");
  rec_text (rec, "errno", b);
  rec_text (rec, "error", nbd_get_error () != NULL ? "set" : "unset");
}

static int cb_calls, cb_frees;
static void cb_free (void *user_data) { (void) user_data; cb_frees++; }
"""

_SETUP = r"""
static char *bigbuf;
static struct sockaddr_un sa_nbdkit, sa_error;
static struct sockaddr_in sa_refused;
static char *sl_base[] = { (char *) "base:allocation", NULL };
static char *sl_two[] = { (char *) "base:allocation", (char *) "qemu:dirty-bitmap:x", NULL };
static char *sl_empty[] = { NULL };
static char *sl_true[] = { (char *) "true", NULL };
static char *sl_missing[] = { (char *) "/nonexistent/program", NULL };
static char *sl_nbdkit_stdio[] = { (char *) "nbdkit", (char *) "-s", (char *) "--exit-with-parent",
                                   (char *) "memory", (char *) "1M", NULL };
static char *sl_nbdkit_activation[] = { (char *) "nbdkit", (char *) "--exit-with-parent",
                                        (char *) "memory", (char *) "1M", NULL };

static void set_unix (struct sockaddr_un *sa, const char *path)
{
  memset (sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  strncpy (sa->sun_path, path, sizeof sa->sun_path - 1);
}

static int fd_nbdkit (void)
{
  int fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd == -1 || connect (fd, (struct sockaddr *) &sa_nbdkit, sizeof sa_nbdkit) == -1)
    _exit (3);
  return fd;
}

/* A descriptor that never becomes readable. */
static int fd_idle (void)
{
  int p[2];
  if (pipe (p) == -1)
    _exit (3);
  return p[0];
}

/* A listener that accepts nothing: a connection to it stays in the handshake. */
static int silent_listener (void)
{
  struct sockaddr_un sa;
  set_unix (&sa, "silent.sock");
  unlink ("silent.sock");
  int fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd == -1 || bind (fd, (struct sockaddr *) &sa, sizeof sa) == -1 || listen (fd, 4) == -1)
    _exit (3);
  return fd;
}

/* Brings a fresh handle to `state`; exits 3 (a setup failure) when it cannot. */
static struct nbd_handle *setup (const char *state)
{
  struct nbd_handle *h = nbd_create ();
  if (h == NULL)
    _exit (3);
  if (strcmp (state, "created") == 0)
    return h;
  if (strcmp (state, "connecting") == 0) {
    silent_listener ();
    if (nbd_aio_connect_unix (h, "silent.sock") == -1 || !nbd_aio_is_connecting (h))
      _exit (3);
    return h;
  }
  if (strcmp (state, "dead") == 0) {
    /* The server hangs up during the handshake. */
    if (nbd_connect_command (h, sl_true) != -1 || !nbd_aio_is_dead (h))
      _exit (3);
    return h;
  }
  if (nbd_add_meta_context (h, "base:allocation") == -1)
    _exit (3);
  if (strcmp (state, "negotiating") == 0) {
    if (nbd_set_opt_mode (h, true) == -1 || nbd_connect_unix (h, "nbdkit.sock") == -1 ||
        !nbd_aio_is_negotiating (h))
      _exit (3);
    return h;
  }
  if (strcmp (state, "server_error") == 0) {
    /* This server fails every data command with EIO. */
    char b[512];
    if (nbd_connect_unix (h, "error.sock") == -1 || nbd_pread (h, b, sizeof b, 0, 0) != -1)
      _exit (3);
    return h;
  }
  if (nbd_connect_unix (h, "nbdkit.sock") == -1)
    _exit (3);
  if (strcmp (state, "ready") == 0)
    return h;
  if (strcmp (state, "closed") == 0) {
    if (nbd_shutdown (h, 0) == -1 || !nbd_aio_is_closed (h))
      _exit (3);
    return h;
  }
  _exit (3);
}

static void rec_state_after (struct record *rec, struct nbd_handle *h)
{
  const char *s = nbd_aio_is_created (h) ? "created"
    : nbd_aio_is_connecting (h) ? "connecting"
    : nbd_aio_is_negotiating (h) ? "negotiating"
    : nbd_aio_is_processing (h) ? "processing"
    : nbd_aio_is_ready (h) ? "ready"
    : nbd_aio_is_dead (h) ? "dead"
    : nbd_aio_is_closed (h) ? "closed" : "?";
  rec_text (rec, "state", s);
}

typedef void (*case_fn) (struct nbd_handle *, int, struct record *);
struct call_cases {
  const char *name;
  case_fn fn;
  int nsets;
  const char *const *labels;
};
"""

_MAIN = r"""
static void run_case (const struct call_cases *c, const char *state, int set)
{
  int p[2];
  fflush (stdout);
  if (pipe (p) == -1) {
    perror ("pipe");
    exit (1);
  }
  pid_t pid = fork ();
  if (pid == -1) {
    perror ("fork");
    exit (1);
  }
  if (pid == 0) {
    close (p[0]);
    int null = open ("/dev/null", O_WRONLY);
    dup2 (null, 2);
    alarm (30);
    struct nbd_handle *h = setup (state);
    struct record rec = { "" };
    cb_calls = cb_frees = 0;
    c->fn (h, set, &rec);
    /* Commands and options the call started are left to finish (each library takes its own
     * time), so what is recorded next does not depend on timing.  Not in the connecting
     * state: its server never answers. */
    if (strcmp (c->name, "close") != 0 && strcmp (state, "connecting") != 0)
      for (int i = 0; i < 30 && (nbd_aio_is_connecting (h) || nbd_aio_in_flight (h) > 0); i++)
        nbd_poll (h, 100);
    char b[32];
    snprintf (b, sizeof b, "%d/%d", cb_calls, cb_frees);
    rec_text (&rec, "callbacks/frees", b);
    if (strcmp (c->name, "close") != 0) {
      rec_state_after (&rec, h);
      nbd_close (h);
    }
    if (write (p[1], rec.text, strlen (rec.text)) < 0)
      _exit (4);
    _exit (0);
  }
  close (p[1]);
  char text[1100];
  size_t n = 0;
  ssize_t r;
  while (n < sizeof text - 1 && (r = read (p[0], text + n, sizeof text - 1 - n)) > 0)
    n += (size_t) r;
  text[n] = '\0';
  close (p[0]);
  int status;
  while (waitpid (pid, &status, 0) == -1 && errno == EINTR)
    ;
  printf ("%s %s %s:", c->name, state, c->labels[set]);
  if (WIFSIGNALED (status))
    printf (" %s=%s\n", WTERMSIG (status) == SIGALRM ? "timeout" : "crash",
            WTERMSIG (status) == SIGALRM ? "30s" : strsignal (WTERMSIG (status)));
  else if (WEXITSTATUS (status) == 3)
    printf (" setup-failed\n");
  else
    printf ("%s\n", text);
}

int main (int argc, char **argv)
{
  /* Usage: call_states [CALL...]; run in a directory holding nbdkit.sock (nbdkit memory 1M)
   * and error.sock (the same behind --filter=error failing every data command). */
  setvbuf (stdout, NULL, _IOLBF, 0);
  unsetenv ("LIBNBD_DEBUG");
  bigbuf = calloc (1, (size_t) 64 * 1024 * 1024 + 4096);
  if (bigbuf == NULL)
    return 1;
  set_unix (&sa_nbdkit, "nbdkit.sock");
  set_unix (&sa_error, "error.sock");
  memset (&sa_refused, 0, sizeof sa_refused);
  sa_refused.sin_family = AF_INET;
  sa_refused.sin_port = htons (1);
  sa_refused.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
  struct nbd_handle *vh = nbd_create ();
  if (vh == NULL)
    return 1;
  printf ("# library: %s %s\n", nbd_get_package_name (vh), nbd_get_version (vh));
  nbd_close (vh);
  for (size_t s = 0; s < sizeof states / sizeof states[0]; s++)
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
      bool wanted = argc < 2;
      for (int a = 1; a < argc; a++)
        wanted |= strcmp (argv[a], cases[i].name) == 0;
      if (wanted)
        for (int set = 0; set < cases[i].nsets; set++)
          run_case (&cases[i], states[s], set);
    }
  return 0;
}
"""


def _callbacks(api) -> list[str]:
    out = []
    for ct in api.closures:
        params = ["void *user_data"] + [
            f"{a.c_type}{a.name}" if a.c_type.endswith("*") else f"{a.c_type} {a.name}"
            for a in ct.args]
        out.append(f"static int cb_{ct.name} ({', '.join(params)})")
        out.append("{")
        out.append("  (void) user_data;")
        out += [f"  (void) {a.name};" for a in ct.args]
        out.append("  cb_calls++;")
        out.append("  return 0;")
        out.append("}")
    return out


def render(api) -> str:
    calls = compared_calls(api)
    out = [_PRELUDE] + _callbacks(api) + [_SETUP]
    table = []
    for c in calls:
        sets = arg_sets(c)
        out += _case_function(c, sets)
        out.append(f"static const char *const labels_{c.name}[] = {{")
        out += [f"  {_c_str(label)}," for label, _ in sets]
        out.append("};")
        table.append(f"  {{ \"{c.name}\", case_{c.name}, {len(sets)}, labels_{c.name} }},")
    out.append("static const struct call_cases cases[] = {")
    out += table
    out.append("};")
    out.append("static const char *const states[] = { "
               + ", ".join(_c_str(s) for s in STATES) + " };")
    out.append(_MAIN)
    return "\n".join(out)


def emit(api) -> dict[str, str]:
    return {"differential/call_states.c": render(api)}
