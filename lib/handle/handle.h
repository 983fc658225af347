// SPDX-License-Identifier: LGPL-2.1-or-later
// struct nbd_handle: configuration, published state and the connection engine of one handle.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>

#include "handle/closure.h"
#include "handle/settings.h"
#include "handle/state.h"

namespace duplexnbd {
class Connection;
}

// Deliberately not one big lock: settings have their own small mutex, the engine has a
// writer lock and a reader lock, and the fields read on hot paths are atomics.
struct nbd_handle {
  nbd_handle();
  ~nbd_handle();
  nbd_handle(const nbd_handle &) = delete;
  nbd_handle &operator=(const nbd_handle &) = delete;

  duplexnbd::State state() const { return state_.load(std::memory_order_acquire); }
  void set_state(duplexnbd::State s) { state_.store(s, std::memory_order_release); }
  bool in_states(duplexnbd::StateMask mask) const { return mask & duplexnbd::state_bit(state()); }

  std::mutex settings_mutex;
  duplexnbd::Settings settings;            // guarded by settings_mutex

  std::atomic<bool> debug{false};
  std::mutex debug_mutex;                  // serialises the debug callback
  duplexnbd::DebugCallback debug_callback; // guarded by debug_mutex

  std::atomic<uintptr_t> private_data{0};
  std::atomic<uint32_t> strict{LIBNBD_STRICT_MASK};

  // The extensions of duplexnbd.h (0: no timeout, the default, as libnbd).
  std::atomic<uint32_t> request_timeout_ms{0};
  std::atomic<uint32_t> connect_timeout_ms{0};
  std::atomic<int> timeout_policy{0};  // DUPLEXNBD_TIMEOUT_KEEP_CONNECTION

  // Created by the first connect call; lives until nbd_close.
  std::unique_ptr<duplexnbd::Connection> connection;

private:
  std::atomic<duplexnbd::State> state_{duplexnbd::State::Created};
};

namespace duplexnbd {
using Handle = ::nbd_handle;

// The name in "invalid state: ..." messages; returns false after setting the error.
bool check_state(Handle &h, StateMask permitted, const char *must_be);

// The set_pread_initialize setting.
bool pread_initialize(Handle &h);

// Zeroes a read buffer when set_pread_initialize asks for it; entry points call it when a
// read fails, so a caller that ignores the error never sees stale memory (a command that
// was issued zeroes what the server did not write itself, see Command).
void initialize_read_buffer(Handle &h, void *buf, size_t count);
}  // namespace duplexnbd
