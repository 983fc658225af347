// SPDX-License-Identifier: LGPL-2.1-or-later
// The threads blocked in poll() inside the library on one handle, and how they are woken.
#pragma once

#include <atomic>
#include <mutex>

#include "transport/wakeup.h"

namespace duplexnbd {

// Each thread that blocks in poll() on a handle (an nbd_poll caller, the blocking callers'
// leader) polls its own wake-up, a per-thread eventfd that lives as long as the thread:
// the handle itself holds no descriptor but its socket, as libnbd's does.  While it polls,
// the thread is registered here with what it polls for, so that whoever publishes
// something it must act on (a request left queued, completions handed off, a state change)
// wakes only the pollers that need it.
//
// Ordering, which makes lost wake-ups impossible: a poller registers (an RMW on count_)
// before it computes what to poll for; a signaller publishes first and then makes its own
// RMW on count_.  RMWs on one atomic are totally ordered and each reads the one before, so
// either the poller's comes first and the signaller sees it registered, or the
// signaller's comes first and the poller sees what was published.  With nobody
// registered, a signal costs that RMW and no lock and no system call (as QEMU's
// aio_notify skips the eventfd when no thread waits).
class PollerRegistry {
public:
  struct Poller {
    transport::Wakeup *wakeup = nullptr;
    int slot = -1;  // its place in slots_, if it got one
    // The poller asks for POLLOUT this round: a newly queued request reaches it through
    // the socket's writability, without a wake-up.  Written by the poller only.
    std::atomic<bool> polls_write{false};
    Poller *next = nullptr;
  };

  // The calling thread's wake-up, created on first use and kept for the thread's life
  // (nullptr if that failed: the thread then polls with a short timeout instead).  A
  // signal may be left in it from an earlier wait: callers drain it before they look at
  // what they wait for.
  static transport::Wakeup *thread_wakeup();

  PollerRegistry() {
    for (auto &s : slots_) s.store(-1, std::memory_order_relaxed);
  }

  void enter(Poller &p);
  void leave(Poller &p);

  // Whether any thread is registered now (ordered as a signal is: see above).
  bool anyone_polling() { return count_.fetch_add(0, std::memory_order_acq_rel) != 0; }

  enum class Why {
    QueuedWrite,  // a request waits for POLLOUT: wake pollers that lack it
    Progress,     // completions were handed off, or a state changed: wake every poller
  };
  void wake(Why why);

  // duplexnbd_interrupt: every registered poller is woken, and every wait that began
  // before returns EINTR (each compares interrupt_count() with the count it began with).
  // Async-signal-safe: an atomic increment and write(2)s to the slots' descriptors, no
  // lock.  A poller that found no free slot polls with a bounded timeout instead.
  void interrupt();
  unsigned interrupt_count() const { return interrupts_.load(std::memory_order_seq_cst); }
  static constexpr int kSlots = 16;
  // How long a poller without a slot may sleep before it looks at interrupt_count().
  static constexpr int kUnslottedPollMs = 100;

private:
  // The wake-up descriptors of registered pollers, readable without a lock.  Per-thread
  // wake-ups are never closed but pooled when their thread ends (see thread_wakeup), so a
  // descriptor read here just before its poller left is still one of ours: at worst a
  // stale signal makes one poll return early.
  std::atomic<int> slots_[kSlots];
  std::atomic<unsigned> interrupts_{0};
  std::mutex mutex_;
  Poller *head_ = nullptr;  // guarded by mutex_
  std::atomic<int> count_{0};
};

}  // namespace duplexnbd
