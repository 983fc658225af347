# SPDX-License-Identifier: LGPL-2.1-or-later
"""Emit bindings/cxx/nbd.hpp: a header-only C++20 API over the public C API.

Design (see the header's own comments for the user-facing version):
  * nbd::Handle owns one nbd_handle* (move-only RAII); every table call except the
    handle-less ones and nbd_close becomes a snake_case method without the nbd_ prefix.
  * Failures throw nbd::Error (message and errno captured from nbd_get_error /
    nbd_get_errno right after the failing call, before anything else can reset them).
  * Callbacks are std::function objects.  The C closure's user_data is a heap Box
    holding the function and a pointer to the handle's "pending exception" slot; the
    closure's .free deletes the Box, so the library's exactly-once free contract is
    what manages its lifetime.  An exception escaping a callback must not unwind
    through C frames (undefined behaviour), so the trampoline catches it, parks it in
    the slot, reports failure to C (return -1, and *error = EIO when the callback has
    an error out-parameter still at 0), and the method that was running rethrows it
    once the C call has returned.
  * Only the C API is used, never duplexnbd internals, so the header works with real
    libnbd too.
"""

from __future__ import annotations

import model as M

from emit_header import GENERATED_NOTE, closure_param_name

# Calls that are not methods: the constructor/destructor and the thread-local error
# accessors (folded into nbd::Error).
NOT_METHODS = frozenset({"create", "close", "get_error", "get_errno"})

# C++ keywords and common macros a table argument name could collide with.
_CXX_RESERVED = frozenset("""
alignas alignof and and_eq asm auto bitand bitor bool break case catch char char8_t
char16_t char32_t class compl concept const consteval constexpr constinit const_cast
continue co_await co_return co_yield decltype default delete do double dynamic_cast
else enum explicit export extern false float for friend goto if inline int long
mutable namespace new noexcept not not_eq nullptr operator or or_eq private protected
public register reinterpret_cast requires return short signed sizeof static
static_assert static_cast struct switch template this thread_local throw true try
typedef typeid typename union unsigned using virtual void volatile wchar_t while xor
xor_eq errno
""".split())


def ident(name: str) -> str:
    return name + "_" if name in _CXX_RESERVED else name


def method_calls(api) -> list[M.Call]:
    return [c for c in api.calls if c.name not in NOT_METHODS]


def fn_alias(ct: M.ClosureType) -> str:
    """nbd::<name>_callback: the std::function type of a closure kind."""
    return f"{ct.name}_callback"


def _fn_signature(ct: M.ClosureType) -> str:
    params = ", ".join(_decl(a.c_type, a.name) for a in ct.args)
    return f"int({params})"


def _decl(t: str, n: str) -> str:
    n = ident(n)
    return f"{t}{n}" if t.endswith("*") else f"{t} {n}"


# ---------------------------------------------------------------------------
# Arguments: (C++ parameter declarations, setup statements, C argument expressions).


_SIMPLE = {
    M.Bool: "bool", M.Int: "int", M.UInt: "unsigned", M.UInt32: "uint32_t",
    M.UInt64: "uint64_t", M.Int64: "int64_t", M.SizeT: "size_t", M.UIntPtr: "uintptr_t",
    M.Fd: "int", M.EnumArg: "int", M.FlagsArg: "uint32_t",
}


def _arg(arg) -> tuple[list[str], list[str], list[str]]:
    n = ident(arg.name)
    t = _SIMPLE.get(type(arg))
    if t is not None:
        return [f"{t} {n}"], [], [n]
    if isinstance(arg, M.OFlags):
        return [f"uint32_t {n} = 0"], [], [n]
    if isinstance(arg, (M.String, M.Path)):
        return [f"const std::string &{n}"], [], [f"{n}.c_str()"]
    if isinstance(arg, M.StringList):
        return ([f"const std::vector<std::string> &{n}"],
                [f"detail::c_string_array {n}_c({n});"], [f"{n}_c.get()"])
    if isinstance(arg, (M.BytesIn, M.BytesPersistIn)):
        return [f"std::span<const std::byte> {n}"], [], [f"{n}.data()", f"{n}.size()"]
    if isinstance(arg, (M.BytesOut, M.BytesPersistOut)):
        return [f"std::span<std::byte> {n}"], [], [f"{n}.data()", f"{n}.size()"]
    if isinstance(arg, M.SockAddrAndLen):
        ln = ident(arg.len)
        return [f"const struct sockaddr *{n}", f"socklen_t {ln}"], [], [n, ln]
    if isinstance(arg, (M.Closure, M.OClosure)):
        ct = arg.closure
        # Parameter named after the closure kind ("completion"): the C name
        # ("completion_callback") would shadow the nbd::completion_callback type.
        cname = ident(closure_param_name(arg)[: -len("_callback")])
        required = "true" if isinstance(arg, M.Closure) else "false"
        default = " = nullptr" if isinstance(arg, M.OClosure) else ""
        # Closures are built after every other argument is ready, each held by an
        # owned_closure (which runs .free if a later step throws) until the call
        # expression releases them all; nothing in that expression can throw, and
        # from then on the library owns them (it calls .free even if it fails).
        return ([f"nbd::{fn_alias(ct)} {cname}{default}"],
                [f"detail::owned_closure<{ct.c_name}> {cname}_c(\n"
                 f"        detail::wrap_{ct.name}(std::move({cname}), slot_(), {required}));"],
                [f"{cname}_c.release()"])
    raise TypeError(f"emit_cxx: unknown argument kind {type(arg).__name__}")


