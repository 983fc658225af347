// SPDX-License-Identifier: LGPL-2.1-or-later
// Creation and destruction of handles, default names, and the permitted-state check.
#include "handle/handle.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <optional>
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
namespace {

// What a string allocated beyond its own object: nothing while it fits the short-string
// buffer inside std::string.
size_t string_heap_bytes(const std::string &s) {
  static const size_t inline_capacity = std::string().capacity();
  return s.capacity() > inline_capacity ? s.capacity() + 1 : 0;
}

size_t string_heap_bytes(const std::optional<std::string> &s) {
  return s ? string_heap_bytes(*s) : 0;
}

}  // namespace

size_t Settings::heap_bytes() const {
  size_t bytes = string_heap_bytes(handle_name) + string_heap_bytes(export_name) +
                 string_heap_bytes(tls_certificates) + string_heap_bytes(tls_username) +
                 string_heap_bytes(tls_psk_file) + string_heap_bytes(tls_hostname) +
                 string_heap_bytes(tls_priority) + string_heap_bytes(socket_activation_name);
  bytes += meta_contexts.capacity() * sizeof(std::string);
  for (const std::string &name : meta_contexts) bytes += string_heap_bytes(name);
  return bytes;
}

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
