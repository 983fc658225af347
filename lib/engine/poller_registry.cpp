// SPDX-License-Identifier: LGPL-2.1-or-later
// PollerRegistry: registration of blocked threads and the per-thread wake-ups they poll.
#include "engine/poller_registry.h"

#include <optional>

#include "handle/per_thread.h"

namespace duplexnbd {

namespace {
struct ThreadWakeup {
  std::optional<transport::Wakeup> wakeup;
  bool failed = false;
};
}  // namespace

transport::Wakeup *PollerRegistry::thread_wakeup() {
  // Created lazily and kept for the thread's life: one descriptor per thread that ever
  // blocks inside the library, whatever the number of handles.  Per thread through
  // PerThread, so a blocking call from an atexit handler still finds it.
  ThreadWakeup *t = PerThread<ThreadWakeup>::get();
  if (t == nullptr) return nullptr;
  if (!t->wakeup && !t->failed) {
    auto w = transport::Wakeup::create();
    if (w)
      t->wakeup.emplace(std::move(*w));
    else
      t->failed = true;
  }
  return t->wakeup ? &*t->wakeup : nullptr;
}

void PollerRegistry::enter(Poller &p) {
  p.polls_write.store(false, std::memory_order_relaxed);
  {
    std::lock_guard lock(mutex_);
    p.next = head_;
    head_ = &p;
  }
  count_.fetch_add(1, std::memory_order_acq_rel);
}

void PollerRegistry::leave(Poller &p) {
  count_.fetch_sub(1, std::memory_order_acq_rel);
  std::lock_guard lock(mutex_);
  for (Poller **pp = &head_; *pp; pp = &(*pp)->next) {
    if (*pp == &p) {
      *pp = p.next;
      break;
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