# ---------------------------------------------------------------------------
# Return values: (C++ type, statements after `auto r = nbd_x(...);`).


def _fails(call: M.Call) -> str | None:
    """C condition on `r` meaning failure, or None when the call cannot fail."""
    if call.ret.error is None or not call.may_set_error:
        return None
    err = "nullptr" if call.ret.error == "NULL" else call.ret.error
    return f"result_ == {err}"


def _ret(call: M.Call) -> tuple[str, list[str]]:
    ret = call.ret
    fail = _fails(call)
    check = f"finish_({fail});" if fail else "finish_(false);"
    if ret is M.RVoid or ret.c_type == "void":
        return "void", ["finish_(false);"]
    if ret is M.RErr:
        return "void", [check]
    if ret is M.RBool:
        return "bool", [check, "return result_ != 0;"]
    if ret is M.RString:
        # Own the malloc'd string before anything can throw, then copy it out.
        return "std::string", ["detail::c_string_owner owner_(result_);", check,
                               "return result_ != nullptr ? std::string(result_) : std::string();"]
    if ret is M.RStaticString:
        return "std::string", [check, 'return result_ != nullptr ? std::string(result_) : std::string();']
    if ret is M.RCookie:
        return "uint64_t", [check, "return static_cast<uint64_t>(result_);"]
    if ret is M.RSizeT:
        return "size_t", [check, "return static_cast<size_t>(result_);"]
    return ret.c_type.strip(), [check, "return result_;"]


def _doc_lines(call: M.Call) -> list[str]:
    lines = [f"  /// {call.c_name}: {' '.join(call.summary.split())}"]
    if any(isinstance(a, (M.BytesPersistIn, M.BytesPersistOut)) for a in call.args):
        lines.append("  /// The buffer must stay valid (and untouched) until the command retires.")
    return lines


def method(call: M.Call) -> list[str]:
    params: list[str] = []
    setup: list[str] = []
    closure_setup: list[str] = []
    cargs: list[str] = ["c_handle_"] if call.handle else []
    for a in list(call.args) + list(call.optargs):
        p, s, c = _arg(a)
        params += p
        (closure_setup if isinstance(a, (M.Closure, M.OClosure)) else setup).extend(s)
        cargs += c
    rtype, after = _ret(call)
    out = _doc_lines(call)
    out.append(f"  {rtype} {call.name}({', '.join(params)}) {{")
    if call.handle:
        out.append("    struct nbd_handle *c_handle_ = handle_or_throw_();")
    for s in setup + closure_setup:
        out.append(f"    {s}")
    invoke = f"::{call.c_name}({', '.join(cargs)})"
    if call.ret is M.RVoid or call.ret.c_type == "void":
        out.append(f"    {invoke};")
    elif call.ret is M.RErr and not call.may_set_error:
        # Fails only for a NULL handle, which a Handle never passes, and records nothing.
        out.append(f"    (void){invoke};")
        after = [a for a in after if "result_" not in a] or ["finish_(false);"]
    else:
        out.append(f"    auto result_ = {invoke};")
    for s in after:
        out.append(f"    {s}")
    out.append("  }")
    out.append("")
    return out


