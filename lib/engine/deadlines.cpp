// SPDX-License-Identifier: LGPL-2.1-or-later
// Deadlines: a queue of command deadlines and the connect deadline, read lock-free when empty.
#include "engine/deadlines.h"

#include <time.h>

#include <algorithm>

namespace duplexnbd {

int64_t Deadlines::now() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

bool Deadlines::add(int64_t at, uint64_t cookie) {
  std::lock_guard lock(mutex_);
  queue_.emplace(at, cookie);
  next_.store(queue_.top().first, std::memory_order_release);
  return queue_.top().second == cookie;
}

void Deadlines::take_due(int64_t now, std::vector<uint64_t> &out) {
  std::lock_guard lock(mutex_);
  while (!queue_.empty() && queue_.top().first <= now) {
    out.push_back(queue_.top().second);
    queue_.pop();
  }
  next_.store(queue_.empty() ? 0 : queue_.top().first, std::memory_order_release);
}

int Deadlines::bound(int timeout_ms) const {
  int64_t at = next();
  const int64_t c = connect();
  if (c != 0 && (at == 0 || c < at)) at = c;
  if (at == 0) return timeout_ms;
  // Rounded up, so the poll does not end a little before the deadline and spin.
  const int64_t left_ns = std::max<int64_t>(0, at - now());
  const int64_t left_ms = std::min<int64_t>((left_ns + 999999) / 1000000, 1 << 30);
  return timeout_ms < 0 ? int(left_ms) : int(std::min<int64_t>(timeout_ms, left_ms));
}

}  // namespace duplexnbd
