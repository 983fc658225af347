// SPDX-License-Identifier: LGPL-2.1-or-later
// Thread-local error storage behind nbd_get_error / nbd_get_errno.
#include "handle/error.h"

#include "handle/per_thread.h"

#include <cstdarg>
#include <cstdio>
#include <cstring>

namespace duplexnbd {
namespace {

struct ThreadError {
  std::string text;
  bool set = false;
  int errnum = 0;
};

// Not a thread_local object: see PerThread (the call's name needs no destructor).
thread_local const char *tls_call = nullptr;

void record(int errnum, const std::string &message) {
  std::string text = CallContext::current();
  text += ": ";
  text += message;
  if (errnum != 0) {
    char buf[256];
    // GNU strerror_r may return a static string rather than fill buf.
    const char *s = strerror_r(errnum, buf, sizeof buf);
    text += ": ";
    text += s;
  }
  ThreadError *e = PerThread<ThreadError>::get();
  if (e == nullptr) return;  // out of memory: nothing can be recorded
  e->text = std::move(text);
  e->errnum = errnum;
  e->set = true;
}

}  // namespace

void set_error(int errnum, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char small[512];
  va_list ap2;
  va_copy(ap2, ap);
  int n = vsnprintf(small, sizeof small, fmt, ap);
  std::string message;
  if (n >= 0 && size_t(n) < sizeof small) {
    message.assign(small, size_t(n));
  } else if (n >= 0) {
    message.resize(size_t(n));
    vsnprintf(message.data(), size_t(n) + 1, fmt, ap2);
  }
  va_end(ap2);
  va_end(ap);
  record(errnum, message);
}

void set_error(const Error &e) { record(e.errnum, e.message); }

const char *last_error() {
  const ThreadError *e = PerThread<ThreadError>::peek();
  return e && e->set ? e->text.c_str() : nullptr;
}
int last_errno() {
  const ThreadError *e = PerThread<ThreadError>::peek();
  return e ? e->errnum : 0;
}

CallContext::CallContext(const char *name) : saved_(tls_call) { tls_call = name; }
CallContext::~CallContext() { tls_call = saved_; }
const char *CallContext::current() { return tls_call ? tls_call : "unknown"; }

}  // namespace duplexnbd