def _wrapper(ct: M.ClosureType) -> list[str]:
    alias = fn_alias(ct)
    cparams = ", ".join(["void *user_data"] + [_decl(a.c_type, a.name) for a in ct.args])
    names = ", ".join(ident(a.name) for a in ct.args)
    has_error = any(a.name == "error" and a.c_type.replace(" ", "") == "int*" for a in ct.args)
    on_throw = ["      if (error != nullptr && *error == 0) *error = EIO;"] if has_error else []
    return [
        f"inline {ct.c_name} wrap_{ct.name}({alias} fn, pending_slot *slot, bool required) {{",
        f"  {ct.c_name} c{{}};",
        "  if (!fn) {",
        "    if (required)",
        f"      throw std::invalid_argument(\"nbd: empty {alias}\");",
        "    return c;  // all-NULL: the C API's \"no callback\"",
        "  }",
        f"  using box_t = box<{alias}>;",
        "  auto *b = new box_t{std::move(fn), slot};",
        f"  c.callback = []({cparams}) -> int {{",
        "    auto *self = static_cast<box_t *>(user_data);",
        "    try {",
        f"      return self->fn({names});",
        "    } catch (...) {",
        "      self->slot->park(std::current_exception());",
        *on_throw,
        "      return -1;",
        "    }",
        "  };",
        "  c.user_data = b;",
        "  c.free = [](void *user_data) { delete static_cast<box_t *>(user_data); };",
        "  return c;",
        "}",
        "",
    ]


HEAD = """\
// {note}
// SPDX-License-Identifier: LGPL-2.1-or-later
// nbd.hpp: header-only C++20 API over the libnbd C API (nbd::Handle, nbd::Error).
//
//   nbd::Handle h;                                   // nbd_create
//   h.connect_uri("nbd://localhost");
//   std::vector<std::byte> buf(512);
//   h.pread(buf, 0);                                 // throws nbd::Error on failure
//   h.aio_pwrite(buf, 0, [](int *error) {{ return 1; }});
//
// Methods are the C calls without the nbd_ prefix and without the handle; optional
// callbacks and flags are defaulted parameters.  Strings are std::string, string
// lists std::vector<std::string>, buffers std::span<std::byte> (const for writes).
// Callbacks are std::function taking the C callback's arguments minus user_data; an
// exception thrown by one is rethrown from the Handle method during which it ran
// (after the C call has returned), and the C side sees the callback fail.
#pragma once

#include <libnbd.h>
#include <duplexnbd.h>

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace nbd {{

// A failed call: what() is nbd_get_error(), errnum() is nbd_get_errno() (0 if none).
class Error : public std::runtime_error {{
public:
  Error(const std::string &message, int errnum)
      : std::runtime_error(message), errnum_(errnum) {{}}
  int errnum() const noexcept {{ return errnum_; }}

  // The calling thread's most recent libnbd error.
  static Error last() {{
    const char *msg = ::nbd_get_error();
    return Error(msg != nullptr ? msg : "libnbd call failed", ::nbd_get_errno());
  }}

private:
  int errnum_;
}};

// Callback types: the C callback's parameters after user_data; return as in C.
"""

DETAIL = """\
namespace detail {

// Where a callback's exception waits for the Handle method that will rethrow it.  A
// callback may run on another thread than the one that made the call (e.g. the debug
// callback), hence the lock; only the first exception is kept.
class pending_slot {
public:
  void park(std::exception_ptr e) noexcept {
    std::lock_guard<std::mutex> g(lock_);
    if (!ex_) ex_ = std::move(e);
  }
  std::exception_ptr take() noexcept {
    std::lock_guard<std::mutex> g(lock_);
    return std::exchange(ex_, nullptr);
  }

private:
  std::mutex lock_;
  std::exception_ptr ex_;
};

// user_data of every closure built here.
template <class Fn>
struct box {
  Fn fn;
  pending_slot *slot;
};

// Frees a string the C API returned with malloc.
struct c_string_owner {
  explicit c_string_owner(char *p) noexcept : p_(p) {}
  ~c_string_owner() { std::free(p_); }
  c_string_owner(const c_string_owner &) = delete;
  c_string_owner &operator=(const c_string_owner &) = delete;

private:
  char *p_;
};

// Owns a C closure struct until release(); frees it through its .free hook if the
// method throws before handing it to the library.
template <class C>
class owned_closure {
public:
  explicit owned_closure(C c) noexcept : c_(c) {}
  ~owned_closure() {
    if (c_.free != nullptr)
      c_.free(c_.user_data);
  }
  owned_closure(const owned_closure &) = delete;
  owned_closure &operator=(const owned_closure &) = delete;
  C release() noexcept { return std::exchange(c_, C{}); }

private:
  C c_;
};

// A NULL-terminated char ** view of a vector<string>, valid while the vector lives.
// The C API takes char ** for historical reasons but never writes through it.
class c_string_array {
public:
  explicit c_string_array(const std::vector<std::string> &v) {
    ptrs_.reserve(v.size() + 1);
    for (const auto &s : v)
      ptrs_.push_back(const_cast<char *>(s.c_str()));
    ptrs_.push_back(nullptr);
  }
  char **get() noexcept { return ptrs_.data(); }

private:
  std::vector<char *> ptrs_;
};

"""

