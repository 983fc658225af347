// SPDX-License-Identifier: LGPL-2.1-or-later
// Debug messages: to stderr as "libnbd: debug: <name>: <call>: <msg>", or to the debug callback.
#pragma once

struct nbd_handle;

namespace duplexnbd {

bool debug_enabled(const nbd_handle &h);
void debug(nbd_handle &h, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// Entry/exit tracing used by the generated entry points.
void debug_enter(nbd_handle &h, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void debug_leave_error(nbd_handle &h);
void debug_leave(nbd_handle &h, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// Quotes a string for tracing (NULL prints as NULL), shortening long ones.
class TraceString {
public:
  explicit TraceString(const char *s);
  explicit TraceString(char *const *list);  // a NULL-terminated list
  const char *c_str() const { return text_; }
  ~TraceString();
  TraceString(const TraceString &) = delete;
  TraceString &operator=(const TraceString &) = delete;

private:
  char *text_;
};

}  // namespace duplexnbd
