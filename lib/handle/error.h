// SPDX-License-Identifier: LGPL-2.1-or-later
// Thread-local error reporting: what nbd_get_error / nbd_get_errno return.
#pragma once

#include <string>

#include "core/status.h"

namespace duplexnbd {

// Records an error for this thread as "<current call>: <message>[: strerror(errnum)]".
void set_error(int errnum, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void set_error(const Error &e);

const char *last_error();  // NULL when nothing was ever recorded on this thread
int last_errno();

// Names the public call running on this thread, for error and debug prefixes.
// Nested public calls (a callback calling back into the library) restore the outer name.
class CallContext {
public:
  explicit CallContext(const char *name);
  ~CallContext();
  CallContext(const CallContext &) = delete;
  CallContext &operator=(const CallContext &) = delete;

  static const char *current();  // "unknown" outside any call

private:
  const char *saved_;
};

}  // namespace duplexnbd
