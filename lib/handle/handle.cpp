// SPDX-License-Identifier: LGPL-2.1-or-later
// Creation and destruction of handles, default names, and the permitted-state check.
#include "handle/handle.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

#include "engine/connection.h"
#include "handle/debug.h"
#include "handle/error.h"

namespace {
std::atomic<unsigned> handles_created{0};
}

nbd_handle::nbd_handle() {
  settings.handle_name = "nbd" + std::to_string(++handles_created);
  const char *env = getenv("LIBNBD_DEBUG");
  if (env && strcmp(env, "1") == 0) debug = true;
}

nbd_handle::~nbd_handle() = default;

namespace duplexnbd {

const char *state_name(State s) {
  switch (s) {
    case State::Created: return "START";
    case State::Connecting: return "CONNECTING";
    case State::Negotiating: return "NEGOTIATING";
    case State::Ready: return "READY";
    case State::Closed: return "CLOSED";
    case State::Dead: return "DEAD";
  }
  return "UNKNOWN";
}

bool check_state(Handle &h, StateMask permitted, const char *must_be) {
  State s = h.state();
  if (permitted & state_bit(s)) return true;
  // A handle that never connected is "not connected"; any other wrong state is a misuse.
  set_error(s == State::Created ? ENOTCONN : EINVAL, "invalid state: %s: the handle must be %s",
            state_name(s), must_be);
  return false;
}

bool pread_initialize(Handle &h) {
  std::lock_guard lock(h.settings_mutex);
  return h.settings.pread_initialize;
}

void initialize_read_buffer(Handle &h, void *buf, size_t count) {
  if (buf == nullptr || count == 0) return;
  if (pread_initialize(h)) std::memset(buf, 0, count);
}

}  // namespace duplexnbd
