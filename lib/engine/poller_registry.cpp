// SPDX-License-Identifier: LGPL-2.1-or-later
// PollerRegistry: registration of blocked threads and the per-thread wake-ups they poll.
#include "engine/poller_registry.h"

#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <optional>
#include <vector>

#include "handle/per_thread.h"

namespace duplexnbd {

namespace {

// Wake-ups of threads that ended, kept for the next thread that needs one: a descriptor
// that interrupt() may still write to must stay an eventfd of ours (see slots_).
struct WakeupPool {
  std::mutex mutex;
  std::vector<transport::Wakeup> free;
};
WakeupPool &pool() {
  static WakeupPool *p = new WakeupPool();  // never destroyed: threads end after main
  return *p;
}

struct ThreadWakeup {
  std::optional<transport::Wakeup> wakeup;
  bool failed = false;
  ~ThreadWakeup() {
    if (!wakeup) return;
    std::lock_guard lock(pool().mutex);
    pool().free.push_back(std::move(*wakeup));
  }
};

}  // namespace

transport::Wakeup *PollerRegistry::thread_wakeup() {
  // Created lazily and kept for the thread's life: one descriptor per thread that ever
  // blocks inside the library, whatever the number of handles.  Per thread through
  // PerThread, so a blocking call from an atexit handler still finds it.
  ThreadWakeup *t = PerThread<ThreadWakeup>::get();
  if (t == nullptr) return nullptr;
  if (!t->wakeup && !t->failed) {
    {
      std::lock_guard lock(pool().mutex);
      if (!pool().free.empty()) {
        t->wakeup.emplace(std::move(pool().free.back()));
        pool().free.pop_back();
      }
    }
    if (!t->wakeup) {
      auto w = transport::Wakeup::create();
      if (w)
        t->wakeup.emplace(std::move(*w));
      else
        t->failed = true;
    }
  }
  return t->wakeup ? &*t->wakeup : nullptr;
}

void PollerRegistry::enter(Poller &p) {
  p.polls_write.store(false, std::memory_order_relaxed);
  p.slot = -1;
  if (p.wakeup) {
    for (int i = 0; i < kSlots; ++i) {
      int expected = -1;
      if (slots_[i].compare_exchange_strong(expected, p.wakeup->fd(), std::memory_order_seq_cst)) {
        p.slot = i;
        break;
      }
    }
  }
  {
    std::lock_guard lock(mutex_);
    p.next = head_;
    head_ = &p;
  }
  count_.fetch_add(1, std::memory_order_acq_rel);
}

void PollerRegistry::leave(Poller &p) {
  if (p.slot >= 0) slots_[p.slot].store(-1, std::memory_order_seq_cst);
  count_.fetch_sub(1, std::memory_order_acq_rel);
  std::lock_guard lock(mutex_);
  for (Poller **pp = &head_; *pp; pp = &(*pp)->next) {
    if (*pp == &p) {
      *pp = p.next;
      break;
    }
  }
}

void PollerRegistry::interrupt() {
  // Pairs with enter(): a poller stores its slot, then (seq_cst) compares the count; we
  // increment, then (seq_cst) read the slots.  Either it sees the new count or we see it.
  interrupts_.fetch_add(1, std::memory_order_seq_cst);
  for (auto &slot : slots_) {
    const int fd = slot.load(std::memory_order_seq_cst);
    if (fd < 0) continue;
    uint64_t one = 1;
    // An eventfd takes 8 bytes; the pipe fallback takes them too (drain reads them all).
    while (::write(fd, &one, sizeof one) == -1 && errno == EINTR) {
    }
  }
}

void PollerRegistry::wake(Why why) {
  if (count_.fetch_add(0, std::memory_order_acq_rel) == 0) return;
  // Signalled under the lock: a poller unregisters under it too, so its wake-up (which
  // belongs to its thread) is alive for as long as it is in the list.
  std::lock_guard lock(mutex_);
  for (Poller *p = head_; p; p = p->next) {
    if (why == Why::QueuedWrite && p->polls_write.load(std::memory_order_relaxed)) continue;
    if (p->wakeup) p->wakeup->signal();
  }
}

}  // namespace duplexnbd
