// SPDX-License-Identifier: LGPL-2.1-or-later
// When requests wait to leave together, and when reply processing refills the socket.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace duplexnbd {

// Two heuristics about *when* queued requests are sent; neither changes what is sent.
//
// Deferring: a thread that drives the handle alone (its own get_direction, notify and
// nbd_poll calls, nobody else blocked in a poll of ours) and already waits for a reply
// will be back in one of those calls before anything else can happen, so the small
// requests it issues meanwhile can wait for that call and leave in one sendmsg.
//
// Refilling: a Unix socket reports POLLOUT only once its queue is down to a quarter of
// the send buffer, so with large requests a writer waiting for POLLOUT lets the queue
// run low.  Replies prove the server has read their requests; once they answer enough
// bytes, reply processing sends what waits itself.
class SendBatching {
public:
  // A driving call (direction, notify, poll) from the calling thread.
  void note_driver();

  // What the decision needs to know about the queue and the table.
  struct QueueView {
    bool half_sent;            // requests queued behind a full socket, not deferred ones
    uint64_t deferred_bytes;   // already waiting for the driver
    size_t queued;             // entries in the writer's queue
    size_t awaiting_reply;     // commands whose reply is not complete, the new one included
    bool anyone_polling;       // a thread is blocked in one of our polls
  };
  // Whether a new request of `bytes` may wait for the calling thread's next driving call.
  bool may_defer(uint64_t bytes, const QueueView &q) const;

  // Reply processing answered requests totalling `answered` bytes so far (monotonic);
  // true once it is time to send what waits.  Called by the reader's owner only.
  bool refill_due(uint64_t answered);

  // At most this much waits for the driving thread's next call.
  static constexpr uint64_t kMaxDeferredBytes = 64 * 1024;
  // How many driving calls in a row one thread must make before its requests wait: where
  // two threads take turns (one notify_read, one notify_write) the other one would often
  // be the thread that ends up sending them.
  static constexpr unsigned kSoloCalls = 16;
  // Reply processing refills the socket once this many request bytes were answered since
  // it last did: small requests keep waiting for POLLOUT and leave in batches.
  static constexpr uint64_t kRefillBytes = 64 * 1024;

private:
  std::atomic<uintptr_t> driver_{0};    // the thread that last drove the handle
  std::atomic<unsigned> solo_calls_{0}; // its calls since another thread drove it
  uint64_t refill_mark_ = 0;            // the reader's owner's
};

}  // namespace duplexnbd
