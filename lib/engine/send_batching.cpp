// SPDX-License-Identifier: LGPL-2.1-or-later
// SendBatching: the driving thread's identity, the deferral rule and the refill mark.
#include "engine/send_batching.h"

namespace duplexnbd {
namespace {
// Identifies the calling thread cheaply (std::thread::id is not lock-free to share).
uintptr_t this_thread_token() {
  static thread_local char token;
  return reinterpret_cast<uintptr_t>(&token);
}
}  // namespace

void SendBatching::note_driver() {
  // Plain loads and stores: a count lost to a race only delays or ends one batch.
  uintptr_t me = this_thread_token();
  if (driver_.load(std::memory_order_relaxed) != me) {
    driver_.store(me, std::memory_order_relaxed);
    solo_calls_.store(0, std::memory_order_relaxed);
    return;
  }
  unsigned n = solo_calls_.load(std::memory_order_relaxed);
  if (n < kSoloCalls) solo_calls_.store(n + 1, std::memory_order_relaxed);
}

bool SendBatching::may_defer(uint64_t bytes, const QueueView &q) const {
  // Only for the thread that drives the handle alone: the last calls to ask for the
  // direction, notify or poll were this one's, so it will do so again, and nobody else
  // is blocked in one of our polls (it would not be polling for POLLOUT).
  if (driver_.load(std::memory_order_relaxed) != this_thread_token()) return false;
  if (solo_calls_.load(std::memory_order_relaxed) < kSoloCalls) return false;
  if (q.anyone_polling) return false;
  // Behind a half-sent request the socket is full: nothing is gained by waiting.
  if (q.half_sent) return false;
  // Batching pays for small requests, whose cost is the system call and the socket
  // buffer per send; a large payload is worth sending now, while the server may be idle.
  if (q.deferred_bytes + bytes > kMaxDeferredBytes) return false;
  // And only while a request already sent awaits its reply: the caller must come back
  // for that reply, and every such call sends what was deferred, so a caller that polls
  // only for POLLIN delays its requests but never hangs.  (The new command, like the
  // queued ones, is counted but not sent.)
  return q.awaiting_reply > q.queued + 1;
}

bool SendBatching::refill_due(uint64_t answered) {
  if (answered - refill_mark_ < kRefillBytes) return false;
  refill_mark_ = answered;
  return true;
}

}  // namespace duplexnbd