HANDLE_HEAD = """\
}  // namespace detail

// An NBD handle.  Move-only; the destructor calls nbd_close (which also frees every
// callback still registered).  Using a moved-from Handle throws std::logic_error.
class Handle {
public:
  Handle() : pending_(std::make_unique<detail::pending_slot>()), h_(::nbd_create()) {
    if (h_ == nullptr)
      throw Error::last();
  }
  ~Handle() { ::nbd_close(h_); }

  Handle(Handle &&other) noexcept
      : pending_(std::move(other.pending_)), h_(std::exchange(other.h_, nullptr)) {}
  Handle &operator=(Handle &&other) noexcept {
    if (this != &other) {
      ::nbd_close(h_);  // before pending_ goes: closing may still run .free hooks
      h_ = std::exchange(other.h_, nullptr);
      pending_ = std::move(other.pending_);
    }
    return *this;
  }
  Handle(const Handle &) = delete;
  Handle &operator=(const Handle &) = delete;

  // The underlying C handle, still owned by this object.
  struct nbd_handle *native_handle() const noexcept { return h_; }

"""

# The duplexnbd timeouts as std::chrono durations (rounded up to whole milliseconds, so
# that a non-zero duration never becomes "no timeout"; capped at UINT32_MAX ms).
CHRONO_TIMEOUTS = """\
  template <typename Rep, typename Period>
  void set_request_timeout(std::chrono::duration<Rep, Period> d) {
    set_request_timeout(to_ms_(d));
  }
  std::chrono::milliseconds request_timeout() {
    return std::chrono::milliseconds(get_request_timeout());
  }
  template <typename Rep, typename Period>
  void set_connect_timeout(std::chrono::duration<Rep, Period> d) {
    set_connect_timeout(to_ms_(d));
  }
  std::chrono::milliseconds connect_timeout() {
    return std::chrono::milliseconds(get_connect_timeout());
  }

"""

HANDLE_TAIL = """\
private:
  struct nbd_handle *handle_or_throw_() const {
    if (h_ == nullptr)
      throw std::logic_error("nbd::Handle: used after move");
    return h_;
  }
  detail::pending_slot *slot_() const noexcept { return pending_.get(); }

  template <typename Rep, typename Period>
  static uint32_t to_ms_(std::chrono::duration<Rep, Period> d) {
    if (d <= d.zero())
      return 0;
    auto ms = std::chrono::ceil<std::chrono::milliseconds>(d).count();
    return ms > int64_t(UINT32_MAX) ? UINT32_MAX : uint32_t(ms);
  }

  // After every C call: a callback's exception is the root cause, so it wins over
  // the C error it provoked; the C error must be read before any other libnbd call.
  void finish_(bool failed) {
    if (auto ex = pending_->take())
      std::rethrow_exception(ex);
    if (failed)
      throw Error::last();
  }

  // Declared first so it outlives h_'s nbd_close in every constructor/destructor path.
  std::unique_ptr<detail::pending_slot> pending_;
  struct nbd_handle *h_;
};

}  // namespace nbd
"""


def render(api) -> str:
    out = [HEAD.format(note=GENERATED_NOTE)]
    for ct in api.closures:
        out.append(f"using {fn_alias(ct)} = std::function<{_fn_signature(ct)}>;\n")
    out.append("\n")
    out.append(DETAIL)
    for ct in api.closures:
        out.append("\n".join(_wrapper(ct)) + "\n")
    out.append(HANDLE_HEAD)
    for call in method_calls(api):
        out.append("\n".join(method(call)) + "\n")
    if any(c.name == "set_request_timeout" and c.extension for c in api.calls):
        out.append(CHRONO_TIMEOUTS)
    out.append(HANDLE_TAIL)
    return "".join(out)


def emit(api) -> dict[str, str]:
    return {"bindings/cxx/nbd.hpp": render(api)}
