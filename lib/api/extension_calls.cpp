// SPDX-License-Identifier: LGPL-2.1-or-later
// duplexnbd's own calls (duplexnbd.h): request and connect timeouts, cancel, interrupt.
#include <cerrno>
#include <cinttypes>

#include "api_impl.h"
#include "duplexnbd.h"
#include "engine/connection.h"
#include "handle/error.h"

namespace duplexnbd::api {
namespace {

// The connection, once a connect call created it (see command_calls.cpp).
Connection *live_connection(Handle &h) {
  if (h.state() == State::Created) return nullptr;
  return h.connection.get();
}

}  // namespace

int set_request_timeout(Handle &h, uint32_t ms) {
  h.request_timeout_ms.store(ms, std::memory_order_relaxed);
  return 0;
}

int64_t get_request_timeout(Handle &h) { return h.request_timeout_ms.load(std::memory_order_relaxed); }

int set_connect_timeout(Handle &h, uint32_t ms) {
  h.connect_timeout_ms.store(ms, std::memory_order_relaxed);
  return 0;
}

int64_t get_connect_timeout(Handle &h) { return h.connect_timeout_ms.load(std::memory_order_relaxed); }

int set_timeout_policy(Handle &h, int policy) {
  if (policy != DUPLEXNBD_TIMEOUT_KEEP_CONNECTION && policy != DUPLEXNBD_TIMEOUT_CLOSE_CONNECTION) {
    set_error(EINVAL, "policy: invalid value for parameter: %d", policy);
    return -1;
  }
  h.timeout_policy.store(policy, std::memory_order_relaxed);
  return 0;
}

int get_timeout_policy(Handle &h) { return h.timeout_policy.load(std::memory_order_relaxed); }

int aio_cancel(Handle &h, uint64_t cookie) {
  Connection *conn = live_connection(h);
  if (conn == nullptr || !conn->abandon(cookie, ECANCELED)) {
    set_error(EINVAL, "cookie %" PRIu64 " is not a command in flight", cookie);
    return -1;
  }
  return 0;
}

int interrupt(Handle &h) {
  // Async-signal-safe: atomics and write(2) only (see PollerRegistry::interrupt).
  if (Connection *conn = live_connection(h)) conn->interrupt();
  return 0;
}

}  // namespace duplexnbd::api
