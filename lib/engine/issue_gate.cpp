// SPDX-License-Identifier: LGPL-2.1-or-later
// IssueGate: a flag per command, and one condition variable for the rare waits on it.
#include "engine/issue_gate.h"

namespace duplexnbd {

void IssueGate::open(Command *c) {
  // After this store the command may be completed and freed: only the gate is touched
  // below.  seq_cst pairs with wait's count-then-check.
  c->issuing.store(false, std::memory_order_seq_cst);
  if (waiters_.load(std::memory_order_seq_cst) > 0) {
    { std::lock_guard lock(mutex_); }
    cv_.notify_all();
  }
}

void IssueGate::wait(const Command *c) {
  if (!c->issuing.load(std::memory_order_acquire)) return;
  std::unique_lock lock(mutex_);
  waiters_.fetch_add(1, std::memory_order_seq_cst);
  while (c->issuing.load(std::memory_order_seq_cst)) cv_.wait(lock);
  waiters_.fetch_sub(1, std::memory_order_relaxed);
}

}  // namespace duplexnbd
