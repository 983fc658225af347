// SPDX-License-Identifier: LGPL-2.1-or-later
// When commands and connects time out (duplexnbd_set_request_timeout / _connect_timeout).
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <queue>
#include <utility>
#include <vector>

namespace duplexnbd {

// Deadlines in nanoseconds of CLOCK_MONOTONIC; 0 means none.  Nobody runs a timer: the
// threads that drive the handle (poll rounds, notifies, get_direction, blocking waits)
// bound their polls by next() and hand what is due to Connection::expire_due.  A
// handle that never sets a timeout pays one atomic load per round.
class Deadlines {
public:
  static int64_t now();

  // True if `at` is now the earliest deadline (a thread asleep in poll must recompute).
  bool add(int64_t at, uint64_t cookie);
  // The cookies whose deadline has passed, earliest first (some may have completed
  // since: the caller checks).
  void take_due(int64_t now, std::vector<uint64_t> &out);
  int64_t next() const { return next_.load(std::memory_order_acquire); }

  void set_connect(int64_t at) { connect_.store(at, std::memory_order_release); }
  int64_t connect() const { return connect_.load(std::memory_order_acquire); }

  // `timeout_ms` (-1: none) shortened to end no later than the earliest deadline.
  int bound(int timeout_ms) const;

private:
  using Entry = std::pair<int64_t, uint64_t>;  // deadline, cookie
  std::mutex mutex_;
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> queue_;  // guarded
  std::atomic<int64_t> next_{0};
  std::atomic<int64_t> connect_{0};
};

}  // namespace duplexnbd
