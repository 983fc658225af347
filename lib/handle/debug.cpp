// SPDX-License-Identifier: LGPL-2.1-or-later
// Debug output for LIBNBD_DEBUG=1 and nbd_set_debug, to stderr or the debug callback.
#include "handle/debug.h"

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "handle/error.h"
#include "handle/handle.h"

namespace duplexnbd {
namespace {

void vdebug(Handle &h, const char *prefix, const char *fmt, va_list ap) {
  char *msg = nullptr;
  if (vasprintf(&msg, fmt, ap) < 0) return;
  std::string text = prefix;
  text += msg;
  free(msg);

  const char *context = CallContext::current();
  std::lock_guard lock(h.debug_mutex);
  if (h.debug_callback) {
    h.debug_callback(context, text.c_str());
    return;
  }
  std::string name;
  {
    std::lock_guard slock(h.settings_mutex);
    name = h.settings.handle_name;
  }
  // One write so that concurrent threads' lines do not interleave.
  std::string line = "libnbd: debug: " + name + ": " + context + ": " + text + "\n";
  fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace

bool debug_enabled(const nbd_handle &h) { return h.debug.load(std::memory_order_relaxed); }

void debug(nbd_handle &h, const char *fmt, ...) {
  if (!debug_enabled(h)) return;
  va_list ap;
  va_start(ap, fmt);
  vdebug(h, "", fmt, ap);
  va_end(ap);
}

void debug_enter(nbd_handle &h, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vdebug(h, "enter: ", fmt, ap);
  va_end(ap);
}

void debug_leave(nbd_handle &h, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vdebug(h, "leave: ", fmt, ap);
  va_end(ap);
}

void debug_leave_error(nbd_handle &h) {
  const char *e = last_error();
  debug_leave(h, "error=\"%s\"", e ? e : "");
}

namespace {
constexpr size_t kTraceMax = 200;

void append_quoted(std::string &out, const char *s) {
  out += '"';
  size_t n = strlen(s);
  for (size_t i = 0; i < n && i < kTraceMax; i++) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += char(c);
    } else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += char(c);
    }
  }
  if (n > kTraceMax) out += "...";
  out += '"';
}
}  // namespace

TraceString::TraceString(const char *s) {
  std::string out;
  if (s == nullptr)
    out = "NULL";
  else
    append_quoted(out, s);
  text_ = strdup(out.c_str());
}

TraceString::TraceString(char *const *list) {
  std::string out;
  if (list == nullptr) {
    out = "NULL";
  } else {
    out = "[";
    for (size_t i = 0; list[i]; i++) {
      if (i) out += ", ";
      append_quoted(out, list[i]);
    }
    out += "]";
  }
  text_ = strdup(out.c_str());
}

TraceString::~TraceString() { free(text_); }

}  // namespace duplexnbd
